"""The erp-events stage as the app runs it, for the integration tests that call its handlers in-process: the
app's configuration, stores, queues and secrets, against the fake Entra ID, Dynamics and Twilio."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.config.loading import reset_config
from shared.erp.dynamics.client import reset_dynamics_clients
from shared.model import NOTIFICATIONS
from shared.settings import StorageSettings
from shared.storage.bus import reset_bus
from shared.storage.secrets import reset_secret_provider
from tests.e2e.conftest import CLIENT_SECRET, app_config, prepare_dynamics
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_queue_batches import take_all


@dataclass(frozen=True)
class StageFakes:
    entra: FakeEntra
    dynamics: FakeDynamics
    twilio: FakeTwilio


@contextlib.contextmanager
def erp_events_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage_connection_string: str,
                     configure: Callable[[dict[str, Any]], None] | None = None) -> Iterator[StageFakes]:
    """The fakes started and the app's settings pointed at them (``configure`` may change the configuration
    first); the notifications the stage queued are taken off the queue afterwards."""
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    twilio = FakeTwilio().start()
    prepare_dynamics(entra, dynamics)
    creds = twilio.add_test_account()
    config = app_config(dynamics, entra, twilio, creds)
    if configure is not None:
        configure(config)
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(config))
    for name, value in {"CONNECTOR_CONFIG_PATH": str(path), "QUEUE_BACKEND": "storage",
                        "CONTOSO_FO_CLIENT_SECRET": CLIENT_SECRET, "TWILIO_API_KEY_SECRET": creds.api_key_secret,
                        "TWILIO_AUTH_TOKEN": creds.auth_token}.items():
        monkeypatch.setenv(name, value)
    resets = (reset_config, reset_bus, reset_secret_provider, reset_dynamics_clients)
    for reset in resets:
        reset()
    try:
        yield StageFakes(entra, dynamics, twilio)
    finally:
        with contextlib.suppress(ResourceNotFoundError):  # nothing was ever queued on this Azurite
            take_all(StorageSettings(storage_connection_string, None, None, None), NOTIFICATIONS, "twilio-main")
        for reset in resets:
            reset()
        for server in (twilio, dynamics, entra):
            server.stop()
