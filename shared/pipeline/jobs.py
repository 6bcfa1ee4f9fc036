"""The job lifecycle, in one place: one job per notification, one state machine, one ETag loop.

A job row (id = the stable job id of one message to one recipient) carries the send through
its states (``shared.model``'s status order): ``pending -> dispatching ->`` the provider's
statuses, or ``suppressed``, ``failed``, ``verifying``, ``dead-lettered``, ``expired``. A status only moves
forward, whatever order callbacks and events arrive in.

Every change of a job goes through ``change``: read the row, decide the changes from it, write
them under its ETag, and on a conflict read it again and decide again. Callers never lose a
concurrent change and never apply a decision made on a stale row.

Before any resend the channel asks its provider whether the first try landed; these helpers
say when a job has reached its provider (never send again) and when another delivery may be
sending it right now (wait).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.config.model import Connection
from shared.model import Envelope, moves_forward, now_iso, parse_utc_time, status_rank
from shared.outcomes import RetryLater
from shared.storage.tables import AuditEntry, ConcurrencyError, JobRow, Stores, get_stores, new_step_key, utc_now

log = logging.getLogger(__name__)

AMBIGUOUS_RECHECK_SECONDS = 30.0
# A delivery that claimed a job and then went silent this long is presumed gone (a crash).
DISPATCH_LEASE_SECONDS = 120.0
CHANGE_TRIES = 5
# On a notification and its job: its ERP change's audit names the job (``routed``, ``escalated``), so the
# job's own steps are written beside it, in its partition of the jobs table, where the trail finds them.
# A job without it (one from before, or queued by other means) writes its steps to the audit table.
ON_TRAIL = "on_trail"
# What a notification's job keeps of it, beside its state.
_KEPT_FIELDS = ("rule", "channel", "via", "to", "record", "source", "event", ON_TRAIL)

Decide = Callable[[JobRow], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Step:
    """An audit step of a job's own (its send, a provider status), written with the job change that causes
    it, in one request (``JobStore.update``). Its ERP change and record are the job's unless named here."""

    name: str
    connection: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str = ""
    record: str | None = None
    at: datetime = field(default_factory=utc_now)

    def entry(self, job: JobRow) -> AuditEntry:
        fields = job.fields
        record = self.record if self.record is not None else str(fields.get("record") or "")
        return AuditEntry(self.correlation_id or str(fields.get("correlation_id") or ""), self.name, self.at,
                          self.connection, record, job.job_id, dict(self.detail))


def new_job_fields(envelope: Envelope) -> dict[str, Any]:
    """What a notification's job row holds when it is created: pending, with what a replay needs."""
    payload = envelope.payload
    return {"status": "pending", "correlation_id": envelope.correlation_id, "created_at": now_iso(),
            "envelope": envelope.to_json(),  # what a replay sends again (the row is sealed)
            **{name: payload.get(name) for name in _KEPT_FIELDS}}


def dispatch_claim(recipient: str, started: str | None = None) -> dict[str, Any]:
    """The fields that claim a job for one send: ``dispatching`` under a fresh lease (``dispatch_at``);
    ``dispatch_started`` stays the first claim's, where the provider is searched from before a resend."""
    now = now_iso()
    return {"status": "dispatching", "to": recipient, "dispatch_id": uuid.uuid4().hex, "dispatch_at": now,
            "ambiguous": False, "dispatch_started": started or now}


def open_job(stores: Stores, envelope: Envelope) -> JobRow:
    """The job row for this notification, created on first sight."""
    payload = envelope.payload
    created = stores.jobs.create(payload["job_id"], new_job_fields(envelope))
    if created is not None:
        return created
    existing = stores.jobs.get(payload["job_id"])
    if existing is None:  # deleted between the two calls: start again
        raise RetryLater(1.0, "job row vanished while opening it")
    return existing


def open_claimed_job(stores: Stores, envelope: Envelope, recipient: str, **extra: Any) -> JobRow | None:
    """The notification's job created already claimed for sending to ``recipient`` (one write instead of
    a create and a claim), with ``extra`` fields; None when the job exists already, whatever its state: it is
    left as it is."""
    fields = {**new_job_fields(envelope), **dispatch_claim(recipient), **extra}
    return stores.jobs.create(envelope.payload["job_id"], {**fields, "updated_at": fields["dispatch_at"]})


def change(stores: Stores, job: JobRow | str, decide: Decide, tries: int = CHANGE_TRIES,
           step: Step | None = None) -> JobRow | None:
    """Apply what ``decide`` says to the job as it is now; the written row, or None when there is no
    such job or ``decide`` wants no change. ``job`` as read (tried first) or its id. With a ``step``,
    the step is written with the change, in the same request: both or neither, and once.

    A row this process remembers (``JobStore.recent``) is tried without reading it: the write is
    conditional on its ETag, so a decision on a row that moved on is refused and made again on the
    row read then; a decision to change nothing is only taken on a row read now."""
    row = (stores.jobs.recent(job) or stores.jobs.get(job)) if isinstance(job, str) else job
    # One key for every try: a try that was written though its answer was lost is known by it on the row.
    step_key = new_step_key(step.at) if step is not None else ""
    for _ in range(tries):
        if row is None:
            return None
        if step is not None and row.fields.get("last_step") == step_key:
            stores.audit.written(step.entry(row))  # written by an earlier try whose answer was lost
            return row
        changes = decide(row)
        if not changes and row.remembered:
            row = stores.jobs.get(row.job_id)  # perhaps moved on by another instance: decide on it as it is
            changes = decide(row) if row is not None else None
        if not changes or row is None:
            return None
        try:
            return write(stores, row, {**changes, "updated_at": now_iso()}, step, step_key)
        except ConcurrencyError:
            row = stores.jobs.get(row.job_id)  # changed meanwhile: decide again on what it is now
    raise ConcurrencyError(f"job {job if isinstance(job, str) else job.job_id} kept changing")


def write(stores: Stores, row: JobRow, changes: Mapping[str, Any], step: Step | None = None,
          step_key: str = "") -> JobRow:
    """Write ``changes`` over the job as read (ConcurrencyError if it moved on), with ``step``: in one
    request, beside the job, when its ERP change's audit names it (``ON_TRAIL``); else in the audit table
    once the change is written."""
    if step is None or not row.fields.get(ON_TRAIL):
        written = stores.jobs.update(row, changes)
        if step is not None:
            stores.audit.add(step.entry(written))
        return written
    return stores.jobs.update(row, changes, step.entry(row), step_key)


def merge(stores: Stores, job: JobRow | str, changes: Mapping[str, Any], step: Step | None = None) -> JobRow | None:
    """Set ``changes`` on the job as it is now, whatever else changed meanwhile (with ``step``)."""
    return change(stores, job, lambda _: changes, step=step)


def advance(stores: Stores, job: JobRow | str, status: str, **changes: Any) -> JobRow | None:
    """Move the job to ``status`` with ``changes`` when that is further than where it is; None when
    it is there or further already (a late or repeated callback), or gone."""
    return change(stores, job, lambda row: {"status": status, **changes} if moves_forward(row.status, status)
                  else None)


def record_send(stores: Stores, job: JobRow, status: str, step: Step | None = None, **changes: Any) -> JobRow:
    """What the provider said about a send, on the job: the provider's fields always, its status
    only when it is further than the job's (a callback may have moved the job meanwhile); ``step``
    written with it."""
    def decide(row: JobRow) -> dict[str, Any]:
        return {**changes, "status": status if moves_forward(row.status, status) else row.status}

    written = change(stores, job, decide, step=step)
    if written is None:
        raise RetryLater(1.0, f"job {job.job_id} vanished while its send was recorded")
    return written


def reached_provider(job: JobRow) -> bool:
    """Whether the job's message went out (or ended): then it is never sent again."""
    return status_rank(job.status) > status_rank("dispatching") or bool(job.fields.get("provider_id"))


def wait_for_live_dispatch(job: JobRow) -> None:
    """RetryLater while another delivery may be sending this job right now: one that claimed
    it within the lease and is not known to have ended ambiguously."""
    fields = job.fields
    claimed_at = datetime.fromisoformat(fields.get("dispatch_at") or fields.get("updated_at") or now_iso())
    silent = (datetime.now(UTC) - claimed_at).total_seconds()
    if not fields.get("ambiguous") and silent < DISPATCH_LEASE_SECONDS:
        raise RetryLater(AMBIGUOUS_RECHECK_SECONDS, "another delivery of this job is under way")


def deadline_of(payload: Mapping[str, Any]) -> datetime | None:
    """When the notification stops being worth sending (its rule's validity period), or None."""
    raw = payload.get("expires_at")
    try:
        return parse_utc_time(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return None  # not one we wrote: treated as no deadline


def mark_not_sent(envelope: Envelope, reason: str) -> None:
    """A dead-lettered notification that never reached its provider: its job says so, and a
    replay takes it. A job already at the provider, or mid-dispatch, is left as it is."""
    changed = change(get_stores(), str(envelope.payload.get("job_id", "")),
                     lambda row: {"status": "dead-lettered", "reason": reason} if row.status == "pending" else None)
    if changed is not None:
        log.info("job %s marked dead-lettered", changed.job_id)


class JobAttempt:
    """One attempt at one job, on one channel's connection: its audit lines and state changes."""

    def __init__(self, stores: Stores, connection: Connection, envelope: Envelope, job: JobRow) -> None:
        self.stores, self.connection, self.envelope, self.job = stores, connection, envelope, job
        self.payload: dict[str, Any] = envelope.payload
        self.job_id: str = self.payload["job_id"]

    def audit(self, step: str, **detail: Any) -> None:
        self.stores.audit.append(self.envelope.correlation_id, step, connection=self.connection.name,
                                 record=self.payload.get("record", ""), job_id=self.job_id, **detail)

    def step(self, step: str, **detail: Any) -> Step:
        """An audit step of this attempt, to be written with the job change it comes with (``update``)."""
        return Step(step, self.connection.name, detail, self.envelope.correlation_id, self.payload.get("record", ""))

    def update(self, step: Step | None = None, **changes: Any) -> None:
        self.job = write(self.stores, self.job, {**changes, "updated_at": now_iso()}, step)

    def finish(self, status: str, step: str, **detail: Any) -> None:
        self.update(self.step(step, status=status, **detail), status=status,
                    **{k: v for k, v in detail.items() if k in ("reason", "error_code")})

    def wait_for_live_dispatch(self) -> None:
        """Another delivery may be sending this job right now: leave it be unless it is known
        to have ended ambiguously or has been silent longer than the lease."""
        wait_for_live_dispatch(self.job)

    def claim_dispatch(self, recipient: str) -> None:
        """Move the job to dispatching; RetryLater when another delivery changed it first."""
        try:
            self.update(**dispatch_claim(recipient, self.job.fields.get("dispatch_started")))
        except ConcurrencyError:
            raise RetryLater(AMBIGUOUS_RECHECK_SECONDS, "another delivery of this job is under way") from None

