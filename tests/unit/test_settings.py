from __future__ import annotations

from pathlib import Path

import pytest
import requests
import requests.adapters

from fleet.errors import SettingsError
from fleet.settings import Settings, azurite_connection_string, local_stack_env


def test_settings_memory_store_needs_nothing_else() -> None:
    settings = Settings.from_env({"FLEET_STORE": "memory"})
    assert settings.store == "memory" and settings.cosmos is None
    assert settings.schedules["REAPER_SCHEDULE"]


def test_settings_local_stack_env_round_trips() -> None:
    settings = Settings.from_env(local_stack_env(cosmos_port=9000, blob_port=9001))
    assert settings.cosmos is not None and settings.storage is not None
    assert settings.cosmos.endpoint == "http://127.0.0.1:9000"
    assert settings.cosmos.endpoint_discovery is False  # plain-http emulator
    assert "BlobEndpoint=http://127.0.0.1:9001/" in (settings.storage.connection_string or "")


def test_settings_connection_string_supplies_endpoint_and_key() -> None:
    env = {
        "COSMOS_CONNECTION_STRING": "AccountEndpoint=https://acct.documents.azure.com:443/;"
        "AccountKey=abc==;",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    settings = Settings.from_env(env)
    assert settings.cosmos is not None and settings.storage is not None
    assert settings.cosmos.endpoint == "https://acct.documents.azure.com:443/"
    assert settings.cosmos.key == "abc=="
    assert settings.cosmos.endpoint_discovery is True
    assert settings.storage.connection_string == azurite_connection_string()


def test_settings_managed_identity_needs_no_keys() -> None:
    env = {
        "COSMOS__accountEndpoint": "https://acct.documents.azure.com:443/",
        "AzureWebJobsStorage__accountName": "fleetstore",
    }
    settings = Settings.from_env(env)
    assert settings.cosmos is not None and settings.cosmos.key is None
    assert settings.storage is not None and settings.storage.connection_string is None
    assert settings.storage.table_service_uri == "https://fleetstore.table.core.windows.net"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "COSMOS_ENDPOINT"),
        ({"COSMOS_ENDPOINT": "http://x"}, "AzureWebJobsStorage"),
        ({"FLEET_STORE": "postgres"}, "FLEET_STORE"),
        (
            {
                "COSMOS_ENDPOINT": "http://x",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "COSMOS_THROTTLE_RETRIES": "many",
            },
            "COSMOS_THROTTLE_RETRIES",
        ),
        (
            {
                "COSMOS_ENDPOINT": "http://x",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "STORE_MAX_CONNECTIONS": "0",
            },
            "STORE_MAX_CONNECTIONS",
        ),
    ],
)
def test_settings_fail_fast_naming_the_setting(env: dict[str, str], missing: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.name == missing and missing in str(caught.value)


def test_settings_operator_tokens_are_kept_only_as_hashes() -> None:
    from fleet.coordinator.tokens import hash_token

    plain = "flo_" + "a" * 43
    other = hash_token("flo_" + "b" * 43)
    env = {"FLEET_STORE": "memory", "FLEET_OPERATOR_TOKENS": f" {plain} ,, sha256:{other.upper()}"}
    settings = Settings.from_env(env)
    assert settings.operator_token_hashes == frozenset({hash_token(plain), other})
    assert plain not in repr(settings)
    assert Settings.from_env({"FLEET_STORE": "memory"}).operator_token_hashes == frozenset()


@pytest.mark.parametrize(
    "entry", ["hunter2-secret", "flo_short", "sha256:abc", "sha256:" + "g" * 64]
)
def test_settings_malformed_operator_token_fails_fast_without_echoing_it(entry: str) -> None:
    env = {"FLEET_STORE": "memory", "FLEET_OPERATOR_TOKENS": f"flo_{'x' * 43},{entry}"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.name == "FLEET_OPERATOR_TOKENS"
    assert "entry 2" in caught.value.message and entry not in caught.value.message


def test_settings_token_grace_seconds() -> None:
    env = {"FLEET_STORE": "memory", "FLEET_TOKEN_GRACE_SECONDS": "60"}
    assert Settings.from_env(env).token_grace_seconds == 60
    assert Settings.from_env({"FLEET_STORE": "memory"}).token_grace_seconds == 300
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLEET_STORE": "memory", "FLEET_TOKEN_GRACE_SECONDS": "-1"})
    assert caught.value.name == "FLEET_TOKEN_GRACE_SECONDS"


def test_settings_store_connections_are_pooled_to_the_hosts_concurrency() -> None:
    from fleet.store.azure import pooled_transport

    env = {
        "COSMOS_ENDPOINT": "http://x",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "STORE_MAX_CONNECTIONS": "48",
    }
    settings = Settings.from_env(env)
    assert settings.cosmos is not None and settings.storage is not None
    assert settings.cosmos.max_connections == settings.storage.max_connections == 48
    transport = pooled_transport(48)
    assert transport.session is not None
    adapter = transport.session.get_adapter("https://account.documents.azure.com")
    assert adapter._pool_maxsize == 48  # type: ignore[attr-defined]
    assert adapter.max_retries.total is False  # the SDK's retry policy retries, not urllib3


@pytest.mark.parametrize(
    ("env", "reads_it"),
    [
        ({}, False),
        ({"HTTPS_PROXY": "http://proxy:3128"}, True),
        ({"https_proxy": "http://proxy:3128"}, True),
        ({"NO_PROXY": "localhost"}, False),  # no proxy to bypass: nothing to act on
        ({"REQUESTS_CA_BUNDLE": "/etc/ca.pem"}, False),  # one bundle for every URL: read once
        ({"HTTPS_PROXY": ""}, False),
    ],
)
def test_settings_store_transport_reads_the_environment_only_when_it_says_something(
    env: dict[str, str], reads_it: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleet.store.azure import environment_configures_http

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_configures_http() is reads_it
    (tmp_path / ".netrc").write_text("machine x login y password z\n")
    assert environment_configures_http() is True


def session_with_a_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> requests.Session:
    """The store transport's session, made where the environment names a CA bundle
    (``/etc/fleet-ca.pem``) and no proxy or netrc."""
    from fleet.store.azure import pooled_transport

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/fleet-ca.pem")
    session = pooled_transport(4).session
    assert session is not None
    return session


def test_settings_store_transport_reads_a_ca_bundle_once_and_still_verifies_with_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    session = session_with_a_bundle(monkeypatch, tmp_path)
    assert session.trust_env is False  # nothing read per request
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/elsewhere.pem")  # read once: not seen now
    url = "https://account.documents.azure.com/dbs"
    assert session.merge_environment_settings(url, {}, None, True, None)["verify"] == (
        "/etc/fleet-ca.pem"
    )
    # what a caller says still wins: the SDKs turn verification off for a local emulator
    assert session.merge_environment_settings(url, {}, None, False, None)["verify"] is False
    assert session.merge_environment_settings(url, {}, None, "/x.pem", None)["verify"] == "/x.pem"


class _Recorder(requests.adapters.BaseAdapter):
    """An adapter that answers 200 and keeps what it was asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[requests.PreparedRequest, dict[str, object]]] = []

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: object = None,
        verify: object = True,
        cert: object = None,
        proxies: object = None,
    ) -> requests.Response:
        said = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert}
        self.sent.append((request, {**said, "proxies": proxies}))
        response = requests.Response()
        response.status_code, response.request, response._content = 200, request, b"{}"
        return response

    def close(self) -> None:
        pass


def test_settings_store_session_sends_a_plain_request_as_requests_would(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The SDK transport's plain requests skip the session's merging; what reaches the
    connection pool is what requests' own path sends (method, URL, headers, body, timeout,
    the bundle for verification), and anything else still takes requests' own path."""
    session = session_with_a_bundle(monkeypatch, tmp_path)
    recorder = _Recorder()
    session.mount("https://", recorder)
    url = "https://account.documents.azure.com/dbs/d/colls/c/docs/x"
    headers = {"x-ms-date": "now", "authorization": "type=master&sig=abc"}
    for redirects in (False, True):  # the plain path, then requests' own
        response = session.request(
            "PUT", url, headers=headers, data=b'{"a": 1}', timeout=(3, 7), verify=True,
            allow_redirects=redirects, stream=False,
        )  # fmt: skip
        assert response.status_code == 200
    (plain, plain_kw), (general, general_kw) = recorder.sent
    assert (plain.method, plain.url, plain.body) == (general.method, general.url, general.body)
    assert {k: v for k, v in plain.headers.items() if k.lower() in headers} == headers
    assert plain_kw["verify"] == general_kw["verify"] == "/etc/fleet-ca.pem"
    assert plain_kw["timeout"] == general_kw["timeout"] == (3, 7)
    assert plain_kw["proxies"] == {} and general_kw["proxies"] == {}
    session.request("GET", url, verify=False, allow_redirects=False)  # the local emulator's
    assert recorder.sent[-1][1]["verify"] is False


@pytest.mark.parametrize("name", ["Fleet-Passes", "ab", "a--b", "-ab", "x" * 57, "fleet_passes"])
def test_settings_refuse_a_passes_queue_that_is_no_queue_name(name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLEET_STORE": "memory", "FLEET_PASSES_QUEUE": name})
    assert caught.value.name == "FLEET_PASSES_QUEUE"


def test_settings_passes_queue_defaults_and_is_read() -> None:
    assert Settings.from_env({"FLEET_STORE": "memory"}).passes_queue == "fleet-passes"
    env = {"FLEET_STORE": "memory", "FLEET_PASSES_QUEUE": "blue-passes"}
    assert Settings.from_env(env).passes_queue == "blue-passes"
