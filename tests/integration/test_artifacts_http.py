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
    assert Coordinator(azure_backend).artifacts.list(product, job["id"]) == ([], False)


def test_http_artifact_read_urls_are_downloads_of_allowed_types(
    running_stack: RunningStack,
) -> None:
    api = running_stack.api
    product = f"a{uuid.uuid4().hex[:10]}"
    op = running_stack.operator(product)
    factory = bearer(running_stack.enroll(product, "f"))
    claim = running_stack.submit_and_claim(product, factory)
    job, epoch = claim["job"], claim["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}/artifacts"
    page = {"leaseEpoch": epoch, "name": "out/page.html", "contentType": "text/html"}
    refused = requests.post(url, json=page, headers=factory, timeout=30)
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"]["problems"][0]["path"] == "contentType"
    for name, declared in (("out/notes.txt", "text/plain"), ("out/sneaky.txt", "text/plain")):
        issued = requests.post(
            url,
            json={"leaseEpoch": epoch, "name": name, "contentType": declared},
            headers=factory,
            timeout=30,
        ).json()
        headers = dict(issued["headers"])
        if name.endswith("sneaky.txt"):  # the holder sets another type on its own PUT
            headers["x-ms-blob-content-type"] = "text/html"
        put = requests.put(issued["url"], data=b"<script>x</script>", headers=headers, timeout=30)
        assert put.status_code == 201, put.text
    listed = requests.get(url, headers=op, timeout=30).json()["artifacts"]
    types = {a["name"]: a["contentType"] for a in listed}
    assert types == {"out/notes.txt": "text/plain", "out/sneaky.txt": "application/octet-stream"}
    for artifact in listed:
        link = requests.get(f"{url}/{artifact['id']}", headers=op, timeout=30).json()["url"]
        assert "rscd=attachment" in link
        got = requests.get(link, timeout=30)
        assert got.status_code == 200 and got.content == b"<script>x</script>"
        filename = artifact["name"].rsplit("/", 1)[-1]
        assert got.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
        assert got.headers["Content-Type"] == artifact["contentType"]
