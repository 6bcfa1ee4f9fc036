"""A delayed message can be taken back while it waits, and only then: storage queues on Azurite."""

from __future__ import annotations

import base64
import uuid

from shared.model import Envelope
from shared.storage.bus import StorageQueueBus, read_envelope
from tests.support.waiting import wait_for


def delayed(bus: StorageQueueBus, queue: str, seconds: float) -> tuple[Envelope, str]:
    envelope = Envelope("job.followup", "cancel-test", f"job-{uuid.uuid4().hex}|reconcile", {"job_id": "j"})
    return envelope, bus.schedule(queue, envelope, seconds)


def test_a_waiting_message_is_deleted_by_its_handle(bus: StorageQueueBus) -> None:
    queue = "cancel-" + uuid.uuid4().hex[:10]
    _, handle = delayed(bus, queue, 1)
    kept, _ = delayed(bus, queue, 1)

    assert bus.cancel(queue, handle) is True
    assert bus.cancel(queue, handle) is False  # gone: a second delete finds nothing

    client = bus._queue(queue)
    left = wait_for(lambda: list(client.receive_messages(max_messages=32, visibility_timeout=30)),
                    what="the other message, once its second is up")
    assert [read_envelope(base64.b64decode(message.content)).key for message in left] == [kept.key]


def test_a_message_a_consumer_took_is_not_deleted_by_the_handle_of_its_put(bus: StorageQueueBus) -> None:
    queue = "cancel-" + uuid.uuid4().hex[:10]
    envelope, handle = delayed(bus, queue, 0)
    client = bus._queue(queue)
    [taken] = list(client.receive_messages(max_messages=1, visibility_timeout=30))

    assert bus.cancel(queue, handle) is False
    assert read_envelope(base64.b64decode(taken.content)).key == envelope.key
    client.delete_message(taken)  # the consumer's own receipt still settles it


def test_a_handle_that_is_not_a_storage_one_is_refused(bus: StorageQueueBus) -> None:
    queue = "cancel-" + uuid.uuid4().hex[:10]
    assert bus.cancel(queue, "servicebus:42") is False
    assert bus.cancel(queue, "storage:only-an-id") is False
