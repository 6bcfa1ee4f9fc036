"""notifications: one job per message to one recipient, handed to its channel's flow.

A job row (id = the stable job id) carries the send through its states (``jobs.py``):
pending -> dispatching -> the provider's statuses; or suppressed (opted out), failed
(a permanent error), verifying (waiting for a one-time passcode), expired (past its rule's
validity period). However often a notification is delivered, its job is sent once: each flow
claims it before sending and, before any resend, asks its provider whether the first try landed.

- A notification whose rule has a validity period carries its deadline (``expires_at``, fixed when
  the event was routed). It is checked here, before any flow runs, on every delivery: the first, and
  one back from a pacing wait, a retry or a Verify code hours later. A job past it that no delivery
  has begun to send is marked ``expired`` and audited so, and never sent. A job already claimed
  for sending (``dispatching``) began in time: its flow asks the provider what became of it first.

- A notification's first delivery creates its job already claimed where the flow offers that
  (``deliver_fresh``: SMS and calls): pacing and the opt-out check run before the job exists, so a
  pacing wait holds no claim, and the create is the claim. Every other delivery opens the job as it is.

- A notification due inside its recipient's quiet hours (``shared.pipeline.quiet``) is held: sent again to
  its queue, unchanged but for ``held_until``, with a delay until the window ends (a hold longer than the
  queue allows comes back early and is held again), and audited ``held`` with the release time. Its rule's
  ``critical`` sends it at once, audited ``quiet-hours-overridden``. A hold past its deadline comes back
  and expires then, saying it was held. Nothing is written to the job while it is held.

- Each channel kind names its flow in ``shared.kinds`` (SMS and calls: ``twilio_flow``; Slack
  cards: ``slack_flow``; email: ``email_flow``); a flow meets ``shared.pipeline.flows.ChannelFlow``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared import kinds
from shared.config.loading import get_config
from shared.config.model import Connection
from shared.model import NOTIFICATION, NOTIFICATIONS, Envelope, now_iso
from shared.outcomes import PermanentFailure
from shared.pipeline.jobs import DISPATCH_LEASE_SECONDS, change, deadline_of, mark_not_sent, open_job, reached_provider
from shared.pipeline.quiet import release_time
from shared.pipeline.registry import handles
from shared.pipeline.twilio_flow import Delivery
from shared.storage.tables import JobRow, Stores, get_stores

# What the tests take from here: the stage's entry and the Twilio attempt it runs.
__all__ = ["DISPATCH_LEASE_SECONDS", "Delivery", "deliver_notification", "open_job"]


@handles(NOTIFICATIONS, NOTIFICATION, on_dead_letter=mark_not_sent)
def deliver_notification(envelope: Envelope) -> None:
    payload = envelope.payload
    config, stores = get_config(), get_stores()
    connection = config.connections.get(payload.get("via", ""))
    kind = kinds.CHANNELS.get(connection.kind) if connection is not None else None
    if connection is None or kind is None:
        raise PermanentFailure(f"no channel connection named {payload.get('via')!r} in the configuration "
                               f"(channel kinds: {', '.join(kinds.CHANNELS)})")
    flow = kinds.load(kind.flow)
    if held_for_quiet_hours(stores, connection, envelope):
        return
    if deliver_fresh(stores, connection, flow, envelope):
        return
    job = open_job(stores, envelope)
    if expired(stores, connection, envelope, job):
        return
    flow.deliver(stores, connection, envelope, job)


def deliver_fresh(stores: Stores, connection: Connection, flow: Any, envelope: Envelope) -> bool:
    """The first delivery of a notification, whose job does not exist yet, through its flow's
    ``deliver_fresh`` where it has one: the flow paces and checks the recipient before the job exists,
    then creates it already claimed. False when the usual path is to run: a retry, a replay or a
    released Verify gate (the job exists), a deadline passed, or a flow without that path."""
    fresh = getattr(flow, "deliver_fresh", None)
    if fresh is None or not first_delivery(envelope) or past_deadline(envelope):
        return False
    return bool(fresh(stores, connection, envelope, lambda job: expired(stores, connection, envelope, job)))


def held_for_quiet_hours(stores: Stores, connection: Connection, envelope: Envelope) -> bool:
    """Whether the notification is inside its quiet window and was put back on its queue until the window
    ends. One past its deadline is not held: it expires now. A critical one is not held either."""
    window = envelope.payload.get("quiet_hours")
    if not isinstance(window, dict):
        return False
    now = datetime.now(UTC)
    release = release_time(window, now)
    if release is None or past_deadline(envelope):
        return False
    if envelope.payload.get("critical"):
        if first_delivery(envelope):  # said once, not again on each retry inside the window
            audit_delivery(stores, connection, envelope, "quiet-hours-overridden", quiet_until=release.isoformat(),
                           reason="a critical rule: sent inside the recipient's quiet hours")
        return False
    from shared.storage.bus import MAX_DELAY_SECONDS, get_bus

    until = release.isoformat()
    held = replace(envelope, payload={**envelope.payload, "held_until": until})
    get_bus().send(NOTIFICATIONS, held, min((release - now).total_seconds(), MAX_DELAY_SECONDS))
    if envelope.payload.get("held_until") != until:  # a hold the queue cut short is not audited twice
        deadline = deadline_of(envelope.payload)
        audit_delivery(stores, connection, envelope, "held", status="held", held_until=until,
                       time_zone=window.get("time_zone"), reason="the recipient's quiet hours",
                       **({"expires_at": deadline.isoformat()} if deadline else {}))
    return True


def audit_delivery(stores: Stores, connection: Connection, envelope: Envelope, step: str, **detail: Any) -> None:
    payload = envelope.payload
    stores.audit.append(envelope.correlation_id, step, connection=connection.name, record=payload.get("record", ""),
                        job_id=payload.get("job_id", ""), channel=payload.get("channel"), rule=payload.get("rule"),
                        **detail)


def first_delivery(envelope: Envelope) -> bool:
    """Whether this is the notification as routed, not retried, redriven or sent again by a replay or a
    Verify release (those carry keys of their own): its job most likely does not exist yet."""
    return envelope.attempt == 0 and envelope.redrives == 0 and envelope.key == envelope.payload.get("job_id")


def past_deadline(envelope: Envelope) -> bool:
    deadline = deadline_of(envelope.payload)
    return deadline is not None and datetime.now(UTC) >= deadline


def expired(stores: Stores, connection: Connection, envelope: Envelope, job: JobRow) -> bool:
    """Whether the job is past its deadline and not to be sent: then it is marked and audited ``expired``."""
    deadline = deadline_of(envelope.payload)
    if deadline is None or datetime.now(UTC) < deadline:
        return False
    reason = f"not sent by {deadline.isoformat(timespec='seconds')}, the end of its rule's validity period"
    if envelope.payload.get("held_until"):
        reason += f"; held for the recipient's quiet hours until {envelope.payload['held_until']}"
    late = False

    def decide(row: JobRow) -> dict[str, Any] | None:
        nonlocal late
        late = row.status == "expired" or not (reached_provider(row) or row.status == "dispatching")
        if not late or row.status == "expired":
            return None  # sent or being sent in time; or expired already (a redelivery after a stop)
        return {"status": "expired", "reason": reason, "expires_at": deadline.isoformat(), "expired_at": now_iso()}

    change(stores, job, decide)
    if late:
        stores.audit.append(envelope.correlation_id, "expired", connection=connection.name,
                            record=envelope.payload.get("record", ""), job_id=job.job_id, status="expired",
                            channel=envelope.payload.get("channel"), rule=envelope.payload.get("rule"),
                            expires_at=deadline.isoformat(), reason=reason)
    return late
