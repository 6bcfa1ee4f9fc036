"""The operations workbook (infra/workbooks/operations.workbook.json), checked against the code.

Its queries read the custom dimensions and match the log lines the app writes; when a dimension
is renamed or a log line reworded, the workbook would silently show nothing, so these checks
read both sides: the dimension names from ``shared.telemetry.DIMENSIONS`` and the message texts
from the log calls in the code. The Bicep module that deploys it is checked for what it fills in.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from tree_sitter import Node

from shared.model import QUEUES
from shared.telemetry import DIMENSIONS
from tests.unit.test_infra import kids, module_params, string_value, tree, walk

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKBOOK = REPO_ROOT / "infra" / "workbooks" / "operations.workbook.json"
MODULE = REPO_ROOT / "infra" / "modules" / "workbook.bicep"
CODE = [*sorted((REPO_ROOT / "shared").rglob("*.py")), REPO_ROOT / "function_app.py"]

TEXT, QUERY, PARAMETERS, METRICS = 1, 3, 9, 10
LOGS = 0
APP_INSIGHTS = "microsoft.insights/components"
SERVICE_BUS = "microsoft.servicebus/namespaces"
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}

_DIMENSION = re.compile(r"""customDimensions(?:\.(\w+)|\[\s*["'](\w+)["']\s*\])""")
# message <operator> "text": the operators a query may match a log line's text with.
_MESSAGE_MATCH = re.compile(r'\bmessage\s+(has|has_cs|contains|contains_cs|startswith|startswith_cs|==)\s+"([^"]*)"')
_PARSE = re.compile(r"\bparse(?:-where)?\s+message\s+with\s+(.+)")
_PARSE_TOKEN = re.compile(r'"([^"]*)"|(\*|[A-Za-z_]\w*(?::\w+)?)')
_PARAMETER_REFERENCE = re.compile(r"\{([A-Za-z]\w*)(?::[\w]+)?\}")
_FUNCTION_NAME = re.compile(r'customDimensions\.function_name\)\s*==\s*"([^"]+)"')
_VALUE_LISTS = re.compile(r'(?:dynamic\(\[|\b(?:step|status)\s+in\s+\()([^)\]]*)[)\]]')
_STEP_EQUALS = re.compile(r'\b(?:step|status)\)?\s*==\s*"([^"]+)"')
_PLACEHOLDER = re.compile(r"__[A-Z][A-Z_]*__")


@cache
def workbook() -> dict[str, Any]:
    return json.loads(WORKBOOK.read_text(encoding="utf-8"))


def items(kind: int | None = None) -> list[dict[str, Any]]:
    return [item for item in workbook()["items"] if kind is None or item["type"] == kind]


def item(name: str) -> dict[str, Any]:
    [found] = [candidate for candidate in items() if candidate["name"] == name]
    return found


def queries() -> dict[str, str]:
    return {query["name"]: query["content"]["query"] for query in items(QUERY)}


def every_query() -> dict[str, str]:
    """The workbook's queries and the saved ones in infra/queries, which read the same logs."""
    saved = sorted((REPO_ROOT / "infra" / "queries").glob("*.kql"))
    return {**queries(), **{f"queries/{path.name}": path.read_text(encoding="utf-8") for path in saved}}


def without_comments(kql: str) -> str:
    return "\n".join(line.split("//")[0] if not line.lstrip().startswith("//") else "" for line in kql.splitlines())


# --- what the code writes ---------------------------------------------------------------------------


@cache
def log_formats() -> tuple[str, ...]:
    """The format strings of the code's log calls (``log.info("polled %s/%s ...", ...)``)."""
    found = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LOG_METHODS and node.args):
                continue
            receiver = node.func.value
            if not (isinstance(receiver, ast.Name) and "log" in receiver.id.lower()):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(first.value)
            elif isinstance(first, ast.JoinedStr):  # an f-string: its fixed parts, the rest as %s
                found.append("".join(str(part.value) if isinstance(part, ast.Constant) else "%s"
                                     for part in first.values))
    return tuple(found)


@cache
def code_strings() -> frozenset[str]:
    """Every string literal in the code: audit step and status names among them."""
    return frozenset(node.value for path in CODE for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str))


_PLACEHOLDER_IN_FORMAT = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdifr]")


def fixed_parts(log_format: str) -> list[str]:
    """A format's text between its placeholders: what every line it writes contains as is."""
    return _PLACEHOLDER_IN_FORMAT.split(log_format)


def matches_a_log_line(operator: str, text: str, formats: tuple[str, ...]) -> bool:
    if operator.startswith("startswith"):
        return any(fixed_parts(fmt)[0].startswith(text) for fmt in formats)
    if operator == "==":
        return text in formats
    return any(text in part for fmt in formats for part in fixed_parts(fmt))


def parse_regex(pattern: str) -> re.Pattern[str]:
    """A KQL ``parse message with "a" x "b" *`` pattern as a regex that a matching line's format fits."""
    regex = ""
    for literal, column in _PARSE_TOKEN.findall(pattern):
        regex += re.escape(literal) if column == "" else "(?:.*?)"
    return re.compile(f"^{regex}$" if regex.endswith("(?:.*?)") else f"^{regex}")


def unknown_dimensions(kql: str) -> set[str]:
    read = {dotted or quoted for dotted, quoted in _DIMENSION.findall(kql)}
    return read - set(DIMENSIONS)


def unmatched_message_texts(kql: str, formats: tuple[str, ...]) -> list[str]:
    kql = without_comments(kql)
    missing = [f"message {operator} {text!r}" for operator, text in _MESSAGE_MATCH.findall(kql)
               if not matches_a_log_line(operator, text, formats)]
    for pattern in _PARSE.findall(kql):
        if not any(parse_regex(pattern).match(fmt) for fmt in formats):
            missing.append(f"parse message with {pattern}")
    return missing


# --- the checks work --------------------------------------------------------------------------------


def test_the_log_scan_finds_the_lines_the_workbook_reads() -> None:
    formats = log_formats()
    assert "audit step %s%s" in formats
    assert any(fmt.startswith("polled %s/%s since %s") for fmt in formats)
    assert "dead-lettered a message from %s: %s" in formats


def test_the_checks_catch_a_dimension_or_a_line_the_app_does_not_write() -> None:
    assert unknown_dimensions('traces | extend p = tostring(customDimensions["phone"]), x = customDimensions.job_id') \
        == {"phone"}
    formats = ("audit step %s%s", "polled %s/%s: %d change(s)%s")
    assert unmatched_message_texts('traces | where message startswith "audit step "', formats) == []
    assert unmatched_message_texts('traces | where message startswith "step "', formats)
    assert unmatched_message_texts('traces | where message has "audit steps"', formats)
    assert unmatched_message_texts('traces | parse message with "polled " t ": " n:long " change" *', formats) == []
    assert unmatched_message_texts('traces | parse message with "polled " t " since " s', formats)


# --- structure --------------------------------------------------------------------------------------


def test_the_workbook_is_a_notebook_of_known_item_types() -> None:
    book = workbook()
    assert book["version"] == "Notebook/1.0"
    assert book["$schema"] == "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json"
    assert book["fallbackResourceIds"] == ["__APP_INSIGHTS_ID__"]
    names = [entry["name"] for entry in items()]
    assert all(names) and len(names) == len(set(names)), "every item has a name of its own"
    assert {entry["type"] for entry in items()} <= {TEXT, QUERY, PARAMETERS, METRICS}
    assert all(isinstance(entry["content"], dict) for entry in items())


def test_every_query_reads_application_insights_logs_with_parameters_declared_above_it() -> None:
    declared: dict[str, int] = {}
    for entry in items():
        content = entry["content"]
        if entry["type"] == PARAMETERS:
            for parameter in content["parameters"]:
                assert parameter["name"] not in declared, f"parameter {parameter['name']} is declared twice"
                declared[parameter["name"]] = parameter["type"]
        elif entry["type"] == QUERY:
            assert content["version"] == "KqlItem/1.0", entry["name"]
            assert content["queryType"] == LOGS and content["resourceType"] == APP_INSIGHTS, entry["name"]
            assert content["query"].strip(), entry["name"]
            used = set(_PARAMETER_REFERENCE.findall(content["query"]))
            assert used <= set(declared), f"{entry['name']}: {sorted(used - set(declared))} not declared above"
            assert declared.get(content["timeContextFromParameter"]) == 4, f"{entry['name']}: a time range parameter"
        elif entry["type"] == METRICS:
            assert content["timeContextFromParameter"] in declared, entry["name"]


def test_queue_depths_come_from_the_service_bus_metrics_per_queue() -> None:
    charts = items(METRICS)
    metrics = {metric["metric"] for chart in charts for metric in chart["content"]["metrics"]}
    assert {f"{SERVICE_BUS}--ActiveMessages", f"{SERVICE_BUS}--DeadletteredMessages"} <= metrics
    for chart in charts:
        content = chart["content"]
        assert content["version"] == "MetricsItem/2.0" and content["resourceType"] == SERVICE_BUS
        assert content["resourceIds"] == ["__SERVICE_BUS_NAMESPACE_ID__"]
        for metric in content["metrics"]:
            assert metric["namespace"] == SERVICE_BUS and metric["splitBy"] == "EntityName", chart["name"]


def test_the_views_an_operator_needs_are_there() -> None:
    found = queries()
    story = found["record-story"]
    assert "{Record" in story and "customDimensions.erp_record" in story and "customDimensions.correlation_id" in story
    assert "bin(timestamp, 1h)" in found["failures-by-hour"] and "customDimensions.reason" in found["failures-table"]
    assert '"dead-lettered"' in found["failures-by-hour"]
    assert "entity" in found["poll-lag"] and "now()" in found["poll-lag"]
    assert any(entry["name"].startswith("queue-depths") for entry in items(METRICS))


# --- against the code -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(every_query()))
def test_every_dimension_a_query_reads_is_one_the_app_writes(name: str) -> None:
    unknown = unknown_dimensions(every_query()[name])
    assert not unknown, f"{name}: not a dimension in shared/telemetry.py DIMENSIONS: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(every_query()))
def test_every_message_text_a_query_matches_is_written_by_a_log_call(name: str) -> None:
    missing = unmatched_message_texts(every_query()[name], log_formats())
    assert not missing, f"{name}: no log call in the code writes {missing}"


def test_the_steps_statuses_and_functions_the_queries_name_exist() -> None:
    from shared.triggers.queues import function_name_for

    functions = {function_name_for(queue) for queue in QUEUES}
    for name, kql in queries().items():
        kql = without_comments(kql)
        assert set(_FUNCTION_NAME.findall(kql)) <= functions, name
        values = set(_STEP_EQUALS.findall(kql))
        for listed in _VALUE_LISTS.findall(kql):
            values.update(re.findall(r'"([^"]+)"', listed))
        assert values <= code_strings(), f"{name}: not a step or status in the code: {sorted(values - code_strings())}"


# --- the deployment ---------------------------------------------------------------------------------


def source_text(node: Node) -> str:
    return (node.text or b"").decode()


def replaced_placeholders() -> set[str]:
    """The placeholders the module's replace() calls fill in."""
    found = set()
    for node in walk(tree(MODULE)):
        if node.type == "call_expression" and kids(node)[0].text == b"replace":
            target = string_value(kids(kids(node)[1])[1])
            if target is not None:
                found.add(target)
    return found


def test_the_module_fills_in_every_placeholder_and_loads_this_file() -> None:
    placeholders = set(_PLACEHOLDER.findall(WORKBOOK.read_text(encoding="utf-8")))
    assert placeholders == replaced_placeholders()
    loaded = [string_value(kids(kids(node)[1])[0]) for node in walk(tree(MODULE))
              if node.type == "call_expression" and kids(node)[0].text == b"loadTextContent"]
    assert [(MODULE.parent / path).resolve() for path in loaded if path] == [WORKBOOK.resolve()]


def test_main_deploys_the_workbook_for_the_app_insights_component_and_the_service_bus_namespace() -> None:
    params = module_params("modules/workbook.bicep")
    assert source_text(params["appInsightsId"]) == "monitoring.outputs.appInsightsId"
    assert source_text(params["serviceBusNamespaceId"]) == "serviceBus.outputs.id"
    source = next(node for node in walk(tree(MODULE)) if node.type == "object_property"
                  and kids(node)[0].text == b"sourceId")
    assert "appInsightsId" in source_text(kids(source)[-1])
