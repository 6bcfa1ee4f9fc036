"""Replay of jobs that did not reach their recipient: one job, or every one of a time window.

A job that failed (failed, undelivered, busy, no-answer, canceled, an ``unknown`` email) or
whose notification was dead-lettered goes back to ``pending`` with its original notification,
and the delivery stage sends it again. A job stuck ``pending`` or ``dispatching`` for longer
than ``STUCK_AFTER`` (its message lost to the host's poison handling, say) is handed to the
delivery stage as it is: a ``dispatching`` job is first looked up at the provider there, so a
replay never sends twice what already went out. A job that reached its recipient (delivered,
read, answered) is never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.model import IN_FLIGHT_STATUSES, NOTIFICATIONS, REPLAYABLE_STATUSES, Envelope, now_iso
from shared.storage.bus import MessageBus
from shared.storage.tables import ConcurrencyError, JobRow, Stores


@dataclass(frozen=True)
class Replayed:
    job_id: str
    replayed: bool
    reason: str


def replay_job(stores: Stores, bus: MessageBus, job_id: str) -> Replayed:
    job = stores.jobs.get(job_id)
    if job is None:
        return Replayed(job_id, False, "no such job")
    return _replay(stores, bus, job)


STUCK_AFTER = timedelta(minutes=15)


def replay_failed(stores: Stores, bus: MessageBus, since: datetime, until: datetime | None = None) -> list[Replayed]:
    """Every job that did not reach its recipient with its last change in [since, until): failed ones,
    and ones stuck in flight for longer than ``STUCK_AFTER``."""
    until = until or datetime.now(UTC)
    stuck_before = min(until, datetime.now(UTC) - STUCK_AFTER)
    jobs = [*stores.jobs.with_status(REPLAYABLE_STATUSES, since, until),
            *(stores.jobs.with_status(IN_FLIGHT_STATUSES, since, stuck_before) if stuck_before > since else ())]
    return [_replay(stores, bus, job) for job in jobs]


def _replay(stores: Stores, bus: MessageBus, job: JobRow) -> Replayed:
    if job.status in IN_FLIGHT_STATUSES:
        return _hand_on_stuck(stores, bus, job)
    if job.status not in REPLAYABLE_STATUSES:
        return Replayed(job.job_id, False,
                        f"job is {job.status}; only jobs that did not reach their recipient are replayed")
    raw = job.fields.get("envelope")
    if not raw:
        return Replayed(job.job_id, False, "job holds no notification to send again")
    envelope = Envelope.from_json(raw)
    previous = [*job.fields.get("previous_provider_ids", []), job.fields.get("provider_id")]
    try:
        stores.jobs.update(job, {
            "status": "pending", "provider_id": None, "ambiguous": False, "dispatch_started": None,
            "previous_provider_ids": [sid for sid in previous if sid], "replays": job.fields.get("replays", 0) + 1,
        })
    except ConcurrencyError:
        return Replayed(job.job_id, False, "job changed while replaying it; try again")
    replays = job.fields.get("replays", 0) + 1
    # A MessageId of its own: Service Bus duplicate detection would drop a second message under the first one's.
    bus.send(NOTIFICATIONS, Envelope(envelope.type, envelope.connection, f"{job.job_id}|replay-{replays}",
                                     envelope.payload, envelope.correlation_id))
    stores.audit.append(envelope.correlation_id, "replayed", connection=envelope.connection,
                        record=job.fields.get("record", ""), job_id=job.job_id, previous_status=job.status)
    return Replayed(job.job_id, True, f"was {job.status}; queued again")


def _hand_on_stuck(stores: Stores, bus: MessageBus, job: JobRow) -> Replayed:
    """A job in flight is replayed only once it has not moved for ``STUCK_AFTER``; its status is kept,
    so the delivery stage decides as for any redelivery (a dispatching job is looked up first)."""
    updated = job.fields.get("updated_at") or job.fields.get("created_at") or now_iso()
    if datetime.now(UTC) - datetime.fromisoformat(str(updated)) < STUCK_AFTER:
        return Replayed(job.job_id, False, f"job is {job.status} and moved less than {STUCK_AFTER} ago; "
                                           "it is still under way")
    raw = job.fields.get("envelope")
    if not raw:
        return Replayed(job.job_id, False, "job holds no notification to send again")
    envelope = Envelope.from_json(raw)
    replays = job.fields.get("replays", 0) + 1
    try:
        stores.jobs.update(job, {"replays": replays})
    except ConcurrencyError:
        return Replayed(job.job_id, False, "job changed while replaying it; try again")
    bus.send(NOTIFICATIONS, Envelope(envelope.type, envelope.connection, f"{job.job_id}|replay-{replays}",
                                     envelope.payload, envelope.correlation_id))
    stores.audit.append(envelope.correlation_id, "replayed", connection=envelope.connection,
                        record=job.fields.get("record", ""), job_id=job.job_id, previous_status=job.status)
    return Replayed(job.job_id, True, f"was {job.status} and stuck; handed to delivery again")
