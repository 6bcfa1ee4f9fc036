"""Escalation policies and Twilio reconciliation as the configuration reads them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.channels.twilio.connection import TwilioConnection
from shared.config.loading import config_from_dict
from shared.config.model import ConfigError, Recipient

SMS_THEN_CALLS = {"steps": [
    {"channel": "sms"},
    {"channel": "voice", "unless": "delivered", "after_minutes": 5},
    {"channel": "voice", "to": ["+14155550101", {"field": "backup_phone"}], "unless": "acknowledged",
     "after_minutes": 15},
]}


def config(rule: dict[str, Any], twilio: dict[str, Any] | None = None) -> Any:
    return config_from_dict({
        "connections": {
            "fo": {"kind": "dynamics", "environment_url": "https://fo.example.com", "tenant_id": "t",
                   "client_id": "c", "client_secret": {"secret": "s"}},
            "tw": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                   "api_key_secret": {"secret": "k"}, "auth_token": {"secret": "a"}, "from_number": "+15005550006",
                   **(twilio or {})},
        },
        "rules": [{"id": "r", "source": "fo", "channel": "sms", "via": "tw", "to": ["+14155550100"],
                   "template": "vendor-invoice-posted", **rule}],
    })


def errors_of(rule: dict[str, Any], twilio: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        config(rule, twilio)
    return raised.value.errors


def test_an_escalation_reads_as_steps_after_the_rules_own_send() -> None:
    [rule] = config({"escalation": SMS_THEN_CALLS}).rules
    assert rule.escalation is not None
    first, call, next_person = rule.escalation.steps
    assert first.channel == "sms" and not first.to
    assert (call.channel, call.unless, call.after_minutes, call.to) == ("voice", "delivered", 5.0, ())
    assert next_person.to == (Recipient(value="+14155550101"), Recipient(field="backup_phone"))
    assert next_person.unless == "acknowledged"
    assert config({}).rules[0].escalation is None


@pytest.mark.parametrize(("escalation", "expected"), [
    ({"steps": [{"channel": "sms"}]}, "rules[0].escalation.steps: needs the rule's own send first"),
    ({"steps": [{"channel": "voice"}, {"channel": "voice", "unless": "delivered", "after_minutes": 5}]},
     "rules[0].escalation.steps[0].channel: the first step is the rule's own send: 'sms'"),
    ({"steps": [{"channel": "sms"}, {"channel": "voice", "after_minutes": 5}]},
     "rules[0].escalation.steps[1].unless: is required"),
    ({"steps": [{"channel": "sms"}, {"channel": "voice", "unless": "delivered"}]},
     "rules[0].escalation.steps[1].after_minutes: is required"),
    ({"steps": [{"channel": "sms"}, {"channel": "voice", "unless": "read", "after_minutes": 5}]},
     "rules[0].escalation.steps[1].unless: must be one of delivered, acknowledged"),
    ({"steps": [{"channel": "sms"}, {"channel": "slack", "unless": "delivered", "after_minutes": 5}]},
     "rules[0].escalation.steps[1].channel: must be one of sms, voice"),
    ({"steps": [{"channel": "sms"}, {"channel": "voice", "unless": "delivered", "after_minutes": 0}]},
     "rules[0].escalation.steps[1].after_minutes: must be a number of minutes above 0"),
    ({"steps": [{"channel": "sms"}, {"channel": "voice", "to": ["ops@example.com"], "unless": "delivered",
                                     "after_minutes": 5}]},
     "rules[0].escalation.steps[1].to[0]:"),
    ({"steps": [{"channel": "sms"}, {"channel": "voice", "via": "fo", "unless": "delivered", "after_minutes": 5}]},
     "rules[0].escalation.steps[1].via: channel 'voice' needs a twilio connection"),
])
def test_a_malformed_escalation_is_refused_with_its_path(escalation: dict[str, Any], expected: str) -> None:
    assert any(error.startswith(expected) for error in errors_of({"escalation": escalation})), \
        errors_of({"escalation": escalation})


def test_a_step_needs_its_text_in_the_rules_template() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_dict(_with_template({"escalation": SMS_THEN_CALLS, "template": "sms-only"}))
    assert any("has no voice text" in error for error in raised.value.errors)


def _with_template(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "connections": {
            "fo": {"kind": "dynamics", "environment_url": "https://fo.example.com", "tenant_id": "t",
                   "client_id": "c", "client_secret": {"secret": "s"}},
            "tw": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                   "api_key_secret": {"secret": "k"}, "auth_token": {"secret": "a"}, "from_number": "+15005550006"},
        },
        "templates": {"sms-only": {"sms": "Invoice {invoice_id}"}},
        "rules": [{"id": "r", "source": "fo", "channel": "sms", "via": "tw", "to": ["+14155550100"], **rule}],
    }


def test_only_sms_and_voice_rules_escalate() -> None:
    data = _with_template({"escalation": SMS_THEN_CALLS, "template": "sms-only"})
    data["connections"]["sl"] = {"kind": "slack", "bot_token": {"secret": "b"}, "signing_secret": {"secret": "s"}}
    data["rules"][0] |= {"channel": "slack", "via": "sl", "to": ["#ap"]}
    with pytest.raises(ConfigError) as raised:
        config_from_dict(data)
    assert "rules[0].escalation: only sms and voice rules escalate; this rule's channel is 'slack'" \
        in raised.value.errors


def test_reconciliation_is_on_after_30_minutes_unless_the_connection_says_otherwise() -> None:
    assert config({}).connection_of("tw", TwilioConnection).reconcile_after_minutes == 30.0
    assert config({}, {"reconcile_after_minutes": 0}).connection_of("tw", TwilioConnection) \
        .reconcile_after_minutes == 0.0
    assert config({}, {"reconcile_after_minutes": 0.05}).connection_of("tw", TwilioConnection) \
        .reconcile_after_minutes == 0.05
    assert errors_of({}, {"reconcile_after_minutes": -1}) == [
        "connections.tw.reconcile_after_minutes: must be a number of minutes from 0 (off) to 10080"]
