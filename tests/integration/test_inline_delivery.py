"""A routed notification's first try, made by the stage that routed it, on Azurite and the fake Entra ID,
Dynamics and Twilio: the usual alert costs no trip through the notifications queue, and whatever goes wrong
in that try leaves the notification on the queue as its own stage would have, sent once in the end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.model import BUSINESS_EVENT, NOTIFICATIONS, Envelope
from shared.pipeline import twilio_flow
from shared.pipeline.consume import Delivery, consume
from shared.pipeline.process import process_business_event
from shared.settings import StorageSettings
from shared.storage.bus import get_bus, message_text
from shared.storage.tables import Stores
from tests.e2e.test_dynamics_to_twilio import invoice_event
from tests.fakes.twilio import FakeTwilio
from tests.integration.stage_stack import erp_events_stage
from tests.integration.test_queue_batches import take_all

pytestmark = pytest.mark.timeout(60)

PHONE = "+14155550162"
CREATE = "POST /2010-04-01/Accounts/"


@dataclass
class Stack:
    stores: Stores
    twilio: FakeTwilio
    settings: StorageSettings

    def queued(self) -> list[Envelope]:
        """The notifications waiting on the queue (taken off it)."""
        return take_all(self.settings, NOTIFICATIONS, "twilio-main")

    def texts(self) -> list[str]:
        return [message.body for message in self.twilio.messages(to=PHONE)]


@pytest.fixture
def stack(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          storage_connection_string: str) -> Iterator[Stack]:
    """The erp-events stage as the app runs it, with its configuration, stores and queues, against the fakes."""
    monkeypatch.setenv("RETRY_BACKOFF_BASE_SECONDS", "0.01")
    settings = StorageSettings(storage_connection_string, None, None, None)
    with erp_events_stage(tmp_path, monkeypatch, storage_connection_string) as fakes:
        empty_queue(settings)
        yield Stack(app_stores, fakes.twilio, settings)


def empty_queue(settings: StorageSettings) -> None:
    """The session's notifications queue, there and empty of what earlier tests left on it."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    try:
        QueueClient.from_connection_string(settings.connection_string or "", NOTIFICATIONS).create_queue()
    except ResourceExistsError:
        take_all(settings, NOTIFICATIONS)


def business_event(invoice_id: str) -> Envelope:
    event = invoice_event(invoice_id, PHONE)
    return Envelope(BUSINESS_EVENT, "contoso-fo", f"contoso-fo|{event['ControlNumber']}|{uuid.uuid4().hex}",
                    {"event": event}, uuid.uuid4().hex)


def steps_of(stores: Stores, envelope: Envelope) -> list[str]:
    return [entry.step for entry in sorted(stores.audit.by_correlation(envelope.correlation_id),
                                           key=lambda entry: entry.at)]


def deliver_from_queue(stack: Stack, wait_seconds: float) -> list[Envelope]:
    """What the notifications queue holds once ``wait_seconds`` have passed, each handed to its stage."""
    time.sleep(wait_seconds)
    taken = stack.queued()
    for envelope in taken:
        consume(Delivery(NOTIFICATIONS, message_text(envelope).encode(), envelope.key, 1), get_bus())
    return taken


def test_an_events_sms_is_sent_by_the_stage_that_routed_it_and_nothing_waits_on_the_queue(stack: Stack) -> None:
    envelope = business_event("INV-" + uuid.uuid4().hex[:8])

    process_business_event(envelope)

    assert len(stack.texts()) == 1
    assert stack.queued() == []
    assert steps_of(stack.stores, envelope) == ["received", "enriched", "routed", "sent"]


def test_the_event_processed_again_after_a_stop_routes_the_same_job_and_sends_nothing_twice(stack: Stack) -> None:
    envelope = business_event("INV-" + uuid.uuid4().hex[:8])

    process_business_event(envelope)
    process_business_event(envelope)  # the host brings the event back: the stage stopped before it was done

    assert len(stack.texts()) == 1
    assert stack.queued() == []
    assert steps_of(stack.stores, envelope).count("sent") == 1


def test_a_send_twilio_refuses_for_now_waits_on_the_queue_and_is_sent_once_from_there(stack: Stack) -> None:
    envelope = business_event("INV-" + uuid.uuid4().hex[:8])
    stack.twilio.fail_next(status=429, headers={"Retry-After": "3"}, match=CREATE)  # longer than a wait in place

    process_business_event(envelope)

    assert stack.texts() == []
    [retried] = deliver_from_queue(stack, 3.5)
    assert retried.attempt == 1
    assert len(stack.texts()) == 1
    steps = steps_of(stack.stores, envelope)
    assert steps.index("retrying") < steps.index("sent") and steps.count("sent") == 1


def test_a_send_whose_answer_was_lost_is_asked_about_before_any_resend(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_flow, "AMBIGUOUS_RECHECK_SECONDS", 1.0)
    envelope = business_event("INV-" + uuid.uuid4().hex[:8])
    stack.twilio.drop_after_handling(match=CREATE)  # Twilio created the message; its answer was lost

    process_business_event(envelope)

    assert len(stack.texts()) == 1
    [retried] = deliver_from_queue(stack, 1.5)
    assert retried.attempt == 1
    assert len(stack.texts()) == 1  # found at Twilio and adopted, not sent again
    [sent] = [entry for entry in stack.stores.audit.by_correlation(envelope.correlation_id) if entry.step == "sent"]
    assert sent.detail["adopted"] is True


def test_with_inline_delivery_off_every_notification_waits_on_the_queue(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVER_INLINE", "false")
    envelope = business_event("INV-" + uuid.uuid4().hex[:8])

    process_business_event(envelope)

    assert stack.texts() == []
    [queued] = deliver_from_queue(stack, 0)
    assert queued.attempt == 0 and queued.key == queued.payload["job_id"]
    assert len(stack.texts()) == 1


def test_notifications_beyond_those_tried_in_place_wait_on_the_queue(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.pipeline import process

    monkeypatch.setattr(process, "INLINE_DELIVERIES", 0)  # this change's one notification is beyond them
    envelope = business_event("INV-" + uuid.uuid4().hex[:8])

    process_business_event(envelope)

    assert stack.texts() == []
    [queued] = deliver_from_queue(stack, 0)
    assert queued.attempt == 0 and queued.correlation_id == envelope.correlation_id
    assert len(stack.texts()) == 1
