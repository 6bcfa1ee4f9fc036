"""Service Bus batch sends: messages split across the SDK's own ``ServiceBusMessageBatch`` objects.

No Service Bus emulator runs here, so the sender is a stand-in; the batches are the SDK's, built
without a connection with a small size limit, and their own ``add_message`` says when one is full.
"""

from __future__ import annotations

import re

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch

from shared.model import Envelope
from shared.outcomes import PermanentFailure
from shared.settings import ServiceBusSettings
from shared.storage.bus import ServiceBusBus, servicebus_batches, servicebus_message_id

BATCH_BYTES = 4_000
# A connection string the client parses without connecting; nothing here opens a link.
CONNECTION = "Endpoint=sb://batches.example/;SharedAccessKeyName=send;SharedAccessKey=bm90LWEta2V5"


class SeenBatch(ServiceBusMessageBatch):
    """The SDK's batch, remembering the MessageIds it took."""

    def __init__(self, max_size_in_bytes: int = BATCH_BYTES) -> None:
        super().__init__(max_size_in_bytes=max_size_in_bytes)
        self.ids: list[str] = []

    def add_message(self, message: ServiceBusMessage) -> None:  # type: ignore[override]
        super().add_message(message)
        self.ids.append(str(message.message_id))


class StandInSender:
    """What a ServiceBusSender does for a batch send: hands out batches, sends them; can fail the Nth send."""

    def __init__(self, fail_send: int | None = None) -> None:
        self.batches_made = 0
        self.sent: list[SeenBatch] = []
        self.fail_send = fail_send

    def create_message_batch(self) -> SeenBatch:
        self.batches_made += 1
        return SeenBatch()

    def send_messages(self, batch: SeenBatch, timeout: float | None = None) -> None:
        if self.fail_send is not None and len(self.sent) + 1 == self.fail_send:
            raise ConnectionError("the link dropped")
        self.sent.append(batch)

    def close(self) -> None:
        pass


def changes(count: int, size: int = 600, attempt: int = 0) -> list[Envelope]:
    return [Envelope("erp.change", "syspro-main", f"syspro-main|ApInvoice|INV-{n}|2026-11-22T12:00:00", {
        "fields": {"text": "x" * size}}, attempt=attempt) for n in range(count)]


def bus_with(sender: StandInSender, queue: str = "erp-events") -> ServiceBusBus:
    bus = ServiceBusBus(ServiceBusSettings(CONNECTION, None, None))
    bus._senders[queue] = sender  # the cached sender of that queue
    return bus


def test_messages_are_split_across_batches_when_one_is_full_keeping_order_and_message_ids() -> None:
    envelopes = changes(20)
    batches = list(servicebus_batches(envelopes, SeenBatch))
    assert len(batches) > 2  # 20 messages of about 1 kB do not fit 4 kB
    assert all(len(batch) > 0 and batch.size_in_bytes <= BATCH_BYTES for batch in batches)
    assert [i for batch in batches for i in batch.ids] == [servicebus_message_id(e) for e in envelopes]
    # Messages of one size: each batch before the last was closed only once it was full.
    assert len({len(batch) for batch in batches[:-1]}) == 1 and len(batches[-1]) <= len(batches[0])


def test_a_retried_envelope_keeps_the_message_id_send_gives_it() -> None:
    [envelope] = changes(1, attempt=2)
    [batch] = servicebus_batches([envelope], SeenBatch)
    assert batch.ids == [servicebus_message_id(envelope)] and batch.ids[0].endswith("#attempt-2")


def test_a_message_larger_than_any_batch_is_a_permanent_failure_naming_its_key() -> None:
    too_large = Envelope("erp.change", "syspro-main", "syspro-main|ApInvoice|HUGE|1", {"text": "x" * BATCH_BYTES})
    with pytest.raises(PermanentFailure, match=re.escape("syspro-main|ApInvoice|HUGE|1")):
        list(servicebus_batches([*changes(2), too_large], SeenBatch))


def test_send_many_sends_each_batch_once_on_the_queues_sender() -> None:
    sender = StandInSender()
    bus = bus_with(sender)
    envelopes = changes(20)
    bus.send_many("erp-events", envelopes)
    assert len(sender.sent) == sender.batches_made > 2
    assert [i for batch in sender.sent for i in batch.ids] == [servicebus_message_id(e) for e in envelopes]
    bus.close()


def test_send_many_of_nothing_sends_nothing() -> None:
    sender = StandInSender()
    bus = bus_with(sender)
    bus.send_many("erp-events", [])
    assert sender.batches_made == 0 and sender.sent == []
    bus.close()


def test_a_batch_that_fails_fails_the_send_many() -> None:
    sender = StandInSender(fail_send=2)
    bus = bus_with(sender)
    with pytest.raises(ConnectionError):
        bus.send_many("erp-events", changes(20))
    assert len(sender.sent) == 1  # the batches after the failed one are not sent
    bus.close()
