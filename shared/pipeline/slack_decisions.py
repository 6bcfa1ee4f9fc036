"""Slack decisions: an approver's outcome recorded once, written back to Dynamics, shown on the card.

Shared by a plain Approve / Reject click (``slack_flow``) and an approval confirmed with a
one-time code (``slack_codes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.config.loading import get_config
from shared.erp.polling import decision_writer
from shared.model import Envelope, now_iso
from shared.outcomes import PermanentFailure, RetryLater
from shared.pipeline.escalation import acknowledge
from shared.pipeline.jobs import ON_TRAIL, Step, change, merge
from shared.storage.tables import ConcurrencyError, JobRow, Stores

if TYPE_CHECKING:
    from shared.channels.slack.connection import SlackConnection

log = logging.getLogger(__name__)


# On a job: its decision's step was written with the change that recorded whether Dynamics took it.
DECISION_AUDITED = "decision_audited"


def past_tense(outcome: str) -> str:
    """Approve -> Approved, Reject -> Rejected: what the card and the comment say was done."""
    return outcome + ("d" if outcome.endswith("e") else "ed")


def audit_job(stores: Stores, job: JobRow, connection: str, step: str, **detail: Any) -> None:
    stores.audit.append(str(job.fields.get("correlation_id", "")), step, connection=connection,
                        record=str(job.fields.get("record", "")), job_id=job.job_id, **detail)


def notification_of(job: JobRow) -> dict[str, Any]:
    """The notification the card was posted from (rendered facts, approver, work item)."""
    return Envelope.from_json(job.fields["envelope"]).payload


def job_named_by(click: Mapping[str, Any]) -> str:
    """The job id the clicked button carries ("" when it carries none), without the suffix that says which
    modal the click opens."""
    from shared.channels.slack.client import CODE_VALUE_SUFFIX, REASON_VALUE_SUFFIX

    value = (click.get("actions") or [{}])[0].get("value")
    return value.removesuffix(CODE_VALUE_SUFFIX).removesuffix(REASON_VALUE_SUFFIX) if isinstance(value, str) else ""


def open_modal(connection: SlackConnection, click: Mapping[str, Any], build: Callable[[str, str], dict[str, Any]],
               what: str) -> str:
    """Open the modal ``build(job_id, card text)`` makes for this click, before its trigger_id expires
    (Slack's 3 s): the view id, or "" when Slack would not open it (logged, naming ``what``)."""
    from shared.channels.slack.client import SlackPermanentError, interactive_slack_channel

    job_id = job_named_by(click)
    about = str((click.get("message") or {}).get("text") or "")
    try:
        return interactive_slack_channel(connection).open_view(str(click.get("trigger_id", "")), build(job_id, about))
    except (SlackPermanentError, RetryLater) as exc:
        log.warning("the %s for job %s did not open: %s", what, job_id, exc)
        return ""


def tell(slack: Any, channel_id: str, user: str, view_id: str, text: str) -> None:
    """Show ``text`` to the one user: in their open code modal, else as an ephemeral message."""
    from shared.channels.slack.client import SlackPermanentError, notice_modal

    if view_id:
        try:
            slack.update_view(view_id, notice_modal(text))
            return
        except SlackPermanentError:
            pass  # the modal was closed meanwhile
    slack.post_ephemeral(channel_id, user, text)


def decide(stores: Stores, slack: Any, connection: str, job: JobRow, outcome: str, user: str, email: str, *,
           key: str, how: str = "", owner: str = "", reason: str = "") -> None:
    """Record ``outcome`` once: claim it on the job (ConcurrencyError when another decision got
    there first), Validate and Complete in Dynamics, audit it, show it on the card.

    Handling the same ``key`` again (the queue's retry) resumes after the last step that was done;
    with an ``owner`` (the correlation id of the queued click) only that owner's own retries resume,
    and another delivery of the same click leaves the decision to the one that claimed it.
    Two job writes: the claim, and whether Dynamics took the decision (before anything else is
    done, so that a retry never asks Dynamics again and mistakes our own completion for one made
    elsewhere). The audit row is written at most once and the card update is the same on every
    try, so a retry after either changes nothing (written with the second job write, beside the job, when
    its trail names it)."""
    claimed = claim_decision(stores, job, outcome, email, key, owner)
    if claimed is None or claimed.fields.get("shown"):
        return  # another delivery of the same click holds it, or it was shown already
    job, notification = claimed, notification_of(claimed)
    if "written" not in job.fields:
        connection_of_source = get_config().connections.get(str(job.fields.get("source", "")))
        written = write_back(connection_of_source, notification, outcome, email, how, reason)
        changes: dict[str, Any] = {"written": written}
        step = None
        if job.fields.get(ON_TRAIL):  # the decision's step beside the job, written with this change
            changes[DECISION_AUDITED] = True
            step = decision_step(job, changes, connection, user, how)
        job = merge_job(stores, job, changes, step)
    if not job.fields.get(DECISION_AUDITED):  # else written once by its fixed key in the audit table
        audit_decision(stores, job, connection, user, how)
    acknowledge(stores, job, by=user, how="slack", owner=key, connection=connection)
    show_decision(slack, job, notification, user, reason)


def claim_decision(stores: Stores, job: JobRow, outcome: str, email: str, key: str, owner: str) -> JobRow | None:
    """The job with the decision of ``key`` on it: claimed now, or earlier by this owner (a retry).
    None when another delivery of the same click (another owner) claimed it; ConcurrencyError when
    another decision did. The claim is written under the ETag the row was read (or last written) with."""
    seen = job

    def claim(row: JobRow) -> dict[str, Any] | None:
        nonlocal seen
        seen = row
        if row.fields.get("decision") or row.fields.get("decision_key"):
            return None  # decided: by this click (resume) or another one
        return {"decision": outcome, "decided_by": email, "decided_at": now_iso(), "decision_key": key,
                "decision_owner": owner}

    claimed = change(stores, job, claim)
    if claimed is not None:
        return claimed
    if seen.fields.get("decision_key") != key:
        if not seen.fields.get("decision"):
            raise PermanentFailure(f"job {job.job_id} vanished")
        raise ConcurrencyError(f"job {job.job_id} was decided by another click: {seen.fields['decision']}")
    held = str(seen.fields.get("decision_owner") or "")
    return None if owner and held and held != owner else seen


def decision_step(job: JobRow, changes: Mapping[str, Any], connection: str, user: str, how: str) -> Step:
    """The decision's audit step, once ``changes`` (whether Dynamics took it) are on the claimed job:
    ``decided``, or ``work-item-closed`` when Dynamics had closed it already; at the time of the claim."""
    fields = {**job.fields, **changes}
    if fields["written"]:
        step, detail = "decided", {"outcome": fields["decision"], "by": fields["decided_by"],
                                   "decided_at": fields["decided_at"], **({"confirmed": how} if how else {})}
    else:
        step, detail = "work-item-closed", {"reason": "the work item was completed or recalled elsewhere"}
    return Step(step, connection, {"user": user, **detail}, at=datetime.fromisoformat(str(fields["decided_at"])))


def audit_decision(stores: Stores, job: JobRow, connection: str, user: str, how: str) -> None:
    """The decision's audit row in the audit table, written once however often this runs (its key is fixed
    by the job and the time of the claim)."""
    step = decision_step(job, {}, connection, user, how)
    entry = step.entry(job)
    stores.audit.append_once(entry.correlation_id, entry.step, once=f"{job.job_id}|decision", at=step.at,
                             connection=connection, record=entry.record, job_id=job.job_id, **entry.detail)


def show_decision(slack: Any, job: JobRow, notification: dict[str, Any], user: str, reason: str = "") -> None:
    """The card without buttons, saying who decided what, when and why, with its link to the record (the
    same on every try: a retry carries the same reason)."""
    from shared.channels.slack.client import decided_card

    fields = job.fields
    title = str(notification.get("title") or "Approval")
    facts = [tuple(fact) for fact in notification.get("facts", [])]
    closed = "Closed in Dynamics before this click; nothing"
    decision = past_tense(str(fields["decision"])) if fields["written"] else closed
    decided_at = datetime.fromisoformat(str(fields["decided_at"])).astimezone(UTC)
    link = str(notification.get("link") or "") or None
    text, blocks = decided_card(title, facts, decision, user, decided_at, link=link,
                                reason=reason if fields["written"] else "")
    slack.update_card(str(fields.get("slack_channel", "")), str(fields.get("slack_ts", "")), text, blocks)


def merge_job(stores: Stores, job: JobRow | str, changes: dict[str, Any], step: Step | None = None) -> JobRow:
    """Apply ``changes`` to the job as it is now (``jobs.merge``), with ``step``; a job that vanished is a failure."""
    merged = merge(stores, job, changes, step)
    if merged is None:
        raise PermanentFailure(f"job {job if isinstance(job, str) else job.job_id} vanished")
    return merged


def write_back(connection: Any, notification: dict[str, Any], outcome: str, email: str, how: str = "",
               reason: str = "") -> bool:
    """Complete the ERP's workflow work item; False when it is no longer open (nothing written)."""
    writer = decision_writer(connection.kind) if connection is not None else None
    if writer is None:
        raise PermanentFailure("the card's source is not an ERP connection that takes decisions; "
                               "nothing to write back to")
    work_item = str(notification.get("work_item_id") or "")
    if not work_item:
        raise PermanentFailure("the card names no workflow work item")
    if not writer.decision_open(connection, work_item):
        return False
    comment = f"{past_tense(outcome)} in Slack by {email}" + (f", {how}" if how else "")
    comment += f": {reason}" if reason else ""
    writer.write_decision(connection, work_item, outcome, comment)
    return True
