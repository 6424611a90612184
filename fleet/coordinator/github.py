"""GitHub repositories bound to products: the bindings, and where a delivery may land.

An operator binds a repository to a product with the webhook's secret, the authors whose
issues may become jobs (GitHub's ``author_association``) and, optionally, a label an issue
must carry. Two documents hold a binding:

- the **binding** (``github-<repository>`` in the product's partition): the secret and the
  filters, what the operator manages (one per product and repository);
- the **index** (``github-repo-<repository>`` in the system partition): which product the
  repository is bound to, so a delivery, which names only its repository, finds its product
  with one point read. Its id is the repository, so a repository is bound to one product at
  most: binding it to a second one is refused (409) until the first unbinds it.

The index is written first and removed last, so a binding never exists without it; an index
left alone (a bind whose second write failed, an unbind whose last one did) routes nothing
(a delivery also needs the binding) and is repaired by the same call retried.

The secret is kept as it was given, in the binding document: verifying GitHub's HMAC-SHA256
signature needs the secret itself (a one-way hash of it could not verify anything). It is
never returned by any operation and never logged: ``Binding.secret`` is a ``SecretStr``,
which shows as ``**********`` in every repr and serialization but the stored one.

Verified deliveries that would make a job are recorded by their ``X-GitHub-Delivery`` id
(``github-delivery-<id>`` in the product's partition, with a TTL): the same delivery again
(GitHub's redelivery, or someone replaying it) is one create that fails, and makes nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import SecretStr

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.clock import Clock
from fleet.coordinator.product import SYSTEM_PARTITION
from fleet.domain.audit import new_event, sortable_stamp
from fleet.domain.models import Document, Timestamp, format_ts
from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound, ValidationFailed
from fleet.store.ports import DocumentStore
from fleet.store.queries import DOCS_OF_TYPE

# GitHub's author_association values (an issue's author's relation to the repository).
Association = Literal[
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIMER",
    "FIRST_TIME_CONTRIBUTOR",
    "MANNEQUIN",
    "MEMBER",
    "NONE",
    "OWNER",
]
ASSOCIATIONS: tuple[Association, ...] = get_args(Association)
DEFAULT_ASSOCIATIONS: tuple[Association, ...] = ("OWNER", "MEMBER", "COLLABORATOR")

# owner/name as GitHub allows them: an owner of up to 39 letters, digits and '-' (not
# first), a name of up to 100 letters, digits, '.', '_' and '-'.
REPOSITORY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"
REPOSITORY = re.compile(REPOSITORY_PATTERN)
# GitHub's delivery ids are GUIDs; anything that can be part of a document id is taken.
DELIVERY_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
DELIVERY = re.compile(DELIVERY_PATTERN)

WRITE_RETRIES = 3  # rounds of re-reading the index after losing a race for it
MIN_SECRET = 16
MAX_SECRET = 256
MAX_LABEL = 50  # GitHub's own limit on a label's name
# How long a delivery id is remembered. GitHub redelivers from the last few days; an older
# replay makes nothing new either: the job is idempotent on the issue, for good.
DELIVERY_TTL_SECONDS = 7 * 24 * 3600


class RepositoryBound(AlreadyExists):
    """The repository is bound to another product."""

    code = "already_bound"


def valid_repository(repository: str) -> bool:
    """``owner/name`` as GitHub allows it (a name is never ``.`` or ``..``)."""
    return bool(REPOSITORY.match(repository)) and repository.split("/")[1] not in (".", "..")


def printable(text: str) -> str:
    """``text`` if it has no control characters and is valid Unicode (no lone surrogates:
    a secret is signed as UTF-8); else ValueError."""
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ValueError("control characters and lone surrogates are not allowed")
    return text


def repository_key(repository: str) -> str:
    """The repository as document ids name it: GitHub's names are case-insensitive, and an
    id may not hold '/'."""
    return repository.lower().replace("/", ":")


def binding_id(repository: str) -> str:
    return f"github-{repository_key(repository)}"


def index_id(repository: str) -> str:
    return f"github-repo-{repository_key(repository)}"


def delivery_id(delivery: str) -> str:
    return f"github-delivery-{delivery}"


class Binding(Document):
    """A repository bound to the product (in the product's partition)."""

    type: Literal["tracker_binding"] = "tracker_binding"
    source: Literal["github"] = "github"
    repository: str  # as the operator spelled it
    secret: SecretStr
    allowedAssociations: tuple[Association, ...]
    label: str | None = None
    createdAt: Timestamp
    createdBy: str
    updatedAt: Timestamp
    updatedBy: str
    secretSetAt: Timestamp
    secretSetBy: str

    def to_doc(self) -> dict[str, Any]:
        # The one place the secret is written out: to the binding document itself.
        return {**super().to_doc(), "secret": self.secret.get_secret_value()}

    def allows(self, association: str) -> bool:
        return association in self.allowedAssociations

    def labelled(self, labels: list[str]) -> bool:
        return self.label is None or self.label.lower() in (lab.lower() for lab in labels)

    def as_view(self) -> dict[str, Any]:
        """What an operator may see of it: everything but the secret."""
        return {
            "product": self.productId,
            "repository": self.repository,
            "allowedAssociations": list(self.allowedAssociations),
            "label": self.label,
            "secretSet": True,
            "secretSetAt": format_ts(self.secretSetAt),
            "secretSetBy": self.secretSetBy,
            "createdAt": format_ts(self.createdAt),
            "createdBy": self.createdBy,
            "updatedAt": format_ts(self.updatedAt),
            "updatedBy": self.updatedBy,
        }


class BindingIndex(Document):
    """Which product a repository is bound to (in the system partition)."""

    type: Literal["tracker_binding_index"] = "tracker_binding_index"
    repository: str
    product: str
    boundAt: Timestamp
    boundBy: str


class GitHubBindings:
    """The bindings of repositories to products, and the record of deliveries."""

    def __init__(
        self,
        docs: DocumentStore,
        clock: Clock,
        register: Callable[[str], None],
        fleet_log: FleetLog,
    ) -> None:
        self.docs = docs
        self.clock = clock
        self.register = register  # the product registry's: a bound product exists
        self.log = fleet_log

    # --- what operators do -----------------------------------------------------------

    def put(
        self,
        product: str,
        repository: str,
        secret: str | None,
        allowed: tuple[Association, ...],
        label: str | None,
        actor: str,
    ) -> tuple[Binding, bool]:
        """Bind ``repository`` to ``product``, or change its binding; returns (binding,
        created). ``secret`` None keeps the binding's (a new binding needs one). 409 when
        the repository is bound to another product; nothing is written then."""
        if not valid_repository(repository):
            raise ValidationFailed.one("repository", "invalid_repository", "owner/name")
        current = self._binding(product, repository)
        if current is None and secret is None:
            raise ValidationFailed.one("secret", "missing", "a new binding needs the secret")
        now = self.clock.now()
        self._claim(product, repository, actor, now)
        self.register(product)
        fields: dict[str, Any] = {
            "repository": repository,
            "allowedAssociations": tuple(dict.fromkeys(allowed)),
            "label": label,
            "updatedAt": now,
            "updatedBy": actor,
        }
        if secret is not None:
            fields.update(secret=SecretStr(secret), secretSetAt=now, secretSetBy=actor)
        if current is None:
            binding = Binding(
                id=binding_id(repository),
                productId=product,
                createdAt=now,
                createdBy=actor,
                **fields,
            )
        else:
            binding = current.evolve(**fields)
        said = "bound" if current is None else "binding changed"
        if secret is not None and current is not None:
            said += " (new secret)"
        event = new_event(
            "tracker_bound",
            actor,
            now,
            reason=f"{repository}: {said}",
            repository=repository,
            label=label,
        )
        stored = Binding.from_doc(self.docs.upsert(binding.to_doc()))
        # Beside, not in the binding: an unbinding deletes the binding document.
        self.log.beside(product, f"bind-{binding.id}-{sortable_stamp(now)}", event)
        return stored, current is None

    def of_product(self, product: str) -> list[Binding]:
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "tracker_binding"})
        return sorted((Binding.from_doc(r) for r in rows), key=lambda b: b.repository.lower())

    def delete(self, product: str, repository: str, actor: str = "operator") -> None:
        """Unbind: deliveries naming the repository are refused from now on. 404 when the
        product has no binding of it (and no index left over naming it)."""
        found = False
        with contextlib.suppress(NotFound):
            self.docs.delete(product, binding_id(repository))
            found = True
        index = self._index(repository)
        if index is not None and index.product == product:
            with contextlib.suppress(NotFound, ConcurrencyConflict):
                self.docs.delete(SYSTEM_PARTITION, index.id, etag=index.etag)
            found = True
        if not found:
            raise NotFound(f"{repository} is not bound to this product", repository=repository)
        now = self.clock.now()
        event = new_event(
            "tracker_unbound", actor, now, reason=f"{repository}: unbound", repository=repository
        )
        key = f"unbind-{binding_id(repository)}-{sortable_stamp(now)}"
        self.log.beside(product, key, event)

    # --- what a delivery does --------------------------------------------------------

    def route(self, repository: str) -> Binding | None:
        """The binding a delivery naming ``repository`` is verified with and lands in: one
        point read of the index, one of the binding. None: the repository is not bound."""
        if not valid_repository(repository):
            return None
        index = self._index(repository)
        if index is None:
            return None
        return self._binding(index.product, repository)

    def first_delivery(self, product: str, delivery: str, repository: str) -> bool:
        """Record a delivery once: False when it was recorded already (one create)."""
        try:
            self.docs.create(
                {
                    "id": delivery_id(delivery),
                    "productId": product,
                    "type": "github_delivery",
                    "repository": repository,
                    "at": format_ts(self.clock.now()),
                    "ttl": DELIVERY_TTL_SECONDS,
                }
            )
        except AlreadyExists:
            return False
        return True

    def forget_delivery(self, product: str, delivery: str) -> None:
        """Give a delivery id back (its job was not made): GitHub's redelivery may try again."""
        with contextlib.suppress(NotFound):
            self.docs.delete(product, delivery_id(delivery))

    # --- the documents ---------------------------------------------------------------

    def _binding(self, product: str, repository: str) -> Binding | None:
        try:
            return Binding.from_doc(self.docs.read(product, binding_id(repository)))
        except NotFound:
            return None

    def _index(self, repository: str) -> BindingIndex | None:
        try:
            return BindingIndex.from_doc(self.docs.read(SYSTEM_PARTITION, index_id(repository)))
        except NotFound:
            return None

    def _claim(self, product: str, repository: str, actor: str, now: datetime) -> None:
        """The index names ``product``: created, or already so; another product's is 409."""
        for _ in range(WRITE_RETRIES):
            index = self._index(repository)
            if index is None:
                try:
                    self.docs.create(
                        BindingIndex(
                            id=index_id(repository),
                            productId=SYSTEM_PARTITION,
                            repository=repository,
                            product=product,
                            boundAt=now,
                            boundBy=actor,
                        ).to_doc()
                    )
                except AlreadyExists:
                    continue  # bound meanwhile: to which product?
                return
            if index.product != product:
                raise RepositoryBound(
                    f"{repository} is bound to another product: unbind it there first",
                    repository=repository,
                )
            return
        raise ConcurrencyConflict(f"the binding of {repository} is changing too fast; retry")
