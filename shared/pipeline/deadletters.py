"""Dead letters, first class: collected in one place, listed, shown and redriven.

Work is dead-lettered by the queue consumer (a permanent failure, retries out of time, an
unreadable message) or, for a crash that repeats, by the host or the broker. Either way it
lands in a dead-letter queue: ``<queue>-poison`` on both backends, and on Service Bus also the
queue's own dead-letter sub-queue. ``keep`` records each once in the ``deadletters`` table (the
id is a hash of the message) and, the first time, audits it on its ERP record and runs its
stage's undo (release an event's claim, mark a job not sent). The consumer keeps its own dead
letters as it makes them; ``collect`` moves what the queues hold into the table, which keeps
the ones the host parked, and empties the queues.

``redrive`` sends a dead letter's original envelope back to its queue as fresh work (attempt 0,
a new retry budget). Exactly-once still holds: an event's claim belongs to its correlation id,
which the redrive keeps, and a notification is its job, whose state says whether it went out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.model import CALLBACKS, ERP_EVENTS, NOTIFICATIONS, POLL_JOBS, QUEUES, Envelope, EnvelopeError
from shared.outcomes import describe
from shared.pipeline import registry
from shared.pipeline.stages import load_stages
from shared.storage.bus import MessageBus, read_envelope
from shared.storage.tables import DeadLetter, Stores, get_stores

log = logging.getLogger(__name__)

COLLECT_LIMIT = 500  # per queue and call: a long backlog is collected over several calls
# The timer leaves the newest alone for a moment, so whoever watches a poison queue sees them first.
SETTLED_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class Redriven:
    """What a redrive did to one dead letter; in a dry run, ``would`` says whether it would be sent
    again and ``preview`` what that would do (addresses masked), while ``redriven`` stays False."""

    id: str
    redriven: bool
    reason: str
    would: bool = False
    preview: dict[str, Any] = field(default_factory=dict)


def keep(stores: Stores, queue: str, text: str, reason: str, origin: str,
         enqueued_at: datetime | None = None) -> bool:
    """Keep one dead letter in the table; the first time, audit it on its ERP record and run its
    stage's undo (release an event's claim, mark a job not sent). False when it was kept already."""
    letter = dead_letter_of(queue, text, reason, origin, enqueued_at)
    if not stores.dead_letters.add(letter):
        return False
    try:
        envelope = read_envelope(text)
    except EnvelopeError:
        return True  # nothing to audit or undo: no envelope names what it was about
    spec = registry.handler_for(queue, envelope.type)
    audit_work(envelope, spec, "dead-lettered", stores=stores, reason=reason)
    if spec is not None and spec.on_dead_letter is not None:
        try:
            spec.on_dead_letter(envelope, reason)
        except Exception as error:  # noqa: BLE001 - logged; the dead letter itself is kept
            log.error("could not undo %s after dead-lettering it: %s", envelope.type, describe(error))
    return True


def audit_work(envelope: Envelope, spec: registry.HandlerSpec | None, step: str, *, stores: Stores | None = None,
               **detail: Any) -> None:
    """One audit step about a queued message's work, filed under its ERP record. Storage trouble is
    logged, never raised: it must not turn a retry or a dead letter into a lost message."""
    payload = envelope.payload
    try:
        record = spec.record_of(envelope) if spec is not None and spec.record_of else str(payload.get("record") or "")
        audit = (stores or get_stores()).audit
        audit.append(envelope.correlation_id, step, connection=envelope.connection, record=record,
                     job_id=str(payload.get("job_id") or ""), type=envelope.type, **detail)
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.warning("could not audit %s of %s: %s", step, envelope.type, describe(error))


def collect(stores: Stores, bus: MessageBus, *, older_than: timedelta = timedelta(0),
            queues: Iterable[str] = QUEUES) -> int:
    """Move the dead-letter queues' messages into the table; how many were new there (the host's
    and broker's give-ups: the consumer keeps its own as it dead-letters them)."""
    load_stages()
    now = datetime.now(UTC)
    added = 0
    for queue in queues:
        for taken in bus.take_dead_letters(queue, COLLECT_LIMIT):
            if taken.enqueued_at is not None and now - taken.enqueued_at < older_than:
                taken.release()  # back in its queue at once, for whoever looks next
                continue
            added += keep(stores, taken.source_queue, taken.text, taken.reason, taken.origin, taken.enqueued_at)
            taken.settle()  # only once it is kept: a crash before this collects it again, under the same id
    if added:
        log.warning("collected %d new dead letter(s)", added)
    return added


def dead_letter_of(queue: str, text: str, reason: str, origin: str, enqueued_at: datetime | None) -> DeadLetter:
    """The table's record of one dead letter; what its envelope says, when it has one. Its id is a
    hash of its queue and text, so the consumer and a later collection keep it once."""
    letter_id = hashlib.sha256(f"{queue}\x1f{text}".encode()).hexdigest()[:32]
    letter = DeadLetter(id=letter_id, queue=queue, at=enqueued_at or datetime.now(UTC), reason=reason,
                        origin=origin, body=text)
    try:
        envelope = read_envelope(text)
    except EnvelopeError:
        return letter
    payload = envelope.payload
    return replace(letter, type=envelope.type, connection=envelope.connection,
                   correlation_id=envelope.correlation_id, key=envelope.key, job_id=str(payload.get("job_id") or ""),
                   record=_record_of(envelope, queue), attempt=envelope.attempt)


def _record_of(envelope: Envelope, queue: str) -> str:
    spec = registry.handler_for(queue, envelope.type)
    if spec is not None and spec.record_of is not None:
        return spec.record_of(envelope)
    return str(envelope.payload.get("record") or "")


def redrive(stores: Stores, bus: MessageBus, letter_id: str, *, dry_run: bool = False) -> Redriven:
    """Send one dead letter's work again, as new work on its own queue; a dry run only says what it would do."""
    letter = stores.dead_letters.get(letter_id)
    if letter is None:
        return Redriven(letter_id, False, "no such dead letter")
    if letter.state == "redriven":
        return Redriven(letter_id, False, f"already redriven at {letter.redriven_at:%Y-%m-%d %H:%M:%S} UTC; "
                                          "a dead letter is redriven once (it is dead-lettered anew if it fails)")
    try:
        envelope = read_envelope(letter.body)
    except EnvelopeError as exc:
        return Redriven(letter_id, False, f"not a message this app can send again: {exc}")
    if dry_run:
        return Redriven(letter_id, False, f"would be sent again to {letter.queue}", would=True,
                        preview=preview_of(letter, envelope))
    fresh = replace(envelope, attempt=0, deferrals=0, since="", redrives=envelope.redrives + 1,
                    payload={name: value for name, value in envelope.payload.items() if name != "paced_slot"})
    bus.send(letter.queue, fresh)
    stores.dead_letters.mark_redriven(letter)
    stores.audit.append(envelope.correlation_id, "redriven", connection=envelope.connection, record=letter.record,
                        job_id=letter.job_id, dead_letter=letter.id, reason=letter.reason)
    return Redriven(letter_id, True, f"sent again to {letter.queue}")


def redrive_all(stores: Stores, bus: MessageBus, *, queue: str | None = None,
                connection: str | None = None, dry_run: bool = False) -> list[Redriven]:
    """Every open dead letter, or those of one queue and/or connection."""
    return [redrive(stores, bus, letter.id, dry_run=dry_run) for letter in stores.dead_letters.all("open")
            if (not queue or letter.queue == queue) and (not connection or letter.connection == connection)]


def preview_of(letter: DeadLetter, envelope: Envelope) -> dict[str, Any]:
    """What redriving ``letter`` would do, as an operator may see it: a notification names its channel
    and masked address (never its text); other work says which stage takes it again."""
    from shared.kinds import shown_address

    payload = envelope.payload
    shown: dict[str, Any] = {"queue": letter.queue, "type": envelope.type, "connection": envelope.connection,
                             "record": letter.record, "job_id": letter.job_id, "redrives": letter.redrives}
    if letter.queue == NOTIFICATIONS:
        channel = str(payload.get("channel") or "")
        return shown | {"channel": channel, "via": payload.get("via") or "", "rule": payload.get("rule") or "",
                        "to": shown_address(channel, str(payload.get("to") or "")),
                        "effect": "the notification is delivered unless its job shows it went out"}
    effects = {POLL_JOBS: "the poll runs again from its watermark",
               ERP_EVENTS: "the event is processed again as new work: the rules decide who is told",
               CALLBACKS: "the callback is applied again; a status only moves forward"}
    return shown | {"effect": effects.get(letter.queue, "the work is sent again to its queue")}


def summary(letter: DeadLetter) -> dict[str, object]:
    """What an operator sees of a dead letter: never its payload, which stays sealed."""
    return {"id": letter.id, "queue": letter.queue, "at": letter.at.isoformat(), "reason": letter.reason,
            "origin": letter.origin, "type": letter.type, "connection": letter.connection,
            "correlation_id": letter.correlation_id, "key": letter.key, "job_id": letter.job_id,
            "record": letter.record, "attempt": letter.attempt, "state": letter.state,
            "redriven_at": letter.redriven_at.isoformat() if letter.redriven_at else None,
            "redrives": letter.redrives}
