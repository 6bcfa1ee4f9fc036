"""An app on Azurite whose alerts come from one Dynamics connection and go out through Twilio connections
on a fake Twilio: the set-up of the tests that drive the process and delivery stages in this process."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shared.channels.twilio.client import reset_twilio_channels
from shared.config.loading import reset_config
from shared.storage.bus import reset_bus
from shared.storage.secrets import reset_secret_provider
from tests.fakes.twilio import FakeTwilio, TwilioCredentials

_RESETS = (reset_config, reset_bus, reset_secret_provider, reset_twilio_channels)


@contextmanager
def twilio_app(twilio: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, name: str, source: str,
               senders: Mapping[str, Mapping[str, Any]], rules: list[dict[str, Any]],
               env: Mapping[str, str] | None = None) -> Iterator[TwilioCredentials]:
    """The configuration (``source`` a Dynamics connection; each of ``senders`` a Twilio connection of one test
    account, with its own settings over the account's) and the environment that reads it; secrets are named
    after ``name``. Without ``PUBLIC_BASE_URL`` in ``env`` sends ask for no status callbacks."""
    creds = twilio.add_test_account()
    account = {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
               "api_key_secret": {"secret": f"{name}-twilio-key-secret"},
               "auth_token": {"secret": f"{name}-twilio-auth-token"}, "from_number": creds.phone_number,
               "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url}
    config = {"connections": {
        source: {"kind": "dynamics", "environment_url": f"https://{name}.operations.dynamics.com",
                 "tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-1111-1111-1111-111111111111",
                 "client_secret": {"secret": f"{name}-fo-secret"}},
        **{sender: {**account, **settings} for sender, settings in senders.items()},
    }, "rules": rules}
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(config))
    prefix = name.upper().replace("-", "_")
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    for setting, value in {"CONNECTOR_CONFIG_PATH": str(path), "QUEUE_BACKEND": "storage",
                           f"{prefix}_TWILIO_KEY_SECRET": creds.api_key_secret,
                           f"{prefix}_TWILIO_AUTH_TOKEN": creds.auth_token, **(env or {})}.items():
        monkeypatch.setenv(setting, value)
    for reset in _RESETS:
        reset()
    try:
        yield creds
    finally:
        for reset in _RESETS:
            reset()
