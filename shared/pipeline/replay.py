"""Replay of failed jobs: one job, or every failed job of a time window.

A replayed job goes back to ``pending`` with its original notification, and the
delivery stage sends it again. A job that reached its recipient (delivered, read,
answered) is never replayed; neither is one that is still under way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shared.model import NOTIFICATIONS, REPLAYABLE_STATUSES, Envelope
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


def replay_failed(stores: Stores, bus: MessageBus, since: datetime, until: datetime | None = None) -> list[Replayed]:
    """Every job that failed (or went undelivered, unanswered) with its last change in [since, until)."""
    until = until or datetime.now(UTC)
    return [_replay(stores, bus, job) for job in stores.jobs.with_status(REPLAYABLE_STATUSES, since, until)]


def _replay(stores: Stores, bus: MessageBus, job: JobRow) -> Replayed:
    if job.status not in REPLAYABLE_STATUSES:
        return Replayed(job.job_id, False, f"job is {job.status}; only failed jobs are replayed")
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
