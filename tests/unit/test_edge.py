"""The edge: a refusal raised anywhere in a trigger becomes its one JSON answer, in one place."""

from __future__ import annotations

import json
from collections.abc import Iterator

import azure.functions as func
import pytest

from shared.config.loading import config_from_dict
from shared.config.model import AppConfig, ConfigError
from shared.pipeline.webhooks import Refused
from shared.triggers.edge import refusals_answered, refuse_declared_over


def request(headers: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/x", headers=headers or {}, body=b"{}")


def test_a_refusal_is_answered_with_its_status_code_and_reason() -> None:
    @refusals_answered
    def trigger(req: func.HttpRequest) -> func.HttpResponse:
        raise Refused(403, "forbidden", "X-Twilio-Signature does not match")

    answer = trigger(request())

    assert answer.status_code == 403 and answer.mimetype == "application/json"
    assert json.loads(answer.get_body()) == {"error": "forbidden", "message": "X-Twilio-Signature does not match"}


def test_a_configuration_that_does_not_load_is_503_and_an_accepted_request_keeps_its_answer() -> None:
    @refusals_answered
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise ConfigError(["connections.x.kind: unknown"])

    @refusals_answered
    def fine(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(status_code=204)

    assert broken(request()).status_code == 503
    assert json.loads(broken(request()).get_body())["error"] == "not_configured"
    assert fine(request()).status_code == 204


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    @refusals_answered
    def trigger(req: func.HttpRequest) -> func.HttpResponse:
        refuse_declared_over(req.headers.get("content-length"), 10)
        return func.HttpResponse(status_code=200)

    assert trigger(request({"content-length": "11"})).status_code == 413
    assert trigger(request({"content-length": "10"})).status_code == 200
    assert trigger(request({"content-length": "junk"})).status_code == 200


@pytest.fixture
def fresh_clients() -> Iterator[None]:
    from shared.channels.slack.client import reset_slack_channels
    from shared.channels.twilio.client import reset_twilio_channels
    from shared.storage.secrets import reset_secret_provider

    def reset() -> None:
        reset_secret_provider()
        reset_twilio_channels()
        reset_slack_channels()

    reset()
    yield
    reset()


def twilio_and_slack(secret: str) -> AppConfig:
    return config_from_dict({"connections": {
        "sms": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                "api_key_secret": {"secret": "edge-key"}, "auth_token": {"secret": secret},
                "from_number": "+14155550100"},
        "cards": {"kind": "slack", "bot_token": {"secret": "edge-bot"}, "signing_secret": {"secret": secret}},
    }})


@pytest.mark.usefixtures("fresh_clients")
def test_a_connection_whose_signing_secret_is_missing_answers_503_and_names_no_secret(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from shared.pipeline.webhooks import accept_slack_request, accept_twilio_webhook

    monkeypatch.delenv("EDGE_NOT_SET", raising=False)
    config = twilio_and_slack("edge-not-set")

    with pytest.raises(Refused) as twilio:
        accept_twilio_webhook(config, "sms", "twilio/status", "http://localhost/api/twilio/status/sms",
                              b"MessageSid=SM1&MessageStatus=sent", {"X-Twilio-Signature": "x"})
    with pytest.raises(Refused) as slack:
        accept_slack_request(config, "cards", b"payload=%7B%7D",
                             {"X-Slack-Signature": "v0=x", "X-Slack-Request-Timestamp": "1"})

    assert (twilio.value.status, twilio.value.code) == (503, "not_configured")
    assert (slack.value.status, slack.value.code) == (503, "not_configured")
    assert "cannot check signatures" in caplog.text and "sms" in caplog.text


@pytest.mark.usefixtures("fresh_clients")
def test_a_signing_secret_that_is_set_checks_the_signature_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.pipeline.webhooks import accept_twilio_webhook

    monkeypatch.setenv("EDGE_TOKEN", "the-auth-token")
    monkeypatch.setenv("EDGE_KEY", "the-api-key-secret")

    with pytest.raises(Refused) as refused:
        accept_twilio_webhook(twilio_and_slack("edge-token"), "sms", "twilio/status",
                              "http://localhost/api/twilio/status/sms", b"MessageSid=SM1", {"X-Twilio-Signature": "x"})

    assert refused.value.status == 403


def test_a_plain_slack_click_is_checked_and_keyed_without_the_work_behind_the_queue() -> None:
    # A cold instance's first plain click is verified (with slack_sdk's own verifier), parsed and keyed
    # without the code steps or the job and table code that only the consumers need.
    import subprocess
    import sys
    from pathlib import Path

    probe = """
import hashlib, hmac, json, sys, time
from urllib.parse import urlencode
from shared.config.loading import config_from_dict
from shared.pipeline.webhooks import accept_slack_request
from shared.pipeline.slack_clicks import asks_for_code, envelope_for_click, is_code_submission, parse_interaction
import shared.triggers.slack
config = config_from_dict({"connections": {"cards": {"kind": "slack", "bot_token": {"secret": "edge-bot"},
                                                     "signing_secret": {"secret": "edge-signing"}}}})
click = {"type": "block_actions", "user": {"id": "U1"}, "container": {"channel_id": "C1", "message_ts": "1.2"},
         "actions": [{"action_id": "approve", "value": "job-1"}]}
body = urlencode({"payload": json.dumps(click)}).encode()
sent_at = str(int(time.time()))  # signed as Slack signs (HMAC-SHA256 over v0:<timestamp>:<body>)
mac = hmac.new(b"the-signing-secret", b"v0:" + sent_at.encode() + b":" + body, hashlib.sha256).hexdigest()
accepted = accept_slack_request(config, "cards", body, {"X-Slack-Request-Timestamp": sent_at,
                                                        "X-Slack-Signature": "v0=" + mac})
payload = parse_interaction(accepted.body)
assert not asks_for_code(payload) and not is_code_submission(payload)
envelope_for_click("cards", payload)
print(sorted(name for name in sys.modules if name.startswith(("shared.pipeline.slack_flow",
      "shared.pipeline.slack_codes", "shared.pipeline.jobs", "shared.storage.tables"))))
"""
    env = {"PATH": "/usr/bin:/bin", "EDGE_SIGNING": "the-signing-secret", "EDGE_BOT": "xoxb-edge"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
