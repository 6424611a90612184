"""The deployment (infra/, azure.yaml, scripts/deploy/) agrees with the code it deploys.

- Every app setting the deployed code reads is set by infra/app/api.bicep (or is a documented
  local-only alternative), and every setting the template sets is read by the code or the
  Functions host: both sides are derived (scripts/deploy/inventory.py), not listed by hand.
- The Cosmos DB container, the tables, the blob container and the queues the template creates
  are the ones the code would create itself (captured from fleet/store/azure.py's own ensure_*
  functions).
- Every .bicep file parses with checkov's parser (pycep, in .local/venv-checkov).
- The pure parts of the deploy scripts: the checkov verdict, the health check, the settings
  comparison, the web UI build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.settings import DEFAULT_SCHEDULES, Settings
from fleet.store import azure as azure_store
from fleet.timers import PASSES_QUEUE, POISON_QUEUE
from scripts.deploy import check, checkov_report, inventory, webui

ROOT = inventory.ROOT
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
FLEET_JSON = json.loads((INFRA / "fleet.json").read_text(encoding="utf-8"))
CHECKOV_PYTHON = ROOT / ".local" / "venv-checkov" / "bin" / "python"


def _bicep(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _object(text: str) -> dict[str, str]:
    text = text.strip()
    assert text.startswith("{") and text.endswith("}"), text
    return inventory.object_entries(text[1:-1])


# --- app settings: the code and the template agree ----------------------------------------


def test_infra_template_sets_every_setting_the_code_reads() -> None:
    drift = inventory.compare(inventory.code_settings(), inventory.app_settings())
    assert drift.ok, "\n".join(drift.messages())


def test_infra_inventory_finds_settings_through_each_kind_of_read() -> None:
    code = inventory.code_settings()
    assert "fleet/settings.py" in code.modules
    assert "fleet/coordinator/fleet_health.py" in code.modules  # imported inside a function
    assert "devtools/host.py" not in code.modules  # local tooling is not deployed
    assert code.unresolved == []
    names = code.names
    assert {"FLEET_STORE", "COSMOS__accountEndpoint", "AzureWebJobsStorage"} <= names
    assert "FLEET_TOKEN_GRACE_SECONDS" in names  # _int(env, "...", 300)
    assert "FLEET_OPERATOR_TOKENS" in names  # name = "..."; env.get(name)
    assert set(DEFAULT_SCHEDULES) <= names  # a loop over a module-level dict
    assert "HEALER_DOWN_AFTER_SECONDS" in names  # a loop over a dict's values
    assert "fleet/timers.py" in " ".join(code.where("REAPER_SCHEDULE"))  # "%REAPER_SCHEDULE%"


def _app(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")
    return tmp_path


def test_inventory_scanner_resolves_reads_and_reports_the_rest(tmp_path: Path) -> None:
    root = _app(
        tmp_path,
        {
            "function_app.py": "from fleet import a\n",
            "fleet/__init__.py": "",
            "fleet/a.py": """
                import os

                DEFAULTS = {"LOOP_A": "1", "LOOP_B": "2"}
                NAMES = {"x": "VALUE_A"}
                STAMP = "%Y-%m-%dT%H:%M"

                def f(env):
                    from fleet.b import g
                    name = "LOCAL_CONST"
                    env.get(name)
                    os.environ["SUBSCRIPTED"]
                    os.getenv("GETENV")
                    "MEMBER" in os.environ
                    _int(env, "HELPER", 3)
                    {k: env.get(k) for k, _ in DEFAULTS.items()}
                    for _, setting in NAMES.items():
                        env.get(setting)

                def _int(env, name, default):
                    return env.get(name) or default

                @decorator(schedule="%BINDING%")
                def timer():
                    pass
            """,
            "fleet/b.py": """
                def g(env):
                    return env.get(compute())
            """,
            "fleet/unused.py": "import os\nos.environ.get('NOT_DEPLOYED')\n",
        },
    )
    code = inventory.code_settings(root)
    assert code.names == {
        "LOCAL_CONST",
        "SUBSCRIPTED",
        "GETENV",
        "MEMBER",
        "HELPER",
        "LOOP_A",
        "LOOP_B",
        "VALUE_A",
        "BINDING",
    }
    assert sorted(code.modules) == [
        "fleet/__init__.py",
        "fleet/a.py",
        "fleet/b.py",
        "function_app.py",
    ]
    assert len(code.unresolved) == 1
    assert code.unresolved[0].startswith("fleet/b.py:3: cannot tell which setting")


def test_inventory_compare_names_missing_stale_and_local_only_settings() -> None:
    code = inventory.CodeSettings(
        reads=[
            inventory.Read("NEEDED", "fleet/x.py", 1),
            inventory.Read("COSMOS_KEY", "fleet/x.py", 2),
            *(inventory.Read(n, "fleet/x.py", 3) for n in inventory.LOCAL_ONLY),
        ]
    )
    template = {"STALE": "'x'", "COSMOS_KEY": "key", **dict.fromkeys(inventory.PLATFORM, "x")}
    drift = inventory.compare(code, template)
    assert drift.missing == ["NEEDED"]
    assert drift.stale == ["STALE"]
    assert drift.local_only_set == ["COSMOS_KEY"]
    assert drift.stale_allowlist == []
    assert not drift.ok
    assert any("NEEDED: the code reads it" in m for m in drift.messages())


def test_bicep_object_entries_skip_strings_interpolation_and_comments() -> None:
    body = """
      // a comment with a { brace
      plain: 'a } string'
      'quoted-key': 'https://${x.properties.y}/${take('a}', 1)}' // trailing { comment
      nested: {
        inner: [
          1
        ]
      }
      call: union(a, {
        b: 'c'
      })
      /* block
         comment */
      escaped: 'it\\'s'
    """
    entries = inventory.object_entries(body)
    assert entries == {
        "plain": "'a } string'",
        "quoted-key": "'https://${x.properties.y}/${take('a}', 1)}'",
        "nested": "{\n        inner: [\n          1\n        ]\n      }",
        "call": "union(a, {\n        b: 'c'\n      })",
        "escaped": "'it\\'s'",
    }
    with pytest.raises(inventory.BicepSyntaxError, match="duplicate"):
        inventory.object_entries("a: 1\na: 2\n")
    with pytest.raises(inventory.BicepSyntaxError, match="unterminated"):
        inventory.object_entries("a: 'open\n")


def test_infra_app_settings_hold_no_keys() -> None:
    settings = inventory.app_settings()
    for name, expression in settings.items():
        assert not re.search(
            r"listKeys|AccountKey|primaryMasterKey|connectionString", expression
        ), name
    assert settings["FLEET_STORE"] == "'azure'"
    assert "COSMOS__accountEndpoint" in settings  # managed identity: an endpoint, no key
    assert not inventory.LOCAL_ONLY.keys() & settings.keys()


def test_infra_schedule_defaults_are_the_codes() -> None:
    defaults = inventory.param_defaults(MAIN)
    passed = check.module_params(_bicep(MAIN), "api")
    settings = inventory.app_settings()
    for name, schedule in DEFAULT_SCHEDULES.items():
        param = passed[settings[name]]
        assert inventory.bicep_string(defaults[param]) == schedule, name


# --- the data layout: the template creates what the code expects --------------------------


class _Recorder:
    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}
        self.tables: list[str] = []
        self.containers: list[str] = []
        self.queues: list[str] = []

    # Cosmos
    def create_database_if_not_exists(self, database: str) -> _Recorder:
        self.calls["database"] = database
        return self

    def create_container_if_not_exists(self, container: str, **kwargs: Any) -> str:
        self.calls["container"] = container
        self.calls.update(kwargs)
        return "container"

    # Tables / Blobs / Queues
    def create_table_if_not_exists(self, name: str) -> None:
        self.tables.append(name)

    def create_container(self, name: str) -> None:
        self.containers.append(name)

    def create_queue(self, name: str) -> None:
        self.queues.append(name)


def _azure_settings() -> Settings:
    return Settings.from_env(
        {
            "FLEET_STORE": "azure",
            "COSMOS__accountEndpoint": "https://account.documents.azure.com:443/",
            "AzureWebJobsStorage__accountName": "account",
        }
    )


def test_infra_cosmos_container_is_the_one_the_code_would_create() -> None:
    settings = _azure_settings()
    assert settings.cosmos is not None
    recorder = _Recorder()
    azure_store.ensure_cosmos(recorder, settings.cosmos)  # type: ignore[arg-type]
    cosmos = FLEET_JSON["cosmos"]
    assert cosmos["database"] == recorder.calls["database"]
    assert cosmos["container"] == recorder.calls["container"]
    assert cosmos["partitionKey"] == recorder.calls["partition_key"].path
    assert cosmos["indexingPolicy"] == recorder.calls["indexing_policy"]
    assert cosmos["defaultTtl"] == recorder.calls["default_ttl"]

    # ... and cosmos.bicep puts them where Cosmos DB reads them.
    resources = inventory.resources(_bicep(INFRA / "app" / "cosmos.bicep"))
    container = _object(inventory.object_entries(resources["container"][1])["properties"])
    resource = _object(container["resource"])
    partition_key = _object(resource["partitionKey"])
    assert partition_key["paths"].split() == ["[", "partitionKeyPath", "]"]
    assert partition_key["kind"] == f"'{recorder.calls['partition_key'].kind}'"
    assert partition_key["version"] == str(recorder.calls["partition_key"].version)
    assert resource["indexingPolicy"] == "indexingPolicy"
    assert resource["defaultTtl"] == "defaultTtl"
    passed = check.module_params(_bicep(MAIN), "cosmos")
    assert passed["partitionKeyPath"] == "fleet.cosmos.partitionKey"
    assert passed["indexingPolicy"] == "fleet.cosmos.indexingPolicy"
    assert passed["defaultTtl"] == "fleet.cosmos.defaultTtl"


def test_infra_storage_tables_containers_and_queues_are_the_ones_the_code_uses() -> None:
    settings = _azure_settings()
    assert settings.storage is not None
    recorder = _Recorder()
    azure_store.ensure_tables(recorder)  # type: ignore[arg-type]
    azure_store.ensure_blobs(recorder, settings.storage.artifacts_container)  # type: ignore[arg-type]
    azure_store.ensure_queues(recorder)  # type: ignore[arg-type]
    assert FLEET_JSON["storage"]["tables"] == recorder.tables
    assert [FLEET_JSON["storage"]["artifactsContainer"]] == recorder.containers
    assert FLEET_JSON["storage"]["queues"] == recorder.queues
    assert {PASSES_QUEUE, POISON_QUEUE} <= set(recorder.queues)  # the queue triggers' queues
    passed = check.module_params(_bicep(MAIN), "storage")
    assert passed["tableNames"] == "fleet.storage.tables"
    assert "fleet.storage.artifactsContainer" in passed["containerNames"]
    assert passed["queueNames"] == "fleet.storage.queues"


def test_infra_security_properties_are_set() -> None:
    storage = _object(
        inventory.object_entries(
            inventory.resources(_bicep(INFRA / "app" / "storage.bicep"))["storage"][1]
        )["properties"]
    )
    assert storage["allowSharedKeyAccess"] == "false"
    assert storage["allowBlobPublicAccess"] == "false"
    assert storage["minimumTlsVersion"] == "'TLS1_2'"
    cosmos = _object(
        inventory.object_entries(
            inventory.resources(_bicep(INFRA / "app" / "cosmos.bicep"))["account"][1]
        )["properties"]
    )
    assert cosmos["disableLocalAuth"] == "true"
    site = inventory.object_entries(
        inventory.resources(_bicep(INFRA / "app" / "api.bicep"))["functionApp"][1]
    )
    assert _object(site["identity"])["type"] == "'SystemAssigned'"
    assert _object(site["properties"])["httpsOnly"] == "true"


# Built-in role definition ids (the same in every tenant), by role assignment in rbac.bicep: the
# least each use needs (Storage Blob Data Contributor, not Owner).
ROLE_ASSIGNMENTS = {
    "blobContributor": ("storage", "ba92f5b4-2d11-453f-a403-e96b0029c9fe"),
    "tableContributor": ("storage", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"),
    "queueContributor": ("storage", "974c5e8b-45b9-4653-ba55-5f855dd0fb88"),
    "metricsPublisher": ("applicationInsights", "3913510d-42f4-4e42-8a64-420c390055eb"),
    "secretsUser": ("keyVault", "4633458b-17de-408a-b874-0445c86b69e6"),
    "cosmosContributor": ("database", "00000000-0000-0000-0000-000000000002"),
}
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"


def _role_assignments() -> dict[str, dict[str, str]]:
    resources = inventory.resources(_bicep(INFRA / "app" / "rbac.bicep"))
    return {
        symbol: inventory.object_entries(body)
        for symbol, (kind, body) in resources.items()
        if kind.split("@")[0].endswith(("/roleAssignments", "/sqlRoleAssignments"))
    }


def _role_ids() -> dict[str, str]:
    """rbac.bicep's `roles` variable and its Cosmos DB role: name -> role definition id."""
    text = _bicep(INFRA / "app" / "rbac.bicep")
    match = re.search(r"^var roles = (\{.*?^\})", text, re.MULTILINE | re.DOTALL)
    assert match, "rbac.bicep: no `var roles = {...}`"
    ids = {k: inventory.bicep_string(v) for k, v in _object(match.group(1)).items()}
    cosmos = re.search(r"^var (cosmos\w+) = ('[^']+')", text, re.MULTILINE)
    assert cosmos
    ids[cosmos.group(1)] = inventory.bicep_string(cosmos.group(2))
    return ids


def test_infra_role_assignments_are_named_by_scope_principal_and_role() -> None:
    assignments = _role_assignments()
    assert sorted(assignments) == sorted(ROLE_ASSIGNMENTS)
    for symbol, entries in assignments.items():
        # A Cosmos DB role assignment is a child of the account; its scope is a property.
        scope = entries.get("scope") or ("database" if "parent" in entries else None)
        name = re.fullmatch(r"guid\((\w+)\.id, principalId, ([\w.]+)\)", entries["name"])
        assert name, f"{symbol}: name must be guid(scope.id, principalId, role)"
        assert name.group(1) == scope, symbol
        properties = _object(entries["properties"])
        assert properties["principalId"] == "principalId"
        assert name.group(2) in properties["roleDefinitionId"], symbol


def test_infra_roles_are_the_least_the_app_needs_at_their_scopes() -> None:
    ids = _role_ids()
    for symbol, entries in _role_assignments().items():
        scope, role_id = ROLE_ASSIGNMENTS[symbol]
        role = re.search(r"(?:roles\.)?(\w+)\)?$", entries["name"].removesuffix(")"))
        assert role and ids[role.group(1)] == role_id, symbol
        properties = _object(entries["properties"])
        if symbol == "cosmosContributor":
            # The fleet database, in the /dbs/<name> form Cosmos DB scopes use; not the account.
            assert entries["parent"] == "cosmos"
            assert properties["scope"] == "'${cosmos.id}/dbs/${database.name}'"
        else:
            assert entries["scope"] == scope, symbol
            assert properties["principalType"] == "'ServicePrincipal'"
    rbac = _bicep(INFRA / "app" / "rbac.bicep")
    database = inventory.object_entries(inventory.resources(rbac)["database"][1])
    assert (database["parent"], database["name"]) == ("cosmos", "cosmosDatabaseName")
    # No Owner role anywhere in the templates.
    for path in INFRA.rglob("*.bicep"):
        assert STORAGE_BLOB_DATA_OWNER not in _bicep(path), path


def test_infra_roles_are_granted_before_the_app_settings_are_written() -> None:
    """The settings' Key Vault references resolve when the app restarts with them."""
    api = _bicep(INFRA / "app" / "api.bicep")
    passed = check.module_params(api, "rbac")
    assert passed["principalId"] == "functionApp.identity.principalId"
    assert passed["cosmosDatabaseName"] == "cosmosDatabase"
    settings = inventory.object_entries(inventory.resources(api)["appSettings"][1])
    assert settings["dependsOn"].split() == ["[", "rbac", "]"]
    main = _bicep(MAIN)
    assert not re.search(r"^module\s+rbac\b", main, re.MULTILINE)  # one place grants them
    assert check.module_params(main, "api")["cosmosAccountName"] == "cosmos.outputs.name"


# --- secrets: Key Vault references ----------------------------------------------------------

KEY_VAULT_REFERENCE = re.compile(
    r"secretsGiven\.(\w+) \? '@Microsoft\.KeyVault\(SecretUri=\$\{secretUri\}/([a-z0-9-]+)/\)' : ''"
)
# The settings that hold secrets (or URLs that may carry one): every one is a Key Vault
# reference. FLEET_OPERATOR_TOKENS stays a (secure) value: it should hold sha256: hashes only.
SECRET_SETTINGS = {
    "TRACKER_ECHO_URL",
    "TRACKER_ECHO_SECRET",
    "ALERT_WEBHOOK_URL",
    "ALERT_WEBHOOK_SECRET",
}


def test_infra_secret_settings_are_key_vault_references() -> None:
    settings = inventory.app_settings()
    references = {
        name: KEY_VAULT_REFERENCE.fullmatch(value)
        for name, value in settings.items()
        if "KeyVault" in value
    }
    assert references.keys() == SECRET_SETTINGS
    for name, match in references.items():
        assert match, f"{name}: {settings[name]}"
        # The reference names the secret keyvault.bicep stores for the setting (kebab case).
        assert match.group(1) == name
        assert match.group(2) == name.lower().replace("_", "-")
    api = _bicep(INFRA / "app" / "api.bicep")
    assert "var secretUri = '${keyVault.properties.vaultUri}secrets'" in api
    # No secret value reaches the api module: only whether each was given.
    main = _bicep(MAIN)
    passed = check.module_params(main, "api")
    given = _object(passed["secretsGiven"])
    secure = set(re.findall(r"^@secure\(\)\n(?:@.*\n)*param (\w+)", main, re.MULTILINE))
    stored = _object(re.search(r"^var secretSettings = (\{.*?^\})", main, re.M | re.S)[1])
    assert stored.keys() == given.keys() == SECRET_SETTINGS
    for name, param in stored.items():
        assert param in secure, f"{name}: its parameter {param} must be @secure()"
        assert given[name] == f"!empty({param})"
    assert secure - set(stored.values()) == {"operatorTokens"}
    for param, expression in passed.items():
        if param != "secretsGiven":
            assert not set(re.findall(r"\w+", expression)) & set(stored.values()), param
    assert check.module_params(main, "keyVault")["secrets"] == "secretSettings"


def test_infra_key_vault_is_rbac_only_and_stores_each_given_secret() -> None:
    text = _bicep(INFRA / "app" / "keyvault.bicep")
    vault = _object(inventory.object_entries(inventory.resources(text)["vault"][1])["properties"])
    assert vault["enableRbacAuthorization"] == "true"
    assert "accessPolicies" not in vault
    assert vault["enableSoftDelete"] == "true"
    assert vault["publicNetworkAccess"] == "publicNetworkAccess"
    assert "for entry in items(secrets): if (!empty(entry.value))" in text
    assert "name: replace(toLower(entry.key), '_', '-')" in text
    assert re.search(r"^@secure\(\)\n(?:@.*\n)*param secrets object", text, re.MULTILINE)


# --- private networking ---------------------------------------------------------------------


def test_infra_public_network_access_parameter_closes_storage_cosmos_and_key_vault() -> None:
    main = _bicep(MAIN)
    defaults = inventory.param_defaults(MAIN)
    assert defaults["publicNetworkAccess"] == "'Enabled'"
    assert re.search(
        r"@allowed\(\[\s*'Enabled'\s*'Disabled'\s*\]\)\n@description\([^\n]*\)\nparam "
        r"publicNetworkAccess string",
        main,
    )
    for module, template, resource in (
        ("storage", "storage.bicep", "storage"),
        ("cosmos", "cosmos.bicep", "account"),
        ("keyVault", "keyvault.bicep", "vault"),
    ):
        assert check.module_params(main, module)["publicNetworkAccess"] == "publicNetworkAccess"
        text = _bicep(INFRA / "app" / template)
        properties = _object(
            inventory.object_entries(inventory.resources(text)[resource][1])["properties"]
        )
        assert properties["publicNetworkAccess"] == "publicNetworkAccess", template
        if "networkAcls" in properties:
            acls = _object(properties["networkAcls"])
            assert acls["defaultAction"] == (
                "publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'"
            ), template
    # Disabled: a network with private endpoints for each, and the app joins it.
    assert "var privateNetworking = publicNetworkAccess == 'Disabled'" in main
    assert re.search(r"^module network 'app/network.bicep' = if \(privateNetworking\)", main, re.M)
    api = check.module_params(main, "api")
    assert api["appSubnetId"] == "privateNetworking ? network.outputs.appSubnetId : ''"
    site = inventory.object_entries(
        inventory.resources(_bicep(INFRA / "app" / "api.bicep"))["functionApp"][1]
    )
    assert (
        _object(site["properties"])["virtualNetworkSubnetId"]
        == "empty(appSubnetId) ? null : appSubnetId"
    )
    network = _bicep(INFRA / "app" / "network.bicep")
    assert sorted(re.findall(r"groupId: '(\w+)'", network)) == [
        "Sql",
        "blob",
        "queue",
        "table",
        "vault",
    ]
    assert "serviceName: 'Microsoft.App/environments'" in network
    docs = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert "publicNetworkAccess" in docs and "privateNetworkAddressSpace" in docs


# --- the azd layout ------------------------------------------------------------------------


def test_infra_outputs_are_upper_snake_and_name_what_a_deployer_needs() -> None:
    outputs = re.findall(r"^output\s+(\w+)\s", _bicep(MAIN), re.MULTILINE)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", o) for o in outputs), outputs
    for needed in ("AZURE_FUNCTION_APP_NAME", "API_URL", "WEBUI_URL", "COSMOS_ENDPOINT"):
        assert needed in outputs


def test_infra_parameters_file_covers_every_required_parameter() -> None:
    declared = dict(re.findall(r"^param\s+(\w+)\s+\w+(.*)$", _bicep(MAIN), re.MULTILINE))
    required = {name for name, rest in declared.items() if "=" not in rest}
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    given = set(parameters["parameters"])
    assert given <= declared.keys()
    assert required <= given, required - given


def test_azure_yaml_deploys_the_api_and_the_web_ui() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    api = config["services"]["api"]
    assert (api["project"], api["language"], api["host"]) == (".", "python", "function")
    ui = config["services"]["webui"]
    assert (ui["project"], ui["host"], ui["dist"]) == ("./webui", "staticwebapp", "dist")
    assert "scripts/deploy/webui.py build --out dist" in ui["hooks"]["prepackage"]["posix"]["run"]
    assert config["infra"]["path"] == "infra"
    # azd finds each service's resource by this tag.
    assert "'azd-service-name': 'api'" in _bicep(INFRA / "app" / "api.bicep")
    assert "'azd-service-name': 'webui'" in _bicep(INFRA / "app" / "webui.bicep")


# --- every template parses (checkov's parser) ---------------------------------------------


def test_infra_every_bicep_file_parses_with_checkovs_parser() -> None:
    if not CHECKOV_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("no .local/venv-checkov in CI: .ci/run must run `make checkov` first")
        pytest.skip("no .local/venv-checkov: run `make checkov` once to parse the templates here")
    result = subprocess.run(
        [str(CHECKOV_PYTHON), "scripts/deploy/bicep_parse.py", "infra"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    files = sorted(p.relative_to(ROOT).as_posix() for p in INFRA.rglob("*.bicep"))
    assert sorted(parsed) == files
    assert all(error is None for error in parsed.values()), parsed


def test_bicep_parse_reports_a_file_that_does_not_parse(tmp_path: Path) -> None:
    if not CHECKOV_PYTHON.exists():
        pytest.skip("no .local/venv-checkov")
    (tmp_path / "good.bicep").write_text("param a string = 'x'\n", encoding="utf-8")
    (tmp_path / "bad.bicep").write_text("resource x 'y@1' = {\n", encoding="utf-8")
    result = subprocess.run(
        [str(CHECKOV_PYTHON), str(ROOT / "scripts/deploy/bicep_parse.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    parsed = json.loads(result.stdout)
    assert parsed[str(tmp_path / "good.bicep")] is None
    assert parsed[str(tmp_path / "bad.bicep")]
    assert "bad.bicep: does not parse" in result.stderr


# --- the checkov verdict --------------------------------------------------------------------


def _check(check_id: str, reason: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"result": "SKIPPED" if reason is not None else "PASSED"}
    if reason is not None:
        result["suppress_comment"] = reason
    return {
        "check_id": check_id,
        "check_name": f"name of {check_id}",
        "resource": "Microsoft.Storage/storageAccounts.storage",
        "file_path": "/app/storage.bicep",
        "file_line_range": [13, 40],
        "check_result": result,
    }


def _report(**results: list[dict[str, Any]]) -> dict[str, Any]:
    full = {"passed_checks": [], "failed_checks": [], "skipped_checks": [], "parsing_errors": []}
    full.update(results)
    return {
        "check_type": "bicep",
        "results": full,
        "summary": {"parsing_errors": len(full["parsing_errors"])},
    }


def test_checkov_report_passes_with_reasoned_skips() -> None:
    verdict = checkov_report.evaluate(
        _report(passed_checks=[_check("CKV_1")], skipped_checks=[_check("CKV_2", "why not")])
    )
    assert verdict.ok
    assert verdict.lines()[0] == "checkov: 1 passed, 0 failed, 1 skipped (waived in the templates)"
    assert verdict.lines()[1].endswith("(app/storage.bicep:13): why not")


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        (_report(failed_checks=[_check("CKV_1")]), "FAILED  CKV_1"),
        (_report(skipped_checks=[_check("CKV_2", "No comment provided")]), "without a reason"),
        (_report(passed_checks=[_check("CKV_1")], parsing_errors=["/x.bicep"]), "could not parse"),
        (_report(), "checked nothing"),
        (
            [_report(passed_checks=[_check("CKV_1")]), _report(failed_checks=[_check("CKV_3")])],
            "CKV_3",
        ),
    ],
)
def test_checkov_report_fails(report: Any, problem: str) -> None:
    verdict = checkov_report.evaluate(report)
    assert not verdict.ok
    assert problem in "\n".join(verdict.lines())


# --- the deploy check script ----------------------------------------------------------------


@pytest.mark.parametrize(
    "api",
    [
        "https://f.azurewebsites.net",
        "https://f.azurewebsites.net/",
        "https://f.azurewebsites.net/api/",
    ],
)
def test_check_health_url_accepts_the_api_with_or_without_api(api: str) -> None:
    assert check.health_url(api) == "https://f.azurewebsites.net/api/health"


def test_check_health_url_rejects_what_is_not_a_url() -> None:
    with pytest.raises(webui.BuildError):
        check.health_url("func-1")


HEALTHY = {
    "status": "ok",
    "store": "azure",
    "dependencies": {
        "cosmos": {"ok": True, "ms": 3},
        "tables": {"ok": True},
        "blobs": {"ok": True},
    },
}


def test_check_evaluate_health() -> None:
    assert check.evaluate_health(200, json.dumps(HEALTHY)) == []
    degraded = {
        "status": "degraded",
        "dependencies": {
            **HEALTHY["dependencies"],
            "blobs": {"ok": False, "error": "store_error", "message": "403 AuthorizationFailure"},
        },
    }
    problems = check.evaluate_health(503, json.dumps(degraded))
    assert problems[0].startswith("HTTP 503 (want 200)")
    assert "blobs is not ok (store_error: 403 AuthorizationFailure)" in problems
    down = {"status": "down", "error": "settings", "message": "COSMOS_ENDPOINT is required"}
    assert "COSMOS_ENDPOINT is required" in " ".join(check.evaluate_health(503, json.dumps(down)))
    assert "not the health JSON" in check.evaluate_health(502, "<html>Bad Gateway</html>")[0]
    assert check.evaluate_health(200, json.dumps({"status": "ok", "dependencies": {}}))


def test_check_wait_healthy_retries_until_healthy() -> None:
    answers = [(503, "starting"), (200, json.dumps(HEALTHY))]
    seen: list[str] = []
    sleeps: list[float] = []
    problems = check.wait_healthy(
        "https://f.azurewebsites.net",
        attempts=3,
        wait_seconds=7,
        fetch=lambda url, timeout: (seen.append(url), answers.pop(0))[1],
        sleep=sleeps.append,
        log=lambda line: None,
    )
    assert problems == []
    assert seen == ["https://f.azurewebsites.net/api/health"] * 2
    assert sleeps == [7]


def test_check_wait_healthy_gives_the_last_problems_when_it_never_gets_healthy() -> None:
    def unreachable(url: str, timeout: float) -> tuple[int, str]:
        raise OSError("connection refused")

    problems = check.wait_healthy(
        "https://f.azurewebsites.net",
        attempts=2,
        wait_seconds=0,
        fetch=unreachable,
        sleep=lambda s: None,
        log=lambda line: None,
    )
    assert problems == ["https://f.azurewebsites.net/api/health unreachable: connection refused"]


def test_check_deployment_settings_list_every_template_setting() -> None:
    settings = {s.name: s for s in check.deployment_settings()}
    assert settings.keys() == inventory.app_settings().keys()
    assert settings["FLEET_OPERATOR_TOKENS"].required
    assert settings["FLEET_OPERATOR_TOKENS"].source == "param operatorTokens"
    assert settings["REAPER_SCHEDULE"].source == "param reaperSchedule = '*/15 * * * * *'"
    assert not settings["FLEET_TOKEN_GRACE_SECONDS"].required
    # A Key Vault reference only when the secret was given: empty is "off", not missing.
    assert not settings["ALERT_WEBHOOK_SECRET"].required
    assert not settings["TRACKER_ECHO_URL"].required
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"].readers == ()
    assert any(r.startswith("fleet/settings.py:") for r in settings["FLEET_STORE"].readers)
    text = "\n".join(check.format_settings(list(settings.values())))
    assert "COSMOS_KEY:" in text  # the local-only alternatives are named too


def test_check_compare_deployed_settings() -> None:
    settings = check.deployment_settings()
    good = [{"name": s.name, "value": "x", "slotSetting": False} for s in settings]
    assert check.compare_deployed(settings, good) == []
    assert check.compare_deployed(settings, {s.name: "x" for s in settings}) == []
    bad = {s.name: "x" for s in settings if s.name != "REAPER_SCHEDULE"}
    bad["FLEET_OPERATOR_TOKENS"] = ""
    bad["FLEET_TOKEN_GRACE_SECONDS"] = ""  # optional: empty is fine
    bad["COSMOS_KEY"] = "a key"
    problems = check.compare_deployed(settings, bad)
    assert problems[:2] == [
        "REAPER_SCHEDULE: missing",
        "FLEET_OPERATOR_TOKENS: empty, but required",
    ]
    assert problems[2].startswith("COSMOS_KEY: set, but a deployment must not use it")
    assert len(problems) == 3
    assert "not an app settings list" in check.compare_deployed(settings, "nope")[0]


def test_check_new_operator_token_is_accepted_by_the_settings_in_both_forms() -> None:
    token, hashed = check.new_operator_token()
    assert token.startswith("flo_")
    for value in (token, hashed):
        settings = Settings.from_env({"FLEET_STORE": "memory", "FLEET_OPERATOR_TOKENS": value})
        assert settings.operator_token_hashes == {hashed.removeprefix("sha256:")}


def test_check_param_descriptions_reads_escaped_quotes() -> None:
    text = (
        "@secure()\n@description('it\\'s secret')\n@minLength(1)\n"
        "param token string\nparam plain string\n"
    )
    assert check.param_descriptions(text) == {"token": "it's secret"}


# --- the web UI build -----------------------------------------------------------------------


def test_webui_config_script_names_the_api_origin() -> None:
    script = webui.config_script("https://f.azurewebsites.net/api/")
    assert 'window.FLEET_API_BASE = "https://f.azurewebsites.net";' in script
    assert "</script>" not in webui.config_script("https://f.net/</script>")
    for bad in ("f.azurewebsites.net", "ftp://f.net", "https://f.net/?x=1"):
        with pytest.raises(webui.BuildError):
            webui.normalize_api_base(bad)


def test_webui_build_copies_the_site_and_writes_config(tmp_path: Path) -> None:
    source = _app(
        tmp_path / "webui",
        {
            "index.html": '<script src="config.js"></script><script src="js/app.js"></script>',
            "config.js": 'window.FLEET_API_BASE = window.FLEET_API_BASE || "";\n',
            "js/app.js": "// app\n",
            "dist/old.txt": "an earlier build\n",
        },
    )
    out = webui.build("https://f.azurewebsites.net", source / "dist", source=source)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "config.js",
        "index.html",
        "js/app.js",
    ]
    assert "https://f.azurewebsites.net" in (out / "config.js").read_text(encoding="utf-8")
    assert 'FLEET_API_BASE || ""' in (source / "config.js").read_text(encoding="utf-8")
    with pytest.raises(webui.BuildError, match="holds the source"):
        webui.build("https://f.net", source, source=source)
    (source / "index.html").write_text('<script src="js/app.js"></script>', encoding="utf-8")
    with pytest.raises(webui.BuildError, match=r"does not load config\.js"):
        webui.build("https://f.net", tmp_path / "out", source=source)


def test_webui_the_real_page_loads_the_config_the_build_writes() -> None:
    index = (ROOT / "webui" / "index.html").read_text(encoding="utf-8")
    assert f'src="{webui.CONFIG_SCRIPT}"' in index


def test_infra_queue_settings_default_to_what_host_json_says() -> None:
    """The template sets the host's queue settings per deployment; by default they are the
    project's host.json values, so a deployment behaves as the local host does."""
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["extensions"]["queues"]
    main = _bicep(MAIN)
    defaults = {
        name: re.search(rf"^param {param} \w+ = '?([^'\n]+)'?$", main, re.M)
        for name, param in (
            ("batchSize", "queueBatchSize"),
            ("maxDequeueCount", "queueMaxDequeueCount"),
            ("visibilityTimeout", "queueVisibilityTimeout"),
        )
    }
    assert {k: m.group(1) if m else None for k, m in defaults.items()} == {
        k: str(host[k]) for k in defaults
    }
    api = _bicep(INFRA / "app" / "api.bicep")
    for name in defaults:
        assert f"AzureFunctionsJobHost__extensions__queues__{name}:" in api


def test_infra_passes_queue_is_the_one_the_code_sends_to_and_the_bindings_name() -> None:
    """FLEET_PASSES_QUEUE: the template sets it to the first queue it makes (its poison queue
    the second), which is the code's default; the queue triggers' bindings name the setting."""
    assert FLEET_JSON["storage"]["queues"][:2] == [PASSES_QUEUE, POISON_QUEUE]
    assert Settings.from_env({"FLEET_STORE": "memory"}).passes_queue == PASSES_QUEUE
    assert check.module_params(_bicep(MAIN), "api")["passesQueue"] == "fleet.storage.queues[0]"
    assert "FLEET_PASSES_QUEUE: passesQueue" in _bicep(INFRA / "app" / "api.bicep")
    sample = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
    assert sample["Values"]["FLEET_PASSES_QUEUE"] == PASSES_QUEUE


# --- elastic factories (app/factories.bicep) ------------------------------------------------

FACTORIES = INFRA / "app" / "factories.bicep"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


def _array_objects(text: str) -> list[dict[str, str]]:
    """The object literals of a Bicep array literal, each as its entries."""
    text = text.strip()
    assert text.startswith("[") and text.endswith("]"), text
    found: list[dict[str, str]] = []
    at = 1
    while (opening := text.find("{", at)) != -1:
        body = inventory._block_after(text, opening)
        found.append(inventory.object_entries(body))
        at = opening + len(body) + 2
    return found


def _bicep_var(text: str, name: str) -> str:
    match = re.search(
        rf"^var {name} = (.*?)$(?=\n(?://|var |resource |output |\n))", text, re.M | re.S
    )
    assert match, f"no var {name}"
    return match.group(1)


def _factory_job() -> dict[str, str]:
    kind, body = inventory.resources(_bicep(FACTORIES))["jobs"]
    assert kind.startswith("Microsoft.App/jobs@")
    return inventory.object_entries(body)


def test_infra_factories_are_off_by_default() -> None:
    """No capability set, no job and no Container Apps environment: existing deployments are
    unchanged until the operator lists a set."""
    main = _bicep(MAIN)
    assert inventory.param_defaults(MAIN)["factorySets"] == "[]"
    assert "var elasticFactories = !empty(factorySets)" in main
    assert re.search(
        r"^module factories 'app/factories.bicep' = if \(elasticFactories\)", main, re.M
    )
    # Every Container Apps resource is in that module, and only there.
    for path in INFRA.rglob("*.bicep"):
        kinds = [kind for kind, _ in inventory.resources(_bicep(path)).values()]
        assert any(k.startswith("Microsoft.App/") for k in kinds) == (path == FACTORIES), path
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert "factorySets" not in parameters["parameters"]
    for output in ("AZURE_CONTAINER_APPS_ENVIRONMENT_NAME", "FACTORY_IDENTITY_PRINCIPAL_ID"):
        assert re.search(rf"^output {output} string = elasticFactories \? .+ : ''$", main, re.M)


def test_infra_factory_jobs_scale_from_zero_on_the_demand_endpoint() -> None:
    job = _factory_job()
    configuration = _object(_object(job["properties"])["configuration"])
    assert configuration["triggerType"] == "'Event'"
    scale = _object(_object(configuration["eventTriggerConfig"])["scale"])
    assert scale["minExecutions"] == "0"
    assert scale["maxExecutions"] == "set.?maxExecutions ?? maxExecutions"
    assert scale["pollingInterval"] == "pollingInterval"
    (rule,) = _array_objects(scale["rules"])
    assert rule["type"] == "'metrics-api'"
    metadata = _object(rule["metadata"])
    assert metadata["url"] == (
        "'${apiUrl}/api/fleet/demand?capabilities=${join(set.capabilities, ',')}'"
    )
    assert metadata["valueLocation"] == "'routable'"
    assert metadata["targetValue"] == "'1'"
    assert metadata["authMode"] == "'bearer'"
    # ... authenticated with the scaler token, a Key Vault reference.
    (auth,) = _array_objects(rule["auth"])
    assert auth == {"secretRef": "scalerSecret", "triggerParameter": "'token'"}
    text = _bicep(FACTORIES)
    assert "var scalerSecret = 'scaler-token'" in text
    scaler = next(
        s for s in _array_objects(_bicep_var(text, "tokenSecrets")) if s["name"] == "scalerSecret"
    )
    assert scaler["keyVaultUrl"] == "'${vault.properties.vaultUri}secrets/${scalerTokenSecretName}'"
    assert scaler["identity"] == "identity.id"
    # The endpoint the rule polls is the coordinator's, and replies with `routable`.
    from fleet.http import fleet_ops
    from fleet.http.fleet_views import DemandView

    demand = next(op for op in fleet_ops.operations.declared if op.id == "demand")
    assert (demand.method, demand.route) == ("GET", "fleet/demand")
    assert "capabilities" in {p.name for p in demand.params if p.where == "query"}
    assert "routable" in DemandView.model_fields


def test_infra_factory_jobs_read_secrets_through_key_vault_only() -> None:
    """Every job secret is a Key Vault reference resolved with the factories' identity; that
    identity reads only those secrets, and the containers cannot use it."""
    text = _bicep(FACTORIES)
    job = _factory_job()
    configuration = _object(_object(job["properties"])["configuration"])
    assert configuration["secrets"] == "concat(tokenSecrets, engineJobSecrets)"
    for var in ("tokenSecrets", "engineJobSecrets"):
        for secret in _array_objects(_bicep_var(text, var)):
            assert "value" not in secret, var
            assert secret["keyVaultUrl"].startswith("'${vault.properties.vaultUri}secrets/")
            assert secret["identity"] == "identity.id"
    (settings,) = _array_objects(configuration["identitySettings"])
    assert settings == {"identity": "identity.id", "lifecycle": "'None'"}
    assert _object(job["identity"])["type"] == "'UserAssigned'"
    assert job["dependsOn"].split() == ["[", "secretsUser", "]"]
    kind, body = inventory.resources(text)["secretsUser"]
    assert kind.startswith("Microsoft.Authorization/roleAssignments@")
    assignment = inventory.object_entries(body)
    assert assignment["scope"] == "vaultSecrets[i]"  # each secret, not the vault
    assert assignment["name"] == "guid(vaultSecrets[i].id, identity.id, keyVaultSecretsUser)"
    assert f"var keyVaultSecretsUser = '{KEY_VAULT_SECRETS_USER}'" in text
    assert _object(assignment["properties"])["principalType"] == "'ServicePrincipal'"
    assert "var vaultSecretNames = concat(tokenSecretNames, engineVaultSecrets)" in text
    # The environment's logs go to the workspace without its shared key.
    assert "sharedKey" not in text and "listKeys" not in text


def test_infra_factory_container_runs_an_ephemeral_factory() -> None:
    from factory_cli.cli import build_parser
    from factory_cli.config import SETTINGS

    text = _bicep(FACTORIES)
    template = _object(_object(_factory_job()["properties"])["template"])
    (container,) = _array_objects(template["containers"])
    command = [
        inventory.bicep_string(line.strip())
        for line in container["command"].strip("[]").splitlines()
        if line.strip()
    ]
    assert command[:2] == ["/bin/sh", "-c"]
    # Enrolls (a new factory per execution), then execs fleet-factory with the args.
    assert (
        command[2] == 'fleet-factory enroll --product "$FLEET_PRODUCT" && exec fleet-factory "$@"'
    )
    args = container["args"].split()
    assert args == ["[", "'run'", "'--exit-when-idle'", "string(idleSeconds)", "]"]
    parsed = build_parser().parse_args(["run", "--exit-when-idle", "300"])
    assert (parsed.command, parsed.exit_when_idle) == ("run", 300.0)
    # The environment names settings the CLI reads; the enrollment token is a secret.
    assert container["env"] == "concat(factoryEnv, setEnv[i], engineEnv)"
    env = _array_objects(_bicep_var(text, "factoryEnv"))
    per_set = _bicep_var(text, "setEnv")  # [for set in sets: [...]]
    assert per_set.startswith("[\n  for set in sets: [")
    env += _array_objects(per_set.split(":", 1)[1].strip().removesuffix("]").strip())
    names = {inventory.bicep_string(e["name"]) for e in env}
    assert names <= {s.env for s in SETTINGS}, names - {s.env for s in SETTINGS}
    assert {"FLEET_API", "FLEET_ENROLLMENT_TOKEN", "FLEET_CAPS", "FLEET_PRODUCT"} <= names
    by_name = {inventory.bicep_string(e["name"]): e for e in env}
    assert by_name["FLEET_ENROLLMENT_TOKEN"] == {
        "name": "'FLEET_ENROLLMENT_TOKEN'",
        "secretRef": "enrollmentSecret",
    }
    assert by_name["FLEET_API"]["value"] == "'${apiUrl}/api'"
    assert by_name["FLEET_CAPS"]["value"] == "join(set.capabilities, ',')"
    # The image the jobs run is the repository's: its entrypoint is the command above's.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["fleet-factory"]' in dockerfile


def test_infra_factories_module_is_given_what_it_declares() -> None:
    main = _bicep(MAIN)
    match = re.search(r"^module factories '[^']+' = if \(\w+\) \{", main, re.M)
    assert match
    module = inventory.object_entries(inventory._block_after(main, match.end() - 1))
    passed = inventory.object_entries(module["params"].strip()[1:-1])
    declared = re.findall(r"^param (\w+) ", _bicep(FACTORIES), re.M)
    assert sorted(passed) == sorted(declared)
    assert passed["apiUrl"] == "api.outputs.url"
    assert passed["keyVaultName"] == "keyVault.outputs.name"
    assert passed["logAnalyticsName"] == "logAnalyticsName"
    assert check.module_params(main, "monitoring")["logAnalyticsName"] == "logAnalyticsName"
    docs = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert "## Elastic factories (Container Apps Jobs)" in docs
    for param in re.findall(r"^param (factory\w+) ", main, re.M):
        assert f"`{param}`" in docs, param
