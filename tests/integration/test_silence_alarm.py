"""The silence alarm on Azurite, with pushed events through the real erp-events stage and the fake Dynamics: a
legal entity silent for the configured business hours raises one alarm (log, audit, a rule's SMS job), and
the next event clears it. The clock is the check's ``now``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.config.loading import get_config
from shared.model import BUSINESS_EVENT, NOTIFICATIONS, Envelope
from shared.pipeline.process import process_business_event
from shared.pipeline.silence import check_silence
from shared.settings import StorageSettings
from shared.storage.bus import get_bus
from shared.storage.tables import Stores
from tests.e2e.test_dynamics_to_twilio import invoice_event
from tests.integration.stage_stack import erp_events_stage
from tests.integration.test_queue_batches import take_all

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("queued_notifications")]

BERLIN = ZoneInfo("Europe/Berlin")
ON_CALL = "+14155550177"
RECORD = "contoso-fo|LegalEntity|usmf"


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment ``day`` days after Monday 30 November 2026, at that time in Berlin, as UTC."""
    return (datetime(2026, 11, 30, hour, minute, tzinfo=BERLIN) + timedelta(days=day)).astimezone(UTC)


@pytest.fixture
def app(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        storage_connection_string: str) -> Iterator[Stores]:
    """The app's configuration with a silence alarm on usmf and a rule that texts the on-call number about it."""
    def configure(config: dict[str, Any]) -> None:
        config["connections"]["contoso-fo"]["silence_alarm"] = {
            "business_hours": 4, "days": "Mon-Fri", "start": "08:00", "end": "18:00", "time_zone": "Europe/Berlin",
            "legal_entities": ["usmf"]}
        config["rules"].append({"id": "silence-sms", "source": "contoso-fo", "event": "SilenceAlarm",
                                "channel": "sms", "via": "twilio-main", "to": [ON_CALL], "template": "silence-alarm"})

    with erp_events_stage(tmp_path, monkeypatch, storage_connection_string, configure):
        yield app_stores


def check(stores: Stores, now: datetime) -> list[str]:
    return check_silence(get_config(), stores, get_bus(), now)


def pushed_event(received_at: datetime) -> Envelope:
    event = invoice_event("INV-" + uuid.uuid4().hex[:8], "+14155550161")
    return Envelope(BUSINESS_EVENT, "contoso-fo", f"contoso-fo|{event['ControlNumber']}",
                    {"event": event, "received_at": received_at.isoformat()}, uuid.uuid4().hex)


def alarm_steps(stores: Stores) -> list[str]:
    """The alarm's steps on the legal entity's trail (its rule's ``routed`` left out)."""
    entries = sorted(stores.audit.by_record(RECORD), key=lambda entry: entry.at)
    return [entry.step for entry in entries if entry.step.startswith("silence-")]


def sms_jobs(storage_connection_string: str) -> list[Envelope]:
    taken = take_all(StorageSettings(storage_connection_string, None, None, None), NOTIFICATIONS, "twilio-main")
    return [envelope for envelope in taken if envelope.payload.get("rule") == "silence-sms"]


def test_silence_for_the_business_hours_raises_one_alarm_and_the_next_event_clears_it(
        app: Stores, storage_connection_string: str, caplog: pytest.LogCaptureFixture) -> None:
    assert check(app, berlin(0, 16)) == []  # Monday 16:00: the first check starts the count
    # Monday 16:00-18:00 and Tuesday 08:00-09:59 are 3 h 59 min of business time: the night does not count.
    assert check(app, berlin(1, 9, 59)) == []
    with caplog.at_level(logging.WARNING, logger="shared.pipeline.silence"):
        assert check(app, berlin(1, 10)) == [f"raised {RECORD}"]
    [warning] = [r for r in caplog.records if r.name == "shared.pipeline.silence"]
    assert warning.levelno == logging.WARNING and "no business event from usmf for 4 business hours" in warning.message
    assert check(app, berlin(1, 12)) == []  # once per silence
    assert alarm_steps(app) == ["silence-alarm"]
    [job] = sms_jobs(storage_connection_string)
    assert job.payload["to"] == ON_CALL and "No business events from usmf" in job.payload["text"]

    process_business_event(pushed_event(received_at=berlin(1, 12, 30)))  # push comes back
    assert check(app, berlin(1, 12, 31)) == [f"cleared {RECORD}"]
    assert alarm_steps(app) == ["silence-alarm", "silence-cleared"]
    assert check(app, berlin(1, 16, 29)) == []  # a new silence is counted from the event: 3 h 59 min
    assert check(app, berlin(1, 16, 30)) == [f"raised {RECORD}"]
    assert alarm_steps(app) == ["silence-alarm", "silence-cleared", "silence-alarm"]


def test_events_on_time_raise_nothing(app: Stores, storage_connection_string: str) -> None:
    assert check(app, berlin(2, 8)) == []
    for hour in (9, 11, 13, 15, 17):
        process_business_event(pushed_event(received_at=berlin(2, hour)))
        assert check(app, berlin(2, hour, 30)) == []
    assert check(app, berlin(3, 10, 59)) == []  # Wednesday 17:00-18:00 and Thursday 08:00-10:59: under 4 h
    assert alarm_steps(app) == []
