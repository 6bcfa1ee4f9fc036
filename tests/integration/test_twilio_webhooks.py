"""``python -m shared.cli twilio-webhooks``: a Twilio number pointed at the app through the IncomingPhoneNumbers
API of the fake Twilio, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.channels.twilio.webhooks import expected_webhooks
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.support.openapi import require_spec, validate_form_request

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "https://connector.example.com"
UPDATE_PATH = "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def account(fake: FakeTwilio) -> TwilioCredentials:
    return fake.add_test_account()


def run_cli(fake: FakeTwilio, account: TwilioCredentials, tmp_path: Path, *args: str,
            public: str = PUBLIC) -> subprocess.CompletedProcess[str]:
    """The command with a configuration of two Twilio connections: one with an API key, one with the Auth Token."""
    other = fake.add_number(account.account_sid, "+15017122662", sms_url="https://old.example.com/sms")
    connections = {
        "twilio-main": {"kind": "twilio", "account_sid": account.account_sid, "api_key_sid": account.api_key_sid,
                        "api_key_secret": {"secret": "hooks-key-secret"}, "auth_token": {"secret": "hooks-auth-token"},
                        "from_number": account.phone_number, "api_base_url": fake.base_url},
        "twilio-second": {"kind": "twilio", "account_sid": account.account_sid,
                          "auth_token": {"secret": "hooks-auth-token"}, "from_number": other.phone_number,
                          "api_base_url": fake.base_url},
    }
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"connections": connections, "rules": []}))
    env = {**os.environ, "CONNECTOR_CONFIG_PATH": str(path), "PUBLIC_BASE_URL": public,
           "HOOKS_KEY_SECRET": account.api_key_secret, "HOOKS_AUTH_TOKEN": account.auth_token}
    return subprocess.run([sys.executable, "-m", "shared.cli", "twilio-webhooks", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_number_is_pointed_at_the_app_and_a_second_run_changes_nothing(
    fake: FakeTwilio, account: TwilioCredentials, tmp_path: Path
) -> None:
    first = run_cli(fake, account, tmp_path, "--connection", "twilio-main")
    again = run_cli(fake, account, tmp_path, "--connection", "twilio-main")

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    number = fake.number(account.phone_number)
    assert number is not None
    assert (number.sms_url, number.sms_method, number.status_callback) == (
        f"{PUBLIC}/api/twilio/inbound/twilio-main", "POST", f"{PUBLIC}/api/twilio/status/twilio-main")
    assert "before: SmsUrl=(none)" in first.stdout
    assert f"after:  SmsUrl={PUBLIC}/api/twilio/inbound/twilio-main SmsMethod=POST " \
           f"StatusCallback={PUBLIC}/api/twilio/status/twilio-main" in first.stdout
    assert "already calls the app" in again.stdout
    [(sid, fields)] = fake.number_updates  # the second run wrote nothing
    assert sid == number.sid and fields == expected_webhooks("twilio-main", PUBLIC).form()
    [update] = fake.requests_to(f"POST /2010-04-01/Accounts/{account.account_sid}/IncomingPhoneNumbers/")
    assert validate_form_request(require_spec("twilio/twilio_api_v2010.json"), update.path, "POST",
                                 update.form or {}) == []
    assert account.phone_number not in first.stdout  # the number shows masked


def test_a_dry_run_shows_every_connection_and_changes_nothing(
    fake: FakeTwilio, account: TwilioCredentials, tmp_path: Path
) -> None:
    result = run_cli(fake, account, tmp_path, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert fake.number_updates == [] and fake.requests_to("POST ") == []
    assert "before: SmsUrl=https://old.example.com/sms" in result.stdout
    assert f"would set: SmsUrl={PUBLIC}/api/twilio/inbound/twilio-second" in result.stdout
    assert f"would set: SmsUrl={PUBLIC}/api/twilio/inbound/twilio-main" in result.stdout


def test_without_public_base_url_or_with_an_unknown_connection_nothing_is_asked(
    fake: FakeTwilio, account: TwilioCredentials, tmp_path: Path
) -> None:
    unset = run_cli(fake, account, tmp_path, public="")
    unknown = run_cli(fake, account, tmp_path, "--connection", "twilio-nope")

    assert (unset.returncode, unknown.returncode) == (2, 2)
    assert "PUBLIC_BASE_URL is not set" in unset.stderr
    assert "no Twilio connection named 'twilio-nope'" in unknown.stderr
    assert fake.requests == []
