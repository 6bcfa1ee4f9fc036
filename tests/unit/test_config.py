"""The connections/rules file: the sample loads, and each mistake gets its own clear message."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.channels.slack.connection import SlackConnection
from shared.channels.twilio.connection import TwilioConnection, basic_credentials
from shared.config import loading as config_module
from shared.config.loading import config_from_dict, get_config, load_config, reset_config
from shared.config.model import AppConfig, ConfigError, SecretRef
from shared.erp.dynamics.connection import DynamicsConnection

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "config" / "connections.sample.json"

BASE: dict[str, Any] = {
    "connections": {
        "contoso": {
            "kind": "dynamics",
            "environment_url": "https://contoso.operations.dynamics.com",
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-1111-1111-1111-111111111111",
            "client_secret": {"secret": "contoso-client-secret"},
            "poll": {"entities": ["VendorInvoiceHeaders"]},
        },
        "twilio": {
            "kind": "twilio",
            "account_sid": "AC" + "0" * 32,
            "api_key_sid": "SK" + "0" * 32,
            "api_key_secret": {"secret": "twilio-api-key-secret"},
            "auth_token": {"secret": "twilio-auth-token"},
            "from_number": "+15005550006",
        },
        "slack": {
            "kind": "slack",
            "bot_token": {"secret": "slack-bot-token"},
            "signing_secret": {"secret": "slack-signing-secret"},
        },
    },
    "rules": [
        {
            "id": "r1",
            "source": "contoso",
            "channel": "sms",
            "via": "twilio",
            "to": ["+14155550123"],
            "template": "vendor-invoice-posted",
        }
    ],
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def with_change(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = base()
    change(data)
    return data


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return caught.value.errors


def dynamics(data: dict[str, Any]) -> dict[str, Any]:
    return data["connections"]["contoso"]


def twilio(data: dict[str, Any]) -> dict[str, Any]:
    return data["connections"]["twilio"]


def rule(data: dict[str, Any]) -> dict[str, Any]:
    return data["rules"][0]


VERIFY_SID = "VA" + "a" * 32


def slack_rule(data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The base rule made a Slack approval card rule, with ``fields`` on top."""
    rule(data).update(channel="slack", via="slack", to=["#ap-approvals"], template="workflow-approval", **fields)
    return rule(data)


def with_verify_service(data: dict[str, Any]) -> dict[str, Any]:
    twilio(data)["verify_service_sid"] = VERIFY_SID
    return data


def test_the_sample_file_loads() -> None:
    loaded = load_config(SAMPLE)

    assert set(loaded.connections) == {
        "contoso-fo",
        "sagex3-main",
        "syspro-main",
        "twilio-main",
        "slack-main",
        "qad-main",
    }
    assert {connection.kind for connection in loaded.connections.values()} == {
        "dynamics",
        "sagex3",
        "syspro",
        "twilio",
        "slack",
        "qad",
    }
    assert len(loaded.rules) == 10
    fo = loaded.connection_of("contoso-fo", DynamicsConnection)
    assert fo.client_secret == SecretRef("contoso-fo-client-secret")
    assert fo.authority == "https://login.microsoftonline.com"


def test_the_base_config_is_valid_and_defaults_apply() -> None:
    loaded = config_from_dict(base())

    fo = loaded.connection_of("contoso", DynamicsConnection)
    assert fo.default_region == "US"
    assert fo.legal_entities == ()
    assert fo.poll is not None
    assert (fo.poll.interval_minutes, fo.poll.overlap_seconds, fo.poll.time_zone) == (10, 120, "UTC")
    tw = loaded.connection_of("twilio", TwilioConnection)
    assert (tw.api_base_url, tw.verify_base_url) == ("https://api.twilio.com", "https://verify.twilio.com")
    assert loaded.connection_of("slack", SlackConnection).api_base_url == "https://slack.com/api/"
    only = loaded.rules[0]
    assert (only.event, only.when, only.verify, only.priority) == (None, (), False, 100)


INVALID_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "unknown kind",
        lambda d: dynamics(d).update(kind="sap"),
        "connections.contoso.kind: must be one of dynamics, syspro, sagex3, qad, twilio, slack, sendgrid",
    ),
    (
        "http URL on a public host",
        lambda d: dynamics(d).update(environment_url="http://contoso.operations.dynamics.com"),
        "connections.contoso.environment_url: must be an https URL (http only for loopback hosts)",
    ),
    (
        "plain-string secret",
        lambda d: dynamics(d).update(client_secret="hunter2-very-secret"),
        'connections.contoso.client_secret: must be a secret reference {"secret": "<name>"}, not a value',
    ),
    (
        "bad secret name",
        lambda d: dynamics(d).update(client_secret={"secret": "no_underscores"}),
        "connections.contoso.client_secret: secret name must be 1-127 letters, digits or hyphens (Key Vault rules)",
    ),
    (
        "bad twilio account_sid",
        lambda d: twilio(d).update(account_sid="AC123"),
        "connections.twilio.account_sid: must be 'AC' followed by 32 hex digits",
    ),
    (
        "twilio api key without its secret",
        lambda d: twilio(d).pop("api_key_secret"),
        "connections.twilio.api_key_secret: is required with api_key_sid"
        " (or leave both out to send with the auth_token)",
    ),
    (
        "twilio without a sender",
        lambda d: twilio(d).pop("from_number"),
        "connections.twilio.from_number: is required unless messaging_service_sid is given",
    ),
    (
        "missing required field",
        lambda d: dynamics(d).pop("tenant_id"),
        "connections.contoso.tenant_id: is required",
    ),
    (
        "unknown field",
        lambda d: dynamics(d).update(colour="blue"),
        "connections.contoso.colour: unknown field",
    ),
    (
        "bad connection name",
        lambda d: d["connections"].update({"Contoso_FO": copy.deepcopy(dynamics(d))}),
        "connections.Contoso_FO: connection name must be 1-40 lowercase letters, digits or hyphens, "
        "starting with a letter",
    ),
    (
        "poll interval out of range",
        lambda d: dynamics(d)["poll"].update(interval_minutes=0),
        "connections.contoso.poll.interval_minutes: must be a whole number from 1 to 1440",
    ),
    (
        "unknown time zone",
        lambda d: dynamics(d)["poll"].update(time_zone="Mars/Olympus"),
        "connections.contoso.poll.time_zone: unknown time zone 'Mars/Olympus'; "
        "use an IANA name such as 'America/Chicago'",
    ),
    (
        "poll without entities",
        lambda d: dynamics(d)["poll"].update(entities=[]),
        "connections.contoso.poll.entities: must be a non-empty list",
    ),
    (
        "rule via an unknown connection",
        lambda d: rule(d).update(via="twilio-x"),
        "rules[0].via: unknown connection 'twilio-x'",
    ),
    (
        "rule channel does not fit the via kind",
        lambda d: rule(d).update(channel="slack", to=["#ap-approvals"]),
        "rules[0].via: channel 'slack' needs a slack connection; 'twilio' is a twilio connection",
    ),
    (
        "rule source is not an ERP",
        lambda d: rule(d).update(source="slack"),
        "rules[0].source: 'slack' is a slack connection; a source must be one of dynamics, syspro, sagex3, qad",
    ),
    (
        "unknown condition op",
        lambda d: rule(d).update(when=[{"field": "amount", "op": "between", "value": 5}]),
        "rules[0].when[0].op: must be one of eq, ne, gt, ge, lt, le, in, not_in, contains, exists",
    ),
    (
        "in with a single value",
        lambda d: rule(d).update(when=[{"field": "status", "op": "in", "value": "open"}]),
        "rules[0].when[0].value: 'in' needs a non-empty list",
    ),
    (
        "gt with text",
        lambda d: rule(d).update(when=[{"field": "amount", "op": "gt", "value": "lots"}]),
        "rules[0].when[0].value: 'gt' needs a number or an ISO 8601 date",
    ),
    (
        "exists with a number",
        lambda d: rule(d).update(when=[{"field": "approver", "op": "exists", "value": 1}]),
        "rules[0].when[0].value: 'exists' needs true or false",
    ),
    (
        "duplicate rule id",
        lambda d: d["rules"].append(copy.deepcopy(rule(d))),
        "rules[1].id: duplicate rule id 'r1' (first used by rules[0])",
    ),
    (
        "recipient not E.164",
        lambda d: rule(d).update(to=["+1 415 555 0123"]),
        "rules[0].to[0]: must be an E.164 phone number such as +14155550123",
    ),
    (
        "verify without a verify service",
        lambda d: rule(d).update(verify=True),
        "rules[0].verify: needs a twilio connection with verify_service_sid as via; 'twilio' has none",
    ),
    (
        "approval code on an sms rule",
        lambda d: rule(with_verify_service(d)).update(verify_above=5000, verify_via="twilio"),
        "rules[0].verify_above: only slack rules ask for a code on Approve; sms and voice rules use verify",
    ),
    (
        "approval code threshold without a Verify connection",
        lambda d: slack_rule(d, verify_above=5000),
        "rules[0].verify_via: is required with verify_above",
    ),
    (
        "approval code connection without a threshold",
        lambda d: slack_rule(with_verify_service(d), verify_via="twilio", verify_phone_field="assignee_phone"),
        "rules[0].verify_above: is required with verify_via",
    ),
    (
        "approval code threshold below zero",
        lambda d: slack_rule(with_verify_service(d), verify_above=-1, verify_via="twilio"),
        "rules[0].verify_above: must be a number of at least 0",
    ),
    (
        "approval code through a twilio connection without Verify",
        lambda d: slack_rule(d, verify_above=5000, verify_via="twilio"),
        "rules[0].verify_via: must name a twilio connection with verify_service_sid; 'twilio' has none",
    ),
    (
        "approval code through a slack connection",
        lambda d: slack_rule(d, verify_above=5000, verify_via="slack"),
        "rules[0].verify_via: must name a twilio connection with verify_service_sid; 'slack' has none",
    ),
    (
        "approval code through an unknown connection",
        lambda d: slack_rule(d, verify_above=5000, verify_via="twilio-verify"),
        "rules[0].verify_via: unknown connection 'twilio-verify'",
    ),
    (
        "approval code amount field empty",
        lambda d: slack_rule(with_verify_service(d), verify_above=5000, verify_via="twilio", verify_amount_field=""),
        "rules[0].verify_amount_field: must be a non-empty string",
    ),
    (
        "URL with credentials",
        lambda d: dynamics(d).update(environment_url="https://user:pw@contoso.operations.dynamics.com"),
        "connections.contoso.environment_url: must not hold credentials; name a secret in the credential field instead",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_each_mistake_has_its_own_message(change: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert errors_of(with_change(change)) == [expected]


def test_the_invalid_cases_are_distinct() -> None:
    messages = [case[2] for case in INVALID_CASES]
    assert len(set(messages)) == len(messages) >= 12


def test_a_plain_secret_value_is_never_echoed() -> None:
    error = ConfigError(errors_of(with_change(lambda d: dynamics(d).update(client_secret="hunter2-very-secret"))))
    assert "hunter2-very-secret" not in str(error)


def test_every_error_of_a_file_is_reported_one_per_line(tmp_path: Path) -> None:
    data = base()
    dynamics(data)["environment_url"] = "http://example.com"
    twilio(data)["account_sid"] = "nope"
    rule(data)["via"] = "twilio-x"
    rule(data)["when"] = [{"field": "amount", "op": "in", "value": 3}]
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    expected = [
        "connections.contoso.environment_url: must be an https URL (http only for loopback hosts)",
        "connections.twilio.account_sid: must be 'AC' followed by 32 hex digits",
        "rules[0].when[0].value: 'in' needs a non-empty list",
        "rules[0].via: unknown connection 'twilio-x'",
    ]
    assert caught.value.errors == expected
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 4 configuration errors"
    assert lines[1:] == expected


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "connections": {\n    "a": ,\n  }\n}\n', encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.errors == [f"{path}: invalid JSON at line 3, column 10: Expecting value"]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"{path}: configuration file not found"]


def test_a_repeated_json_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    text = json.dumps(base())
    path.write_text(text.replace('"rules":', '"connections": {}, "rules":'), encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "connections: duplicate key in a JSON object (the later one would win)" in caught.value.errors


def test_loaded_objects_are_frozen() -> None:
    loaded = config_from_dict(base())
    fo = loaded.connection("contoso")

    with pytest.raises(dataclasses.FrozenInstanceError):
        fo.environment_url = "https://evil.example.com"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.rules[0].template = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.connections["new"] = fo  # type: ignore[index]
    assert isinstance(loaded.rules, tuple)
    assert isinstance(loaded.rules[0].to, tuple)


def test_a_twilio_connection_without_an_api_key_sends_with_the_account_sid_and_auth_token() -> None:
    data = base()
    twilio(data).pop("api_key_sid")
    twilio(data).pop("api_key_secret")

    tw = config_from_dict(data).connection_of("twilio", TwilioConnection)

    assert (tw.api_key_sid, tw.api_key_secret) == (None, None)
    assert basic_credentials(tw) == (tw.account_sid, SecretRef("twilio-auth-token"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:7071", "http://localhost:8080/", "http://[::1]:9000"])
def test_http_is_accepted_for_loopback_hosts(url: str) -> None:
    data = with_change(lambda d: dynamics(d).update(environment_url=url, authority=url))
    fo = config_from_dict(data).connection_of("contoso", DynamicsConnection)
    assert fo.environment_url == url.rstrip("/")


def test_trailing_slashes_are_normalised() -> None:
    data = base()
    dynamics(data)["environment_url"] = "https://contoso.operations.dynamics.com/"
    data["connections"]["slack"]["api_base_url"] = "http://127.0.0.1:9100/api"

    loaded = config_from_dict(data)

    assert loaded.connection_of("contoso", DynamicsConnection).environment_url == (
        "https://contoso.operations.dynamics.com"
    )
    assert loaded.connection_of("slack", SlackConnection).api_base_url == "http://127.0.0.1:9100/api/"


def test_conditions_and_recipients_become_typed_values() -> None:
    data = base()
    twilio(data)["verify_service_sid"] = "VA" + "a" * 32
    rule(data).update(
        channel="voice",
        verify=True,
        to=["+14155550123", {"field": "ApproverPhone"}],
        when=[
            {"field": "amount", "op": "ge", "value": 10000},
            {"field": "due", "op": "lt", "value": "2025-01-31"},
            {"field": "status", "op": "not_in", "value": ["closed", "void"]},
            {"field": "approver", "op": "exists", "value": True},
        ],
    )

    only = config_from_dict(data).rules[0]

    assert [recipient.is_lookup for recipient in only.to] == [False, True]
    assert only.to[1].field == "ApproverPhone"
    assert only.when[2].value == ("closed", "void")
    assert [condition.op for condition in only.when] == ["ge", "lt", "not_in", "exists"]


def test_a_slack_rule_asks_for_a_code_above_an_amount() -> None:
    data = with_verify_service(base())
    slack_rule(data, verify_above=10000, verify_via="twilio")
    plain = dict(rule(data), id="r2")
    for name in ("verify_above", "verify_via"):
        plain.pop(name)
    data["rules"].append(plain)
    data["rules"].append(dict(rule(data), id="r3", verify_above=0, verify_amount_field="InvoiceAmount",
                              verify_phone_field="assignee_phone"))

    coded, uncoded, custom = config_from_dict(data).rules

    assert (coded.verify_above, coded.verify_via, coded.verify_amount_field, coded.verify_phone_field) == (
        10000.0, "twilio", "amount", None)
    assert (uncoded.verify_above, uncoded.verify_via) == (None, None)
    assert (custom.verify_above, custom.verify_amount_field, custom.verify_phone_field) == (
        0.0, "InvoiceAmount", "assignee_phone")


def test_rules_for_orders_by_priority_then_file_order() -> None:
    data = base()
    second = dict(rule(data), id="r2", priority=5)
    third = dict(rule(data), id="r3")
    data["rules"] += [second, third]

    loaded = config_from_dict(data)

    assert [r.id for r in loaded.rules_for("contoso")] == ["r2", "r1", "r3"]
    assert loaded.rules_for("slack") == ()


def test_unknown_connection_lookup_is_a_clear_key_error() -> None:
    loaded = config_from_dict(base())
    with pytest.raises(KeyError, match="no connection named 'nope'"):
        loaded.connection("nope")
    with pytest.raises(TypeError, match="is a twilio connection, not slack"):
        loaded.connection_of("twilio", SlackConnection)


@pytest.fixture
def fresh_config() -> Any:
    reset_config()
    yield
    reset_config()


def test_get_config_reads_the_configured_file_once(
    fresh_config: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(base()), encoding="utf-8")
    monkeypatch.setenv("CONNECTOR_CONFIG_PATH", str(path))

    first = get_config()
    path.unlink()  # cached: no second read

    assert get_config() is first
    assert isinstance(first, AppConfig)
    assert set(first.connections) == {"contoso", "twilio", "slack"}


def test_get_config_resolves_a_relative_path_against_the_app_root(
    fresh_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_CONFIG_PATH", "config/connections.sample.json")

    assert config_module.config_path() == SAMPLE
    assert "contoso-fo" in get_config().connections


def test_get_config_without_the_setting_says_what_is_missing(
    fresh_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONNECTOR_CONFIG_PATH", raising=False)

    with pytest.raises(ConfigError, match=r"^CONNECTOR_CONFIG_PATH: not set; "):
        get_config()


def test_templates_in_the_file_extend_the_built_in_ones() -> None:
    data = base()
    data["templates"] = {"short-sms": {"sms": "Invoice {invoice_id}: {money}"}}
    data["rules"][0]["template"] = "short-sms"
    config = config_from_dict(data)
    assert config.template("short-sms").sms == "Invoice {invoice_id}: {money}"
    assert config.template("vendor-invoice-posted").voice  # built-ins stay


@pytest.mark.parametrize(
    ("templates", "template", "message"),
    [
        ({}, "nope", "rules[0].template: unknown template 'nope'"),
        ({"t": {"voice": "Hello"}}, "t", "rules[0].template: template 't' has no sms text"),
        ({"t": {"sms": "Total {amount.__class__}"}}, "t", "templates.t.sms: placeholder {amount.__class__}"),
        ({"t": {"sms": "Total {amount:,.2f}"}}, "t", "templates.t.sms: placeholder {amount}"),
        ({"t": {"sms": "Unbalanced {amount"}}, "t", "templates.t.sms: unbalanced braces"),
        ({"t": {"sms": "x", "color": "red"}}, "t", "templates.t.color: unknown field"),
    ],
)
def test_bad_templates_are_named(templates: dict, template: str, message: str) -> None:
    data = base()
    data["templates"] = templates
    data["rules"][0]["template"] = template
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert any(error.startswith(message) for error in caught.value.errors), caught.value.errors


def test_dynamics_poll_entities_must_be_known() -> None:
    data = base()
    fo = next(name for name, c in data["connections"].items() if c["kind"] == "dynamics")
    data["connections"][fo]["poll"] = {"entities": ["VendorInvoiceHeaders", "Nope"]}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert any(e.startswith(f"connections.{fo}.poll.entities[1]: cannot poll 'Nope'") for e in caught.value.errors)


@pytest.mark.parametrize("zone", ["Europe/Paris", "Etc/UTC"])
def test_a_dynamics_poll_reads_utc_only(zone: str) -> None:
    data = base()
    fo = next(name for name, c in data["connections"].items() if c["kind"] == "dynamics")
    data["connections"][fo]["poll"] = {"entities": ["VendorInvoiceHeaders"], "time_zone": zone}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert caught.value.errors == [f"connections.{fo}.poll.time_zone: F&O OData date-times are UTC; "
                                   "leave time_zone out or set it to UTC"]
    data["connections"][fo]["poll"]["time_zone"] = "UTC"
    assert config_from_dict(data).connections[fo].poll.time_zone == "UTC"  # type: ignore[attr-defined]


def test_a_rule_may_give_its_alerts_a_validity_period_and_none_means_no_expiry() -> None:
    data = base()
    data["rules"].append(dict(rule(data), id="r2", valid_for_minutes=30))
    data["rules"].append(dict(rule(data), id="r3", valid_for_minutes=10080))

    plain, half_hour, week = config_from_dict(data).rules

    assert (plain.valid_for_minutes, half_hour.valid_for_minutes, week.valid_for_minutes) == (None, 30, 10080)


@pytest.mark.parametrize("value", [0, -5, 10081, 1.5, "30", True, None])
def test_a_validity_period_outside_a_minute_to_a_week_is_refused_by_name(value: Any) -> None:
    data = base()
    rule(data)["valid_for_minutes"] = value

    assert errors_of(data) == ["rules[0].valid_for_minutes: must be a whole number from 1 to 10080"]
