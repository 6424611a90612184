"""One typed settings object, read once from the environment.

The names are the Azure app-setting names, so the same code reads `local.settings.json`
Values (loaded into the environment by the host) and a deployed Function App's settings.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fleet.errors import SettingsError

# Well-known public key of the Cosmos DB emulators (documented by Microsoft; not a secret).
EMULATOR_COSMOS_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)

DEFAULT_SCHEDULES = {
    "REAPER_SCHEDULE": "*/15 * * * * *",
    "HEALER_SCHEDULE": "*/30 * * * * *",
    "METRICS_SCHEDULE": "0 */5 * * * *",
}

StoreKind = Literal["azure", "memory"]

OPERATOR_TOKEN_PREFIX = "flo_"  # the same prefix as fleet.coordinator.tokens.OPERATOR_PREFIX
_MIN_TOKEN_SECRET_CHARS = 16
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CosmosSettings:
    endpoint: str
    key: str | None  # None: use managed identity (DefaultAzureCredential)
    database: str
    container: str
    # Endpoint discovery is for geo-replicated accounts; the emulators answer only on the
    # address given, and discovery against them adds a round trip per client.
    endpoint_discovery: bool
    throttle_retry_attempts: int
    throttle_max_wait_s: int
    # Connections kept open to the endpoint (STORE_MAX_CONNECTIONS): at least as many as the
    # host's concurrent calls, or every call past the pool opens (and drops) a TCP connection.
    max_connections: int = 32


@dataclass(frozen=True)
class StorageSettings:
    connection_string: str | None  # None: identity-based, see account_name / service URIs
    account_name: str | None
    blob_service_uri: str | None
    table_service_uri: str | None
    artifacts_container: str
    queue_service_uri: str | None = None
    max_connections: int = 32  # kept open to each storage endpoint (STORE_MAX_CONNECTIONS)


@dataclass(frozen=True)
class HealerSettings:
    """The self-healer's thresholds, in seconds, each from its app setting (unset or empty:
    the default): HEALER_DOWN_AFTER_SECONDS (a silent factory is down, 600),
    HEALER_STALL_AFTER_SECONDS (a held job whose progress has not moved is stalled, 900),
    HEALER_NEVER_STARTED_SECONDS (a job assigned but never started is taken back, 300),
    HEALER_PRUNE_AFTER_SECONDS (a silent factory is deregistered, 7 days),
    HEALER_AVOID_GRACE_SECONDS (a job taken back from a factory it stalled on returns there
    only after waiting this long in the queue with no other live factory taking it, 1800).
    A stalled job's engine is restarted at once; still stalled another
    HEALER_STALL_AFTER_SECONDS later, the job is taken back. The stale threshold is the
    coordinator's (``CoordinatorConfig.stale_after_seconds``), not a setting."""

    down_after_seconds: int = 600
    stall_after_seconds: int = 900
    never_started_seconds: int = 300
    prune_after_seconds: int = 7 * 24 * 3600
    avoid_grace_seconds: int = 1800


_HEALER_SETTINGS = {
    "down_after_seconds": "HEALER_DOWN_AFTER_SECONDS",
    "stall_after_seconds": "HEALER_STALL_AFTER_SECONDS",
    "never_started_seconds": "HEALER_NEVER_STARTED_SECONDS",
    "prune_after_seconds": "HEALER_PRUNE_AFTER_SECONDS",
    "avoid_grace_seconds": "HEALER_AVOID_GRACE_SECONDS",
}


@dataclass(frozen=True)
class AttemptQuotas:
    """What one attempt (one lease epoch) of a job may store, so that one factory cannot
    exhaust a product: its agent events (FLEET_AGENT_EVENTS_PER_ATTEMPT, 5,000), their
    payloads' JSON bytes (FLEET_AGENT_EVENT_BYTES_PER_ATTEMPT, 5 MiB) and its artifacts
    (FLEET_ARTIFACTS_PER_ATTEMPT, 100). Past one, the request is 413 ``quota_exceeded``."""

    agent_events: int = 5_000
    agent_event_bytes: int = 5 * 1024 * 1024
    artifacts: int = 100


_QUOTA_SETTINGS = {
    "agent_events": "FLEET_AGENT_EVENTS_PER_ATTEMPT",
    "agent_event_bytes": "FLEET_AGENT_EVENT_BYTES_PER_ATTEMPT",
    "artifacts": "FLEET_ARTIFACTS_PER_ATTEMPT",
}


@dataclass(frozen=True)
class Settings:
    store: StoreKind
    cosmos: CosmosSettings | None
    storage: StorageSettings | None
    schedules: Mapping[str, str]
    # SHA-256 (hex) of the bootstrap operator tokens (FLEET_OPERATOR_TOKENS): never plaintext.
    operator_token_hashes: frozenset[str] = frozenset()
    # How long a rotated-out factory token keeps working (FLEET_TOKEN_GRACE_SECONDS).
    token_grace_seconds: int = 300
    # How long an enrollment token lives when its creator names no expiry
    # (FLEET_ENROLLMENT_TTL_SECONDS; default 7 days).
    enrollment_ttl_seconds: int = 7 * 24 * 3600
    # The tracker bridge's echo (optional): stage changes of tracker jobs are POSTed to
    # TRACKER_ECHO_URL, signed with TRACKER_ECHO_SECRET. (GitHub's webhook is verified with
    # the secret of the repository's binding: TRACKER_WEBHOOK_SECRET is read no more.)
    tracker_echo_url: str | None = None
    tracker_echo_secret: str | None = None
    # The alert webhook (optional): alert events are POSTed to ALERT_WEBHOOK_URL, signed
    # with ALERT_WEBHOOK_SECRET, by the metrics timer.
    alert_webhook_url: str | None = None
    alert_webhook_secret: str | None = None
    # The self-healer's thresholds (HEALER_DOWN_AFTER_SECONDS, ...: see HealerSettings).
    healer: HealerSettings = HealerSettings()
    # What one attempt may store (FLEET_AGENT_EVENTS_PER_ATTEMPT, ...: see AttemptQuotas).
    quotas: AttemptQuotas = AttemptQuotas()
    # The queue the timers hand each product's pass to (FLEET_PASSES_QUEUE); its poison queue
    # is the same name with "-poison". The queue triggers' bindings name it too.
    passes_queue: str = "fleet-passes"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        store = env.get("FLEET_STORE", "azure").strip().lower()
        if store not in ("azure", "memory"):
            raise SettingsError("FLEET_STORE", f"must be 'azure' or 'memory', not {store!r}")
        schedules = {name: env.get(name) or default for name, default in DEFAULT_SCHEDULES.items()}
        tokens = _operator_tokens_from_env(env)
        grace = _int(env, "FLEET_TOKEN_GRACE_SECONDS", 300)
        if grace < 0:
            raise SettingsError("FLEET_TOKEN_GRACE_SECONDS", f"must be >= 0, not {grace}")
        enrollment_ttl = _int(env, "FLEET_ENROLLMENT_TTL_SECONDS", 7 * 24 * 3600)
        if not 60 <= enrollment_ttl <= 365 * 24 * 3600:
            raise SettingsError(
                "FLEET_ENROLLMENT_TTL_SECONDS",
                f"must be between 60 and 31536000 seconds, not {enrollment_ttl}",
            )
        healer = _healer_from_env(env)
        quotas = _quotas_from_env(env)
        if store == "memory":
            return cls(
                store="memory",
                cosmos=None,
                storage=None,
                schedules=schedules,
                operator_token_hashes=tokens,
                token_grace_seconds=grace,
                enrollment_ttl_seconds=enrollment_ttl,
                healer=healer,
                quotas=quotas,
                passes_queue=_passes_queue(env),
                **_tracker_from_env(env),
                **_alert_webhook_from_env(env),
            )
        return cls(
            store="azure",
            cosmos=_cosmos_from_env(env),
            storage=_storage_from_env(env),
            schedules=schedules,
            operator_token_hashes=tokens,
            token_grace_seconds=grace,
            enrollment_ttl_seconds=enrollment_ttl,
            healer=healer,
            quotas=quotas,
            passes_queue=_passes_queue(env),
            **_tracker_from_env(env),
            **_alert_webhook_from_env(env),
        )


def _healer_from_env(env: Mapping[str, str]) -> HealerSettings:
    values: dict[str, int] = {}
    for name, setting in _HEALER_SETTINGS.items():
        raw = (env.get(setting) or "").strip()
        if not raw:
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise SettingsError(
                setting, f"must be a whole number of seconds, not {raw!r}"
            ) from None
        if values[name] <= 0:
            raise SettingsError(setting, "must be positive")
    healer = HealerSettings(**values)
    if healer.down_after_seconds > healer.prune_after_seconds:
        raise SettingsError(
            "HEALER_PRUNE_AFTER_SECONDS", "must not be shorter than HEALER_DOWN_AFTER_SECONDS"
        )
    return healer


_KEY_VAULT_REFERENCE = "@microsoft.keyvault("


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret setting (or None). App Service hands the app a Key Vault reference it could
    not resolve as the literal ``@Microsoft.KeyVault(...)`` text: refused (fail closed), or
    that text would become the signing key."""
    value = env.get(name) or None
    if value is not None and value.strip().lower().startswith(_KEY_VAULT_REFERENCE):
        raise SettingsError(
            name,
            "is an unresolved Key Vault reference (grant the app's identity Key Vault "
            "Secrets User on the vault, or fix the reference)",
        )
    return value


def _quotas_from_env(env: Mapping[str, str]) -> AttemptQuotas:
    values: dict[str, int] = {}
    for name, setting in _QUOTA_SETTINGS.items():
        if (env.get(setting) or "").strip():
            values[name] = _int(env, setting, 0)
            if values[name] < 1:
                raise SettingsError(setting, f"must be at least 1, not {values[name]}")
    return AttemptQuotas(**values)


def _url(env: Mapping[str, str], name: str) -> str | None:
    url = (_secret(env, name) or "").strip() or None
    if url is not None and not url.startswith(("https://", "http://")):
        raise SettingsError(name, "must be an http(s) URL")
    return url


# A queue name (3-63 lowercase letters, digits, single hyphens), with room for "-poison".
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,55}$")


def _passes_queue(env: Mapping[str, str]) -> str:
    name = (env.get("FLEET_PASSES_QUEUE") or "fleet-passes").strip()
    if not _QUEUE_NAME.fullmatch(name):
        raise SettingsError(
            "FLEET_PASSES_QUEUE",
            f"must be a queue name of 3 to 56 lowercase letters, digits and single hyphens "
            f"(its poison queue adds '-poison'), not {name!r}",
        )
    return name


def _tracker_from_env(env: Mapping[str, str]) -> dict[str, str | None]:
    return {
        "tracker_echo_url": _url(env, "TRACKER_ECHO_URL"),
        "tracker_echo_secret": _secret(env, "TRACKER_ECHO_SECRET"),
    }


def _alert_webhook_from_env(env: Mapping[str, str]) -> dict[str, str | None]:
    return {
        "alert_webhook_url": _url(env, "ALERT_WEBHOOK_URL"),
        "alert_webhook_secret": _secret(env, "ALERT_WEBHOOK_SECRET"),
    }


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(name, f"must be an integer, not {raw!r}") from None


def _operator_tokens_from_env(env: Mapping[str, str]) -> frozenset[str]:
    """FLEET_OPERATOR_TOKENS: comma-separated; each a plaintext ``flo_...`` token or
    ``sha256:<64 hex digits>`` (the form to use in a deployed app's settings). A malformed
    entry fails fast, named by position: its text may be a secret, so it is never echoed."""
    name = "FLEET_OPERATOR_TOKENS"
    hashes: set[str] = set()
    entries = [e.strip() for e in (env.get(name) or "").split(",")]
    for position, entry in enumerate(entries, start=1):
        if not entry:
            continue
        if entry.lower().startswith("sha256:"):
            digest = entry[len("sha256:") :].strip().lower()
            if not _SHA256_HEX.match(digest):
                raise SettingsError(
                    name, f"entry {position}: sha256: must be followed by 64 hex digits"
                )
            hashes.add(digest)
        elif entry.startswith(OPERATOR_TOKEN_PREFIX):
            if len(entry) - len(OPERATOR_TOKEN_PREFIX) < _MIN_TOKEN_SECRET_CHARS:
                raise SettingsError(
                    name,
                    f"entry {position}: too short to be a token (at least "
                    f"{_MIN_TOKEN_SECRET_CHARS} characters after {OPERATOR_TOKEN_PREFIX})",
                )
            hashes.add(hashlib.sha256(entry.encode("utf-8")).hexdigest())
        else:
            raise SettingsError(
                name,
                f"entry {position}: must be an operator token ({OPERATOR_TOKEN_PREFIX}...) or "
                "sha256:<hex digest of one>",
            )
    return frozenset(hashes)


def _parse_connection_string(raw: str, name: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in raw.split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:  # never echoed: a malformed segment may be part of a key
            raise SettingsError(name, "malformed connection string: a segment without '='")
        parts[key.strip().lower()] = value.strip()
    return parts


def _cosmos_from_env(env: Mapping[str, str]) -> CosmosSettings:
    endpoint = env.get("COSMOS_ENDPOINT") or env.get("COSMOS__accountEndpoint")
    key = env.get("COSMOS_KEY") or None
    conn = env.get("COSMOS_CONNECTION_STRING")
    if conn:
        parts = _parse_connection_string(conn, "COSMOS_CONNECTION_STRING")
        endpoint = endpoint or parts.get("accountendpoint")
        key = key or parts.get("accountkey")
    if not endpoint:
        raise SettingsError(
            "COSMOS_ENDPOINT",
            "is required (or COSMOS__accountEndpoint for managed identity, "
            "or COSMOS_CONNECTION_STRING)",
        )
    discovery_default = not endpoint.startswith("http://")
    raw_discovery = env.get("COSMOS_ENDPOINT_DISCOVERY")
    discovery = (
        discovery_default
        if raw_discovery in (None, "")
        else raw_discovery.strip().lower() in ("1", "true", "yes")
    )
    return CosmosSettings(
        endpoint=endpoint,
        key=key,
        database=env.get("COSMOS_DATABASE") or "fleet",
        container=env.get("COSMOS_CONTAINER") or "fleet",
        endpoint_discovery=discovery,
        throttle_retry_attempts=_int(env, "COSMOS_THROTTLE_RETRIES", 3),
        throttle_max_wait_s=_int(env, "COSMOS_THROTTLE_MAX_WAIT_SECONDS", 5),
        max_connections=_max_connections(env),
    )


def _max_connections(env: Mapping[str, str]) -> int:
    count = _int(env, "STORE_MAX_CONNECTIONS", 32)
    if not 1 <= count <= 1024:
        raise SettingsError("STORE_MAX_CONNECTIONS", "must be between 1 and 1024")
    return count


def _storage_from_env(env: Mapping[str, str]) -> StorageSettings:
    conn = env.get("AzureWebJobsStorage") or None
    if conn and conn.strip() == "UseDevelopmentStorage=true":
        conn = azurite_connection_string()
    account = env.get("AzureWebJobsStorage__accountName") or None
    blob_uri = env.get("AzureWebJobsStorage__blobServiceUri") or None
    table_uri = env.get("AzureWebJobsStorage__tableServiceUri") or None
    queue_uri = env.get("AzureWebJobsStorage__queueServiceUri") or None
    if not conn and not account and not (blob_uri and table_uri):
        raise SettingsError(
            "AzureWebJobsStorage",
            "is required (a connection string, or AzureWebJobsStorage__accountName "
            "for managed identity)",
        )
    return StorageSettings(
        connection_string=conn,
        account_name=account,
        blob_service_uri=blob_uri
        or (f"https://{account}.blob.core.windows.net" if account else None),
        table_service_uri=table_uri
        or (f"https://{account}.table.core.windows.net" if account else None),
        artifacts_container=env.get("ARTIFACTS_CONTAINER") or "artifacts",
        queue_service_uri=queue_uri
        or (f"https://{account}.queue.core.windows.net" if account else None),
        max_connections=_max_connections(env),
    )


# Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(
    host: str = "127.0.0.1",
    blob_port: int = 10000,
    queue_port: int = 10001,
    table_port: int = 10002,
) -> str:
    base = f"http://{host}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={base}:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint={base}:{queue_port}/{AZURITE_ACCOUNT};"
        f"TableEndpoint={base}:{table_port}/{AZURITE_ACCOUNT};"
    )


def local_stack_env(
    *,
    host: str = "127.0.0.1",
    cosmos_port: int = 8081,
    blob_port: int = 10000,
    queue_port: int = 10001,
    table_port: int = 10002,
) -> dict[str, str]:
    """The app settings that point the app at a local stack on the given ports."""
    return {
        "FLEET_STORE": "azure",
        "COSMOS_ENDPOINT": f"http://{host}:{cosmos_port}",
        "COSMOS_KEY": EMULATOR_COSMOS_KEY,
        "AzureWebJobsStorage": azurite_connection_string(host, blob_port, queue_port, table_port),
        **DEFAULT_SCHEDULES,
        "FLEET_PASSES_QUEUE": "fleet-passes",
    }
