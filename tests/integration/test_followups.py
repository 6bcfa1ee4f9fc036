"""Scheduled follow-ups per job: escalation steps and Twilio reconciliation, on real Azurite queues and tables.

Each follow-up is a delayed message on the notifications queue; the tests take what the queue shows when it
shows it and hand it to the stage that reads it (delivery, follow-up), as the queue trigger would. Delays are
seconds, through the configuration (``after_minutes``, ``reconcile_after_minutes``). Twilio is the fake over
loopback HTTP; its callbacks are lost (none reach the app) unless a test applies one.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config.loading import get_config
from shared.console.story import timeline
from shared.model import (
    JOB_FOLLOWUP,
    NOTIFICATION,
    NOTIFICATIONS,
    TWILIO_GATHER,
    TWILIO_INBOUND,
    Envelope,
)
from shared.pipeline.callbacks import apply_status, record_inbound, record_key_press
from shared.pipeline.deliver import deliver_notification
from shared.pipeline.followups import RECONCILE_HANDLE, run_followup
from shared.pipeline.process import queue_notifications
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus, read_envelope, reset_bus
from shared.storage.tables import Stores
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_queue_batches import take_all
from tests.support.twilio_app import twilio_app
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("queued_notifications")]

SOURCE, ESCALATING, RECONCILING = "fu-fo", "fu-twilio", "fu-twilio-rec"
FIELDS = {"invoice_id": "INV-31", "vendor_name": "Fabrikam", "money": "USD 310.00", "due_date": "2026-12-01",
          "legal_entity": "usmf", "backup_phone": "+14155550183"}
FIRST, NEXT = "+14155550181", "+14155550183"
STEP_MINUTES = 0.05  # 3 s


def rules() -> list[dict[str, Any]]:
    escalation = {"steps": [
        {"channel": "sms"},
        {"channel": "voice", "unless": "delivered", "after_minutes": STEP_MINUTES},
        {"channel": "voice", "to": [{"field": "backup_phone"}], "unless": "acknowledged",
         "after_minutes": STEP_MINUTES},
    ]}
    return [
        {"id": "escalating", "source": SOURCE, "event": "escalating", "channel": "sms", "via": ESCALATING,
         "to": [FIRST], "template": "vendor-invoice-posted", "escalation": escalation},
        {"id": "reconciled", "source": SOURCE, "event": "reconciled", "channel": "sms", "via": RECONCILING,
         "to": ["+14155550184"], "template": "vendor-invoice-posted"},
    ]


@pytest.fixture
def app(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stores, FakeTwilio]]:
    # Every status after the first is reached without its callback reaching the app: lost callbacks.
    twilio = FakeTwilio(auto_callbacks=True, auto_callback_lost=("sent", "delivered")).start()
    # Sends ask for callbacks at PUBLIC_BASE_URL; the fake loses them all (none is even posted).
    try:
        with twilio_app(twilio, tmp_path, monkeypatch, name="fu", source=SOURCE,
                        senders={ESCALATING: {"reconcile_after_minutes": 0},
                                 RECONCILING: {"reconcile_after_minutes": STEP_MINUTES}},
                        rules=rules(), env={"PUBLIC_BASE_URL": "https://connector.example.com"}):
            yield app_stores, twilio
    finally:
        twilio.stop()


@pytest.fixture
def settings(storage_connection_string: str) -> StorageSettings:
    return StorageSettings(storage_connection_string, None, None, None)


class Queue:
    """The notifications of one Twilio connection as its queue shows them, handed to their stage."""

    def __init__(self, settings: StorageSettings, connection: str) -> None:
        self.settings, self.connection = settings, connection
        self.followups: list[Envelope] = []

    def take(self, message_type: str, what: str) -> list[Envelope]:
        """The messages of ``message_type`` once the queue shows some (others go back unhandled)."""
        def found() -> list[Envelope]:
            taken = take_all(self.settings, NOTIFICATIONS, self.connection)
            wanted = [envelope for envelope in taken if envelope.type == message_type]
            bus = StorageQueueBus(self.settings)
            try:
                for envelope in taken:
                    if envelope.type != message_type:
                        bus.send(NOTIFICATIONS, envelope)
            finally:
                bus.close()
            return wanted

        return wait_for(found, timeout=30, what=what)

    def deliver(self, what: str) -> list[Envelope]:
        notifications = self.take(NOTIFICATION, what)
        for envelope in notifications:
            deliver_notification(envelope)
        return notifications

    def follow_up(self, what: str, until: Callable[[], bool] = lambda: True) -> list[Envelope]:
        """Run the follow-ups as they come due, until ``until`` holds after one (a step that waited for its
        previous step's send comes back for the rest of the wait)."""
        handled: list[Envelope] = []

        def done() -> bool:
            for envelope in self.take(JOB_FOLLOWUP, what):
                run_followup(envelope)
                handled.append(envelope)
            return until()

        wait_for(done, timeout=40, what=what)
        self.followups += handled
        return handled


def routed(stores: Stores, settings: StorageSettings, event_type: str) -> str:
    bus = StorageQueueBus(settings)
    correlation_id = uuid.uuid4().hex
    try:
        queue_notifications(get_config(), stores, bus, source=SOURCE, event_type=event_type,
                            event_key=f"{SOURCE}|{uuid.uuid4().hex}", record=f"{SOURCE}|Invoice|{event_type}",
                            fields=FIELDS, correlation_id=correlation_id)
    finally:
        bus.close()
    return correlation_id


def steps(stores: Stores, correlation_id: str) -> list[Any]:
    return sorted(stores.audit.by_correlation(correlation_id), key=lambda entry: entry.at)


def named(stores: Stores, correlation_id: str, step: str) -> list[Any]:
    return [entry for entry in steps(stores, correlation_id) if entry.step == step]


def key_press(twilio: FakeTwilio, call_sid: str, job_id: str) -> Envelope:
    params = {"CallSid": call_sid, "Digits": "1", "AccountSid": twilio.call(call_sid).account_sid}
    return Envelope(TWILIO_GATHER, ESCALATING, f"{call_sid}|gather", {"params": params, "job_id": job_id})


def reply(twilio: FakeTwilio, text: str) -> Envelope:
    params = twilio.inbound_sms_params(FIRST, twilio.messages(to=FIRST)[0].from_, text)
    return Envelope(TWILIO_INBOUND, ESCALATING, params["MessageSid"], {"params": params})


# --- escalation --------------------------------------------------------------------------------


def test_an_sms_nobody_got_escalates_to_a_call_then_to_the_next_person_on_call(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    queue = Queue(settings, ESCALATING)
    correlation_id = routed(stores, settings, "escalating")
    queue.deliver("the SMS")
    assert len(twilio.messages(to=FIRST)) == 1

    queue.follow_up("the call's step", until=lambda: bool(named(stores, correlation_id, "escalated")))
    [call_notification] = queue.deliver("the call to the first person")
    queue.follow_up("the next person's step", until=lambda: len(named(stores, correlation_id, "escalated")) == 2)
    queue.deliver("the call to the next person")

    assert len(twilio.calls(to=FIRST)) == 1 and len(twilio.calls(to=NEXT)) == 1
    assert "INV-31" in twilio.calls(to=NEXT)[0].twiml
    to_call, to_next = named(stores, correlation_id, "escalated")
    assert to_call.detail["reason"] == "not delivered within 0.05 min" and to_call.detail["channel"] == "voice"
    assert to_call.job_id == call_notification.payload["job_id"] and to_call.detail["to"] == ["+1*******81"]
    assert to_next.detail["reason"] == "not acknowledged within 0.05 min" and to_next.detail["to"] == ["+1*******83"]
    assert stores.jobs.get(to_next.job_id).status == "queued"  # the call is placed: its own job
    stages = {line["step"]: line["stage"] for line in timeline(steps(stores, correlation_id))}
    assert stages["escalated"] == "job"


def test_a_reply_that_acknowledges_the_sms_cancels_the_escalation(app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    queue = Queue(settings, ESCALATING)
    correlation_id = routed(stores, settings, "escalating")
    queue.deliver("the SMS")

    record_inbound(reply(twilio, "ack"))
    queue.follow_up("the call's step")

    assert twilio.calls(to=FIRST) == [] and named(stores, correlation_id, "escalated") == []
    [cancelled] = named(stores, correlation_id, "escalation-cancelled")
    assert cancelled.detail["by"] == "+1*******81" and cancelled.detail["how"] == "reply"
    [line] = [line for line in timeline(steps(stores, correlation_id)) if line["step"] == "escalation-cancelled"]
    assert line["stage"] == "answer"
    assert take_all(settings, NOTIFICATIONS, ESCALATING) == []  # no step is pending any more


def test_a_key_press_on_the_escalated_call_stops_the_call_to_the_next_person(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    queue = Queue(settings, ESCALATING)
    correlation_id = routed(stores, settings, "escalating")
    queue.deliver("the SMS")
    queue.follow_up("the call's step", until=lambda: bool(named(stores, correlation_id, "escalated")))
    [call] = queue.deliver("the call to the first person")
    [placed] = twilio.calls(to=FIRST)

    record_key_press(key_press(twilio, placed.sid, call.payload["job_id"]))
    queue.follow_up("the next person's step")

    assert twilio.calls(to=NEXT) == []
    assert len(named(stores, correlation_id, "escalated")) == 1
    [cancelled] = named(stores, correlation_id, "escalation-cancelled")
    assert cancelled.detail["how"] == "key press" and cancelled.job_id == call.payload["job_id"]


def test_a_step_message_delivered_twice_or_copied_changes_nothing(app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    queue = Queue(settings, ESCALATING)
    correlation_id = routed(stores, settings, "escalating")
    queue.deliver("the SMS")
    [step] = queue.follow_up("the call's step", until=lambda: bool(named(stores, correlation_id, "escalated")))[-1:]

    run_followup(step)  # the same message again: the host's redelivery
    copy = Envelope(step.type, step.connection, step.key, {**step.payload, "nonce": uuid.uuid4().hex},
                    step.correlation_id)
    run_followup(copy)  # a second copy: the event was routed twice

    queue.deliver("the call to the first person")
    assert len(twilio.calls(to=FIRST)) == 1
    assert len(named(stores, correlation_id, "escalated")) == 1
    [next_step] = queue.take(JOB_FOLLOWUP, "the next person's step")  # scheduled once
    assert next_step.payload["step"] == 2
    assert take_all(settings, NOTIFICATIONS, ESCALATING) == []


# --- reconciliation ----------------------------------------------------------------------------


def sent_sms(app: tuple, settings: StorageSettings) -> tuple[Any, Any, Queue, str, Envelope, Any]:
    """An SMS routed on the reconciling connection and sent: the stores, Twilio, the queue, the ERP change's
    correlation id, the notification and the message at Twilio."""
    stores, twilio = app
    queue = Queue(settings, RECONCILING)
    correlation_id = routed(stores, settings, "reconciled")
    [notification] = queue.deliver("the SMS")
    [message] = twilio.messages(to="+14155550184")
    return stores, twilio, queue, correlation_id, notification, message


def test_a_lost_delivered_callback_is_recorded_from_twilio_when_the_follow_up_comes_due(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio, queue, correlation_id, notification, message = sent_sms(app, settings)
    wait_for(lambda: twilio.message(message.sid).status == "delivered", what="Twilio delivers it, silently")
    job_id = notification.payload["job_id"]
    assert stores.jobs.get(job_id).status == "queued"  # no callback arrived

    queue.follow_up("the reconciliation")

    assert stores.jobs.get(job_id).status == "delivered"
    [status] = named(stores, correlation_id, "status")
    assert status.detail == {"status": "delivered", "provider_id": message.sid, "source": "reconciliation"}
    assert len(twilio.requests_to(f"GET /2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}")) == 1


def test_a_job_already_final_costs_one_read_and_asks_twilio_nothing(app: tuple, settings: StorageSettings) -> None:
    stores, twilio, queue, correlation_id, notification, message = sent_sms(app, settings)
    wait_for(lambda: twilio.message(message.sid).status == "delivered", what="Twilio delivers it")
    # The follow-up came due and was taken just as the final callback arrived: too late to delete it.
    [due] = queue.take(JOB_FOLLOWUP, "the reconciliation, due")
    callback = twilio.message_status_params(message.sid, "delivered")
    apply_status(stores, RECONCILING, callback, notification.payload["job_id"], correlation_id)  # as the webhook does
    before = len(steps(stores, correlation_id))
    twilio.clear_log()

    run_followup(due)

    assert twilio.requests_to(lambda request: "/Messages/" in request.path) == []
    assert len(steps(stores, correlation_id)) == before
    assert stores.jobs.get(notification.payload["job_id"]).status == "delivered"


def followups_of(settings: StorageSettings, job_id: str) -> list[Envelope]:
    """The follow-ups of ``job_id`` the notifications queue shows (peeked: left where they are)."""
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(settings.connection_string or "", NOTIFICATIONS)
    try:
        shown = [read_envelope(base64.b64decode(message.content)) for message in client.peek_messages(max_messages=32)]
    finally:
        client.close()
    return [envelope for envelope in shown if envelope.type == JOB_FOLLOWUP and envelope.payload["job_id"] == job_id]


def test_the_delivered_callback_deletes_the_follow_up_and_nothing_reconciles(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio, _queue, correlation_id, notification, message = sent_sms(app, settings)
    job_id = notification.payload["job_id"]
    assert stores.jobs.get(job_id).fields[RECONCILE_HANDLE]  # a follow-up is scheduled, its handle on the job

    for status in ("sent", "delivered"):
        wait_for(lambda status=status: twilio.message(message.sid).status in (status, "delivered"), what=status)
        apply_status(stores, RECONCILING, twilio.message_status_params(message.sid, status), job_id, correlation_id)
        if status == "sent":  # not final: the follow-up stays
            assert stores.jobs.get(job_id).fields[RECONCILE_HANDLE]
    job = stores.jobs.get(job_id)
    assert job.status == "delivered" and not job.fields.get(RECONCILE_HANDLE)
    twilio.clear_log()

    time.sleep(STEP_MINUTES * 60 + 1)  # past the moment the follow-up was due

    assert followups_of(settings, job_id) == []
    assert take_all(settings, NOTIFICATIONS, RECONCILING) == []
    assert twilio.requests_to(lambda request: "/Messages/" in request.path) == []
    assert [entry.detail for entry in named(stores, correlation_id, "status")] == [
        {"status": "sent", "provider_id": message.sid}, {"status": "delivered", "provider_id": message.sid}]


def test_a_follow_up_that_could_not_be_deleted_comes_due_and_changes_nothing(
        app: tuple, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, twilio, queue, correlation_id, notification, message = sent_sms(app, settings)
    job_id = notification.payload["job_id"]
    wait_for(lambda: twilio.message(message.sid).status == "delivered", what="Twilio delivers it")
    # Storage unreachable for the delete: the app's queues now point at a port where nothing listens.
    monkeypatch.setenv("AzureWebJobsStorage", unreachable_storage(settings))
    reset_bus()
    try:
        apply_status(stores, RECONCILING, twilio.message_status_params(message.sid, "delivered"), job_id,
                     correlation_id)
    finally:
        monkeypatch.setenv("AzureWebJobsStorage", settings.connection_string or "")
        reset_bus()
    assert stores.jobs.get(job_id).status == "delivered"
    twilio.clear_log()

    [due] = queue.follow_up("the reconciliation")

    assert due.payload["job_id"] == job_id
    assert twilio.requests_to(lambda request: "/Messages/" in request.path) == []
    assert [entry.detail["status"] for entry in named(stores, correlation_id, "status")] == ["delivered"]
    assert stores.jobs.get(job_id).status == "delivered"


def unreachable_storage(settings: StorageSettings) -> str:
    """The connection string of ``settings`` with its queue endpoint on a closed port of this machine."""
    import socket

    with socket.socket() as probe:  # a free port, closed again: nothing answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parts = dict(part.split("=", 1) for part in (settings.connection_string or "").split(";") if "=" in part)
    parts["QueueEndpoint"] = f"http://127.0.0.1:{port}/{parts.get('AccountName', 'devstoreaccount1')}"
    return ";".join(f"{key}={value}" for key, value in parts.items())
