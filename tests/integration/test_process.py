"""The erp-events stage on Azurite and the fake Entra ID and Dynamics: an event's audit steps are written
together, and one that comes back after a stop still has its ``received`` step on the trail, once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.model import BUSINESS_EVENT, Envelope
from shared.pipeline.process import process_business_event
from shared.storage.tables import AuditLog, Stores
from tests.e2e.test_dynamics_to_twilio import invoice_event, record_of
from tests.integration.stage_stack import erp_events_stage

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("queued_notifications")]


class Stop(BaseException):
    """The process stops here: nothing after it runs, nothing classifies it."""


@pytest.fixture
def app(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        storage_connection_string: str) -> Iterator[Stores]:
    """The erp-events stage as the app runs it: its configuration, stores and queues, against the fakes."""
    with erp_events_stage(tmp_path, monkeypatch, storage_connection_string):
        yield app_stores


def business_event(invoice_id: str) -> Envelope:
    event = invoice_event(invoice_id, "+14155550161")
    return Envelope(BUSINESS_EVENT, "contoso-fo", f"contoso-fo|{event['ControlNumber']}|{uuid.uuid4().hex}",
                    {"event": event}, uuid.uuid4().hex)


def steps_of(stores: Stores, envelope: Envelope) -> list[str]:
    return [entry.step for entry in sorted(stores.audit.by_correlation(envelope.correlation_id),
                                           key=lambda entry: entry.at)]


def test_an_event_s_steps_are_on_its_trail_in_order(app: Stores) -> None:
    invoice = "INV-" + uuid.uuid4().hex[:8]
    envelope = business_event(invoice)

    process_business_event(envelope)

    assert steps_of(app, envelope) == ["received", "enriched", "routed"]
    assert [e.step for e in app.audit.by_record(record_of(invoice))] == ["received", "enriched", "routed"]


def test_an_event_back_after_a_stop_before_its_steps_were_written_has_received_once(
        app: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    invoice = "INV-" + uuid.uuid4().hex[:8]
    envelope = business_event(invoice)
    real_write = AuditLog.write_all
    stops = iter([True])

    def stopping(self: AuditLog, entries: list) -> None:
        if next(stops, False):
            raise Stop("the process stopped before the event's steps were written")
        real_write(self, entries)

    monkeypatch.setattr(AuditLog, "write_all", stopping)
    with pytest.raises(Stop):
        process_business_event(envelope)
    assert steps_of(app, envelope) == []

    process_business_event(envelope)  # the host delivers it again: its own claim lets it through
    process_business_event(envelope)  # and once more, after its steps were written

    steps = steps_of(app, envelope)
    assert steps[0] == "received" and steps.count("received") == 1 and "enriched" in steps
