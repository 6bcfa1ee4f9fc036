"""What travels on the queues: sealed payloads, message ids, and dead letters read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.model import Envelope, EnvelopeError, open_payload, seal_payload
from shared.storage.bus import _taken, dead_letter_body, servicebus_message_id


def reverse(text: str) -> str:
    return text[::-1]


def test_only_routing_fields_travel_in_clear() -> None:
    payload = {"job_id": "j1", "channel": "sms", "record": "fo|VendorInvoice|usmf|INV-1", "event": "VendorInvoice",
               "to": "+14155550134", "text": "Invoice INV-1 is due", "params": {"From": "+14155550134"}}
    travelled = seal_payload(payload, reverse)
    assert set(travelled) == {"job_id", "channel", "record", "event", "sealed"}
    assert "+14155550134" not in json.dumps(travelled)
    assert open_payload(travelled, reverse) == payload


def test_an_erp_payload_under_event_travels_sealed() -> None:
    travelled = seal_payload({"event": {"NotifyPhone": "+14155550134"}, "received_at": "2026-12-05T00:00:00Z"},
                             reverse)
    assert set(travelled) == {"received_at", "sealed"}


def test_a_payload_that_does_not_open_is_an_unreadable_envelope() -> None:
    with pytest.raises(EnvelopeError, match="does not open"):
        open_payload({"sealed": "not json at all"}, lambda text: text)


def test_an_envelope_round_trips_sealed_with_its_retry_state() -> None:
    sent = Envelope("notification.send", "twilio-main", "job-1", {"job_id": "job-1", "to": "+14155550134"},
                    "corr-1", attempt=3, since="2026-12-05T00:00:00+00:00", redrives=2)
    text = sent.to_json(seal=reverse)
    assert "+14155550134" not in text
    assert Envelope.from_json(text, unseal=reverse) == sent


def test_each_attempt_and_each_redrive_has_a_service_bus_message_id_of_its_own() -> None:
    first = Envelope("t", "c", "key-1", {})
    ids = {servicebus_message_id(first), servicebus_message_id(first.next_attempt()),
           servicebus_message_id(Envelope("t", "c", "key-1", {}, redrives=1)),
           servicebus_message_id(Envelope("t", "c", "key-1", {}, redrives=2))}
    assert len(ids) == 4


def test_a_dead_letter_of_the_app_is_read_back_with_its_reason_and_original_body() -> None:
    body = Envelope("t", "c", "k", {}).to_json()
    taken = _taken(dead_letter_body("erp-events", body, "gave up after 3 attempts: HTTP 503"), "erp-events",
                   datetime.now(UTC), lambda: None, lambda: None)
    assert (taken.origin, taken.text, taken.reason, taken.source_queue) == (
        "app", body, "gave up after 3 attempts: HTTP 503", "erp-events")


def test_a_message_the_host_or_broker_parked_is_read_back_as_it_was() -> None:
    body = Envelope("t", "c", "k", {}).to_json()
    host = _taken(body, "notifications", None, lambda: None, lambda: None)
    assert (host.origin, host.text) == ("host", body) and "allowed deliveries" in host.reason
    broker = _taken(body, "notifications", None, lambda: None, lambda: None, "MaxDeliveryCountExceeded")
    assert broker.reason == "MaxDeliveryCountExceeded"
