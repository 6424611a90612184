"""Artifacts: job outputs in Blob Storage, written through short-lived SAS URLs.

A URL to write is issued only to the current lease holder, for one blob under
``{productId}/{jobId}/{epoch}/{name}``: the epoch is in the path, so even a URL obtained
before a reassignment cannot overwrite what the job's next attempt writes, and a zombie
(stale epoch) gets no URL at all. A pointer document per artifact lists it; its size and
content type are recorded from the blob itself once it exists.

Least exposure: an attempt stores at most ``AttemptQuotas.artifacts`` artifacts (100 by
default: ``fleet.coordinator.attempt_quota``); a content type comes from ``CONTENT_TYPES``
(nothing a browser would run: no HTML, SVG or script); and a read URL makes the blob a
download (``rscd=attachment``) of an allowed type (``rsct``), whatever was uploaded.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from typing import Any

from fleet.coordinator.attempt_quota import ARTIFACTS, AttemptQuota
from fleet.coordinator.clock import Clock
from fleet.coordinator.writer import Writer
from fleet.domain import jobs as J
from fleet.domain.ids import key_digest
from fleet.domain.models import format_ts
from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    NotFound,
    QuotaExceeded,
    ValidationFailed,
)
from fleet.store.ports import BlobStore, DocumentStore
from fleet.store.queries import ARTIFACTS_OF_JOB

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_NAME = 200
UPLOAD_MINUTES = 15
DOWNLOAD_MINUTES = 15
LIST_MAX = 500  # a job's artifacts listed at most: its newest attempts' first

# The content types an artifact may declare: text, data, archives and images a browser
# shows but never runs. HTML, SVG, XML and scripts are refused (400): a read URL is a
# download anyway, but an artifact is the factory's data, not a page of this origin's.
CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "text/plain",
        "text/markdown",
        "text/csv",
        "text/x-diff",
        "text/x-patch",
        "application/json",
        "application/x-ndjson",
        "application/yaml",
        "application/gzip",
        "application/zip",
        "application/x-tar",
        "application/octet-stream",
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
    }
)
DEFAULT_CONTENT_TYPE = "application/octet-stream"  # a blob uploaded without one
# A type of the allowlist, optionally with a charset: ``text/plain; charset=utf-8``.
_CONTENT_TYPE = re.compile(
    r"^(?P<type>[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*)"
    r"(?:\s*;\s*charset=(?P<charset>[a-z0-9][a-z0-9._-]{0,39}))?$"
)


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


def allowed_content_type(content_type: str) -> str | None:
    """``content_type`` as stored (lower case, one space before a charset), if the
    allowlist has its type; else None."""
    match = _CONTENT_TYPE.match(content_type.strip().lower())
    if match is None or match["type"] not in CONTENT_TYPES:
        return None
    return f"{match['type']}; charset={match['charset']}" if match["charset"] else match["type"]


def validate_content_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    allowed = allowed_content_type(content_type)
    if allowed is None:
        raise ValidationFailed.one(
            "contentType",
            "content_type_not_allowed",
            "one of " + ", ".join(sorted(CONTENT_TYPES)) + " (optionally with a charset)",
        )
    return allowed


def served_type(content_type: str | None) -> str:
    """What a read URL answers as: the recorded type if allowed, else a download of bytes."""
    return (content_type and allowed_content_type(content_type)) or DEFAULT_CONTENT_TYPE


def _attachment(name: str) -> str:
    # Names are letters, digits, '.', '_', '-' and '/' (``NAME``): nothing to escape.
    return f'attachment; filename="{name.rsplit("/", 1)[-1]}"'


class Artifacts:
    def __init__(
        self,
        writer: Writer,
        docs: DocumentStore,
        blobs: BlobStore,
        clock: Clock,
        container: str,
        quota: AttemptQuota,
    ) -> None:
        self.writer = writer  # the jobs whose holders write artifacts (fenced on their epoch)
        self.docs = docs
        self.blobs = blobs
        self.clock = clock
        self.container = container
        self.quota = quota  # the attempt's artifacts quota

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
        """A write-only URL for one blob of this attempt. Fenced: the holder at this epoch.

        A new name counts against the attempt's artifacts quota (one patch; given back when
        the name was asked for before): past it, ``QuotaExceeded`` and no pointer, no URL.
        A name asked for again gets a new URL to the same blob, even at the quota (one
        point read, only then)."""
        validate_name(name)
        content_type = validate_content_type(content_type)
        J.check_fence(self.writer.get_job(product, job_id), factory_id, epoch)
        artifact_id = self._id(job_id, epoch, name)
        counted = True
        try:
            self.quota.take(product, job_id, epoch, {ARTIFACTS: 1})
        except QuotaExceeded:
            if not self._exists(product, artifact_id):
                raise
            counted = False
        now = self.clock.now()
        blob = f"{product}/{job_id}/{epoch}/{name}"
        expires = now + timedelta(minutes=UPLOAD_MINUTES)
        pointer = {
            "id": artifact_id,
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
        try:
            self.docs.create(pointer)
        except AlreadyExists:
            if counted:
                self.quota.give_back(product, job_id, epoch, {ARTIFACTS: 1})
        url = self.blobs.sas_url(self.container, blob, permissions="cw", expires_at=expires)
        return {
            "artifactId": pointer["id"],
            "url": url,
            "method": "PUT",
            "headers": {"x-ms-blob-type": "BlockBlob", **_content(content_type)},
            "expiresAt": format_ts(expires),
            "blob": blob,
        }

    def _exists(self, product: str, artifact_id: str) -> bool:
        try:
            self.docs.read(product, artifact_id)
        except NotFound:
            return False
        return True

    def list(
        self, product: str, job_id: str, limit: int = LIST_MAX
    ) -> tuple[list[dict[str, Any]], bool]:
        """The job's artifacts, every attempt's, oldest attempt first (at most ``limit``:
        the newest attempts' when there are more), and whether there were more. One
        bounded query on the job; size and type read from the blob once it has been
        uploaded (and then kept on the pointer)."""
        self.writer.get_job(product, job_id)
        rows = self.docs.query(ARTIFACTS_OF_JOB, product, {"jobId": job_id, "top": limit + 1})
        out = []
        for row in sorted(rows[:limit], key=lambda r: (r["epoch"], r["name"])):
            if row.get("size") is None:
                row = self._finalize(row)
            out.append(_view(row))
        return out, len(rows) > limit

    def _finalize(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            info = self.blobs.info(self.container, row["blob"])
        except NotFound:
            return row  # not uploaded (yet)
        # What the uploader set, if the allowlist has it (it could set any type on its PUT).
        kind = served_type(info.content_type)
        updated = {**row, "size": info.size, "contentType": kind}
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
        # A download, never a page: whatever type the uploader set on the blob, a browser
        # following this URL saves it (``rscd``) as an allowed type (``rsct``).
        url = self.blobs.sas_url(
            self.container,
            row["blob"],
            permissions="r",
            expires_at=expires,
            content_disposition=_attachment(row["name"]),
            content_type=served_type(row.get("contentType")),
        )
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
