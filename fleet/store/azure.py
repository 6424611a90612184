"""Azure adapters of the store ports: Cosmos DB for NoSQL, Table Storage, Blob Storage.

The only module that imports the Azure SDKs. SDK errors are translated into the project's
error tree here (the SDK error kept as ``__cause__``), so callers never see an SDK type.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    generate_blob_sas,
)
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64EncodePolicy
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    InvalidStoreRequest,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from fleet.settings import CosmosSettings, Settings, StorageSettings
from fleet.store.counters import StoreCounters
from fleet.store.expr import Expr, filter_predicate
from fleet.store.ports import ETAG, BlobInfo, Doc, Entity, Incr, PatchOp, Remove, Set, Stores
from fleet.store.queries import NamedQuery

log = logging.getLogger(__name__)

TABLES = ("heartbeats", "ratelimits", "commands")

# The indexing policy the claim query needs: equality on type/stage, order on queueKey.
# Bulky free-text fields (the manifest body, embedded events) are excluded: they are never
# filtered on and indexing them would add RU to every job write. The composite indexes serve
# the hot ordered queries (the claim's top-K by queueKey, the oldest queued by createdAt)
# from the index, so a product with a long history of finished jobs does not make Cosmos
# read past them (range indexes alone serve the filter or the order, not both).
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [
        {"path": "/body/?"},
        {"path": "/events/*"},
        {"path": "/manifest/*"},
        {"path": '/"_etag"/?'},
    ],
    "compositeIndexes": [
        [
            {"path": "/type", "order": "ascending"},
            {"path": "/stage", "order": "ascending"},
            {"path": "/queueKey", "order": "ascending"},
        ],
        [
            {"path": "/type", "order": "ascending"},
            {"path": "/stage", "order": "ascending"},
            {"path": "/createdAt", "order": "ascending"},
        ],
    ],
}


def _retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for name, scale in (("x-ms-retry-after-ms", 1000.0), ("Retry-After", 1.0)):
        raw = headers.get(name) or headers.get(name.lower())
        if raw:
            try:
                return float(raw) / scale
            except ValueError:
                continue
    return None


def _status_of(exc: AzureError) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None and getattr(exc, "response", None) is not None:
        status = getattr(exc.response, "status_code", None)  # type: ignore[attr-defined]
    return int(status) if status is not None else None


def translate(exc: AzureError, *, what: str, conditional: str = "etag") -> NoReturn:
    """Raise the project error for an SDK error. ``conditional`` names what a 412 means."""
    status = _status_of(exc)
    headers: Mapping[str, Any] | None = None
    response = getattr(exc, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    if isinstance(exc, CosmosHttpResponseError) and exc.headers:
        headers = exc.headers
    error: StoreError
    if status == 404 or isinstance(exc, ResourceNotFoundError):
        error = NotFound(f"{what} not found")
    elif status == 409 or isinstance(exc, ResourceExistsError):
        error = AlreadyExists(f"{what} already exists")
    elif status == 412 or isinstance(exc, ResourceModifiedError):
        if conditional == "predicate":
            error = PreconditionFailed(f"{what} fails the condition")
        else:
            error = ConcurrencyConflict(f"{what} changed since it was read")
    elif status in (408, 429, 449, 500, 502, 503, 504) or isinstance(
        exc, ServiceRequestError | ServiceResponseError
    ):
        error = StoreUnavailable(
            f"store unavailable ({status or type(exc).__name__}) for {what}",
            retry_after=_retry_after_seconds(headers),
        )
    elif status == 400:
        error = InvalidStoreRequest(f"store rejected the request for {what}: {_brief(exc)}")
    else:
        error = StoreError(f"store error {status} for {what}: {_brief(exc)}")
    raise error from exc


def _brief(exc: AzureError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.splitlines()[0][:300] if message else type(exc).__name__


@contextmanager
def _translated(what: str, conditional: str = "etag") -> Iterator[None]:
    try:
        yield
    except AzureError as exc:
        translate(exc, what=what, conditional=conditional)


# --- Cosmos ------------------------------------------------------------------------


def _patch_op(op: PatchOp) -> dict[str, Any]:
    if isinstance(op, Set):
        return {"op": "set", "path": op.path, "value": op.value}
    if isinstance(op, Incr):
        return {"op": "incr", "path": op.path, "value": op.value}
    if isinstance(op, Remove):
        return {"op": "remove", "path": op.path}
    raise TypeError(f"not a patch op: {op!r}")


def pooled_transport(connections: int) -> RequestsTransport:
    """An HTTP transport keeping ``connections`` connections open per endpoint. The SDKs'
    own keep requests' default of 10: a host serving more calls at once than that opens a
    new TCP (and TLS) connection for each call past the pool and drops it after. One
    session per client, owned by its transport."""
    # requests looks for proxies, a CA bundle and ~/.netrc in the environment on every
    # request (a tenth of the host's CPU under load, a sixth of a point read's): unless a
    # proxy or a netrc is there (which depend on the URL), it is looked for once, here.
    session = requests.Session() if environment_configures_http() else _SettledSession(ca_bundle())
    # Retries are the SDK pipeline's (its retry policy), never urllib3's: as the SDKs mount.
    no_retries = Retry(total=False, redirect=False, raise_on_status=False)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=no_retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=True)


def environment_configures_http() -> bool:
    """Whether the environment says anything requests would act on per URL for a store: a
    proxy (as requests itself reads them) or a netrc file. A CA bundle is the same for every
    URL: ``ca_bundle`` reads it once."""
    said = requests.Session().merge_environment_settings(
        "https://store.invalid", {}, None, True, None
    )
    proxies = {k: v for k, v in (said.get("proxies") or {}).items() if k != "no"}
    if proxies:  # (NO_PROXY alone bypasses nothing)
        return True
    return any(os.path.exists(os.path.expanduser(f"~/{name}")) for name in (".netrc", "_netrc"))


def ca_bundle() -> str | None:
    """The CA bundle the environment names for requests (``REQUESTS_CA_BUNDLE``, else
    ``CURL_CA_BUNDLE``), as requests itself reads it; None: its default."""
    said = requests.Session().merge_environment_settings(
        "https://store.invalid", {}, None, True, None
    )
    verify = said.get("verify")
    return verify if isinstance(verify, str) else None


class _SettledSession(requests.Session):
    """A session that does not read the environment on each request (``trust_env`` off)
    but still verifies with the CA bundle the environment named when it was made.

    The SDKs' transport asks it for plain requests only (a method, a URL, headers, a body,
    no redirects): those go straight to the connection pool's adapter, without the
    session-level merging of cookies, auth, hooks and settings a general session does on
    every request (a tenth of a store call's CPU, for nothing this session ever holds).
    Anything else takes requests' own path."""

    def __init__(self, bundle: str | None) -> None:
        super().__init__()
        self.trust_env = False
        self.bundle = bundle

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        return super().merge_environment_settings(url, proxies, stream, self._verify(verify), cert)

    def _verify(self, verify: Any) -> Any:
        if self.bundle and (verify is True or verify is None):
            return self.bundle  # as requests does with trust_env: a bundle replaces True
        return True if verify is None else verify

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: Any = None,
        verify: Any = None,
        cert: Any = None,
        json: Any = None,
    ) -> requests.Response:
        asked = params or cookies or files or auth or hooks or json is not None
        if allow_redirects or asked or self.auth or len(self.cookies):
            return super().request(
                method, url, params=params, data=data, headers=headers, cookies=cookies,
                files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert, json=json,
            )  # fmt: skip
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers=headers, data=data)
        return self.get_adapter(url).send(
            prepared,
            stream=bool(stream),
            timeout=timeout,
            verify=self._verify(verify),
            cert=cert,
            proxies=proxies or {},
        )


def cosmos_client(settings: CosmosSettings) -> CosmosClient:
    credential: Any
    if settings.key:
        credential = settings.key
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return CosmosClient(
        settings.endpoint,
        credential=credential,
        enable_endpoint_discovery=settings.endpoint_discovery,
        # Throttling surfaces quickly as StoreUnavailable(retry_after); the caller (a
        # factory's claim loop) decides how long to back off, not a thread stuck in the SDK.
        retry_total=settings.throttle_retry_attempts,
        retry_backoff_max=settings.throttle_max_wait_s,
        transport=pooled_transport(settings.max_connections),
    )


class CosmosDocumentStore:
    def __init__(self, container: ContainerProxy, counters: StoreCounters) -> None:
        self._container = container
        self.counters = counters

    def read(self, partition: str, doc_id: str) -> Doc:
        self.counters.add("read")
        with _translated(f"document {doc_id}"):
            return dict(self._container.read_item(doc_id, partition_key=partition))

    def create(self, doc: Doc) -> Doc:
        self.counters.add("write")
        with _translated(f"document {doc.get('id')}"):
            return dict(self._container.create_item(_clean(doc)))

    def replace(self, doc: Doc, *, etag: str | None) -> Doc:
        self.counters.add("write")
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        with _translated(f"document {doc.get('id')}"):
            return dict(self._container.replace_item(doc["id"], _clean(doc), **kwargs))

    def upsert(self, doc: Doc) -> Doc:
        self.counters.add("write")
        with _translated(f"document {doc.get('id')}"):
            return dict(self._container.upsert_item(_clean(doc)))

    def patch(
        self,
        partition: str,
        doc_id: str,
        ops: Sequence[PatchOp],
        *,
        etag: str | None = None,
        condition: Expr | None = None,
    ) -> Doc:
        self.counters.add("patch")
        if not ops:
            raise InvalidStoreRequest("a patch needs at least one operation")
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        if condition is not None:
            kwargs["filter_predicate"] = filter_predicate(condition)
        # A 412 with an etag means the document moved on; without, the predicate was false.
        meaning = "etag" if etag is not None else "predicate"
        with _translated(f"document {doc_id}", conditional=meaning):
            return dict(
                self._container.patch_item(
                    doc_id,
                    partition_key=partition,
                    patch_operations=[_patch_op(op) for op in ops],
                    **kwargs,
                )
            )

    def delete(self, partition: str, doc_id: str, *, etag: str | None = None) -> None:
        self.counters.add("write")
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        with _translated(f"document {doc_id}"):
            self._container.delete_item(doc_id, partition_key=partition, **kwargs)

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        self.counters.add("query")
        parameters: list[dict[str, object]] = [{"name": "@partition", "value": partition}]
        parameters += [{"name": f"@{k}", "value": v} for k, v in (params or {}).items()]
        with _translated(f"query {query.name}"):
            return [
                row if not isinstance(row, dict) else dict(row)
                for row in self._container.query_items(
                    query.sql, parameters=parameters, partition_key=partition
                )
            ]

    def query_across(self, query: NamedQuery, params: Mapping[str, Any] | None = None) -> list[Doc]:
        if not query.across:
            raise InvalidStoreRequest(f"query {query.name} runs inside one partition")
        self.counters.add("query")
        parameters = [{"name": f"@{k}", "value": v} for k, v in (params or {}).items()]
        with _translated(f"query {query.name}"):
            return [
                dict(row)
                for row in self._container.query_items(
                    query.sql, parameters=parameters, enable_cross_partition_query=True
                )
            ]

    def count(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> int:
        rows: list[Any] = self.query(query, partition, params)
        return sum(int(r) for r in rows)

    def ping(self) -> None:
        with _translated("cosmos container"):
            self._container.read()


def _clean(doc: Doc) -> Doc:
    # System properties (_etag, _ts, _rid, _self, _attachments) are the server's to set.
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def ensure_cosmos(client: CosmosClient, settings: CosmosSettings) -> ContainerProxy:
    """Create the database and container if missing. Safe to call from every instance."""
    with _translated(f"cosmos database {settings.database}"):
        database = client.create_database_if_not_exists(settings.database)
        return database.create_container_if_not_exists(
            settings.container,
            partition_key=PartitionKey(path="/productId"),
            indexing_policy=INDEXING_POLICY,
            default_ttl=-1,  # TTL on, per item: spilled events carry their own ttl
        )


# --- Tables ------------------------------------------------------------------------


def _entity_out(entity: Any) -> Entity:
    out = dict(entity)
    out[ETAG] = entity.metadata["etag"]
    return out


def _entity_in(entity: Entity) -> Entity:
    return {k: v for k, v in entity.items() if k != ETAG}


def _metadata_etag(result: Mapping[str, Any]) -> str:
    return str(result.get("etag"))


class AzureTableStore:
    def __init__(self, service: TableServiceClient, counters: StoreCounters) -> None:
        self._service = service
        self.counters = counters
        self._clients: dict[str, TableClient] = {}

    def _table(self, table: str) -> TableClient:
        client = self._clients.get(table)
        if client is None:
            client = self._clients[table] = self._service.get_table_client(table)
        return client

    def get(self, table: str, partition: str, row: str) -> Entity:
        self.counters.add("table_read")
        with _translated(f"entity {partition}/{row} in {table}"):
            return _entity_out(self._table(table).get_entity(partition, row))

    def _written(self, entity: Entity, call: Callable[[], Mapping[str, Any]]) -> Entity:
        result = call()
        return {**_entity_in(entity), ETAG: _metadata_etag(result)}

    def create(self, table: str, entity: Entity) -> Entity:
        self.counters.add("table_write")
        body = _entity_in(entity)
        with _translated(f"entity {body.get('PartitionKey')}/{body.get('RowKey')} in {table}"):
            return self._written(entity, lambda: self._table(table).create_entity(body))

    def upsert(self, table: str, entity: Entity) -> Entity:
        self.counters.add("table_write")
        body = _entity_in(entity)
        with _translated(f"entity {body.get('PartitionKey')}/{body.get('RowKey')} in {table}"):
            self._table(table).upsert_entity(body, mode=UpdateMode.MERGE)
        # A merge's result holds only the etag; read back the merged entity for the caller.
        return self.get(table, str(body["PartitionKey"]), str(body["RowKey"]))

    def update(self, table: str, entity: Entity, *, etag: str) -> Entity:
        self.counters.add("table_write")
        body = _entity_in(entity)
        with _translated(f"entity {body.get('PartitionKey')}/{body.get('RowKey')} in {table}"):
            self._table(table).update_entity(
                body,
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        return self.get(table, str(body["PartitionKey"]), str(body["RowKey"]))

    def delete(self, table: str, partition: str, row: str, *, etag: str | None = None) -> None:
        self.counters.add("table_write")
        what = f"entity {partition}/{row} in {table}"
        with _translated(what):
            client = self._table(table)
            if etag is None:
                # The SDK treats a missing entity as success on delete; the port says NotFound.
                client.get_entity(partition, row)
                client.delete_entity(partition, row)
            else:
                client.delete_entity(
                    partition, row, etag=etag, match_condition=MatchConditions.IfNotModified
                )

    def list_partition(self, table: str, partition: str) -> list[Entity]:
        self.counters.add("table_query")
        with _translated(f"table {table}"):
            rows = self._table(table).query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}
            )
            return sorted((_entity_out(e) for e in rows), key=lambda e: str(e["RowKey"]))

    def list_all(self, table: str) -> list[Entity]:
        self.counters.add("table_query")
        with _translated(f"table {table}"):
            rows = self._table(table).list_entities()
            return sorted(
                (_entity_out(e) for e in rows),
                key=lambda e: (str(e["PartitionKey"]), str(e["RowKey"])),
            )

    def list_partitions(self, table: str, prefix: str) -> list[Entity]:
        if not prefix:
            raise InvalidStoreRequest("a partition prefix must not be empty")
        self.counters.add("table_query")
        # Keys compare as strings: [prefix, prefix with its last character bumped) holds
        # exactly the keys that start with the prefix.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with _translated(f"table {table}"):
            rows = self._table(table).query_entities(
                "PartitionKey ge @lo and PartitionKey lt @hi",
                parameters={"lo": prefix, "hi": upper},
            )
            return sorted(
                (_entity_out(e) for e in rows),
                key=lambda e: (str(e["PartitionKey"]), str(e["RowKey"])),
            )

    def ping(self) -> None:
        with _translated("table service"):
            next(iter(self._service.list_tables(results_per_page=1)), None)


def ensure_tables(service: TableServiceClient) -> None:
    for name in TABLES:
        with _translated(f"table {name}"):
            service.create_table_if_not_exists(name)


# --- Blobs -------------------------------------------------------------------------


class AzureBlobStore:
    def __init__(
        self, service: BlobServiceClient, counters: StoreCounters, probe: str = "artifacts"
    ) -> None:
        self._service = service
        self.counters = counters
        self._probe = probe  # the container whose reachability ``ping`` reports

    def upload(
        self, container: str, name: str, data: bytes, *, content_type: str | None = None
    ) -> BlobInfo:
        self.counters.add("blob_write")
        settings = ContentSettings(content_type=content_type) if content_type else None
        with _translated(f"blob {container}/{name}"):
            self._service.get_blob_client(container, name).upload_blob(
                data, overwrite=True, content_settings=settings
            )
        return BlobInfo(name=name, size=len(data), content_type=content_type)

    def download(self, container: str, name: str) -> bytes:
        self.counters.add("blob_read")
        with _translated(f"blob {container}/{name}"):
            return bytes(self._service.get_blob_client(container, name).download_blob().readall())

    def info(self, container: str, name: str) -> BlobInfo:
        self.counters.add("blob_read")
        with _translated(f"blob {container}/{name}"):
            props = self._service.get_blob_client(container, name).get_blob_properties()
        return BlobInfo(
            name=name, size=int(props.size), content_type=props.content_settings.content_type
        )

    def delete(self, container: str, name: str) -> None:
        self.counters.add("blob_write")
        with _translated(f"blob {container}/{name}"):
            self._service.get_blob_client(container, name).delete_blob()

    def sas_url(
        self,
        container: str,
        name: str,
        *,
        permissions: str,
        expires_at: datetime,
        content_disposition: str | None = None,
        content_type: str | None = None,
    ) -> str:
        blob = self._service.get_blob_client(container, name)
        account = self._service.account_name or ""
        credential = self._service.credential
        key = getattr(credential, "account_key", None)
        common: dict[str, Any] = {
            "account_name": account,
            "container_name": container,
            "blob_name": name,
            "permission": BlobSasPermissions.from_string(permissions),
            "expiry": expires_at,
            "content_disposition": content_disposition,
            "content_type": content_type,
        }
        with _translated(f"sas for blob {container}/{name}"):
            if key:
                token = generate_blob_sas(account_key=key, **common)
            else:
                # Managed identity: sign with a user delegation key (no account key exists).
                now = datetime.now(UTC)
                delegation = self._service.get_user_delegation_key(
                    now - timedelta(minutes=5), expires_at
                )
                token = generate_blob_sas(user_delegation_key=delegation, **common)
        return f"{blob.url}?{token}"

    def ping(self) -> None:
        # A container's properties, not the service's: the app's data-plane roles (Storage
        # Blob Data Owner) cover the former; the latter needs account-level rights.
        with _translated("blob service"):
            self._service.get_container_client(self._probe).get_container_properties()


def ensure_blobs(service: BlobServiceClient, container: str) -> None:
    with _translated(f"blob container {container}"), suppress(ResourceExistsError):
        service.create_container(container)


# --- wiring ------------------------------------------------------------------------


def _storage_clients(settings: StorageSettings) -> tuple[TableServiceClient, BlobServiceClient]:
    if settings.connection_string:
        return (
            TableServiceClient.from_connection_string(
                settings.connection_string,
                transport=pooled_transport(settings.max_connections),
            ),
            BlobServiceClient.from_connection_string(
                settings.connection_string,
                transport=pooled_transport(settings.max_connections),
            ),
        )
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    if not settings.table_service_uri or not settings.blob_service_uri:
        raise InvalidStoreRequest("storage service URIs are required for managed identity")
    return (
        TableServiceClient(
            endpoint=settings.table_service_uri,
            credential=credential,
            transport=pooled_transport(settings.max_connections),
        ),
        BlobServiceClient(
            account_url=settings.blob_service_uri,
            credential=credential,
            transport=pooled_transport(settings.max_connections),
        ),
    )


# --- Queues --------------------------------------------------------------------------


class AzureQueueStore:
    """Sends text messages base64-encoded, as the host's ``messageEncoding`` (``host.json``:
    ``base64``, the Functions default) expects."""

    def __init__(self, service: QueueServiceClient, counters: StoreCounters) -> None:
        self._service = service
        self.counters = counters
        self._clients: dict[str, QueueClient] = {}

    def _queue(self, name: str) -> QueueClient:
        client = self._clients.get(name)
        if client is None:
            client = self._service.get_queue_client(
                name, message_encode_policy=TextBase64EncodePolicy()
            )
            self._clients[name] = client
        return client

    def send(self, queue: str, message: str) -> None:
        self.counters.add("queue_send")
        with _translated(f"queue {queue}"):
            self._queue(queue).send_message(message)

    def ping(self) -> None:
        with _translated("queue service"):
            next(iter(self._service.list_queues(results_per_page=1)), None)


def ensure_queues(service: QueueServiceClient, passes: str = "fleet-passes") -> None:
    """The queue the timers send to (``Settings.passes_queue``) and its poison queue (the
    Functions host moves a message there after ``maxDequeueCount``)."""
    for name in (passes,):
        for queue in (name, f"{name}-poison"):
            with _translated(f"queue {queue}"), suppress(ResourceExistsError):
                service.create_queue(queue)


def _queue_client(settings: StorageSettings) -> QueueServiceClient:
    if settings.connection_string:
        return QueueServiceClient.from_connection_string(
            settings.connection_string, transport=pooled_transport(settings.max_connections)
        )
    from azure.identity import DefaultAzureCredential

    if not settings.queue_service_uri:
        raise InvalidStoreRequest("the queue service URI is required for managed identity")
    return QueueServiceClient(
        account_url=settings.queue_service_uri,
        credential=DefaultAzureCredential(),
        transport=pooled_transport(settings.max_connections),
    )


def azure_stores(settings: Settings, *, ensure: bool = True) -> Stores:
    """Build the Azure adapters; with ``ensure``, create missing containers and tables."""
    if settings.cosmos is None or settings.storage is None:
        raise InvalidStoreRequest("azure stores need cosmos and storage settings")
    counters = StoreCounters()
    client = cosmos_client(settings.cosmos)
    if ensure:
        container = ensure_cosmos(client, settings.cosmos)
    else:
        container = client.get_database_client(settings.cosmos.database).get_container_client(
            settings.cosmos.container
        )
    tables, blobs = _storage_clients(settings.storage)
    queues = _queue_client(settings.storage)
    if ensure:
        ensure_tables(tables)
        ensure_blobs(blobs, settings.storage.artifacts_container)
        ensure_queues(queues, settings.passes_queue)
    return Stores(
        documents=CosmosDocumentStore(container, counters),
        tables=AzureTableStore(tables, counters),
        blobs=AzureBlobStore(blobs, counters, settings.storage.artifacts_container),
        counters=counters,
        queues=AzureQueueStore(queues, counters),
    )
