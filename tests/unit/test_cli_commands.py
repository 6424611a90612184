"""The ``fleet-factory`` commands end to end in-process (``responses`` for the API):
enroll, run, status, submit, jobs, top, config, --version, --help."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import responses

from factory_cli import __version__
from factory_cli.cli import default_name, main
from factory_cli.state import write_state
from tests.support.cli import API, enrolled

REPO = Path(__file__).resolve().parents[2]


def test_cli_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"fleet-factory {__version__}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("enroll", "run", "status", "submit", "jobs", "top", "FLEET_API", "FLEET_TOKEN"):
        assert word in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for word in ("--once", "--seats", "--engine", "--engine-cmd", "FLEET_ENGINE_CMD", "--review"):
        assert word in out


def test_cli_version_matches_the_package_metadata() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in text
    assert 'fleet-factory = "factory_cli.__main__:main"' in text


def test_cli_imports_nothing_from_the_coordinator() -> None:
    code = (
        "import sys, factory_cli.cli, factory_cli.runner, factory_cli.demo_engine;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fleet', 'azure', 'pydantic', 'yaml'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_cli_python_dash_m_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "factory_cli", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"fleet-factory {__version__}"


# --- enroll ------------------------------------------------------------------------------------


def test_cli_enroll_stores_the_token_0600_and_shows_the_path(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=201,
        json={"factoryId": "build-01", "token": "flf_secret", "product": "demo"},
    )
    code = main(
        [
            "enroll",
            "--api",
            API,
            "--token",
            "fle_x",
            "--name",
            "build-01",
            "--cap",
            "gpu",
            "--seats",
            "2",
            "--engine",
            "demo",
        ],
        env=env,
    )
    assert code == 0
    path = Path(env["FLEET_CONFIG_DIR"]) / "config.json"
    out = capsys.readouterr().out
    assert str(path) in out and "mode 0600" in out and "build-01" in out
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["token"] == "flf_secret" and saved["factoryId"] == "build-01"
    assert saved["product"] == "demo" and saved["api"] == API and saved["seats"] == 2
    assert saved["caps"] == ["gpu"] and saved["engine"] == "demo"
    body = json.loads(rsps.calls[0].request.body)
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer fle_x"
    assert {"gpu", "engine:demo"} <= set(body["capabilities"])  # --cap, and the engine
    assert body["name"] == "build-01" and body["seats"] == 2
    assert any(c.startswith("arch:") for c in body["capabilities"])
    # Enrolling again needs --force.
    assert main(["enroll", "--api", API, "--token", "fle_y"], env=env) == 2
    assert "already enrolled as build-01" in capsys.readouterr().err


def test_cli_enroll_without_a_name_lets_an_ephemeral_token_name_the_factory(
    rsps: responses.RequestsMock, env: dict[str, str]
) -> None:
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=201,
        json={"factoryId": "auto-1a2b3c4d", "token": "flf_secret", "product": "demo"},
    )
    assert main(["enroll", "--api", API, "--token", "fle_x", "--engine", "demo"], env=env) == 0
    assert "name" not in json.loads(rsps.calls[0].request.body)
    saved = json.loads((Path(env["FLEET_CONFIG_DIR"]) / "config.json").read_text())
    assert saved["factoryId"] == "auto-1a2b3c4d"


def test_cli_enroll_without_a_name_falls_back_to_the_host_name_for_any_other_token(
    rsps: responses.RequestsMock, env: dict[str, str]
) -> None:
    missing = {"path": "name", "code": "missing", "message": "name is required"}
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=400,
        json={"error": "validation_failed", "details": {"problems": [missing]}},
    )
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=201,
        json={"factoryId": default_name(), "token": "flf_secret", "product": "demo"},
    )
    assert main(["enroll", "--api", API, "--token", "fle_x"], env=env) == 0
    first, second = (json.loads(c.request.body) for c in rsps.calls)
    assert "name" not in first and second["name"] == default_name()
    saved = json.loads((Path(env["FLEET_CONFIG_DIR"]) / "config.json").read_text())
    assert saved["factoryId"] == default_name()


def test_cli_enroll_drops_detected_capabilities_the_token_refuses(
    rsps: responses.RequestsMock, env: dict[str, str], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\n")
    (bin_dir / "git").chmod(0o755)
    env["PATH"] = str(bin_dir)
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=403,
        json={"error": "forbidden", "details": {"disallowed": ["has:git"]}},
    )
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=201,
        json={"factoryId": "fa", "token": "flf_t", "product": "p"},
    )
    env["FLEET_ENROLLMENT_TOKEN"] = "fle_env"
    assert main(["enroll", "--api", API, "--name", "fa"], env=env) == 0
    first, second = (json.loads(c.request.body)["capabilities"] for c in rsps.calls)
    assert "has:git" in first and "has:git" not in second
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer fle_env"


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (401, {"error": "unauthorized"}, 3, "invalid, expired or already used"),
        (409, {"error": "factory_exists"}, 1, "already enrolled in this product"),
        (403, {"error": "forbidden", "details": {"disallowed": ["gpu"]}}, 1, "HTTP 403"),
    ],
)
def test_cli_enroll_refusals_are_explained(
    rsps: responses.RequestsMock,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: dict[str, Any],
    code: int,
    message: str,
) -> None:
    rsps.post(f"{API}/fleet/factories/enroll", status=status, json=body)
    args = ["enroll", "--api", API, "--token", "fle_x", "--name", "fa", "--cap", "gpu"]
    assert main(args, env=env) == code
    assert message in capsys.readouterr().err
    assert not (Path(env["FLEET_CONFIG_DIR"]) / "config.json").exists()


def test_cli_enroll_needs_api_and_token(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["enroll"], env=env) == 2
    err = capsys.readouterr().err
    assert "FLEET_API" in err and "FLEET_ENROLLMENT_TOKEN" in err


# --- run ---------------------------------------------------------------------------------------


def test_cli_run_needs_an_enrollment(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--api", API], env=env) == 2
    assert "FLEET_TOKEN" in capsys.readouterr().err


def test_cli_run_needs_an_engine(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    enrolled(env)
    assert main(["run"], env=env) == 2
    assert "no engine" in capsys.readouterr().err


def test_cli_run_once_with_nothing_to_claim(
    rsps: responses.RequestsMock, env: dict[str, str], tmp_path: Path
) -> None:
    enrolled(env, seats=3)
    env["FLEET_CAPS"] = "team:a"
    rsps.post(
        f"{API}/fleet/factories/heartbeat",
        json={"status": "live", "cadence": {"heartbeatSeconds": 30}, "commands": []},
    )
    rsps.post(f"{API}/fleet/claim", status=204)
    assert main(["run", "--once", "--engine-cmd", "true"], env=env) == 0
    claim = json.loads(rsps.calls[1].request.body)
    assert claim["seats"] == 3 and "team:a" in claim["capabilities"]
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer flf_tok"
    state = json.loads((tmp_path / "cfg" / "state.json").read_text())
    assert state["status"] == "stopped" and state["exitCode"] == 0


def test_cli_run_refuses_a_second_run_on_the_same_config(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    enrolled(env)
    write_state(tmp_path / "cfg" / "state.json", {"pid": os.getppid(), "status": "running"})
    assert main(["run", "--engine", "demo"], env=env) == 2
    assert "another fleet-factory run" in capsys.readouterr().err


# --- status ---------------------------------------------------------------------------------


def test_cli_status_before_any_run(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    enrolled(env)
    assert main(["status"], env=env) == 0
    out = capsys.readouterr().out
    assert "fa" in out and "has not run here" in out


def test_cli_status_shows_seats_jobs_heartbeat_and_gate(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    enrolled(env)
    state = {
        "pid": os.getpid(),
        "factoryId": "fa",
        "api": API,
        "engine": "demo",
        "seats": 2,
        "status": "running",
        "uptimeSeconds": 125,
        "jobs": [
            {
                "jobId": "j1",
                "epoch": 2,
                "stage": "building",
                "runningSeconds": 61,
                "tokens": 1200,
                "costUsd": 0.25,
                "lastOutputLine": "step 1/3 committed",
            }
        ],
        "lastHeartbeat": {"at": "2020-01-01T00:00:00.000000Z", "status": "live"},
        "gate": {"polls": 40, "hits": 37, "misses": 3, "claims": 3, "found": 1, "version": 9},
        "outcomes": {"shipped": 4},
    }
    write_state(tmp_path / "cfg" / "state.json", state)
    assert main(["status"], env=env) == 0
    out = capsys.readouterr().out
    assert "1/2 busy" in out and "37 hits" in out and "3 misses" in out
    assert "j1" in out and "building" in out and "$0.25" in out and "shipped 4" in out
    assert "running, pid" in out and "(live)" in out
    assert main(["status", "--json"], env=env) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["running"] is True and data["gate"]["hits"] == 37


def test_cli_status_notices_a_dead_run(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_state(tmp_path / "cfg" / "state.json", {"pid": dead.pid, "status": "running", "jobs": []})
    assert main(["status", "--json"], env=env) == 0
    assert json.loads(capsys.readouterr().out)["running"] is (os.name != "posix")


# --- operators -----------------------------------------------------------------------------


def test_cli_submit_markdown_and_json(
    rsps: responses.RequestsMock,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env |= {"FLEET_API": API, "FLEET_OPERATOR_TOKEN": "flo_op", "FLEET_PRODUCT": "demo"}
    manifest = tmp_path / "job.md"
    manifest.write_text("---\ntitle: Fix it\n---\nPlease.\n")
    rsps.post(
        f"{API}/fleet/jobs",
        status=201,
        json={
            "job": {"id": "j1", "title": "Fix it", "stage": "queued"},
            "created": True,
            "warning": "unroutable: nobody has gpu",
        },
    )
    assert main(["submit", str(manifest)], env=env) == 0
    captured = capsys.readouterr()
    assert "submitted: j1 'Fix it' -> queued" in captured.out and "unroutable" in captured.err
    request = rsps.calls[0].request
    assert request.body == manifest.read_bytes()
    assert request.headers["X-Fleet-Product"] == "demo"
    assert request.headers["Authorization"] == "Bearer flo_op"
    fields = tmp_path / "job.json"
    fields.write_text(json.dumps({"title": "Other", "body": "b"}))
    rsps.post(
        f"{API}/fleet/jobs",
        status=200,
        json={"job": {"id": "j0", "title": "Other", "stage": "shipped"}, "created": False},
    )
    assert main(["submit", str(fields), "--product", "other", "--json"], env=env) == 0
    assert json.loads(capsys.readouterr().out)["job"]["id"] == "j0"
    assert json.loads(rsps.calls[1].request.body) == {"title": "Other", "body": "b"}
    assert rsps.calls[1].request.headers["X-Fleet-Product"] == "other"


def test_cli_submit_needs_an_operator_token(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enrolled(env)
    assert main(["submit", str(tmp_path / "job.md")], env=env) == 2
    assert "operator token" in capsys.readouterr().err


def test_cli_jobs_table_json_and_stage_filter(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env |= {"FLEET_OPERATOR_TOKEN": "flo_op"}
    jobs = [
        {
            "id": "j1",
            "stage": "building",
            "priority": 7,
            "attempts": 1,
            "maxAttempts": 3,
            "holder": "fa",
            "updatedAt": "2026-01-01T00:00:00.000000Z",
            "title": "One",
        },
        {
            "id": "j2",
            "stage": "building",
            "priority": 5,
            "attempts": 2,
            "maxAttempts": 3,
            "holder": None,
            "title": "Two",
        },
    ]
    rsps.get(f"{API}/fleet/jobs", json={"jobs": jobs, "count": 2})
    assert main(["--api", API, "jobs", "--stage", "building"], env=env) == 0
    out = capsys.readouterr().out.splitlines()
    header = ["ID", "STAGE", "PRI", "TRIES", "HOLDER", "UPDATED", "LAST", "RUN", "TITLE"]
    assert out[0].split() == header
    assert out[1].split()[:5] == ["j1", "building", "7", "1/3", "fa"]
    assert rsps.calls[0].request.url.endswith("?limit=1000&stage=building")
    assert rsps.calls[0].request.headers["X-Fleet-Product"] == "default"
    assert main(["jobs", "--api", API, "--json"], env=env) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2


def test_cli_jobs_show_each_jobs_latest_run(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env |= {"FLEET_OPERATOR_TOKEN": "flo_op"}
    tokens = {"input": 9000, "output": 2500, "cacheRead": 500, "cacheWrite": 0}
    shipped = {
        "epoch": 2,
        "outcome": "shipped",
        "tokens": tokens,
        "costUsd": 0.42,
        "diff": {"files": 3, "insertions": 10, "deletions": 2},
    }
    unknown = {"epoch": 1, "outcome": "failed", "tokens": tokens, "costUsd": None, "diff": None}
    jobs = [
        {"id": "j1", "stage": "shipped", "title": "One", "runs": [{"epoch": 1}, shipped]},
        {"id": "j2", "stage": "failed", "title": "Two", "runs": [unknown]},
        {"id": "j3", "stage": "queued", "title": "Three"},  # a list reply without runs
    ]
    rsps.get(f"{API}/fleet/jobs", json={"jobs": jobs, "count": 3})
    assert main(["--api", API, "jobs"], env=env) == 0
    out = capsys.readouterr().out.splitlines()
    title_at = out[0].index("TITLE")
    assert out[0].index("LAST RUN") < title_at
    rows = {line.split()[0]: line for line in out[1:]}
    assert "shipped $0.42 12k tok +10-2" in rows["j1"]
    assert "failed $? 12k tok" in rows["j2"] and "$0.00" not in rows["j2"]
    assert rows["j3"][out[0].index("LAST RUN") :].split()[0] == "-"
    assert {line.index(t) for line, t in zip(out[1:], ("One", "Two", "Three"), strict=True)} == {
        title_at
    }

    rsps.get(f"{API}/fleet/jobs", json={"jobs": jobs, "count": 3})
    assert main(["--api", API, "jobs", "--json"], env=env) == 0
    listed = {j["id"]: j for j in json.loads(capsys.readouterr().out)["jobs"]}
    assert listed["j1"]["latestRun"] == shipped
    assert listed["j2"]["latestRun"]["costUsd"] is None
    assert listed["j3"]["latestRun"] is None


def test_cli_jobs_with_only_a_factory_token(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    enrolled(env)
    rsps.get(f"{API}/fleet/jobs", json={"jobs": [], "count": 0})
    assert main(["jobs"], env=env) == 0
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer flf_tok"
    assert "X-Fleet-Product" not in rsps.calls[0].request.headers
    assert "no jobs" in capsys.readouterr().out


def test_cli_top_hands_an_operator_client_to_run_top(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def run_top(client: Any, args: Any) -> int:
        seen.update(client=client, args=args)
        return 7

    monkeypatch.setitem(sys.modules, "factory_cli.top", types.SimpleNamespace(run_top=run_top))
    env |= {"FLEET_API": API, "FLEET_OPERATOR_TOKEN": "flo_op"}
    assert main(["top", "--interval", "0.5", "--product", "demo"], env=env) == 7
    assert seen["client"].product == "demo" and seen["client"].token == "flo_op"
    assert seen["client"].api == API and seen["args"].interval == 0.5
    assert seen["args"].json is False
    del env["FLEET_API"]
    assert main(["top", "--api", API, "--json"], env=env) == 7
    assert seen["args"].json is True and seen["args"].product == "default"


def test_cli_config_masks_tokens(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    path = enrolled(env, token="flf_abcdefghijklmnopqrstuvwxyz")
    env["FLEET_SEATS"] = "3"
    assert main(["config", "--json"], env=env) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["configFile"] == str(path)
    assert report["settings"]["token"]["value"] == "flf_abcd…"
    assert report["settings"]["seats"] == {"value": 3, "from": "env FLEET_SEATS"}
    assert "abcdefghijklmnop" not in json.dumps(report)


def test_cli_warns_about_a_readable_config(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    enrolled(env).chmod(0o644)
    main(["config"], env=env)
    assert "readable by others" in capsys.readouterr().err
