"""Quiet hours: an alert due inside the recipient's quiet window is held to the window's end, not dropped.

The hold is the notification sent again to its queue with a delay (real Azurite queues); the delivery
stage's clock is driven as in the validity tests. The fake Twilio over loopback HTTP takes the sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.config.loading import get_config
from shared.model import NOTIFICATIONS, Envelope
from shared.pipeline import deliver as deliver_module
from shared.pipeline.deliver import deliver_notification
from shared.pipeline.process import queue_notifications
from shared.settings import StorageSettings
from shared.storage import bus as bus_module
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import Stores
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_queue_batches import take_all
from tests.support.twilio_app import twilio_app
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("queued_notifications")]

SOURCE, TWILIO = "quiet-fo", "quiet-twilio"
FIELDS = {"invoice_id": "INV-9", "vendor_name": "Fabrikam", "money": "USD 900.00", "due_date": "2026-12-01",
          "legal_entity": "usmf"}
NIGHT = {"start": "22:00", "end": "07:00", "time_zone": "America/Chicago"}


def rules() -> list[dict[str, Any]]:
    sms = {"source": SOURCE, "channel": "sms", "via": TWILIO, "template": "vendor-invoice-posted"}
    return [
        {**sms, "id": "night-quiet", "event": "night-quiet", "to": ["+14155550161"], "quiet_hours": NIGHT},
        {**sms, "id": "night-critical", "event": "night-critical", "to": ["+14155550162"], "quiet_hours": NIGHT,
         "critical": True},
        {**sms, "id": "night-within-30", "event": "night-within-30", "to": ["+14155550163"], "quiet_hours": NIGHT,
         "valid_for_minutes": 30},
    ]


@pytest.fixture
def app(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stores, FakeTwilio]]:
    twilio = FakeTwilio().start()
    try:
        with twilio_app(twilio, tmp_path, monkeypatch, name="quiet", source=SOURCE, senders={TWILIO: {}},
                        rules=rules()):
            yield app_stores, twilio
    finally:
        twilio.stop()


@pytest.fixture
def settings(storage_connection_string: str) -> StorageSettings:
    return StorageSettings(storage_connection_string, None, None, None)


def routed(stores: Stores, settings: StorageSettings, event_type: str, fields: dict[str, Any] | None = None,
           changed_at: datetime | None = None) -> Envelope:
    bus = StorageQueueBus(settings)
    try:
        queued = queue_notifications(get_config(), stores, bus, source=SOURCE, event_type=event_type,
                                     event_key=f"{SOURCE}|{uuid.uuid4().hex}", record=f"{SOURCE}|Invoice|{event_type}",
                                     fields=fields or FIELDS, correlation_id=uuid.uuid4().hex, changed_at=changed_at)
    finally:
        bus.close()
    assert queued == 1
    [envelope] = [e for e in take_all(settings, NOTIFICATIONS, TWILIO) if e.payload["event"] == event_type]
    return envelope


def clock_at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """The delivery stage's clock set to ``moment``, running on from there at the real pace."""
    offset = moment - datetime.now(UTC)

    class Shifted(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + offset

    monkeypatch.setattr(deliver_module, "datetime", Shifted)


def steps(stores: Stores, envelope: Envelope) -> list[Any]:
    return stores.audit.by_correlation(envelope.correlation_id)


def back_from_the_queue(settings: StorageSettings) -> Envelope:
    """The held notification, once its queue shows it again."""
    [held] = wait_for(lambda: take_all(settings, NOTIFICATIONS, TWILIO), timeout=20, what="the held notification")
    return held


def test_an_sms_due_in_quiet_hours_is_held_to_the_windows_end_in_the_recipients_zone_then_sent(
        app: tuple, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, twilio = app
    envelope = routed(stores, settings, "night-quiet", {**FIELDS, "recipient_time_zone": "Europe/Berlin"})
    assert envelope.payload["quiet_hours"]["time_zone"] == "Europe/Berlin"  # the record's zone over the rule's
    # 06:59:57.8 in Berlin (still night there), 23:59:57.8 in Chicago: the window ends at 07:00 Berlin, 06:00 UTC.
    clock_at(monkeypatch, datetime(2026, 12, 7, 5, 59, 57, 800_000, tzinfo=UTC))

    deliver_notification(envelope)

    assert twilio.messages(to="+14155550161") == []
    [held] = [entry for entry in steps(stores, envelope) if entry.step == "held"]
    assert held.detail["held_until"] == "2026-12-07T06:00:00+00:00"
    assert held.detail["time_zone"] == "Europe/Berlin" and held.job_id == envelope.payload["job_id"]
    assert stores.jobs.get(envelope.payload["job_id"]) is None  # nothing claimed while it waits

    released = back_from_the_queue(settings)  # a few seconds on: the window has ended
    assert released.payload["held_until"] == held.detail["held_until"] and released.key == envelope.key
    deliver_notification(released)

    [message] = twilio.messages(to="+14155550161")
    assert "INV-9" in message.params["Body"][0]
    assert [entry.step for entry in steps(stores, envelope)].count("held") == 1
    assert steps(stores, envelope)[-1].step == "sent"


def test_a_critical_rule_sends_inside_quiet_hours_and_the_audit_says_so(
        app: tuple, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, twilio = app
    envelope = routed(stores, settings, "night-critical")
    clock_at(monkeypatch, datetime(2026, 12, 7, 8, 30, tzinfo=UTC))  # 02:30 in Chicago

    deliver_notification(envelope)

    assert len(twilio.messages(to="+14155550162")) == 1
    trail = steps(stores, envelope)
    [overridden] = [entry for entry in trail if entry.step == "quiet-hours-overridden"]
    assert overridden.detail["quiet_until"] == "2026-12-07T13:00:00+00:00"  # 07:00 in Chicago
    assert "held" not in [entry.step for entry in trail] and trail[-1].step == "sent"
    assert take_all(settings, NOTIFICATIONS, TWILIO) == []


def test_a_hold_longer_than_the_queue_allows_is_held_again_and_expires_when_it_comes_due_past_its_deadline(
        app: tuple, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, twilio = app
    monkeypatch.setattr(bus_module, "MAX_DELAY_SECONDS", 2)  # a queue that hides a message 2 s at most
    envelope = routed(stores, settings, "night-within-30")
    night = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)  # 05:00 in Chicago: two hours of quiet left
    clock_at(monkeypatch, night)
    # Its validity period runs from routing: moved with the clock, it ends half an hour into the hold.
    deadline = night + timedelta(minutes=30)
    envelope = Envelope(envelope.type, envelope.connection, envelope.key,
                        {**envelope.payload, "expires_at": deadline.isoformat()}, envelope.correlation_id)

    deliver_notification(envelope)
    [held] = [entry for entry in steps(stores, envelope) if entry.step == "held"]
    assert held.detail["held_until"] == "2026-12-07T13:00:00+00:00"
    assert held.detail["expires_at"] == deadline.isoformat()  # the operator sees it will not outlive the hold

    early = back_from_the_queue(settings)  # back after the queue's longest hold, still inside the window
    deliver_notification(early)
    assert [entry.step for entry in steps(stores, envelope)].count("held") == 1  # held again, not audited again
    assert twilio.messages(to="+14155550163") == []

    clock_at(monkeypatch, datetime(2026, 12, 7, 13, 0, tzinfo=UTC))  # the window's end
    deliver_notification(back_from_the_queue(settings))

    assert twilio.messages(to="+14155550163") == []
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "expired"
    [expired] = [entry for entry in steps(stores, envelope) if entry.step == "expired"]
    assert "validity period" in expired.detail["reason"] and "quiet hours" in expired.detail["reason"]
