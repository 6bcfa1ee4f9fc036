"""Replay of jobs that did not reach their recipient: one job, or every one of a time window.

A job that failed (failed, undelivered, busy, no-answer, canceled, an ``unknown`` email) or
whose notification was dead-lettered goes back to ``pending`` with its original notification,
and the delivery stage sends it again. A job stuck ``pending`` or ``dispatching`` for longer
than ``STUCK_AFTER`` (its message lost to the host's poison handling, say) is handed to the
delivery stage as it is: a ``dispatching`` job is first looked up at the provider there, so a
replay never sends twice what already went out. A job that reached its recipient (delivered,
read, answered) is never replayed, and neither is one that expired: its rule's validity period
ended before it could be sent, and an alert that can no longer help is not sent late, by an
operator either (a window of replays after an outage would otherwise send every stale alert).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.model import IN_FLIGHT_STATUSES, NOTIFICATIONS, REPLAYABLE_STATUSES, Envelope, now_iso
from shared.storage.bus import MessageBus
from shared.storage.tables import ConcurrencyError, JobRow, Stores


@dataclass(frozen=True)
class Replayed:
    """What a replay did to one job; in a dry run, ``would`` says whether it would be sent again and
    ``preview`` what would be sent to whom (masked), while ``replayed`` stays False."""

    job_id: str
    replayed: bool
    reason: str
    would: bool = False
    preview: dict[str, Any] = field(default_factory=dict)


def replay_job(stores: Stores, bus: MessageBus, job_id: str, *, dry_run: bool = False) -> Replayed:
    job = stores.jobs.get(job_id)
    if job is None:
        return Replayed(job_id, False, "no such job")
    return _replay(stores, bus, job, dry_run)


STUCK_AFTER = timedelta(minutes=15)


def replay_failed(stores: Stores, bus: MessageBus, since: datetime, until: datetime | None = None, *,
                  dry_run: bool = False) -> list[Replayed]:
    """Every job that did not reach its recipient with its last change in [since, until): failed ones,
    and ones stuck in flight for longer than ``STUCK_AFTER``."""
    until = until or datetime.now(UTC)
    stuck_before = min(until, datetime.now(UTC) - STUCK_AFTER)
    jobs = [*stores.jobs.with_status(REPLAYABLE_STATUSES, since, until),
            *(stores.jobs.with_status(IN_FLIGHT_STATUSES, since, stuck_before) if stuck_before > since else ())]
    return [_replay(stores, bus, job, dry_run) for job in jobs]


def preview_of(job: JobRow) -> dict[str, Any]:
    """What a replay of ``job`` would send to whom, as an operator may see it: the address masked as
    the audit shows it, never the message text."""
    from shared.kinds import shown_address

    fields = job.fields
    channel = str(fields.get("channel") or "")
    return {"channel": channel, "via": fields.get("via") or "",
            "to": shown_address(channel, str(fields.get("to") or "")), "rule": fields.get("rule") or "",
            "record": fields.get("record") or "", "status": job.status,
            "replays": int(fields.get("replays") or 0)}


def _replay(stores: Stores, bus: MessageBus, job: JobRow, dry_run: bool = False) -> Replayed:
    if job.status in IN_FLIGHT_STATUSES:
        # Its status is kept, so the delivery stage decides as for any redelivery (a dispatching
        # job is looked up at the provider first); only once it has not moved for STUCK_AFTER.
        updated = job.fields.get("updated_at") or job.fields.get("created_at") or now_iso()
        if datetime.now(UTC) - datetime.fromisoformat(str(updated)) < STUCK_AFTER:
            return Replayed(job.job_id, False, f"job is {job.status} and moved less than {STUCK_AFTER} ago; "
                                               "it is still under way")
        return _send_again(stores, bus, job, {}, f"was {job.status} and stuck; handed to delivery again", dry_run)
    if job.status == "expired":
        return Replayed(job.job_id, False, f"job expired: its rule's validity period ended at "
                                           f"{job.fields.get('expires_at') or 'its deadline'} before it could be "
                                           "sent, and an alert past its deadline is not sent late")
    if job.status not in REPLAYABLE_STATUSES:
        return Replayed(job.job_id, False,
                        f"job is {job.status}; only jobs that did not reach their recipient are replayed")
    previous = [*job.fields.get("previous_provider_ids", []), job.fields.get("provider_id")]
    return _send_again(stores, bus, job, {
        "status": "pending", "provider_id": None, "ambiguous": False, "dispatch_started": None,
        "previous_provider_ids": [sid for sid in previous if sid]}, f"was {job.status}; queued again", dry_run)


def _send_again(stores: Stores, bus: MessageBus, job: JobRow, changes: dict[str, object], sent: str,
                dry_run: bool = False) -> Replayed:
    """Put ``changes`` and one more replay on the job, then its notification back on the queue, audited;
    ``sent`` says what was done. A dry run changes nothing and says what would be sent."""
    raw = job.fields.get("envelope")
    if not raw:
        return Replayed(job.job_id, False, "job holds no notification to send again")
    if dry_run:
        would = f"{sent.split(';')[0]}; would be sent again"
        return Replayed(job.job_id, False, would, would=True, preview=preview_of(job))
    envelope = Envelope.from_json(raw)
    replays = job.fields.get("replays", 0) + 1
    try:
        stores.jobs.update(job, {**changes, "replays": replays})
    except ConcurrencyError:
        return Replayed(job.job_id, False, "job changed while replaying it; try again")
    # A MessageId of its own: Service Bus duplicate detection would drop a second message under the first one's.
    bus.send(NOTIFICATIONS, Envelope(envelope.type, envelope.connection, f"{job.job_id}|replay-{replays}",
                                     envelope.payload, envelope.correlation_id))
    stores.audit.append(envelope.correlation_id, "replayed", connection=envelope.connection,
                        record=job.fields.get("record", ""), job_id=job.job_id, previous_status=job.status)
    return Replayed(job.job_id, True, sent)
