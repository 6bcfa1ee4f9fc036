"""Scheduled polls: due slots enqueued once, changes streamed, the watermark's rules."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from shared.config.loading import config_from_dict
from shared.erp.dynamics.adapter import ENTITIES
from shared.erp.dynamics.client import DynamicsClient
from shared.erp.polling import Source
from shared.model import ERP_EVENTS, POLL_JOBS
from shared.pipeline.poll import poll_entity, schedule_polls
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from shared.storage.secrets import EnvSecretProvider
from shared.storage.tables import Stores
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class RecordingBus:
    """Collects what would be queued (the queue itself is tested elsewhere)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def send(self, queue: str, envelope: object, delay_seconds: float = 0) -> None:
        self.sent.append((queue, envelope))

    def send_many(self, queue: str, envelopes: Sequence[object]) -> None:
        for envelope in envelopes:
            self.send(queue, envelope)

    def dead_letter(self, queue: str, body: object, reason: str) -> None:
        raise AssertionError(reason)

    def close(self) -> None:
        pass


@pytest.fixture
def fo() -> Iterator[tuple[FakeDynamics, object]]:
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra, page_size=2).start()
    entra.register_client("t", "app", "secret")
    dynamics.allow_clients("app")
    config = config_from_dict({"connections": {"fo": {
        "kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": "t", "client_id": "app",
        "client_secret": {"secret": "fo-secret"}, "authority": entra.authority, "ca_bundle": str(entra.ca_pem_path),
        "poll": {"entities": ["VendorInvoiceHeaders"], "interval_minutes": 10, "overlap_seconds": 120}}}})
    yield dynamics, config
    dynamics.stop()
    entra.stop()


def header(ref: str, stamp: datetime, **extra: object) -> dict:
    return {"dataAreaId": "usmf", "HeaderReference": ref, "InvoiceNumber": f"INV-{ref}", "VendorAccount": "US-104",
            "VendorName": "Fabrikam", "Currency": "USD", "DueDate": "2026-12-01T12:00:00Z",
            "InvoiceDate": "2026-11-20T12:00:00Z", "PurchaseOrderNumber": "", "InvoiceDescription": "",
            "IsOnHold": "No", "ModifiedDateTime": stamp.isoformat().replace("+00:00", "Z"), **extra}


def test_a_due_slot_is_enqueued_once(fo: tuple, stores: Stores) -> None:
    _, config = fo
    bus = RecordingBus()
    assert len(schedule_polls(config, stores, bus, START)) == 1
    assert schedule_polls(config, stores, bus, START + timedelta(minutes=1)) == []  # same 10-minute slot
    assert len(schedule_polls(config, stores, bus, START + timedelta(minutes=10))) == 1
    assert [queue for queue, _ in bus.sent] == [POLL_JOBS, POLL_JOBS]


def test_a_poll_streams_every_change_and_moves_the_watermark(fo: tuple, stores: Stores) -> None:
    dynamics, config = fo
    same = START - timedelta(minutes=4)
    dynamics.add_entities("VendorInvoiceHeaders", [
        header("A", START - timedelta(minutes=30)),  # older than the window: not read
        header("B", START - timedelta(minutes=8)),
        header("C", same), header("D", same), header("E", same),  # equal stamps across a page edge
        header("F", START + timedelta(minutes=1)),  # changed while the poll ran
    ], keys=("dataAreaId", "HeaderReference"))
    connection = config.connections["fo"]
    client = DynamicsClient(connection, EnvSecretProvider(env={"fo-secret": "secret"}))
    bus = RecordingBus()
    source, entity = Source(client, ENTITIES), ENTITIES["VendorInvoiceHeaders"]
    assert poll_entity(connection, connection.poll, source, entity, stores, bus, now=START) == 5
    keys = [envelope.key for _, envelope in bus.sent]
    assert [k.split("|")[3] for k in keys] == ["B", "C", "D", "E", "F"]
    assert len(set(keys)) == 5
    first = bus.sent[0][1].payload
    assert first["record_entity"] == "VendorInvoice" and first["record_key"] == "usmf|INV-B"
    assert first["fields"]["invoice_id"] == "INV-B" and first["fields"]["vendor_name"] == "Fabrikam"
    assert stores.watermarks.get("fo", "VendorInvoiceHeaders") == START  # not past the poll's own start

    again = RecordingBus()
    poll_entity(connection, connection.poll, source, entity, stores, again, now=START + timedelta(minutes=10))
    # since = watermark - overlap: only F is re-read, under the same key, so its claim filters it.
    assert [envelope.key for _, envelope in again.sent] == [keys[-1]]
    assert stores.watermarks.get("fo", "VendorInvoiceHeaders") == START + timedelta(minutes=1)
    client.close()


def test_changes_are_put_on_erp_events(fo: tuple, stores: Stores, storage_connection_string: str) -> None:
    dynamics, config = fo
    dynamics.add_entities("VendorInvoiceHeaders", [header(uuid.uuid4().hex[:6], START - timedelta(minutes=1))],
                          keys=("dataAreaId", "HeaderReference"))
    connection = config.connections["fo"]
    client = DynamicsClient(connection, EnvSecretProvider(env={"fo-secret": "secret"}))
    bus = StorageQueueBus(StorageSettings(storage_connection_string, None, None, None))
    before = bus._queue(ERP_EVENTS).get_queue_properties().approximate_message_count
    poll_entity(connection, connection.poll, Source(client, ENTITIES), ENTITIES["VendorInvoiceHeaders"], stores, bus,
                now=START)
    assert bus._queue(ERP_EVENTS).get_queue_properties().approximate_message_count == before + 1
    peeked = [json.loads(base64.b64decode(m.content)) for m in bus._queue(ERP_EVENTS).peek_messages(max_messages=32)]
    assert any(p["type"] == "erp.change" and p["connection"] == "fo" for p in peeked)
    bus.close()
    client.close()
