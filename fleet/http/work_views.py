"""What the work-structure operations (``fleet.http.work``) answer: artifacts, a DAG, the
tracker bridge. Their replies are built from what the coordinator answers as plain data
(``model_validate``: a reply that does not match fails loudly), or from jobs (``JobView``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fleet.domain.stages import Stage
from fleet.http.views import JobView, View, omitted

# --- artifacts ---------------------------------------------------------------------------


class ArtifactUpload(View):
    """Where to upload one blob of this attempt."""

    artifactId: str
    url: str = Field(description="A write-only SAS URL: PUT the bytes here.")
    method: Literal["PUT"]
    headers: dict[str, str] = Field(description="Send these headers with the upload.")
    expiresAt: str = Field(description="The URL works until then.")
    blob: str = Field(description="`{productId}/{jobId}/{epoch}/{name}`.")


class Artifact(View):
    """An artifact's pointer: size and content type once the blob is uploaded."""

    id: str
    jobId: str
    epoch: int = Field(description="The attempt that wrote it.")
    name: str
    blob: str
    contentType: str | None
    size: int | None = Field(description="Bytes; null until the blob is uploaded.")
    uploadedBy: str = Field(description="The factory that asked for the upload URL.")
    createdAt: str


class ArtifactList(View):
    artifacts: list[Artifact] = Field(description="Oldest attempt first, then by name.")
    truncated: bool = Field(
        description="The job has more (older attempts') than the list's bound: those are left out."
    )


class ArtifactLink(View):
    url: str = Field(description="A read-only SAS URL.")
    expiresAt: str = Field(description="The URL works until then.")


# The link's keys first, as the reply always had them (pydantic takes the last base's fields
# first).
class ArtifactDownload(Artifact, ArtifactLink):
    """Where to download the artifact, and the artifact."""


# --- DAGs ---------------------------------------------------------------------------------


class Children(View):
    parent: JobView = Field(description="The parent, now waiting for its children.")
    children: list[JobView]


class MissingDagNode(View):
    """A job waited for that does not exist."""

    id: str
    missing: Literal[True]


_DEPS = "Absent where the tree stops: a job already on the path (a cycle), or past 500 jobs."


class RedactedDagNode(View):
    """A job the calling factory may not read (it neither holds it nor could review it):
    its id and stage only, and the jobs it waits for."""

    id: str
    stage: Stage
    redacted: Literal[True]
    deps: list[DagNode | RedactedDagNode | MissingDagNode] | None = omitted(_DEPS)


class DagNode(View):
    """A job and, recursively, the jobs it waits for."""

    id: str
    title: str
    stage: Stage
    mode: Literal["all", "any"] | None = Field(description="How it waits; null: it waits for none.")
    holder: str | None = Field(description="The factory holding the lease, if any.")
    deps: list[DagNode | RedactedDagNode | MissingDagNode] | None = omitted(_DEPS)
