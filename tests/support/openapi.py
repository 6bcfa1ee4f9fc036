"""Check requests and responses against the services' official OpenAPI specs (``../shared/specs``).

- ``require_spec("twilio/twilio_api_v2010.json")`` loads a spec once per process, or skips
  the test when the specs are not there (set ``ML_CONNECTOR_SHARED_DIR``).
- ``validate_form_request(spec, path, method, form)`` lists what is wrong with a
  form-encoded request: parameter names the operation does not define, missing required
  ones, enum/type/pattern/length/format violations, repeated keys for non-array
  parameters. ``path`` may be the template or a concrete path (its path parameters are
  then checked too).
- ``validate_response(spec, "api.v2010.account.message", body)`` (or ``(path, status)``,
  ``(path, method, status)``) validates a JSON body with jsonschema after translating
  OpenAPI 3.0 (``nullable``, boolean ``exclusiveMinimum``) to JSON Schema 2020-12.
  Formats checked: ``date-time``, ``date-time-rfc-2822`` and ``uri``.
- Swagger 2.0 specs (Slack's Web API): ``validate_swagger_request(spec, "/chat.postMessage",
  arguments)`` checks a call's form/JSON arguments against the operation's parameters;
  ``validate_swagger_response(spec, "/chat.postMessage", body)`` (``status="default"`` for
  the error schema) and ``validate_swagger_definition(spec, "blocks", value)`` validate with
  draft 4.

All of them return a list of human-readable problems; ``[]`` means valid.
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_HTTP_METHODS = ("get", "post", "put", "patch", "delete")

Form = Mapping[str, str | Sequence[str]]
ResponseSelector = str | tuple[str, int] | tuple[str, str, int]


# --- loading -------------------------------------------------------------------------------


def specs_dir() -> Path:
    """``$ML_CONNECTOR_SHARED_DIR/specs``, else ``<repo>/../shared/specs``."""
    shared = os.environ.get("ML_CONNECTOR_SHARED_DIR")
    return (Path(shared) if shared else REPO_ROOT.parent / "shared") / "specs"


def spec_path(name: str) -> Path:
    """``twilio/twilio_api_v2010.json``, ``twilio_api_v2010.json`` or ``twilio_api_v2010`` under specs_dir()."""
    root = specs_dir()
    direct = root / name
    if direct.is_file():
        return direct
    file_name = name if name.endswith(".json") else f"{name}.json"
    found = sorted(root.rglob(Path(file_name).name)) if root.is_dir() else []
    return found[0] if found else direct


def require_spec(name: str) -> dict[str, Any]:
    """The parsed spec, loaded once per process; skips the calling test when it is absent."""
    path = spec_path(name)
    if not path.is_file():
        pytest.skip(f"official spec {path} not found: set ML_CONNECTOR_SHARED_DIR to the folder holding specs/")
    return _load(str(path.resolve()))


@functools.cache
def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` chains (local ``#/...`` pointers) to the schema itself."""
    seen: set[str] = set()
    while "$ref" in schema:
        reference = schema["$ref"]
        if reference in seen or not reference.startswith("#/"):
            raise ValueError(f"cannot resolve {reference!r}")
        seen.add(reference)
        target: Any = spec
        for part in reference[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return dict(schema)


# --- operations ----------------------------------------------------------------------------


def find_operation(spec: Mapping[str, Any], path: str, method: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(template, operation, path parameters) for a template or a concrete path."""
    paths = spec["paths"]
    if path in paths:
        template, parameters = path, {}
    else:
        template, parameters = _match_template(paths, path)
    operation = paths[template].get(method.lower())
    if operation is None:
        raise ValueError(f"{method.upper()} {template} is not in the spec")
    return template, operation, parameters


def _match_template(paths: Mapping[str, Any], path: str) -> tuple[str, dict[str, str]]:
    candidates: list[tuple[int, str, dict[str, str]]] = []
    for template in paths:
        pattern = "".join(
            f"(?P<{piece[1:-1]}>[^/]+)" if piece.startswith("{") else re.escape(piece)
            for piece in re.split(r"(\{[^}]+\})", template)
        )
        found = re.fullmatch(pattern, path)
        if found is not None:
            candidates.append((len(found.groupdict()), template, found.groupdict()))
    if not candidates:
        raise ValueError(f"no path in the spec matches {path}")
    _count, template, parameters = min(candidates)  # the most literal template wins
    return template, parameters


# --- requests ------------------------------------------------------------------------------


def validate_form_request(spec: Mapping[str, Any], path_template: str, method: str, form: Form) -> list[str]:
    """Problems with a form-encoded request body for this operation ([] when valid)."""
    template, operation, path_parameters = find_operation(spec, path_template, method)
    problems = _path_parameter_problems(spec, operation, path_parameters)
    values = {name: [value] if isinstance(value, str) else list(value) for name, value in form.items()}
    body_schema = _form_schema(spec, operation)
    if body_schema is None:
        problems += [f"unknown parameter '{name}': {method.upper()} {template} takes no form body" for name in values]
        return problems
    properties = body_schema.get("properties", {})
    for name in body_schema.get("required", []):
        if not any(value != "" for value in values.get(name, [])):
            problems.append(f"missing required parameter '{name}'")
    for name, given in values.items():
        if name not in properties:
            problems.append(f"unknown parameter '{name}' (not in {method.upper()} {template})")
            continue
        problems += _parameter_problems(spec, name, given, resolve(spec, properties[name]))
    return problems


def _form_schema(spec: Mapping[str, Any], operation: Mapping[str, Any]) -> dict[str, Any] | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    content = resolve(spec, body).get("content", {})
    if FORM_CONTENT_TYPE not in content:
        raise ValueError(f"the operation takes {sorted(content)}, not a form")
    return resolve(spec, content[FORM_CONTENT_TYPE].get("schema", {}))


def _path_parameter_problems(
    spec: Mapping[str, Any], operation: Mapping[str, Any], parameters: Mapping[str, str]
) -> list[str]:
    problems: list[str] = []
    for declared in operation.get("parameters", []):
        declared = resolve(spec, declared)
        if declared.get("in") == "path" and declared["name"] in parameters:
            schema = resolve(spec, declared.get("schema", {}))
            for problem in _value_problems(spec, parameters[declared["name"]], schema):
                problems.append(f"path parameter '{declared['name']}' {problem}")
    return problems


def _parameter_problems(spec: Mapping[str, Any], name: str, given: list[str], schema: dict[str, Any]) -> list[str]:
    if schema.get("type") == "array":
        item_schema = resolve(spec, schema.get("items", {}))
        return [
            f"parameter '{name}' {problem}" for value in given for problem in _value_problems(spec, value, item_schema)
        ]
    if len(given) > 1:
        return [f"parameter '{name}' is repeated {len(given)} times but is not an array"]
    return [f"parameter '{name}' {problem}" for problem in _value_problems(spec, given[0], schema)]


def _value_problems(spec: Mapping[str, Any], value: str, schema: dict[str, Any]) -> list[str]:
    """A form value is always text: check it as the text form of the schema's type."""
    if "allOf" in schema or "oneOf" in schema or "anyOf" in schema:
        return []  # not used by the form parameters checked here
    problems: list[str] = []
    kind = schema.get("type")
    if "enum" in schema and value not in [str(option) for option in schema["enum"]]:
        problems.append(f"value {value!r} is not one of {schema['enum']}")
    if kind == "integer" and not re.fullmatch(r"-?\d+", value):
        problems.append(f"value {value!r} is not an integer")
    elif kind == "number" and not _is_number(value):
        problems.append(f"value {value!r} is not a number")
    elif kind == "boolean" and value not in ("true", "false"):
        problems.append(f"value {value!r} is not a boolean (true/false)")
    elif kind in (None, "string"):
        problems += _string_problems(value, schema)
    return problems


def _string_problems(value: str, schema: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"value {value!r} does not match {schema['pattern']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f"value {value!r} is shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"value {value!r} is longer than {schema['maxLength']}")
    ignore_format = schema.get("x-twilio", {}).get("ignoreFormat", False)
    checker = _FORMAT_CHECKS.get(schema.get("format", ""))
    if checker is not None and not ignore_format and value and not checker(value):
        problems.append(f"value {value!r} is not a valid {schema['format']}")
    return problems


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# --- formats -------------------------------------------------------------------------------


def is_uri(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc)


def is_iso_datetime(value: str) -> bool:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.tzinfo is not None


def is_rfc2822_datetime(value: str) -> bool:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return moment.tzinfo is not None


_FORMAT_CHECKS = {"uri": is_uri, "date-time": is_iso_datetime, "date-time-rfc-2822": is_rfc2822_datetime}


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    for name, check in _FORMAT_CHECKS.items():
        # Formats constrain strings only; nulls and other types pass (JSON Schema semantics).
        checker.checks(name)(lambda value, check=check: not isinstance(value, str) or check(value))
    return checker


_FORMAT_CHECKER = _format_checker()


# --- responses -----------------------------------------------------------------------------


def validate_response(
    spec: Mapping[str, Any], schema: ResponseSelector, body: Any, *, allow_unknown_fields: bool = True
) -> list[str]:
    """JSON Schema problems of a response body ([] when valid).

    ``allow_unknown_fields=False`` also reports top-level fields the schema does not define
    (useful to keep a fake from inventing fields).
    """
    reference = _schema_reference(spec, schema)
    root: dict[str, Any] = {"$ref": reference, "components": {"schemas": _converted_schemas(spec)}}
    if not allow_unknown_fields:
        root["unevaluatedProperties"] = False
    validator = jsonschema.Draft202012Validator(root, format_checker=_FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(body), key=lambda error: list(map(str, error.absolute_path)))
    return [f"{'/'.join(map(str, error.absolute_path)) or '<body>'}: {error.message}" for error in errors]


def _schema_reference(spec: Mapping[str, Any], schema: ResponseSelector) -> str:
    if isinstance(schema, str):
        name = schema.removeprefix("#/components/schemas/")
        if name not in spec.get("components", {}).get("schemas", {}):
            raise ValueError(f"no component schema {name!r}")
        return f"#/components/schemas/{name}"
    if len(schema) == 3:
        path, method, status = schema  # type: ignore[misc]
    else:
        path, status = schema  # type: ignore[misc]
        method = _method_with_status(spec, path, status)
    _template, operation, _parameters = find_operation(spec, path, method)
    response = resolve(spec, operation["responses"][str(status)])
    found = response.get("content", {}).get("application/json", {}).get("schema")
    if found is None or "$ref" not in found:
        raise ValueError(f"{method.upper()} {path} {status} has no referenced JSON schema")
    return found["$ref"]


def _method_with_status(spec: Mapping[str, Any], path: str, status: int) -> str:
    template = path if path in spec["paths"] else _match_template(spec["paths"], path)[0]
    for method in _HTTP_METHODS:
        if str(status) in spec["paths"][template].get(method, {}).get("responses", {}):
            return method
    raise ValueError(f"no operation on {template} answers {status}")


_CONVERTED: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}


def _converted_schemas(spec: Mapping[str, Any]) -> dict[str, Any]:
    # Keyed by identity and holding the spec, so the cached id can never be reused.
    cached = _CONVERTED.get(id(spec))
    if cached is None or cached[0] is not spec:
        schemas = spec.get("components", {}).get("schemas", {})
        cached = (spec, {name: to_json_schema(schema) for name, schema in schemas.items()})
        _CONVERTED[id(spec)] = cached
    return cached[1]


def to_json_schema(schema: Any) -> Any:
    """OpenAPI 3.0 schema object -> JSON Schema 2020-12 (``nullable``, boolean exclusive bounds)."""
    if isinstance(schema, list):
        return [to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: to_json_schema(value) for key, value in schema.items() if key != "nullable"}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(schema.get(bound), bool):
            if schema[bound] and limit in schema:
                converted[bound] = converted.pop(limit)
            else:
                converted.pop(bound)
    if schema.get("nullable") is True:
        converted = _allow_null(converted)
    return converted


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*kinds, "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


# --- Swagger 2.0 specs (Slack Web API) -------------------------------------------------------
#
# Slack's spec is Swagger 2.0: parameters are listed per operation (``in: formData`` or
# ``query``), schemas live under ``definitions`` and use JSON Schema draft 4. Its authors
# also wrote "one of these" as a tuple ``items`` on non-array schemas (``bot_id``, ``tz``,
# ``objs_user``); draft 4 ignores that on objects and strings, so it is read as ``anyOf``
# here, which checks what the authors meant.

# Parameters whose value is JSON: text in a form body, the structure itself in a JSON body.
SWAGGER_JSON_PARAMETERS = frozenset({"attachments", "blocks", "metadata", "view"})


def validate_swagger_request(spec: Mapping[str, Any], path: str, params: Mapping[str, Any]) -> list[str]:
    """Problems with a Swagger 2.0 operation's arguments ([] when valid).

    ``params`` are the form fields, query parameters or JSON body members of one call
    (Slack takes every method as a POST with a form or JSON body). The token travels in the
    Authorization header and is not expected here. Checked: unknown and missing required
    names, string types, JSON-valued parameters (``blocks`` against the spec's ``blocks``).
    """
    operation = _swagger_operation(spec, path)
    declared = {
        parameter["name"]: parameter
        for parameter in operation.get("parameters", [])
        if parameter.get("in") in ("formData", "query") and parameter["name"] != "token"
    }
    problems = [
        f"missing required parameter '{name}'"
        for name, parameter in declared.items()
        if parameter.get("required") and params.get(name) in (None, "")
    ]
    for name, value in params.items():
        if name not in declared:
            problems.append(f"unknown parameter '{name}' (not in {path})")
        else:
            problems += _swagger_parameter_problems(spec, name, value, declared[name])
    return problems


def _swagger_operation(spec: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    operations = spec["paths"].get(path)
    if not operations:
        raise ValueError(f"{path} is not in the spec")
    # Each Slack method has exactly one operation (its documented HTTP verb).
    return next(iter(operations.values()))


def _swagger_parameter_problems(
    spec: Mapping[str, Any], name: str, value: Any, parameter: Mapping[str, Any]
) -> list[str]:
    if name in SWAGGER_JSON_PARAMETERS:
        return _json_parameter_problems(spec, name, value)
    if parameter.get("type") == "string" and not isinstance(value, str):
        return [f"parameter '{name}' is {type(value).__name__}, not a string"]
    return []


def _json_parameter_problems(spec: Mapping[str, Any], name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [f"parameter '{name}' is not JSON text"]
    if name == "blocks" and "blocks" in spec.get("definitions", {}):
        return [f"parameter 'blocks' {problem}" for problem in validate_swagger_definition(spec, "blocks", value)]
    return []


def validate_swagger_response(spec: Mapping[str, Any], path: str, body: Any, *, status: str = "200") -> list[str]:
    """Draft 4 problems of a JSON body against an operation's response schema ([] when valid).

    ``status="default"`` selects the error schema Slack's spec gives each method.
    """
    schema = _swagger_operation(spec, path)["responses"][status]["schema"]
    return _draft4_problems(spec, schema, body)


def validate_swagger_definition(spec: Mapping[str, Any], name: str, value: Any) -> list[str]:
    """Draft 4 problems of ``value`` against ``definitions/<name>`` ([] when valid)."""
    return _draft4_problems(spec, {"$ref": f"#/definitions/{name}"}, value)


def _draft4_problems(spec: Mapping[str, Any], schema: Mapping[str, Any], value: Any) -> list[str]:
    root = {**swagger_to_draft4(schema), "definitions": _converted_definitions(spec)}
    validator = jsonschema.Draft4Validator(root, format_checker=_FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(value), key=lambda error: list(map(str, error.absolute_path)))
    return [f"{'/'.join(map(str, error.absolute_path)) or '<body>'}: {error.message}" for error in errors]


_CONVERTED_DEFINITIONS: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}


def _converted_definitions(spec: Mapping[str, Any]) -> dict[str, Any]:
    # Keyed by identity and holding the spec, so the cached id can never be reused.
    cached = _CONVERTED_DEFINITIONS.get(id(spec))
    if cached is None or cached[0] is not spec:
        definitions = spec.get("definitions", {})
        cached = (spec, {name: swagger_to_draft4(schema) for name, schema in definitions.items()})
        _CONVERTED_DEFINITIONS[id(spec)] = cached
    return cached[1]


def swagger_to_draft4(schema: Any) -> Any:
    """A Swagger 2.0 schema with tuple ``items`` on non-array schemas read as ``anyOf``."""
    if isinstance(schema, list):
        return [swagger_to_draft4(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: swagger_to_draft4(value) for key, value in schema.items()}
    variants = converted.get("items")
    if isinstance(variants, list) and schema.get("type") != "array":
        del converted["items"]
        converted["anyOf"] = variants
    return converted
