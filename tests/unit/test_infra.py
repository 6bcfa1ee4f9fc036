"""The Bicep deployment, checked from the files alone: syntax, what the code expects, secure defaults.

No Bicep CLI and no Azure here: the files are parsed with tree-sitter-bicep, which catches
syntax errors (not type errors), and the checks read the syntax tree, not the text, where a
property's value matters.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

from shared.model import QUEUES
from shared.storage.bus import poison_queue
from shared.storage.tables import DEFAULT_TABLE_PREFIX, TABLES
from tests.unit.test_settings_documented import settings_read_by

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
MAIN = INFRA / "main.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

_PARSER = Parser(Language(tree_sitter_bicep.language()))

# Settings the code reads that the deployment does not set under that very name.
NOT_SET_IN_AZURE: dict[str, str] = {
    "DEVHOST_FUNCTION_KEY": "local host only; in Azure the Functions host keeps the function keys",
    "DEVHOST_MASTER_KEY": "local host only; in Azure the Functions host keeps the master key",
    "AzureWebJobsStorage": "set in its identity-based form, AzureWebJobsStorage__accountName",
    "ServiceBusConnection": "set in its identity-based form, ServiceBusConnection__fullyQualifiedNamespace",
    "DATA_PROTECTION_KEY_SECRET": "optional: the default secret name, data-protection-key, is the one the docs create",
}
IDENTITY_BASED_FORMS = {
    "AzureWebJobsStorage": "AzureWebJobsStorage__accountName",
    "ServiceBusConnection": "ServiceBusConnection__fullyQualifiedNamespace",
}
# Settings the deployment sets that the code does not read: the Functions host reads them.
HOST_SETTINGS: dict[str, str] = {
    "AzureWebJobsStorage__credential": "host and code: use a managed identity",
    "AzureWebJobsStorage__clientId": "host and code: which user-assigned identity",
    "ServiceBusConnection__credential": "Service Bus trigger: use a managed identity",
    "ServiceBusConnection__clientId": "Service Bus trigger and code: which user-assigned identity",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "host telemetry destination (the app's log export reads it too)",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "host and the app's log exporter send with the identity's token",
    "PYTHON_THREADPOOL_THREAD_COUNT": "Python worker: threads that run the synchronous functions",
}
# Set by neither: the app configures its own log export (shared/telemetry.py); the worker
# doing it as well would export every line twice.
NOT_SET_BY_DESIGN = {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "PYTHON_ENABLE_OPENTELEMETRY"}
# Refused or meaningless on Flex Consumption (functionAppConfig replaces them), or key-based.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD", "APPINSIGHTS_INSTRUMENTATIONKEY", "AzureWebJobsStorage", "ServiceBusConnection",
}

# Built-in role definitions the app identity is meant to hold, and broad ones it must not.
APP_ROLES = {
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "090c5cfd-751d-490a-894a-3ce6f1109419": "Azure Service Bus Data Owner",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}

SECRET_MARKERS = ("AccountKey=", "SharedAccessKey=", "listKeys(", "listConnectionStrings(", "listSecrets(",
                  "listAccountSas(", "listServiceSas(")
_KEY_LIKE = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}={0,2}")
_HEX_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")  # e.g. a Twilio Auth Token


# --- reading Bicep ------------------------------------------------------------------------------


def parse(source: str | bytes) -> Node:
    return _PARSER.parse(source.encode() if isinstance(source, str) else source).root_node


@cache
def tree(path: Path) -> Node:
    return parse(path.read_bytes())


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_errors(root: Node) -> list[str]:
    return [f"line {n.start_point[0] + 1}: " + (f"missing {n.type}" if n.is_missing else f"unexpected {n.text[:40]!r}")
            for n in walk(root) if n.is_error or n.is_missing]


def kids(node: Node) -> list[Node]:
    """Named children without comments."""
    return [child for child in node.named_children if child.type != "comment"]


def string_value(node: Node | None) -> str | None:
    """A string literal's value; None for anything else, interpolated strings included."""
    if node is None or node.type != "string":
        return None
    parts = []
    for child in kids(node):
        if child.type == "string_content":
            parts.append(child.text.decode())
        elif child.type == "escape_sequence":
            escaped = child.text.decode()
            parts.append(escaped[1] if escaped[1:] in ("'", "\\", "$") else escaped.encode().decode("unicode_escape"))
        else:
            return None
    return "".join(parts)


def literal(node: Node | None) -> object:
    """The value of a literal (string, number, boolean, array, object); None for an expression."""
    if node is None:
        return None
    if node.type == "boolean":
        return node.text == b"true"
    if node.type == "number":
        return int(node.text)
    if node.type == "string":
        return string_value(node)
    if node.type == "array":
        return [literal(item) for item in kids(node)]
    if node.type == "object":
        return {key: literal(value) for key, value in properties(node).items()}
    return None


def properties(obj: Node | None) -> dict[str, Node]:
    """An object's properties: key -> value node."""
    if obj is None or obj.type != "object":
        return {}
    found = {}
    for prop in kids(obj):
        if prop.type != "object_property":
            continue
        key_node, value = kids(prop)[0], kids(prop)[-1]
        key = string_value(key_node) if key_node.type == "string" else key_node.text.decode()
        found[key] = value
    return found


def at(obj: Node | None, dotted: str) -> Node | None:
    """The value at a dotted property path, e.g. ``properties.siteConfig.minTlsVersion``."""
    for key in dotted.split("."):
        obj = properties(obj).get(key)
    return obj


@dataclass(frozen=True)
class Resource:
    file: Path
    symbol: str
    type: str  # without the API version
    api_version: str
    body: Node  # the object
    loop_var: str | None = None
    loop_over: Node | None = None

    def get(self, dotted: str) -> Node | None:
        return at(self.body, dotted)

    def value(self, dotted: str) -> object:
        return literal(self.get(dotted))


def resources(path: Path) -> list[Resource]:
    found = []
    for node in walk(tree(path)):
        if node.type != "resource_declaration":
            continue
        symbol = kids(node)[0].text.decode()
        rtype, _, version = (string_value(kids(node)[1]) or "").partition("@")
        body = kids(node)[-1]
        loop_var = loop_over = None
        if body.type == "for_statement":
            loop_var, loop_over = kids(body)[0].text.decode(), kids(body)[1]
            body = kids(body)[-1]
        elif body.type == "if_statement":
            body = kids(body)[-1]
        found.append(Resource(path, symbol, rtype, version, body, loop_var, loop_over))
    return found


def all_resources(rtype: str) -> list[Resource]:
    return [r for path in BICEP_FILES for r in resources(path) if r.type.lower() == rtype.lower()]


def one_resource(rtype: str) -> Resource:
    found = all_resources(rtype)
    assert len(found) == 1, f"expected one {rtype}, found {len(found)}"
    return found[0]


def variables(path: Path) -> dict[str, Node]:
    return {kids(node)[0].text.decode(): kids(node)[-1]
            for node in kids(tree(path)) if node.type == "variable_declaration"}


@dataclass(frozen=True)
class Param:
    name: str
    default: Node | None
    decorators: tuple[str, ...]


def parameters(root: Node) -> dict[str, Param]:
    found = {}
    for node in kids(root):
        if node.type != "parameter_declaration":
            continue
        children = kids(node)
        default = children[2] if len(children) > 2 else None
        previous = node.prev_named_sibling
        while previous is not None and previous.type == "comment":
            previous = previous.prev_named_sibling
        decorators = ()
        if previous is not None and previous.type == "decorators":
            decorators = tuple(kids(kids(d)[0])[0].text.decode()
                               for d in kids(previous) if kids(d))
        found[children[0].text.decode()] = Param(children[0].text.decode(), default, decorators)
    return found


def loop_items(resource: Resource) -> list[object]:
    """The literal items a looped resource iterates over (a variable holding an array literal)."""
    assert resource.loop_over is not None and resource.loop_over.type == "identifier", resource.symbol
    items = literal(variables(resource.file).get(resource.loop_over.text.decode()))
    assert isinstance(items, list) and all(isinstance(i, str) for i in items), resource.symbol
    return items


def app_settings() -> dict[str, Node]:
    site = one_resource("Microsoft.Web/sites")
    listed = site.get("properties.siteConfig.appSettings")
    assert listed is not None and listed.type == "array", "app settings belong in siteConfig.appSettings"
    found = {}
    for item in kids(listed):
        name = string_value(at(item, "name"))
        assert name, f"every app setting has a literal name: {item.text.decode()[:80]}"
        assert name not in found, f"{name} is set twice"
        found[name] = at(item, "value")
    return found


def module_params(module_path: str) -> dict[str, Node]:
    """The params main.bicep passes to one module."""
    for node in kids(tree(MAIN)):
        if node.type == "module_declaration" and string_value(kids(node)[1]) == module_path:
            return properties(at(kids(node)[-1], "params"))
    raise AssertionError(f"main.bicep does not use {module_path}")


def infra_text_files() -> list[Path]:
    files = [path for path in INFRA.rglob("*") if path.is_file()]
    return [*files, REPO_ROOT / "azure.yaml"]


# --- syntax -------------------------------------------------------------------------------------


def test_the_bicep_files_are_there() -> None:
    assert MAIN in BICEP_FILES
    assert any(path.parent.name == "modules" for path in BICEP_FILES)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    errors = syntax_errors(tree(path))
    assert not errors, f"{path.relative_to(REPO_ROOT)}: {errors}"


@pytest.mark.parametrize("broken", [
    "resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'x'\n",  # unclosed object
    "param name string =\n",  # no default after '='
    "var x = split(y, ')\n",  # unclosed string
])
def test_the_parser_flags_broken_bicep(broken: str) -> None:
    assert syntax_errors(parse(broken))


def test_every_module_and_loaded_file_exists() -> None:
    for path in BICEP_FILES:
        for node in walk(tree(path)):
            target = None
            if node.type == "module_declaration":
                target = string_value(kids(node)[1])
            elif node.type == "call_expression" and kids(node)[0].text in (b"loadTextContent",
                                                                                     b"loadJsonContent"):
                target = string_value(kids(kids(node)[1])[0])
            if target is not None:
                assert (path.parent / target).is_file(), f"{path.relative_to(REPO_ROOT)}: {target} not found"


# --- what the code expects ----------------------------------------------------------------------


def servicebus_queues() -> dict[str, Resource]:
    declared = {}
    for queue in all_resources("Microsoft.ServiceBus/namespaces/queues"):
        name = queue.get("name")
        if queue.loop_var is not None and name is not None and name.text.decode() == queue.loop_var:
            names = loop_items(queue)
        else:
            names = [string_value(name)]
        for item in names:
            assert isinstance(item, str), f"{queue.symbol}: queue names must be literal"
            declared[item] = queue
    return declared


def test_every_queue_and_its_poison_twin_is_declared() -> None:
    declared = servicebus_queues()
    expected = {*QUEUES, *(poison_queue(queue) for queue in QUEUES)}
    assert expected <= set(declared), f"declare in infra/modules/servicebus.bicep: {sorted(expected - set(declared))}"


def test_every_queue_detects_duplicates_and_keeps_what_it_cannot_deliver() -> None:
    for name, queue in servicebus_queues().items():
        assert queue.value("properties.requiresDuplicateDetection") is True, name
        assert queue.get("properties.duplicateDetectionHistoryTimeWindow") is not None, name
        assert queue.get("properties.maxDeliveryCount") is not None, name
        assert queue.value("properties.deadLetteringOnMessageExpiration") is True, name
        assert queue.value("properties.lockDuration") == "PT5M", name
        assert queue.value("properties.requiresSession") in (None, False), name


def test_every_table_is_declared_with_the_default_prefix() -> None:
    table = one_resource("Microsoft.Storage/storageAccounts/tableServices/tables")
    name = table.get("name")
    assert name is not None and name.type == "string"
    parts = [kids(child)[0].text.decode() for child in kids(name) if child.type == "interpolation"]
    assert len(parts) == 2 and len(kids(name)) == 2 and parts[1] == table.loop_var, (
        "table names are '${<prefix param>}${<table>}'")
    prefix_param = parameters(tree(table.file))[parts[0]]
    assert prefix_param.default is None, "the prefix comes from main.bicep"
    main_params = parameters(tree(MAIN))
    storage_params = module_params("modules/storage.bicep")
    passed = storage_params[parts[0]].text.decode()
    assert literal(main_params[passed].default) == DEFAULT_TABLE_PREFIX
    # The code reads the same prefix from STORAGE_TABLE_PREFIX.
    assert module_params("modules/functionapp.bicep")["storageTablePrefix"].text.decode() == passed
    declared = {DEFAULT_TABLE_PREFIX + item for item in loop_items(table)}
    expected = {DEFAULT_TABLE_PREFIX + name for name in TABLES}
    assert expected <= declared, f"declare in infra/modules/storage.bicep: {sorted(expected - declared)}"


def test_every_setting_the_code_reads_is_set_by_the_deployment() -> None:
    read = settings_read_by("shared") | settings_read_by("devhost")
    settings = app_settings()
    missing = sorted(name for name in read - set(settings) if name not in NOT_SET_IN_AZURE)
    assert not missing, f"set in infra/modules/functionapp.bicep or explain in NOT_SET_IN_AZURE: {missing}"
    stale = sorted(set(NOT_SET_IN_AZURE) - read)
    assert not stale, f"no longer read by the code, drop from NOT_SET_IN_AZURE: {stale}"
    for name, form in IDENTITY_BASED_FORMS.items():
        assert form in settings, f"{name} needs its identity-based form {form}"


def test_every_app_setting_is_read_by_someone() -> None:
    read = settings_read_by("shared") | settings_read_by("devhost")
    unknown = sorted(set(app_settings()) - read - set(HOST_SETTINGS) - set(IDENTITY_BASED_FORMS.values()))
    assert not unknown, f"set but read by neither the code nor the host (a typo?): {unknown}"


def test_app_settings_are_identity_based() -> None:
    settings = app_settings()
    assert not FORBIDDEN_SETTINGS & set(settings), sorted(FORBIDDEN_SETTINGS & set(settings))
    assert not NOT_SET_BY_DESIGN & set(settings), sorted(NOT_SET_BY_DESIGN & set(settings))
    assert literal(settings["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert literal(settings["ServiceBusConnection__credential"]) == "managedidentity"
    assert literal(settings["QUEUE_BACKEND"]) == "servicebus"
    for name, value in settings.items():
        text = value.text.decode()
        assert not any(marker in text for marker in SECRET_MARKERS), name


# --- secure defaults ----------------------------------------------------------------------------


def test_function_app_runs_on_flex_consumption_over_https() -> None:
    plan = one_resource("Microsoft.Web/serverfarms")
    assert plan.value("sku.name") == "FC1" and plan.value("sku.tier") == "FlexConsumption"
    site = one_resource("Microsoft.Web/sites")
    assert site.value("kind") == "functionapp,linux"
    assert site.value("properties.httpsOnly") is True
    assert site.value("properties.siteConfig.minTlsVersion") == "1.2"
    assert site.value("properties.siteConfig.ftpsState") == "Disabled"
    assert site.value("identity.type") == "UserAssigned"
    assert site.get("properties.keyVaultReferenceIdentity") is not None
    assert site.value("properties.functionAppConfig.runtime") == {"name": "python", "version": "3.11"}
    storage = site.get("properties.functionAppConfig.deployment.storage")
    assert literal(at(storage, "type")) == "blobContainer"
    assert literal(at(storage, "authentication.type")) == "UserAssignedIdentity"
    scale = site.get("properties.functionAppConfig.scaleAndConcurrency")
    assert {"instanceMemoryMB", "maximumInstanceCount", "alwaysReady"} <= set(properties(scale))
    always_ready = literal(parameters(tree(MAIN))["alwaysReady"].default)
    assert any(group.get("name") == "http" and group.get("instanceCount", 0) >= 1 for group in always_ready)


def test_storage_takes_tls_1_2_and_no_shared_keys() -> None:
    account = one_resource("Microsoft.Storage/storageAccounts")
    assert account.value("properties.minimumTlsVersion") == "TLS1_2"
    assert account.value("properties.allowSharedKeyAccess") is False
    assert account.value("properties.supportsHttpsTrafficOnly") is True
    assert account.value("properties.allowBlobPublicAccess") is False


def test_key_vault_uses_rbac_and_cannot_be_purged() -> None:
    vault = one_resource("Microsoft.KeyVault/vaults")
    assert vault.value("properties.enableRbacAuthorization") is True
    assert vault.value("properties.enableSoftDelete") is True
    assert vault.value("properties.softDeleteRetentionInDays") == 90
    assert vault.value("properties.enablePurgeProtection") is True


def test_service_bus_takes_entra_id_only() -> None:
    namespace = one_resource("Microsoft.ServiceBus/namespaces")
    assert namespace.value("properties.disableLocalAuth") is True
    assert namespace.value("properties.minimumTlsVersion") == "1.2"
    assert namespace.value("sku.name") == "Standard"  # duplicate detection and scheduled messages


def test_role_assignments_are_narrow_and_named_deterministically() -> None:
    assignments = all_resources("Microsoft.Authorization/roleAssignments")
    assert assignments
    for assignment in assignments:
        name = assignment.get("name")
        assert name is not None and name.type == "call_expression" and kids(name)[0].text == b"guid", (
            assignment.symbol)
        assert len(kids(kids(name)[1])) == 3, f"{assignment.symbol}: guid(scope, principal, role)"
        assert assignment.get("scope") is not None, assignment.symbol
        assert assignment.get("properties.principalType") is not None, assignment.symbol
    text = "\n".join(path.read_text(encoding="utf-8") for path in BICEP_FILES)
    missing = sorted(role for guid, role in APP_ROLES.items() if guid not in text)
    assert not missing, f"the app identity needs: {missing}"
    broad = sorted(role for guid, role in BROAD_ROLES.items() if guid in text)
    assert not broad, f"too broad: {broad}"


def test_alerts_cover_dead_letters_poison_queues_failed_notifications_and_function_failures() -> None:
    metrics = [literal(alert.get("properties.criteria")) for alert in all_resources("Microsoft.Insights/metricAlerts")]
    metric_names = {criterion["metricName"] for criteria in metrics for criterion in criteria["allOf"]}
    assert {"DeadletteredMessages", "ActiveMessages"} <= metric_names
    queries = [alert.get("properties.criteria").text.decode()
               for alert in all_resources("Microsoft.Insights/scheduledQueryRules")]
    assert any('"failed"' in query for query in queries)
    assert any("success == false" in query and "exceptions" in query for query in queries)


def test_saved_queries_exist() -> None:
    queries = {path.name: path.read_text(encoding="utf-8") for path in (INFRA / "queries").glob("*.kql")}
    assert any("customDimensions.erp_record" in text for text in queries.values()), "what happened to invoice X"
    assert any("ago(24h)" in text and "exceptions" in text for text in queries.values()), "what failed in 24 hours"


def kql_dimensions(text: str) -> set[str]:
    return set(re.findall(r"customDimensions\.(\w+)", text))


def test_queries_and_alerts_read_dimensions_the_app_writes() -> None:
    from shared.telemetry import DIMENSIONS

    texts = [path.read_text(encoding="utf-8") for path in (INFRA / "queries").glob("*.kql")]
    texts += [alert.get("properties.criteria").text.decode()
              for alert in all_resources("Microsoft.Insights/scheduledQueryRules")]
    read = set().union(*(kql_dimensions(text) for text in texts))
    assert {"correlation_id", "erp_record", "step", "connection", "reason"} <= read
    assert read <= set(DIMENSIONS), f"not a dimension the app writes: {sorted(read - set(DIMENSIONS))}"


def test_failed_notifications_alert_reads_the_audit_step_dimension() -> None:
    [rule] = [alert for alert in all_resources("Microsoft.Insights/scheduledQueryRules")
              if "failed-notifications" in alert.get("name").text.decode()]
    query = literal(rule.get("properties.criteria"))["allOf"][0]["query"]
    assert "customDimensions.step" in query and '"failed"' in query


def test_worker_threads_cover_the_concurrency_host_json_and_the_plan_allow() -> None:
    host = json.loads((REPO_ROOT / "host.json").read_text(encoding="utf-8"))
    main_params = parameters(tree(MAIN))
    threads = literal(main_params["workerThreadCount"].default)
    assert threads >= host["extensions"]["serviceBus"]["maxConcurrentCalls"]
    assert threads >= literal(main_params["httpPerInstanceConcurrency"].default)
    assert "PYTHON_THREADPOOL_THREAD_COUNT" in app_settings()
    assert module_params("modules/functionapp.bicep")["workerThreadCount"].text.decode() == "workerThreadCount"


# --- no secrets ---------------------------------------------------------------------------------


def key_like_strings(text: str) -> list[str]:
    mixed = [match for match in _KEY_LIKE.findall(text)
             if re.search(r"\d", match) and re.search(r"[a-z]", match) and re.search(r"[A-Z]", match)]
    return mixed + _HEX_TOKEN.findall(text)


def secure_params_with_defaults(root: Node) -> list[str]:
    return sorted(p.name for p in parameters(root).values() if "secure" in p.decorators and p.default is not None)


def test_the_secret_detectors_work() -> None:
    fake_key = base64.b64encode(os.urandom(48)).decode()
    assert key_like_strings(f"value: '{fake_key}'")
    assert key_like_strings(f"value: '{os.urandom(16).hex()}'")
    assert not key_like_strings("roleDefinitionId: '4633458b-17de-408a-b874-0445c86b69e6'")
    assert secure_params_with_defaults(parse("@secure()\nparam token string = 'x'\n")) == ["token"]
    assert secure_params_with_defaults(parse("@secure()\nparam token string\n")) == []


@pytest.mark.parametrize("path", infra_text_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_secret_values(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [marker for marker in SECRET_MARKERS if marker.lower() in text.lower()]
    assert not found, f"{path.relative_to(REPO_ROOT)}: {found}"
    assert not key_like_strings(text), f"{path.relative_to(REPO_ROOT)}: looks like a key"
    if path.suffix == ".bicep":
        assert not secure_params_with_defaults(tree(path)), "a @secure() parameter has a default value"


def test_connection_strings_are_only_application_insights_locators() -> None:
    # The only connection string anywhere is Application Insights' (not a credential: local
    # auth is off there); storage and Service Bus are reached by identity.
    for path in BICEP_FILES:
        for node in walk(tree(path)):
            if node.type == "object_property":
                key, value = kids(node)[0], kids(node)[-1]
                name = string_value(key) if key.type == "string" else key.text.decode()
            elif node.type in ("output_declaration", "variable_declaration", "parameter_declaration"):
                name, value = kids(node)[0].text.decode(), kids(node)[-1]
                if value.type == "type":
                    continue  # a parameter without a default
            else:
                continue
            if name and re.search(r"connection_?string", name, re.IGNORECASE):
                text = value.text.decode()
                assert value.type != "string" and re.search(r"appinsights", text, re.IGNORECASE), (
                    f"{path.relative_to(REPO_ROOT)}: {name} = {text}")
    for name, value in app_settings().items():
        if re.search(r"connection_?string", name, re.IGNORECASE):
            assert re.search(r"appinsights", value.text.decode(), re.IGNORECASE), name


# --- azd ----------------------------------------------------------------------------------------


def simple_yaml(text: str) -> dict:
    """Nested mappings of scalars, enough for azure.yaml (no lists, no flow style)."""
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key] = value.strip().strip("'\"")
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def test_azure_yaml_names_the_function_app_service_and_the_infra() -> None:
    config = simple_yaml((REPO_ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert config["infra"]["path"] == "infra"
    assert config["infra"].get("module", "main") == "main"
    functions = {name: service for name, service in config["services"].items() if service.get("host") == "function"}
    assert "api" in functions
    assert functions["api"]["language"] in ("python", "py") and functions["api"]["project"] in (".", "./")


def test_the_parameters_file_provides_every_required_parameter() -> None:
    declared = parameters(tree(MAIN))
    required = {name for name, param in declared.items() if param.default is None}
    assert {"environmentName", "location"} <= required
    given = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert required <= set(given), f"add to infra/main.parameters.json: {sorted(required - set(given))}"
    assert set(given) <= set(declared), f"not parameters of main.bicep: {sorted(set(given) - set(declared))}"
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"


def test_main_targets_the_subscription_and_tags_the_service_for_azd() -> None:
    scope = next(node for node in kids(tree(MAIN)) if node.type == "target_scope_assignment")
    assert string_value(kids(scope)[0]) == "subscription"
    site = one_resource("Microsoft.Web/sites")
    assert "'azd-service-name': 'api'" in site.get("tags").text.decode()
