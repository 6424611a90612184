"""Artifacts: job outputs in Blob Storage, written through short-lived SAS URLs.

A URL to write is issued only to the current lease holder, for one blob under
``{productId}/{jobId}/{epoch}/{name}``: the epoch is in the path, so even a URL obtained
before a reassignment cannot overwrite what the job's next attempt writes, and a zombie
(stale epoch) gets no URL at all. A pointer document per artifact lists it; its size and
content type are recorded from the blob itself once it exists.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from typing import Any

from fleet.coordinator.clock import Clock
from fleet.coordinator.writer import Writer
from fleet.domain import jobs as J
from fleet.domain.ids import key_digest
from fleet.domain.models import format_ts
from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound, ValidationFailed
from fleet.store.ports import BlobStore, DocumentStore
from fleet.store.queries import DOCS_OF_TYPE

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_NAME = 200
UPLOAD_MINUTES = 15
DOWNLOAD_MINUTES = 15


class ArtifactNotFound(NotFound):
    """No such artifact."""

    code = "artifact_not_found"


def validate_name(name: str) -> str:
    if not NAME.match(name) or len(name) > MAX_NAME or ".." in name:
        raise ValidationFailed.one(
            "name",
            "string_pattern_mismatch",
            "a relative path of letters, digits, '.', '_', '-' separated by '/' "
            f"(at most {MAX_NAME} characters, no '..')",
        )
    return name


class Artifacts:
    def __init__(
        self,
        writer: Writer,
        docs: DocumentStore,
        blobs: BlobStore,
        clock: Clock,
        container: str = "artifacts",
    ) -> None:
        self.writer = writer  # the jobs whose holders write artifacts (fenced on their epoch)
        self.docs = docs
        self.blobs = blobs
        self.clock = clock
        self.container = container

    def _id(self, job_id: str, epoch: int, name: str) -> str:
        return f"art-{job_id}-{epoch}-{key_digest(name)[:16]}"

    def issue_upload(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        name: str,
        content_type: str | None,
    ) -> dict[str, Any]:
        """A write-only URL for one blob of this attempt. Fenced: the holder at this epoch."""
        validate_name(name)
        J.check_fence(self.writer.get_job(product, job_id), factory_id, epoch)
        now = self.clock.now()
        blob = f"{product}/{job_id}/{epoch}/{name}"
        expires = now + timedelta(minutes=UPLOAD_MINUTES)
        pointer = {
            "id": self._id(job_id, epoch, name),
            "productId": product,
            "type": "artifact",
            "jobId": job_id,
            "epoch": epoch,
            "name": name,
            "blob": blob,
            "contentType": content_type,
            "size": None,
            "uploadedBy": factory_id,
            "createdAt": format_ts(now),
        }
        # The same name asked for again in this attempt: same blob, a new URL.
        with contextlib.suppress(AlreadyExists):
            self.docs.create(pointer)
        url = self.blobs.sas_url(self.container, blob, permissions="cw", expires_at=expires)
        return {
            "artifactId": pointer["id"],
            "url": url,
            "method": "PUT",
            "headers": {"x-ms-blob-type": "BlockBlob", **_content(content_type)},
            "expiresAt": format_ts(expires),
            "blob": blob,
        }

    def list(self, product: str, job_id: str) -> list[dict[str, Any]]:
        """The job's artifacts, every attempt's; size and type read from the blob once it
        has been uploaded (and then kept on the pointer)."""
        self.writer.get_job(product, job_id)
        rows = [
            r
            for r in self.docs.query(DOCS_OF_TYPE, product, {"type": "artifact"})
            if r.get("jobId") == job_id
        ]
        out = []
        for row in sorted(rows, key=lambda r: (r["epoch"], r["name"])):
            if row.get("size") is None:
                row = self._finalize(row)
            out.append(_view(row))
        return out

    def _finalize(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            info = self.blobs.info(self.container, row["blob"])
        except NotFound:
            return row  # not uploaded (yet)
        updated = {**row, "size": info.size, "contentType": info.content_type}
        try:
            return self.docs.replace(updated, etag=row.get("_etag"))
        except (ConcurrencyConflict, NotFound):  # a concurrent finalize or delete: fine
            return updated

    def download_url(self, product: str, job_id: str, artifact_id: str) -> dict[str, Any]:
        row = self._pointer(product, job_id, artifact_id)
        expires = self.clock.now() + timedelta(minutes=DOWNLOAD_MINUTES)
        try:
            self.blobs.info(self.container, row["blob"])
        except NotFound:
            raise ArtifactNotFound(
                f"artifact {row['name']} was never uploaded", artifactId=artifact_id
            ) from None
        url = self.blobs.sas_url(self.container, row["blob"], permissions="r", expires_at=expires)
        return {"url": url, "expiresAt": format_ts(expires), **_view(row)}

    def delete(self, product: str, job_id: str, artifact_id: str) -> None:
        row = self._pointer(product, job_id, artifact_id)
        with contextlib.suppress(NotFound):  # never uploaded: only the pointer goes
            self.blobs.delete(self.container, row["blob"])
        self.docs.delete(product, artifact_id)

    def _pointer(self, product: str, job_id: str, artifact_id: str) -> dict[str, Any]:
        try:
            row = self.docs.read(product, artifact_id)
        except NotFound:
            row = {}
        if row.get("type") != "artifact" or row.get("jobId") != job_id:
            raise ArtifactNotFound(f"no artifact {artifact_id} on job {job_id}")
        return row


def _content(content_type: str | None) -> dict[str, str]:
    return {"x-ms-blob-content-type": content_type} if content_type else {}


def _view(row: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "id",
        "jobId",
        "epoch",
        "name",
        "blob",
        "contentType",
        "size",
        "uploadedBy",
        "createdAt",
    )
    return {k: row.get(k) for k in keep}
