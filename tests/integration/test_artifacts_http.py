"""Artifacts over HTTP on the local stack: a real SAS upload to Azurite, a zombie denied."""

from __future__ import annotations

import uuid

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


def test_http_artifact_upload_download_and_zombie_denied(
    running_stack: RunningStack, azure_backend: Stores
) -> None:
    api = running_stack.api
    product = f"a{uuid.uuid4().hex[:10]}"
    op = running_stack.operator(product)
    old = bearer(running_stack.enroll(product, "old"))
    claim = running_stack.submit_and_claim(product, old)
    job, epoch = claim["job"], claim["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}/artifacts"
    issued = requests.post(
        url,
        json={"leaseEpoch": epoch, "name": "logs/build.log", "contentType": "text/plain"},
        headers=old,
        timeout=30,
    )
    assert issued.status_code == 201, issued.text
    upload = issued.json()
    put = requests.put(upload["url"], data=b"compiled ok\n", headers=upload["headers"], timeout=30)
    assert put.status_code == 201, put.text
    (artifact,) = requests.get(url, headers=op, timeout=30).json()["artifacts"]
    assert (artifact["size"], artifact["contentType"]) == (12, "text/plain")
    download = requests.get(f"{url}/{artifact['id']}", headers=op, timeout=30).json()
    assert requests.get(download["url"], timeout=30).content == b"compiled ok\n"
    # The lease is taken away (operator requeue): the old holder is now a zombie.
    requests.post(f"{api}/fleet/jobs/{job['id']}/requeue", json={}, headers=op, timeout=30)
    denied = requests.post(
        url, json={"leaseEpoch": epoch, "name": "logs/build.log"}, headers=old, timeout=30
    )
    assert denied.status_code == 409 and denied.json()["error"] == "fenced"
    # Its old write URL names the old epoch's blob: nothing of the next attempt is touched.
    fresh = bearer(running_stack.enroll(product, "fresh"))
    again = requests.post(f"{api}/fleet/claim", json={}, headers=fresh, timeout=30).json()
    assert again["lease"]["epoch"] > epoch and f"/{epoch}/" in upload["blob"]
    deleted = requests.delete(f"{url}/{artifact['id']}", headers=op, timeout=30)
    assert deleted.status_code == 204
    assert requests.get(url, headers=op, timeout=30).json()["artifacts"] == []
    assert requests.delete(f"{url}/{artifact['id']}", headers=fresh, timeout=30).status_code == 403
    assert Coordinator(azure_backend).artifacts.list(product, job["id"]) == []
