"""Dead letters, first class: collected in one place, listed, shown and redriven.

Work is dead-lettered by the queue consumer (a permanent failure, retries out of time, an
unreadable message: audited there with its reason) or, for a crash that repeats, by the host
or the broker. Either way it lands in a dead-letter queue: ``<queue>-poison`` on both backends,
and on Service Bus also the queue's own dead-letter sub-queue. ``collect`` moves what those
queues hold into the ``deadletters`` table, once each (the id is a hash of the message), and
audits the ones the host parked, which the consumer never saw, running their stage's undo
(release an event's claim, mark a job not sent) as the consumer does for its own.

``redrive`` sends a dead letter's original envelope back to its queue as fresh work (attempt 0,
a new retry budget). Exactly-once still holds: an event's claim belongs to its correlation id,
which the redrive keeps, and a notification is its job, whose state says whether it went out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.model import QUEUES, Envelope, EnvelopeError
from shared.pipeline import registry
from shared.storage.bus import MessageBus, TakenDeadLetter, read_envelope
from shared.storage.tables import DeadLetter, Stores

log = logging.getLogger(__name__)

COLLECT_LIMIT = 500  # per queue and call: a long backlog is collected over several calls
# The timer leaves the newest alone for a moment, so whoever watches a poison queue sees them first.
SETTLED_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class Redriven:
    id: str
    redriven: bool
    reason: str


def collect(stores: Stores, bus: MessageBus, *, older_than: timedelta = timedelta(0),
            queues: Iterable[str] = QUEUES) -> int:
    """Move the dead-letter queues' messages into the table; how many were new there."""
    now = datetime.now(UTC)
    added = 0
    for queue in queues:
        for taken in bus.take_dead_letters(queue, COLLECT_LIMIT):
            if taken.enqueued_at is not None and now - taken.enqueued_at < older_than:
                taken.release()  # back in its queue at once, for whoever looks next
                continue
            added += _keep(stores, taken)
    if added:
        log.warning("collected %d new dead letter(s)", added)
    return added


def _keep(stores: Stores, taken: TakenDeadLetter) -> int:
    letter = dead_letter_of(taken)
    is_new = stores.dead_letters.add(letter)
    if is_new and taken.origin == "host":
        _undo_what_the_host_parked(letter)
    taken.settle()  # only once it is kept: a crash before this collects it again, under the same id
    return int(is_new)


def dead_letter_of(taken: TakenDeadLetter) -> DeadLetter:
    """The table's record of one taken message; what its envelope says, when it has one."""
    letter_id = hashlib.sha256(f"{taken.source_queue}\x1f{taken.text}".encode()).hexdigest()[:32]
    at = taken.enqueued_at or datetime.now(UTC)
    letter = DeadLetter(id=letter_id, queue=taken.source_queue, at=at, reason=taken.reason, origin=taken.origin,
                        body=taken.text)
    try:
        envelope = read_envelope(taken.text)
    except EnvelopeError:
        return letter
    payload = envelope.payload
    return replace(letter, type=envelope.type, connection=envelope.connection,
                   correlation_id=envelope.correlation_id, key=envelope.key, job_id=str(payload.get("job_id") or ""),
                   record=_record_of(envelope, taken.source_queue), attempt=envelope.attempt)


def _record_of(envelope: Envelope, queue: str) -> str:
    spec = registry.handler_for(queue, envelope.type)
    if spec is not None and spec.record_of is not None:
        return spec.record_of(envelope)
    return str(envelope.payload.get("record") or "")


def _undo_what_the_host_parked(letter: DeadLetter) -> None:
    from shared.pipeline.consume import undo_for_dead_letter

    registry.load_stages()
    try:
        envelope = read_envelope(letter.body)
    except EnvelopeError:
        return
    spec = registry.handler_for(letter.queue, envelope.type)
    if spec is not None:
        undo_for_dead_letter(envelope, spec, letter.reason)


def dead_letters(stores: Stores, state: str | None = "open") -> list[DeadLetter]:
    return stores.dead_letters.all(state)


def redrive(stores: Stores, bus: MessageBus, letter_id: str) -> Redriven:
    """Send one dead letter's work again, as new work on its own queue."""
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
    fresh = replace(envelope, attempt=0, deferrals=0, since="", redrives=envelope.redrives + 1,
                    payload={name: value for name, value in envelope.payload.items() if name != "paced_slot"})
    bus.send(letter.queue, fresh)
    stores.dead_letters.mark_redriven(letter)
    stores.audit.append(envelope.correlation_id, "redriven", connection=envelope.connection, record=letter.record,
                        job_id=letter.job_id, dead_letter=letter.id, reason=letter.reason)
    return Redriven(letter_id, True, f"sent again to {letter.queue}")


def redrive_all(stores: Stores, bus: MessageBus, accept: Callable[[DeadLetter], bool] = lambda _: True,
                ) -> list[Redriven]:
    return [redrive(stores, bus, letter.id) for letter in stores.dead_letters.all("open") if accept(letter)]


def summary(letter: DeadLetter) -> dict[str, object]:
    """What an operator sees of a dead letter: never its payload, which stays sealed."""
    return {"id": letter.id, "queue": letter.queue, "at": letter.at.isoformat(), "reason": letter.reason,
            "origin": letter.origin, "type": letter.type, "connection": letter.connection,
            "correlation_id": letter.correlation_id, "key": letter.key, "job_id": letter.job_id,
            "record": letter.record, "attempt": letter.attempt, "state": letter.state,
            "redriven_at": letter.redriven_at.isoformat() if letter.redriven_at else None,
            "redrives": letter.redrives}
