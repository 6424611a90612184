"""The factory's artifact sink on the local stack: real SAS uploads to Azurite, fenced zombies."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from factory_cli.api import FleetClient
from factory_cli.artifacts import HttpArtifacts, collect
from factory_cli.workdir import WorkPaths
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


def test_factory_uploads_engine_log_and_diff_and_a_stale_epoch_gets_nothing(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    api = running_stack.api
    product = f"u{uuid.uuid4().hex[:10]}"
    op = running_stack.operator(product)
    token = running_stack.enroll(product, "f1")
    claim = running_stack.submit_and_claim(product, bearer(token))
    job, epoch = claim["job"], claim["lease"]["epoch"]

    paths = WorkPaths(tmp_path / job["id"])
    paths.control.mkdir(parents=True)
    paths.log.write_text("--- attempt at epoch 1 ---\nworking\n")
    paths.diff_patch.write_text("--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+hello\n")
    files = collect(paths, [])
    sleeps: list[float] = []
    client = FleetClient(api, token)
    sink = HttpArtifacts(client, sleep=sleeps.append)
    uploaded, errors = sink.upload_all(job["id"], epoch, files)
    assert (uploaded, errors, sleeps) == (["engine.log", "diff.patch"], [], [])

    listed = requests.get(f"{api}/fleet/jobs/{job['id']}/artifacts", headers=op, timeout=30)
    rows = {a["name"]: a for a in listed.json()["artifacts"]}
    assert set(rows) == {"engine.log", "diff.patch"}
    assert rows["engine.log"]["size"] == paths.log.stat().st_size
    assert rows["diff.patch"]["size"] == paths.diff_patch.stat().st_size
    assert rows["engine.log"]["contentType"] == "text/plain"
    assert rows["diff.patch"]["contentType"] == "text/x-diff"
    assert {a["epoch"] for a in rows.values()} == {epoch}

    # The job is taken back: the old epoch is stale, nothing of it is uploaded any more.
    requests.post(f"{api}/fleet/jobs/{job['id']}/requeue", json={}, headers=op, timeout=30)
    (paths.control / "late.txt").write_text("too late")
    uploaded, errors = sink.upload_all(
        job["id"], epoch, [("late.txt", paths.control / "late.txt"), *files]
    )
    assert uploaded == [] and sleeps == []
    assert errors[0] == "late.txt: fenced (409)" and errors[1].startswith("fenced: not tried")
    names = {
        a["name"]
        for a in requests.get(
            f"{api}/fleet/jobs/{job['id']}/artifacts", headers=op, timeout=30
        ).json()["artifacts"]
    }
    assert names == {"engine.log", "diff.patch"}
    client.close()
