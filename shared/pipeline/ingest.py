"""Accepting Dynamics business events: check, enqueue, answer. Nothing else.

Dynamics waits 10 s for an answer, retries 3 times 1 s apart, then parks the event in
its error log, so the answer never waits on OData, Twilio or table writes: each event
goes onto ``erp-events`` (MessageId = its event key: the business fact it reports, else
connection + ControlNumber) and the work happens
behind the queue. A failure to enqueue answers 503, so Dynamics retries: nothing lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.config.model import AppConfig
from shared.erp.dynamics.connection import DynamicsConnection
from shared.erp.dynamics.events import BusinessEvent, EventError, event_fact_key, parse_events
from shared.inputs import loads_json
from shared.model import BUSINESS_EVENT, ERP_EVENTS, Envelope
from shared.pipeline.webhooks import Refused, connection_of
from shared.storage.bus import MessageBus

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # business events are small; a batch of 100 stays far below


@dataclass
class Accepted:
    correlation_ids: list[str] = field(default_factory=list)
    test_events: int = 0


def event_key(connection: str, event: BusinessEvent) -> str:
    """The event's claim key: the business fact it reports (a posted invoice), which the poll's finding of the
    same fact shares, so push and poll together act once; else connection + ControlNumber."""
    return event_fact_key(connection, event) or f"{connection}|{event.control_number}"


def dynamics_connection(config: AppConfig, name: str) -> DynamicsConnection:
    return connection_of(config, name, DynamicsConnection, "Dynamics")


def read_json(body: bytes) -> object:
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, "too_large", f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not body.strip():
        raise Refused(400, "empty_body", "the body is empty; send a business event as JSON")
    try:
        return loads_json(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise Refused(400, "malformed_json", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Refused(400, "malformed_json", f"the body is not JSON: {exc.msg} at line {exc.lineno}, "
                                             f"column {exc.colno}") from None
    except ValueError as exc:
        raise Refused(400, "malformed_json", f"the body is not acceptable JSON: {exc}") from None


def accept_business_events(config: AppConfig, connection_name: str, body: bytes, bus: MessageBus,
                           record_test_event: Callable[[str, BusinessEvent], None]) -> Accepted:
    """Validate the body and enqueue each event; test events are only recorded. Refused otherwise."""
    dynamics_connection(config, connection_name)
    try:
        events = parse_events(read_json(body))
    except EventError as exc:
        raise Refused(400, "invalid_event", str(exc)) from None
    accepted = Accepted()
    received_at = datetime.now(UTC).isoformat()
    for event in events:
        correlation_id = uuid.uuid4().hex
        if event.is_test:
            record_test_event(correlation_id, event)
            accepted.test_events += 1
            continue
        envelope = Envelope(BUSINESS_EVENT, connection_name, event_key(connection_name, event),
                            {"event": dict(event.fields), "received_at": received_at}, correlation_id)
        try:
            bus.send(ERP_EVENTS, envelope)
        except Exception as exc:  # noqa: BLE001 - any queue failure: ask Dynamics to send again
            log.error("could not enqueue business event %s: %s", envelope.key, exc.__class__.__name__)
            raise Refused(503, "queue_unavailable", "the event could not be queued; send it again") from None
        accepted.correlation_ids.append(correlation_id)
    return accepted
