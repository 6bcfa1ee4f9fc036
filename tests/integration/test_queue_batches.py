"""Many messages in one go: ``send_many`` on storage queues (Azurite), and polls that send a page at a time.

A poll whose send fails in the middle of a page writes no progress: the next poll sends the page
again, and the claim downstream lets each change through once.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator

import pytest

from shared.config.loading import reset_config
from shared.erp.polling import NONE, NUMBER, PolledEntity, Source
from shared.erp.syspro.connection import SysproConnection
from shared.model import ERP_EVENTS, Envelope
from shared.pipeline.poll import poll_entity, process_change
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus, read_envelope, reset_bus
from shared.storage.tables import Stores
from tests.integration.test_poll_framework import START, Table, connection, entity


class FailingNthSend(StorageQueueBus):
    """The real storage-queue bus, except that its ``fail_on``-th put raises as a dropped connection would."""

    def __init__(self, settings: StorageSettings, fail_on: int) -> None:
        super().__init__(settings)
        self.fail_on = fail_on
        self.puts = 0
        self._count_lock = threading.Lock()

    def send_text(self, queue: str, text: str, delay_seconds: float = 0) -> None:
        with self._count_lock:
            self.puts += 1
            failing = self.puts == self.fail_on
        if failing:
            raise ConnectionResetError("the connection dropped")
        super().send_text(queue, text, delay_seconds)


@pytest.fixture
def settings(storage_connection_string: str) -> StorageSettings:
    return StorageSettings(storage_connection_string, None, None, None)


def queue_name() -> str:
    return f"batch-{uuid.uuid4().hex[:12]}"


def take_all(settings: StorageSettings, queue: str, connection_name: str | None = None) -> list[Envelope]:
    """Every message on ``queue`` (of ``connection_name`` only, when given), removed as it is read."""
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(settings.connection_string or "", queue)
    taken, others = [], []
    try:
        while True:
            batch = list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60))
            if not batch:
                break
            for message in batch:
                envelope = read_envelope(base64.b64decode(message.content))
                if connection_name is None or envelope.connection == connection_name:
                    taken.append(envelope)
                    client.delete_message(message)
                else:
                    others.append(message)
        for message in others:  # another test's: visible again at once
            client.update_message(message, visibility_timeout=0)
    finally:
        client.close()
    return taken


def envelopes(count: int) -> list[Envelope]:
    return [Envelope("erp.change", "erp-batch", f"erp-batch|Things|T{n}|{n}", {"fields": {"n": n}})
            for n in range(count)]


# --- send_many on storage queues --------------------------------------------------------------------


def test_send_many_puts_every_envelope_as_send_would(settings: StorageSettings) -> None:
    queue, sent = queue_name(), envelopes(45)
    bus = StorageQueueBus(settings)
    try:
        bus.send(queue, sent[0])
        bus.send_many(queue, sent[1:])
    finally:
        bus.close()
    arrived = take_all(settings, queue)
    assert len(arrived) == len(sent)
    assert sorted(arrived, key=lambda e: e.payload["fields"]["n"]) == sent  # key, ids and payload, unsealed


def test_send_many_of_nothing_sends_nothing(settings: StorageSettings) -> None:
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(settings.connection_string or "", queue_name())
    client.create_queue()
    bus = StorageQueueBus(settings)
    try:
        bus.send_many(client.queue_name, [])
        assert list(client.peek_messages(max_messages=32)) == []
    finally:
        bus.close()
        client.close()


def test_send_many_raises_when_one_put_fails(settings: StorageSettings) -> None:
    queue = queue_name()
    bus = FailingNthSend(settings, fail_on=10)
    try:
        with pytest.raises(ConnectionResetError):
            bus.send_many(queue, envelopes(200))
    finally:
        bus.close()
    assert 9 <= len(take_all(settings, queue)) < 199  # the failed put is missing; the rest were not all sent


# --- a poll whose send fails mid-page ---------------------------------------------------------------


@pytest.fixture
def downstream(app_stores: Stores, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stores]:
    """``process_change`` as the app runs it: its stores on this test's tables, a configuration without rules."""
    config = tmp_path / "connections.json"
    config.write_text(json.dumps({"connections": {}}))
    monkeypatch.setenv("CONNECTOR_CONFIG_PATH", str(config))
    monkeypatch.setenv("QUEUE_BACKEND", "storage")
    reset_config()
    reset_bus()
    yield app_stores
    reset_bus()
    reset_config()


def received_once_each(stores: Stores, conn_name: str, ids: list[str], changes: list[Envelope]) -> dict[str, int]:
    """Run every change through the process stage; how often each record got past the claim."""
    for change in changes:
        process_change(change)
    return {i: [e.step for e in stores.audit.by_record(f"{conn_name}|Thing|{i}")].count("received") for i in ids}


def poll_into(conn: SysproConnection, polled: PolledEntity, stores: Stores, bus: StorageQueueBus) -> int:
    return poll_entity(conn, conn.poll, Source(None, {polled.name: polled}), polled, stores, bus, now=START)


def test_a_send_failing_mid_page_leaves_the_watermark_and_the_next_poll_sends_the_page_again(
        downstream: Stores, settings: StorageSettings) -> None:
    stores = downstream
    table = Table([{"id": f"OLD{i}", "counter": i} for i in range(1, 6)])
    conn, polled = connection(), entity(table, NUMBER, page_size=10)
    good = StorageQueueBus(settings)
    try:
        assert poll_into(conn, polled, stores, good) == 0  # the first poll finds where the ERP stands
        assert stores.watermarks.get(conn.name, "Things") == 5

        new = [f"N{i}" for i in range(6, 31)]  # 25 changes: pages of 10, 10 and 5
        table.rows += [{"id": row_id, "counter": int(row_id[1:])} for row_id in new]
        failing = FailingNthSend(settings, fail_on=15)  # in the middle of the second page
        try:
            with pytest.raises(ConnectionResetError):
                poll_into(conn, polled, stores, failing)
        finally:
            failing.close()
        assert stores.watermarks.get(conn.name, "Things") == 5  # where it was

        assert poll_into(conn, polled, stores, good) == 25  # the next poll sends everything again
        assert stores.watermarks.get(conn.name, "Things") == 30
    finally:
        good.close()
    changes = take_all(settings, ERP_EVENTS, conn.name)
    assert len(changes) > 25 + 10  # the first page (and part of the second) went twice
    assert received_once_each(stores, conn.name, new, changes) == dict.fromkeys(new, 1)


def test_a_snapshot_moves_only_once_its_change_is_on_the_queue(downstream: Stores, settings: StorageSettings) -> None:
    stores = downstream
    table = Table([{"id": f"PO{i}", "status": "0"} for i in range(12)])
    conn, polled = connection(), entity(table, NONE, watched=("status",), page_size=5)
    good = StorageQueueBus(settings)
    try:
        assert poll_into(conn, polled, stores, good) == 0  # the first pass records where things stand
        changed = [f"PO{i}" for i in range(12)]
        for row in table.rows:
            row["status"] = "4"
        failing = FailingNthSend(settings, fail_on=8)  # the second page of five
        try:
            with pytest.raises(ConnectionResetError):
                poll_into(conn, polled, stores, failing)
        finally:
            failing.close()
        assert poll_into(conn, polled, stores, good) == 7  # the pages whose sends did not all land, again
        assert poll_into(conn, polled, stores, good) == 0
    finally:
        good.close()
    changes = take_all(settings, ERP_EVENTS, conn.name)
    assert received_once_each(stores, conn.name, changed, changes) == dict.fromkeys(changed, 1)
