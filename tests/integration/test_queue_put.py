"""A put on storage queues (Azurite): the queue is created by the put that finds none, not before every
first put, and the message lands once either way."""

from __future__ import annotations

import uuid

from shared.model import Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from tests.integration.test_queue_batches import take_all


def envelope(n: int) -> Envelope:
    return Envelope("erp.change", "erp-put", f"erp-put|Things|T{n}|{n}", {"fields": {"n": n}})


def new_queue_name() -> str:
    return f"put-{uuid.uuid4().hex[:12]}"


def test_a_put_to_a_queue_that_does_not_exist_creates_it_and_lands_once(storage_connection_string: str) -> None:
    settings = StorageSettings(storage_connection_string, None, None, None)
    queue, sent = new_queue_name(), envelope(1)
    bus = StorageQueueBus(settings)
    try:
        bus.send(queue, sent)
    finally:
        bus.close()
    assert take_all(settings, queue) == [sent]


def test_a_queue_deleted_after_the_first_put_is_created_again_by_the_next(storage_connection_string: str) -> None:
    from azure.storage.queue import QueueClient

    settings = StorageSettings(storage_connection_string, None, None, None)
    queue, first, second = new_queue_name(), envelope(1), envelope(2)
    bus = StorageQueueBus(settings)
    try:
        bus.send(queue, first)
        QueueClient.from_connection_string(storage_connection_string, queue).delete_queue()
        bus.send(queue, second)
    finally:
        bus.close()
    assert take_all(settings, queue) == [second]


def test_a_put_to_an_existing_queue_lands_once(storage_connection_string: str) -> None:
    from azure.storage.queue import QueueClient

    settings = StorageSettings(storage_connection_string, None, None, None)
    queue, sent = new_queue_name(), envelope(3)
    QueueClient.from_connection_string(storage_connection_string, queue).create_queue()
    bus = StorageQueueBus(settings)
    try:
        bus.send(queue, sent)
    finally:
        bus.close()
    assert take_all(settings, queue) == [sent]
