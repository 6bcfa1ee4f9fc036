"""The one queue consumer behind every queue trigger, whatever the backend.

Outcomes for a message:
- handled: the handler returned;
- requeued: the handler asked to try again later (RetryLater), and the envelope
  goes back on its queue with ``attempt + 1`` after the delay it named;
- dead-lettered: unreadable, unknown type or version, a permanent failure, or out
  of attempts: the message goes to ``<queue>-poison`` with the reason.
Any other exception propagates, so the host's own retry and poison handling apply.

Every line logged while a message is handled carries the envelope's dimensions
(``shared.telemetry``): connection, correlation id, and the job, ERP record and channel
its payload names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

from shared import telemetry
from shared.model import Envelope, EnvelopeError
from shared.outcomes import PermanentFailure, RetryLater, WaitForSlot
from shared.pipeline import registry
from shared.settings import env_int
from shared.storage.bus import MessageBus

log = logging.getLogger(__name__)

Outcome = Literal["handled", "requeued", "dead-lettered"]
DEFAULT_MAX_ATTEMPTS = 8
MAX_DEFERRALS = 100  # returns to wait for a pacing slot; bounded all the same


@dataclass(frozen=True)
class Delivery:
    """One message as a queue trigger received it."""

    queue: str
    body: bytes
    message_id: str
    delivery_count: int


def max_attempts() -> int:
    return env_int("QUEUE_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS) or DEFAULT_MAX_ATTEMPTS


def consume(delivery: Delivery, bus: MessageBus, attempts_allowed: int | None = None) -> Outcome:
    telemetry.configure_export()
    registry.load_stages()
    try:
        envelope = Envelope.from_json(delivery.body)
    except EnvelopeError as exc:
        return _dead_letter(bus, delivery, f"unreadable envelope: {exc}")
    with telemetry.scope(**envelope_dimensions(envelope)):
        return _handle(delivery, envelope, bus, attempts_allowed)


def envelope_dimensions(envelope: Envelope) -> dict[str, str]:
    """What an envelope says about the work: its connection and correlation id, and the job,
    ERP record and channel of a notification (never its recipient)."""
    payload = envelope.payload
    named = {"job_id": payload.get("job_id"), "erp_record": payload.get("record"), "channel": payload.get("channel")}
    return {"connection": envelope.connection, "correlation_id": envelope.correlation_id,
            **{name: value for name, value in named.items() if isinstance(value, str)}}


def _handle(delivery: Delivery, envelope: Envelope, bus: MessageBus, attempts_allowed: int | None) -> Outcome:
    spec = registry.handler_for(delivery.queue, envelope.type)
    if spec is None:
        return _dead_letter(bus, delivery, f"unknown message type {envelope.type!r} on queue {delivery.queue!r}")
    if envelope.version not in spec.versions:
        readable = ", ".join(str(v) for v in sorted(spec.versions))
        return _dead_letter(
            bus, delivery, f"{envelope.type} version {envelope.version} cannot be read (reads {readable})"
        )
    try:
        spec.handler(envelope)
    except WaitForSlot as wait:
        if envelope.deferrals >= MAX_DEFERRALS:
            return _dead_letter(bus, delivery, f"still waiting for a send slot after {envelope.deferrals} returns")
        payload = {**envelope.payload, "paced_slot": wait.slot}
        bus.send(delivery.queue, replace(envelope, payload=payload, deferrals=envelope.deferrals + 1), wait.delay)
        return "requeued"
    except RetryLater as later:
        limit = attempts_allowed or max_attempts()
        if envelope.attempt + 1 >= limit:
            return _dead_letter(bus, delivery, f"gave up after {envelope.attempt + 1} attempts: {later.reason}")
        bus.send(delivery.queue, envelope.next_attempt(), later.delay)
        with telemetry.scope(step="requeued", reason=later.reason):
            log.info("%s requeued in %.1f s: %s", envelope.type, later.delay, later.reason)
        return "requeued"
    except PermanentFailure as failure:
        return _dead_letter(bus, delivery, f"{envelope.type} failed permanently: {failure.reason}")
    return "handled"


def _dead_letter(bus: MessageBus, delivery: Delivery, reason: str) -> Outcome:
    with telemetry.scope(step="dead-lettered", reason=reason):  # the bus logs the dead letter
        bus.dead_letter(delivery.queue, delivery.body, reason)
    return "dead-lettered"
