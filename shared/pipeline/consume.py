"""The one queue consumer behind every queue trigger, whatever the backend.

Outcomes for a message (``shared.outcomes`` names them):
- handled: the handler returned;
- requeued: the work can succeed later (``RetryLater``, or an error that ``classify`` finds
  transient: a network error, a timeout, a 5xx or 429, a token not had, storage not
  answering). The envelope goes back on its queue with ``attempt + 1``, after the delay the
  stage named or else exponential backoff with full jitter, and ``retrying`` is audited with
  the reason. A stage's retries are bounded by age (``RETRY_MAX_AGE_SECONDS``, 24 h), not by
  a small count. A wait for a send slot (``WaitForSlot``) is requeued too, and is no failure.
- dead-lettered: unreadable, unknown type or version, a permanent failure, or out of time:
  the message goes to ``<queue>-poison`` with the reason, ``dead-lettered`` is audited on its
  ERP record, and the stage's own undo runs (an event's claim is released, a job is marked
  not sent), so that a resend or a redrive is processed again.
Any other exception is a bug: it propagates, so the host retries it, until the last delivery
the host allows (``QUEUE_MAX_DELIVERIES``), which this consumer dead-letters itself, audited
like any other, rather than leave it to the host's poison handling.

Every line logged while a message is handled carries the envelope's dimensions
(``shared.telemetry``): connection, correlation id, and the job, ERP record and channel
its payload names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from shared import telemetry
from shared.http import backoff_delay
from shared.model import Envelope, EnvelopeError, parse_utc_time
from shared.outcomes import PermanentFailure, RetryLater, WaitForSlot, classify, describe
from shared.pipeline import registry
from shared.pipeline.deadletters import audit_work, keep
from shared.pipeline.stages import load_stages
from shared.settings import env_float, env_int
from shared.storage.bus import MessageBus, message_text, read_envelope

__all__ = ["Delivery", "PermanentFailure", "consume", "handle_now"]

log = logging.getLogger(__name__)

Outcome = Literal["handled", "requeued", "dead-lettered"]
MAX_DEFERRALS = 100  # returns to wait for a pacing slot; bounded all the same
DEFAULT_MAX_AGE_SECONDS = 24 * 3600.0
DEFAULT_BACKOFF_BASE_SECONDS = 2.0
DEFAULT_BACKOFF_CAP_SECONDS = 300.0
# The host's maxDequeueCount in host.json; Service Bus queues allow more, and stop here too.
DEFAULT_MAX_DELIVERIES = 5


@dataclass(frozen=True)
class Delivery:
    """One message as a queue trigger received it."""

    queue: str
    body: bytes
    message_id: str
    delivery_count: int


@dataclass(frozen=True)
class RetryBounds:
    """How long and how often one stage's work is tried again after transient failures."""

    max_age: float = DEFAULT_MAX_AGE_SECONDS
    max_attempts: int = 0  # 0: no bound by count, only by age
    backoff_base: float = DEFAULT_BACKOFF_BASE_SECONDS
    backoff_cap: float = DEFAULT_BACKOFF_CAP_SECONDS

    @classmethod
    def from_settings(cls) -> RetryBounds:
        """``RETRY_MAX_AGE_SECONDS``, ``QUEUE_MAX_ATTEMPTS`` (0: none), ``RETRY_BACKOFF_BASE_SECONDS``
        and ``RETRY_BACKOFF_CAP_SECONDS``: the same for every stage, each stage's work counted apart."""
        return cls(max_age=env_float("RETRY_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS),
                   max_attempts=max(env_int("QUEUE_MAX_ATTEMPTS", 0), 0),
                   backoff_base=env_float("RETRY_BACKOFF_BASE_SECONDS", DEFAULT_BACKOFF_BASE_SECONDS),
                   backoff_cap=env_float("RETRY_BACKOFF_CAP_SECONDS", DEFAULT_BACKOFF_CAP_SECONDS))


def max_deliveries() -> int:
    return env_int("QUEUE_MAX_DELIVERIES", DEFAULT_MAX_DELIVERIES) or DEFAULT_MAX_DELIVERIES


def consume(delivery: Delivery, bus: MessageBus, attempts_allowed: int | None = None) -> Outcome:
    telemetry.configure_export()
    load_stages()
    try:
        envelope = read_envelope(delivery.body)
    except EnvelopeError as exc:
        return _dead_letter(bus, delivery, f"unreadable envelope: {exc}")
    with telemetry.scope(**envelope_dimensions(envelope)):
        return _handle(delivery, envelope, bus, attempts_allowed)


@registry.runs_in_place
def handle_now(queue: str, envelope: Envelope, bus: MessageBus) -> Outcome:
    """Run the stage of ``envelope`` in this invocation, as if it had just been taken from ``queue``, so
    that its first try costs no queue round trip. Whatever does not end ``handled`` is left where the
    consumer would leave it (back on ``queue`` with its delay, or dead-lettered); an unexpected error
    puts the envelope on ``queue`` as it was, for the host's retries. Only what cannot be put on the
    queue either is raised: the caller's own message then comes back, and with it this envelope."""
    load_stages()
    delivery = Delivery(queue, message_text(envelope).encode("utf-8"), envelope.key, 1)
    with telemetry.scope(**envelope_dimensions(envelope)):
        try:
            return _handle(delivery, envelope, bus, None)
        except Exception as error:  # noqa: BLE001 - a bug in the stage: its queue's retries take over
            log.warning("%s failed on its first try in place (%s); queued for the usual retries", envelope.type,
                        describe(error))
            bus.send(queue, envelope)
            return "requeued"


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
    except Exception as error:  # noqa: BLE001 - every error is classified; a bug is raised again
        outcome = classify(error)
        if outcome is None:
            return _after_bug(bus, delivery, envelope, error)
        if isinstance(outcome, PermanentFailure):
            return _dead_letter(bus, delivery, f"{envelope.type} failed permanently: {outcome.reason}")
        bounds = RetryBounds.from_settings()
        if attempts_allowed:
            bounds = replace(bounds, max_attempts=attempts_allowed)
        return _retry_later(bus, delivery, envelope, spec, outcome, bounds)
    return "handled"


def _retry_later(bus: MessageBus, delivery: Delivery, envelope: Envelope, spec: registry.HandlerSpec,
                 later: RetryLater, bounds: RetryBounds) -> Outcome:
    now = datetime.now(UTC)
    since = envelope.since or now.isoformat()
    age = (now - parse_utc_time(since)).total_seconds()
    tries = envelope.attempt + 1
    if bounds.max_attempts and tries >= bounds.max_attempts:
        return _dead_letter(bus, delivery, f"gave up after {tries} attempts: {later.reason}")
    if age >= bounds.max_age:
        return _dead_letter(bus, delivery, f"gave up after {tries} attempts over {age / 3600:.1f} h: {later.reason}")
    delay = backoff_delay(envelope.attempt, base=bounds.backoff_base, cap=bounds.backoff_cap) \
        if later.back_off else later.delay
    bus.send(delivery.queue, replace(envelope.next_attempt(), since=since), delay)
    with telemetry.scope(step="requeued", reason=later.reason):
        log.info("%s requeued in %.1f s: %s", envelope.type, delay, later.reason)
    audit_work(envelope, spec, "retrying", reason=later.reason, attempt=tries, retry_in_seconds=round(delay, 1))
    return "requeued"


def _after_bug(bus: MessageBus, delivery: Delivery, envelope: Envelope, error: Exception) -> Outcome:
    """A bug: the host retries it; its last delivery is dead-lettered here, with the reason audited."""
    if delivery.delivery_count < max_deliveries():
        raise error
    log.exception("%s failed on its last delivery with an unexpected error", envelope.type)
    reason = f"{envelope.type} failed {delivery.delivery_count} deliveries with an unexpected {describe(error)}"
    return _dead_letter(bus, delivery, reason)


def _dead_letter(bus: MessageBus, delivery: Delivery, reason: str) -> Outcome:
    """Into ``<queue>-poison`` with the reason first, so that nothing is lost whatever follows; then
    kept in the dead-letters table, audited on its ERP record, and undone where its stage says how."""
    from shared.storage.tables import get_stores

    with telemetry.scope(step="dead-lettered", reason=reason):  # the bus logs the dead letter
        bus.dead_letter(delivery.queue, delivery.body, reason)
    text = delivery.body.decode("utf-8", errors="replace")
    try:
        keep(get_stores(), delivery.queue, text, reason, "app")
    except Exception as error:  # noqa: BLE001 - the poison queue has it; the collector keeps it later
        log.warning("could not keep a dead letter of %s: %s", delivery.queue, describe(error))
    return "dead-lettered"
