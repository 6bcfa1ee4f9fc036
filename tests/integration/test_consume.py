"""The queue consumer against real Azurite queues: handled, requeued, dead-lettered."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from shared.http import RetryLater
from shared.model import Envelope
from shared.pipeline import registry
from shared.pipeline.consume import Delivery, PermanentFailure, consume
from shared.storage.bus import StorageQueueBus, poison_queue


@pytest.fixture
def queue() -> str:
    return "q-" + uuid.uuid4().hex[:12]


def drain(bus: StorageQueueBus, name: str) -> list[dict]:
    """Read and delete every visible message of a queue, decoded."""
    client = bus._queue(name)
    bodies = []
    for message in client.receive_messages(max_messages=32):
        bodies.append(json.loads(base64.b64decode(message.content)))
        client.delete_message(message)
    return bodies


def delivery(queue: str, envelope: Envelope | bytes) -> Delivery:
    body = envelope if isinstance(envelope, bytes) else envelope.to_json().encode()
    return Delivery(queue, body, "m-1", 1)


def envelope(kind: str, attempt: int = 0, version: int = 1) -> Envelope:
    return Envelope(kind, "contoso-fo", "contoso-fo|5637144576", {"n": 1}, "corr-1", attempt, version)


def test_handled_message_reaches_its_handler(bus: StorageQueueBus, queue: str) -> None:
    seen: list[Envelope] = []
    registry.handles(queue, "test.ok")(seen.append)
    assert consume(delivery(queue, envelope("test.ok")), bus) == "handled"
    assert [e.correlation_id for e in seen] == ["corr-1"]
    assert drain(bus, poison_queue(queue)) == []


def test_retry_later_requeues_with_next_attempt(bus: StorageQueueBus, queue: str) -> None:
    def busy(_: Envelope) -> None:
        raise RetryLater(0, "HTTP 429")

    registry.handles(queue, "test.busy")(busy)
    assert consume(delivery(queue, envelope("test.busy")), bus) == "requeued"
    [again] = drain(bus, queue)
    assert again["attempt"] == 1
    assert again["correlation_id"] == "corr-1"
    assert again["key"] == "contoso-fo|5637144576"


def test_retry_later_is_delayed_by_visibility(bus: StorageQueueBus, queue: str) -> None:
    def busy(_: Envelope) -> None:
        raise RetryLater(30, "HTTP 429")

    registry.handles(queue, "test.later")(busy)
    assert consume(delivery(queue, envelope("test.later")), bus) == "requeued"
    assert drain(bus, queue) == []  # invisible for 30 s
    assert bus._queue(queue).get_queue_properties().approximate_message_count == 1


def test_out_of_attempts_is_dead_lettered_with_reason(bus: StorageQueueBus, queue: str) -> None:
    def busy(_: Envelope) -> None:
        raise RetryLater(0, "HTTP 503")

    registry.handles(queue, "test.tired")(busy)
    assert consume(delivery(queue, envelope("test.tired", attempt=2)), bus, attempts_allowed=3) == "dead-lettered"
    [dead] = drain(bus, poison_queue(queue))
    assert dead["dead_letter_reason"] == "gave up after 3 attempts: HTTP 503"
    assert json.loads(dead["body"])["attempt"] == 2
    assert drain(bus, queue) == []


def test_permanent_failure_is_dead_lettered(bus: StorageQueueBus, queue: str) -> None:
    def refuse(_: Envelope) -> None:
        raise PermanentFailure("'+1555' is not a phone number")

    registry.handles(queue, "test.bad")(refuse)
    assert consume(delivery(queue, envelope("test.bad")), bus) == "dead-lettered"
    [dead] = drain(bus, poison_queue(queue))
    assert "is not a phone number" in dead["dead_letter_reason"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "unreadable envelope: not JSON"),
        (b"[1, 2]", "unreadable envelope: not a JSON object"),
        (b'{"type": "x", "version": 1}', "unreadable envelope: missing field(s): connection, key, payload"),
        (Envelope("no.such.type", "c", "k", {}).to_json().encode(), "unknown message type 'no.such.type'"),
    ],
)
def test_unreadable_messages_are_dead_lettered_with_reason(
    bus: StorageQueueBus, queue: str, body: bytes, reason: str
) -> None:
    assert consume(delivery(queue, body), bus) == "dead-lettered"
    [dead] = drain(bus, poison_queue(queue))
    assert dead["dead_letter_reason"].startswith(reason)
    assert dead["body"] == body.decode()  # the original, untouched
    assert dead["source_queue"] == queue


def test_unknown_version_is_dead_lettered(bus: StorageQueueBus, queue: str) -> None:
    registry.handles(queue, "test.v")(lambda _: None)
    assert consume(delivery(queue, envelope("test.v", version=2)), bus) == "dead-lettered"
    [dead] = drain(bus, poison_queue(queue))
    assert dead["dead_letter_reason"] == "test.v version 2 cannot be read (reads 1)"


def test_other_exceptions_propagate_to_the_host(bus: StorageQueueBus, queue: str) -> None:
    def crash(_: Envelope) -> None:
        raise RuntimeError("boom")

    registry.handles(queue, "test.crash")(crash)
    with pytest.raises(RuntimeError):
        consume(delivery(queue, envelope("test.crash")), bus)
    assert drain(bus, poison_queue(queue)) == []


def test_waiting_for_a_send_slot_is_a_deferral_not_an_attempt(bus: StorageQueueBus, queue: str) -> None:
    from shared.pipeline.pacing import WaitForSlot

    def paced(_: Envelope) -> None:
        raise WaitForSlot(0, 1_800_000_123.4, "channel C1 is paced")

    registry.handles(queue, "test.paced")(paced)
    tired = envelope("test.paced", attempt=7)  # out of attempts for failures; waiting is not one
    assert consume(delivery(queue, tired), bus, attempts_allowed=8) == "requeued"
    [again] = drain(bus, queue)
    assert (again["attempt"], again["deferrals"]) == (7, 1)
    assert again["payload"]["paced_slot"] == 1_800_000_123.4
