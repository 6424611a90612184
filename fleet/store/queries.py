"""Every document query the project runs, named in one place.

Each query has its Cosmos SQL text and an equivalent Python description the in-memory twin
executes (filter, single-field order, TOP). The contract suite runs them on both backends and
checks they agree. Every query is confined to one partition: the adapter passes the partition
key and the SQL names it (``c.productId = @partition``), so no query fans out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.store.expr import UNDEFINED, lookup

Where = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]


@dataclass(frozen=True)
class NamedQuery:
    name: str
    sql: str
    where: Where  # the twin's filter: (doc, params) -> bool; partition already applied
    order_by: str | None = None  # '/field' path; ascending unless descending
    descending: bool = False
    top_param: str | None = None  # name of the param that bounds the result size

    def __post_init__(self) -> None:
        if "c.productId = @partition" not in self.sql:
            raise ValueError(f"query {self.name} must name the partition key")


def _field_equals(path: str, param: str) -> Where:
    def where(doc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        value = lookup(doc, path)
        return value is not UNDEFINED and value == params[param]

    return where


def _all(*wheres: Where) -> Where:
    return lambda doc, params: all(w(doc, params) for w in wheres)


DOCS_OF_TYPE = NamedQuery(
    name="docs_of_type",
    sql="SELECT * FROM c WHERE c.productId = @partition AND c.type = @type",
    where=_field_equals("/type", "type"),
)

# The claim's candidate query: the first K jobs of a stage in queue order. One field order
# (``queueKey`` = priority band + submit time) so no composite index is needed.
JOBS_IN_STAGE = NamedQuery(
    name="jobs_in_stage",
    sql=(
        "SELECT TOP @top * FROM c WHERE c.productId = @partition AND c.type = 'job' "
        "AND c.stage = @stage ORDER BY c.queueKey ASC"
    ),
    where=_all(lambda doc, _: doc.get("type") == "job", _field_equals("/stage", "stage")),
    order_by="/queueKey",
    top_param="top",
)

ALL_QUERIES = (DOCS_OF_TYPE, JOBS_IN_STAGE)
