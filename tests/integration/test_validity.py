"""A rule's validity period: an alert that can no longer help expires instead of arriving late.

The deadline is fixed when the event is routed and checked at delivery, on every channel, before
anything is sent; an SMS also carries the time left to Twilio as ValidityPeriod. Real Azurite
storage and queues, the fake Twilio and SendGrid over loopback HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.channels.sendgrid.client import reset_sendgrid_channels
from shared.channels.twilio.client import reset_twilio_channels
from shared.config.loading import get_config, reset_config
from shared.model import NOTIFICATIONS, Envelope
from shared.outcomes import RetryLater
from shared.pipeline import deliver as deliver_module
from shared.pipeline.deliver import deliver_notification
from shared.pipeline.process import queue_notifications, validity_start
from shared.pipeline.replay import replay_job
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus, reset_bus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import Stores
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_queue_batches import take_all

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("queued_notifications")]

SOURCE, TWILIO, MAIL = "validity-fo", "validity-twilio", "validity-mail"
SENDER = "alerts@contoso.example"
FIELDS = {"invoice_id": "INV-7", "vendor_name": "Fabrikam", "money": "USD 1,200.00", "due_date": "2026-12-01",
          "legal_entity": "usmf"}


def rules() -> list[dict[str, Any]]:
    """One rule per event type, so each test routes to the rule it is about."""
    sms = {"source": SOURCE, "channel": "sms", "via": TWILIO, "template": "vendor-invoice-posted"}
    return [
        {**sms, "id": "sms-within-30", "event": "sms-within-30", "to": ["+14155550151"], "valid_for_minutes": 30},
        {**sms, "id": "sms-no-expiry", "event": "sms-no-expiry", "to": ["+14155550152"]},
        {**sms, "id": "sms-within-a-day", "event": "sms-within-a-day", "to": ["+14155550153"],
         "valid_for_minutes": 1440},
        {"id": "mail-within-5", "event": "mail-within-5", "source": SOURCE, "channel": "email", "via": MAIL,
         "to": ["ap@fabrikam.example"], "template": "vendor-invoice-posted", "valid_for_minutes": 5},
    ]


@pytest.fixture
def app(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stores, FakeTwilio,
                                                                                                FakeSendGrid]]:
    """The delivery stage as the app runs it: its configuration, stores and queues, against the fakes."""
    twilio, sendgrid = FakeTwilio().start(), FakeSendGrid().start()
    creds = twilio.add_test_account()
    sendgrid.verify_sender(SENDER)
    config = {"connections": {
        SOURCE: {"kind": "dynamics", "environment_url": "https://validity.operations.dynamics.com",
                 "tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-1111-1111-1111-111111111111",
                 "client_secret": {"secret": "validity-fo-secret"}},
        TWILIO: {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
                 "api_key_secret": {"secret": "validity-twilio-key-secret"},
                 "auth_token": {"secret": "validity-twilio-auth-token"}, "from_number": creds.phone_number,
                 "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url},
        MAIL: {"kind": "sendgrid", "api_key": {"secret": "validity-mail-api-key"}, "from_email": SENDER,
               "api_base_url": sendgrid.base_url},
    }, "rules": rules()}
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(config))
    for name, value in {"CONNECTOR_CONFIG_PATH": str(path), "QUEUE_BACKEND": "storage",
                        "VALIDITY_TWILIO_KEY_SECRET": creds.api_key_secret,
                        "VALIDITY_TWILIO_AUTH_TOKEN": creds.auth_token,
                        "VALIDITY_MAIL_API_KEY": sendgrid.add_api_key()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    resets = (reset_config, reset_bus, reset_secret_provider, reset_twilio_channels, reset_sendgrid_channels)
    for reset in resets:
        reset()
    yield app_stores, twilio, sendgrid
    for reset in resets:
        reset()
    twilio.stop()
    sendgrid.stop()


def routed(stores: Stores, settings: StorageSettings, event_type: str, *, changed_at: datetime | None) -> Envelope:
    """Route one ERP change to the rule of ``event_type``; the notification it queued, taken off the queue."""
    bus = StorageQueueBus(settings)
    try:
        queued = queue_notifications(get_config(), stores, bus, source=SOURCE, event_type=event_type,
                                     event_key=f"{SOURCE}|{uuid.uuid4().hex}", record=record(event_type),
                                     fields=FIELDS, correlation_id=uuid.uuid4().hex, changed_at=changed_at)
    finally:
        bus.close()
    assert queued == 1
    via = next(rule["via"] for rule in rules() if rule["event"] == event_type)
    [envelope] = [e for e in take_all(settings, NOTIFICATIONS, via) if e.payload["event"] == event_type]
    return envelope


def record(event_type: str) -> str:
    return f"{SOURCE}|VendorInvoice|{event_type}"


def audit_of(stores: Stores, envelope: Envelope) -> list[Any]:
    return stores.audit.by_correlation(envelope.correlation_id)


@pytest.fixture
def settings(storage_connection_string: str) -> StorageSettings:
    return StorageSettings(storage_connection_string, None, None, None)


def later(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    """The delivery stage's clock, ``hours`` on: the notification comes back that much later."""

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + timedelta(hours=hours)

    monkeypatch.setattr(deliver_module, "datetime", Later)


def test_an_sms_past_its_deadline_is_not_sent_and_its_job_and_audit_say_expired(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio, _ = app
    changed_at = datetime.now(UTC) - timedelta(minutes=45)  # a 30-minute rule: over a quarter of an hour late
    envelope = routed(stores, settings, "sms-within-30", changed_at=changed_at)
    deadline = changed_at + timedelta(minutes=30)
    assert envelope.payload["expires_at"] == deadline.isoformat()  # fixed from when the ERP change happened

    deliver_notification(envelope)
    deliver_notification(envelope)  # redelivered: still nothing sent

    assert twilio.messages(to="+14155550151") == []
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "expired"
    assert deadline.isoformat(timespec="seconds") in job.fields["reason"]
    expired = [entry for entry in audit_of(stores, envelope) if entry.step == "expired"]
    assert expired and expired[0].record == record("sms-within-30")
    assert expired[0].detail["expires_at"] == deadline.isoformat()
    assert "validity period" in expired[0].detail["reason"]
    assert "sent" not in [entry.step for entry in audit_of(stores, envelope)]


def test_an_sms_within_its_deadline_is_sent_with_a_validity_period_no_larger_than_what_remains(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio, _ = app
    changed_at = datetime.now(UTC) - timedelta(minutes=10)
    envelope = routed(stores, settings, "sms-within-30", changed_at=changed_at)

    deliver_notification(envelope)

    [message] = twilio.messages(to="+14155550151")
    period = int(message.params["ValidityPeriod"][0])
    assert 0 < period <= 20 * 60  # 30 minutes from the change, 10 of them gone already
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "queued"


def test_a_deadline_beyond_twilios_ten_hours_is_passed_as_twilios_maximum(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio, _ = app
    envelope = routed(stores, settings, "sms-within-a-day", changed_at=None)  # a day left

    deliver_notification(envelope)

    [message] = twilio.messages(to="+14155550153")
    assert message.params["ValidityPeriod"] == ("36000",)


def test_a_rule_without_a_validity_period_sends_as_before(app: tuple, settings: StorageSettings) -> None:
    stores, twilio, _ = app
    envelope = routed(stores, settings, "sms-no-expiry", changed_at=datetime.now(UTC) - timedelta(days=30))
    assert "expires_at" not in envelope.payload

    deliver_notification(envelope)

    [message] = twilio.messages(to="+14155550152")
    assert "ValidityPeriod" not in message.params
    assert [entry.step for entry in audit_of(stores, envelope)][-1] == "sent"


def test_an_sms_back_from_a_retry_after_its_deadline_is_not_sent(
        app: tuple, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, twilio, _ = app
    envelope = routed(stores, settings, "sms-within-30", changed_at=None)
    twilio.fail_next(status=429, headers={"Retry-After": "3600"})  # Twilio: come back in an hour

    with pytest.raises(RetryLater):
        deliver_notification(envelope)
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "pending"

    later(monkeypatch, hours=1)
    deliver_notification(envelope.next_attempt())  # the queue hands it back an hour on

    assert twilio.messages(to="+14155550151") == []
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "expired"
    assert [entry.step for entry in audit_of(stores, envelope)][-1] == "expired"


def test_an_email_past_its_deadline_is_not_sent_either(
        app: tuple, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, _, sendgrid = app
    envelope = routed(stores, settings, "mail-within-5", changed_at=None)

    later(monkeypatch, hours=0.5)  # held half an hour (a pacing wait, a retry): a 5-minute alert
    deliver_notification(envelope)

    assert sendgrid.mails(to="ap@fabrikam.example") == []
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "expired"


def test_an_expired_job_is_not_replayed_and_the_operator_is_told_why(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio, _ = app
    envelope = routed(stores, settings, "sms-within-30", changed_at=datetime.now(UTC) - timedelta(hours=2))
    deliver_notification(envelope)

    bus = StorageQueueBus(settings)
    try:
        answer = replay_job(stores, bus, envelope.payload["job_id"])
    finally:
        bus.close()

    assert not answer.replayed
    assert "expired" in answer.reason and "validity period" in answer.reason
    assert take_all(settings, NOTIFICATIONS, TWILIO) == []
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "expired"
    assert twilio.messages(to="+14155550151") == []


def test_the_validity_period_starts_at_the_change_unless_the_erp_clock_is_ahead_or_silent() -> None:
    now = datetime.now(UTC)
    changed, received = now - timedelta(minutes=20), now - timedelta(minutes=5)

    assert validity_start(changed, received) == changed
    assert validity_start(None, received) == received
    assert validity_start(now + timedelta(hours=1), received) <= datetime.now(UTC)  # no time bought
    assert now <= validity_start(None, None) <= datetime.now(UTC)


def test_a_polled_change_starts_the_period_at_its_time_stamp_but_not_at_a_date_or_a_counter() -> None:
    from shared.erp.polling import NUMBER, TIME
    from shared.pipeline.poll import change_envelope
    from tests.integration.test_poll_framework import Table, entity

    stamp = datetime(2026, 11, 22, 11, 50, tzinfo=UTC)
    timed = change_envelope("erp", entity(Table([]), TIME), {"id": "A", "stamp": "x"}, None, stamp)
    dated = change_envelope("erp", entity(Table([]), TIME, date_only=True), {"id": "A", "stamp": "x"}, None, stamp)
    counted = change_envelope("erp", entity(Table([]), NUMBER), {"id": "A", "counter": 7}, None, 7)

    assert timed.payload["changed_at"] == stamp.isoformat()
    assert "changed_at" not in dated.payload and "changed_at" not in counted.payload  # then: when it was received
