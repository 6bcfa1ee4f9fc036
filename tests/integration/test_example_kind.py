"""A new polled ERP is one folder and one line in the kinds list: the example kind (``tests/example_erp``),
listed by a fixture as a contributor lists theirs in ``shared/kinds.py``, polled end to end in process.

Polls are scheduled and run, their changes processed and delivered by the real queue consumer on
the session's Azurite, and sent as SMS by the fake Twilio; the example ERP is a fake API on loopback.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest

from shared import kinds
from shared.channels.twilio.client import reset_twilio_channels
from shared.config.loading import config_from_dict, get_config, reset_config
from shared.config.model import ConfigError
from shared.erp.polling import Note, adapter, note_writer
from shared.model import ERP_EVENTS, NOTIFICATIONS, POLL_JOBS, EnvelopeError
from shared.pipeline.consume import Delivery, consume
from shared.pipeline.poll import schedule_polls
from shared.storage.bus import StorageQueueBus, get_bus, read_envelope, reset_bus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import Stores
from tests.example_erp import connection as example
from tests.example_erp.client import reset_example_clients
from tests.fakes.example_erp import FakeExampleErp
from tests.fakes.twilio import FakeTwilio

PIPELINE = (POLL_JOBS, ERP_EVENTS, NOTIFICATIONS)
FOREIGN_HIDDEN_SECONDS = 5
PHONES = {"T-1": "+14155550161", "T-2": "+14155550162", "T-3": "+14155550163"}


@pytest.fixture
def example_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one line a contributor adds to ``shared.kinds.ERPS`` for a new ERP, added for this test."""
    monkeypatch.setattr(kinds, "ERPS", MappingProxyType({**kinds.ERPS, "example": kinds.ErpKind(
        name="example", settings=example.SETTINGS, adapter="tests.example_erp.adapter", entities=example.ENTITIES,
        notes=True)}))


@dataclass
class ExampleStack:
    erp: FakeExampleErp
    twilio: FakeTwilio
    erp_name: str
    twilio_name: str
    stores: Stores

    def poll(self, at: datetime) -> dict[str, int]:
        """Schedule the polls due ``at``, then run every message of this stack through the consumer."""
        assert schedule_polls(get_config(), self.stores, get_bus(), at), "no poll was due"
        return self.run_queues()

    def run_queues(self) -> dict[str, int]:
        """Consume this stack's messages on each queue of the pipeline until none is left; handled per queue."""
        handled = dict.fromkeys(PIPELINE, 0)
        while True:
            round_ = sum(self._consume_visible(queue, handled) for queue in PIPELINE)
            if round_ == 0:
                return handled

    def _consume_visible(self, queue: str, handled: dict[str, int]) -> int:
        bus = get_bus()
        assert isinstance(bus, StorageQueueBus)
        client = bus._queue(queue)
        count = 0
        while batch := list(client.receive_messages(max_messages=32, visibility_timeout=30)):
            for message in batch:
                body = base64.b64decode(message.content)
                if not self._ours(body):
                    # The session's queues are shared: what other tests left is put back for a while.
                    client.update_message(message, visibility_timeout=FOREIGN_HIDDEN_SECONDS)
                    continue
                assert consume(Delivery(queue, body, message.id, message.dequeue_count), bus) == "handled"
                client.delete_message(message)
                handled[queue] += 1
                count += 1
        return count

    def _ours(self, body: bytes) -> bool:
        try:
            return read_envelope(body).connection in (self.erp_name, self.twilio_name)
        except EnvelopeError:
            return False

    def texts_to(self, phone: str) -> list[str]:
        return [message.body for message in self.twilio.messages(to=phone)]


def example_config(erp: FakeExampleErp, twilio: FakeTwilio, erp_name: str, twilio_name: str,
                   creds: object) -> dict:
    return {
        "connections": {
            erp_name: {"kind": "example", "base_url": erp.base_url, "api_token": {"secret": "example-erp-token"},
                       "poll": {"entities": ["Tickets"], "interval_minutes": 60}},
            twilio_name: {"kind": "twilio", "account_sid": creds.account_sid,  # type: ignore[attr-defined]
                          "api_key_sid": creds.api_key_sid,  # type: ignore[attr-defined]
                          "api_key_secret": {"secret": "example-twilio-key-secret"},
                          "auth_token": {"secret": "example-twilio-auth-token"},
                          "from_number": creds.phone_number,  # type: ignore[attr-defined]
                          "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url},
        },
        "rules": [{"id": "ticket-changed", "source": erp_name, "event": "Tickets", "channel": "sms",
                   "via": twilio_name, "to": [{"field": "phone"}], "template": "ticket-changed"}],
        "templates": {"ticket-changed": {"sms": "Ticket {ticket_id} is {status}: {title}"}},
    }


@pytest.fixture
def stack(example_kind: None, app_stores: Stores, storage_connection_string: str, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[ExampleStack]:
    erp = FakeExampleErp(max_page_size=2).start()  # three changes take two pages
    twilio = FakeTwilio().start()
    creds = twilio.add_test_account()
    suffix = uuid.uuid4().hex[:6]
    erp_name, twilio_name = f"example-{suffix}", f"twilio-{suffix}"
    config_path = tmp_path / "connections.json"
    config_path.write_text(json.dumps(example_config(erp, twilio, erp_name, twilio_name, creds)))
    for name, value in {"CONNECTOR_CONFIG_PATH": str(config_path), "QUEUE_BACKEND": "storage",
                        "EXAMPLE_ERP_TOKEN": erp.api_token, "EXAMPLE_TWILIO_KEY_SECRET": creds.api_key_secret,
                        "EXAMPLE_TWILIO_AUTH_TOKEN": creds.auth_token}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    resets: tuple[Callable[[], None], ...] = (reset_config, reset_bus, reset_secret_provider, reset_twilio_channels,
                                              reset_example_clients)
    for reset in resets:
        reset()
    try:
        yield ExampleStack(erp, twilio, erp_name, twilio_name, app_stores)
    finally:
        for reset in resets:
            reset()
        twilio.stop()
        erp.stop()


START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_each_change_in_the_example_erp_becomes_one_sms_and_a_poll_that_finds_nothing_sends_nothing(
        stack: ExampleStack) -> None:
    erp = stack.erp
    erp.put_ticket("T-1", title="Pump 4 leaking", phone=PHONES["T-1"])  # history: the first poll only notes it
    stack.poll(START)
    assert stack.twilio.messages() == []

    erp.put_ticket("T-1", status="closed")
    erp.put_ticket("T-2", title="Badge reader down", phone=PHONES["T-2"])
    erp.put_ticket("T-3", title="Forklift service due", phone=PHONES["T-3"])
    erp.fail_next(status=429, headers={"Retry-After": "1"}, match="GET /v1/tickets")  # throttled once: waited out
    handled = stack.poll(START + HOUR)

    # Each SMS is sent by the stage that routed its change, with no trip through the notifications queue.
    assert handled[ERP_EVENTS] == 3 and handled[NOTIFICATIONS] == 0
    assert stack.texts_to(PHONES["T-1"]) == ["Ticket T-1 is closed: Pump 4 leaking"]
    assert stack.texts_to(PHONES["T-2"]) == ["Ticket T-2 is open: Badge reader down"]
    assert stack.texts_to(PHONES["T-3"]) == ["Ticket T-3 is open: Forklift service due"]
    assert [r.scripted for r in erp.requests_to("GET /v1/tickets")].count("fail") == 1
    assert stack.stores.watermarks.get(stack.erp_name, "Tickets") == 4

    again = stack.poll(START + 2 * HOUR)
    assert again == {POLL_JOBS: 1, ERP_EVENTS: 0, NOTIFICATIONS: 0}
    assert len(stack.twilio.messages()) == 3


def test_a_reply_is_written_back_to_the_example_erp_once(stack: ExampleStack) -> None:
    stack.erp.put_ticket("T-9", title="Door stuck", phone=PHONES["T-1"])
    writer = note_writer("example")
    assert writer is not None
    note = Note(record_entity="Ticket", record_key="T-9", text="On my way", received_at=START,
                sender="+1*******61", reference="SM" + uuid.uuid4().hex)
    connection = get_config().connections[stack.erp_name]
    writer.write_note(connection, note)
    writer.write_note(connection, note)  # delivered again: the ERP already has it
    [comment] = stack.erp.comments("T-9")
    assert comment["body"].endswith("On my way") and comment["external_id"] == note.reference


def test_the_example_adapter_polls_what_its_connection_declares(example_kind: None) -> None:
    assert tuple(adapter("example").ENTITIES) == kinds.ERPS["example"].entities == ("Tickets",)


def test_the_loader_checks_the_example_connection_field_by_field(example_kind: None) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_dict({"connections": {"tickets": {
            "kind": "example", "base_url": "ftp://erp.example", "api_token": "plain-token-value",
            "poll": {"entities": ["Invoices"]}}}})
    assert raised.value.errors == [
        "connections.tickets.base_url: must be an https URL (http only for loopback hosts)",
        'connections.tickets.api_token: must be a secret reference {"secret": "<name>"}, not a value',
        "connections.tickets.poll.entities[0]: cannot poll 'Invoices'; entities that can be polled: Tickets",
    ]


def test_without_its_line_in_the_kinds_list_the_kind_is_unknown() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_dict({"connections": {"tickets": {"kind": "example"}}})
    assert raised.value.errors == [f"connections.tickets.kind: must be one of {', '.join(kinds.all_kinds())}"]
