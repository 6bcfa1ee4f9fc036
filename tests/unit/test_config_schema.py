"""The published JSON Schema of the connections file: generated from the loader's own declarations,
met by the sample, and rejecting what the loader rejects."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared import kinds
from shared.config import schema as schema_module
from shared.config.loading import config_from_dict
from shared.config.model import ConfigError
from shared.config.schema import PUBLISHED_PATH, REGENERATE, config_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "config" / "connections.sample.json"

# The one kind the sample has no connection of.
SENDGRID = {"kind": "sendgrid", "api_key": {"secret": "sendgrid-api-key"}, "from_email": "ap@contoso.com"}


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def sample() -> dict[str, Any]:
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    data["connections"]["sendgrid-main"] = copy.deepcopy(SENDGRID)
    return data


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(config_schema())


def schema_errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(data)]


def loader_errors(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return caught.value.errors


def test_the_published_schema_is_the_generated_one() -> None:
    published = json.loads(PUBLISHED_PATH.read_text(encoding="utf-8"))
    assert published == as_json(config_schema()), (
        f"{PUBLISHED_PATH.relative_to(REPO_ROOT)} is out of date; regenerate it with: {REGENERATE}")


def test_the_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    schema_module.main([])
    assert json.loads(capsys.readouterr().out) == as_json(config_schema())


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_the_sample_names_the_schema_and_meets_it(validator: jsonschema.Draft202012Validator) -> None:
    data = sample()
    assert data["$schema"] == "./connections.schema.json"
    assert schema_errors(validator, data) == []
    config_from_dict(data)


@pytest.mark.parametrize("kind", kinds.all_kinds())
def test_every_field_of_each_kind_is_in_its_schema(kind: str) -> None:
    settings = kinds.settings_of(kind)
    assert settings is not None
    properties = config_schema()["$defs"][f"{kind}-connection"]["properties"]
    names = {field.name for field in dataclasses.fields(settings.cls)} - {"name"}  # the name is the key
    assert set(properties) == names | {"kind"}
    assert properties["kind"] == {"const": kind}


def _connection(data: dict[str, Any], name: str) -> dict[str, Any]:
    return data["connections"][name]


def _set(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: _connection(data, name).__setitem__(key, value)


def _drop(name: str, *keys: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: [_connection(data, name).pop(key) for key in keys]


BROKEN = {
    "unknown kind": (_set("twilio-main", "kind", "teams"), "connections.twilio-main.kind: must be one of"),
    "missing required field": (_drop("twilio-main", "account_sid"),
                               "connections.twilio-main.account_sid: is required"),
    "secret as plain text": (_set("contoso-fo", "client_secret", "s3cr3t-value"),
                             "connections.contoso-fo.client_secret: must be a secret reference"),
    "unknown field": (_set("slack-main", "bot_tokens", {"secret": "x"}),
                      "connections.slack-main.bot_tokens: unknown field"),
    "bad connection name": (lambda data: data["connections"].__setitem__("Mail", SENDGRID),
                            "connections.Mail: connection name must be"),
    "entity the kind cannot poll": (lambda data: _connection(data, "qad-main")["poll"]["entities"].append("Items"),
                                    "connections.qad-main.poll.entities[3]: cannot poll 'Items'"),
    "no sender": (_drop("twilio-main", "from_number", "messaging_service_sid"),
                  "connections.twilio-main.from_number: is required unless messaging_service_sid is given"),
    "graphql without its application": (_set("sagex3-main", "api", "graphql"),
                                        "connections.sagex3-main.client_id: is required when api is graphql"),
    "in with one value": (lambda data: data["rules"][1]["when"][1].__setitem__("value", "usmf"),
                          "rules[1].when[1].value: 'in' needs a non-empty list"),
    "unknown top-level field": (lambda data: data.__setitem__("rule", []), "rule: unknown field"),
}


@pytest.mark.parametrize("change", list(BROKEN), ids=list(BROKEN))
def test_a_broken_file_is_rejected_by_the_schema_and_by_the_loader(
    change: str, validator: jsonschema.Draft202012Validator
) -> None:
    breaks, loader_says = BROKEN[change]
    data = sample()
    breaks(data)
    assert schema_errors(validator, data)
    assert any(line.startswith(loader_says) for line in loader_errors(data))


def _required_fields() -> list[tuple[str, str]]:
    data = sample()
    schema = config_schema()
    return [(name, field) for name, body in data["connections"].items()
            for field in schema["$defs"][f"{body['kind']}-connection"]["required"] if field != "kind"]


@pytest.mark.parametrize(("connection", "field"), _required_fields())
def test_what_the_schema_requires_the_loader_requires(connection: str, field: str) -> None:
    data = sample()
    _connection(data, connection).pop(field)
    assert f"connections.{connection}.{field}: is required" in loader_errors(data)
