"""Failures classified by the consumer, and dead letters kept, listed and redriven, on real Azurite."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from shared.model import Envelope
from shared.outcomes import PermanentFailure, RetryLater, classify
from shared.pipeline import registry
from shared.pipeline.consume import Delivery, consume
from shared.pipeline.deadletters import collect, redrive
from shared.storage.bus import StorageQueueBus, message_text, poison_queue, read_envelope
from shared.storage.tables import Stores


@pytest.fixture
def queue() -> str:
    return "f-" + uuid.uuid4().hex[:12]


def pending_count(bus: StorageQueueBus, name: str) -> int:
    """Messages in a queue, visible or still delayed (a peek sees only the visible ones)."""
    return bus._queue(name).get_queue_properties().approximate_message_count


def steps(stores: Stores, correlation_id: str) -> list[str]:
    return [entry.step for entry in sorted(stores.audit.by_correlation(correlation_id), key=lambda e: e.at)]


def work(queue: str, payload: dict | None = None, **fields: object) -> Envelope:
    return Envelope("test.work", "contoso-fo", f"contoso-fo|{uuid.uuid4().hex[:8]}",
                    payload or {"record": "contoso-fo|VendorInvoice|usmf|INV-1", "to": "+14155550134"},
                    uuid.uuid4().hex, **fields)


def delivered(queue: str, envelope: Envelope, count: int = 1) -> Delivery:
    return Delivery(queue, message_text(envelope).encode(), "m-" + uuid.uuid4().hex[:6], count)


# --- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    requests.ConnectionError("connection refused"),
    requests.ReadTimeout("read timed out"),
    ServiceRequestError("storage did not answer"),
    ClientAuthenticationError("AADSTS90002: tenant not reachable"),
    ConnectionResetError(),
])
def test_network_errors_timeouts_and_tokens_not_had_are_retried_with_backoff(error: Exception) -> None:
    outcome = classify(error)
    assert isinstance(outcome, RetryLater) and outcome.back_off


def test_statuses_are_classified_by_what_they_say() -> None:
    from shared.http import HttpFailure

    assert isinstance(classify(HttpFailure(503, "HTTP 503")), RetryLater)
    assert isinstance(classify(HttpFailure(429, "HTTP 429")), RetryLater)
    refused = classify(HttpFailure(400, "HTTP 400"))
    assert isinstance(refused, PermanentFailure) and "HTTP 400" in refused.reason


def test_a_bug_is_left_to_the_host() -> None:
    assert classify(KeyError("job_id")) is None


# --- the consumer ---------------------------------------------------------------------------------


def test_a_transient_error_is_requeued_with_backoff_and_audited_as_retrying(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    def unreachable(_: Envelope) -> None:
        raise requests.ConnectionError("Dynamics did not answer")

    registry.handles(queue, "test.work")(unreachable)
    envelope = work(queue)
    assert consume(delivered(queue, envelope), bus) == "requeued"

    assert pending_count(bus, queue) == 1
    [entry] = app_stores.audit.by_correlation(envelope.correlation_id)
    assert entry.step == "retrying" and entry.record == "contoso-fo|VendorInvoice|usmf|INV-1"
    assert entry.detail["reason"] == "ConnectionError" and entry.detail["attempt"] == 1
    assert 0 <= entry.detail["retry_in_seconds"] <= 2.0  # the first backoff: up to RETRY_BACKOFF_BASE_SECONDS


def test_retries_are_bounded_by_age_not_by_a_small_count(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    def unreachable(_: Envelope) -> None:
        raise requests.ConnectionError("still down")

    registry.handles(queue, "test.work")(unreachable)
    young = work(queue, attempt=40, since=(datetime.now(UTC) - timedelta(hours=23)).isoformat())
    assert consume(delivered(queue, young), bus) == "requeued"
    old = work(queue, attempt=41, since=(datetime.now(UTC) - timedelta(hours=24, minutes=1)).isoformat())
    assert consume(delivered(queue, old), bus) == "dead-lettered"

    [dead] = [json.loads(base64.b64decode(m.content)) for m in bus._queue(poison_queue(queue)).peek_messages()]
    assert dead["dead_letter_reason"].startswith("gave up after 42 attempts over 24.0 h: ConnectionError")
    assert steps(app_stores, old.correlation_id) == ["dead-lettered"]


def test_a_permanent_failure_is_dead_lettered_at_once_and_its_undo_runs(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    undone: list[str] = []

    def refused(_: Envelope) -> None:
        raise PermanentFailure("the record names no vendor")

    registry.handles(queue, "test.work", on_dead_letter=lambda envelope, reason: undone.append(reason))(refused)
    envelope = work(queue)
    assert consume(delivered(queue, envelope), bus) == "dead-lettered"
    assert undone == ["test.work failed permanently: the record names no vendor"]
    [entry] = app_stores.audit.by_correlation(envelope.correlation_id)
    assert (entry.step, entry.detail["reason"]) == ("dead-lettered", undone[0])


def test_a_bug_goes_to_the_host_until_its_last_delivery_then_is_dead_lettered_here(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    def broken(_: Envelope) -> None:
        raise KeyError("job_id")

    registry.handles(queue, "test.work")(broken)
    envelope = work(queue)
    with pytest.raises(KeyError):
        consume(delivered(queue, envelope, count=4), bus)
    assert consume(delivered(queue, envelope, count=5), bus) == "dead-lettered"
    [entry] = app_stores.audit.by_correlation(envelope.correlation_id)
    assert entry.detail["reason"] == "test.work failed 5 deliveries with an unexpected KeyError"


# --- sealed on the queues --------------------------------------------------------------------------


def test_recipients_and_texts_travel_sealed_and_routing_fields_in_clear(bus: StorageQueueBus, queue: str) -> None:
    envelope = Envelope("notification.send", "twilio-main", "job-1",
                        {"job_id": "job-1", "channel": "sms", "to": "+14155550134", "text": "Invoice INV-1 is due",
                         "record": "contoso-fo|VendorInvoice|usmf|INV-1"})
    bus.send(queue, envelope)
    [message] = bus._queue(queue).peek_messages()
    text = base64.b64decode(message.content).decode()
    assert "4155550134" not in text and "INV-1 is due" not in text
    travelled = json.loads(text)["payload"]
    assert travelled["job_id"] == "job-1" and travelled["channel"] == "sms" and "sealed" in travelled
    assert read_envelope(text).payload == envelope.payload


# --- dead letters kept, listed and redriven ---------------------------------------------------------


def test_dead_letters_are_collected_once_listed_and_redriven_once(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    handled: list[Envelope] = []
    fail = [True]

    def flaky(envelope: Envelope) -> None:
        if fail[0]:
            raise PermanentFailure("configuration names no such connection")
        handled.append(envelope)

    registry.handles(queue, "test.work")(flaky)
    envelope = work(queue)
    assert consume(delivered(queue, envelope), bus) == "dead-lettered"

    [letter] = app_stores.dead_letters.all()  # kept as it was dead-lettered
    assert collect(app_stores, bus, queues=[queue]) == 0  # the same one, from the poison queue: kept once
    assert pending_count(bus, poison_queue(queue)) == 0
    assert app_stores.dead_letters.all() == [letter]
    assert (letter.queue, letter.type, letter.correlation_id, letter.origin) == (
        queue, "test.work", envelope.correlation_id, "app")
    assert letter.reason == "test.work failed permanently: configuration names no such connection"
    assert "4155550134" not in letter.body  # the payload stays sealed in the table too

    fail[0] = False
    assert redrive(app_stores, bus, letter.id).redriven
    again = redrive(app_stores, bus, letter.id)
    assert not again.redriven and "already redriven" in again.reason
    [message] = bus._queue(queue).receive_messages(max_messages=1)
    assert consume(Delivery(queue, base64.b64decode(message.content), message.id, 1), bus) == "handled"
    [redriven] = handled
    assert (redriven.correlation_id, redriven.attempt, redriven.redrives) == (envelope.correlation_id, 0, 1)
    assert app_stores.dead_letters.all() == []
    assert steps(app_stores, envelope.correlation_id) == ["dead-lettered", "redriven"]


def test_a_message_the_host_parked_is_audited_and_undone_when_collected(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    undone: list[str] = []
    registry.handles(queue, "test.work", on_dead_letter=lambda envelope, reason: undone.append(envelope.key))(
        lambda envelope: None)
    envelope = work(queue)
    bus.send_text(poison_queue(queue), message_text(envelope))  # as the host moves it: the body alone

    assert collect(app_stores, bus, queues=[queue]) == 1
    assert collect(app_stores, bus, queues=[queue]) == 0
    [letter] = app_stores.dead_letters.all()
    assert letter.origin == "host" and "allowed deliveries" in letter.reason
    assert undone == [envelope.key]
    assert steps(app_stores, envelope.correlation_id) == ["dead-lettered"]


def test_an_unreadable_dead_letter_is_listed_but_not_sent_again(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    assert consume(Delivery(queue, b"{not json", "m-1", 1), bus) == "dead-lettered"
    [letter] = app_stores.dead_letters.all()
    assert letter.reason.startswith("unreadable envelope")
    result = redrive(app_stores, bus, letter.id)
    assert not result.redriven and "can send again" in result.reason


def test_the_timers_collection_leaves_the_newest_dead_letters_where_they_are_seen(
        app_stores: Stores, bus: StorageQueueBus, queue: str) -> None:
    registry.handles(queue, "test.work")(lambda envelope: None)
    from shared.pipeline.deadletters import SETTLED_AFTER

    bus.send_text(poison_queue(queue), message_text(work(queue)))  # as the host parks it
    assert collect(app_stores, bus, older_than=SETTLED_AFTER, queues=[queue]) == 0
    assert len(bus._queue(poison_queue(queue)).peek_messages()) == 1  # visible again at once
    assert collect(app_stores, bus, queues=[queue]) == 1  # an operator's collection takes it


def test_replay_takes_dead_lettered_jobs_and_stuck_ones_but_not_one_still_under_way(
        app_stores: Stores, bus: StorageQueueBus) -> None:
    from shared.model import NOTIFICATION, NOTIFICATIONS
    from shared.pipeline.jobs import open_job
    from shared.pipeline.replay import STUCK_AFTER, replay_job

    def job_in(status: str, moved: datetime) -> str:
        job_id = uuid.uuid4().hex
        envelope = Envelope(NOTIFICATION, "twilio-main", job_id, {"job_id": job_id, "to": "+14155550134"})
        app_stores.jobs.update(open_job(app_stores, envelope), {"status": status, "updated_at": moved.isoformat()})
        return job_id

    now = datetime.now(UTC)
    dead = job_in("dead-lettered", now)
    stuck = job_in("dispatching", now - STUCK_AFTER - timedelta(minutes=1))
    busy = job_in("pending", now)

    assert replay_job(app_stores, bus, dead).replayed
    assert app_stores.jobs.get(dead).status == "pending"  # type: ignore[union-attr]
    handed = replay_job(app_stores, bus, stuck)
    assert handed.replayed and "stuck" in handed.reason
    assert app_stores.jobs.get(stuck).status == "dispatching"  # type: ignore[union-attr]  # looked up first
    waiting = replay_job(app_stores, bus, busy)
    assert not waiting.replayed and "still under way" in waiting.reason
    queued = [read_envelope(base64.b64decode(m.content)).key for m in bus._queue(NOTIFICATIONS).peek_messages(32)]
    assert f"{dead}|replay-1" in queued and f"{stuck}|replay-1" in queued
    assert not any(key.startswith(busy) for key in queued)
