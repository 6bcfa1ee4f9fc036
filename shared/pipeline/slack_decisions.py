"""Slack decisions: an approver's outcome recorded once, written back to Dynamics, shown on the card.

Shared by a plain Approve / Reject click (``slack_flow``) and an approval confirmed with a
one-time code (``slack_codes``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.config.loading import get_config
from shared.erp.polling import decision_writer
from shared.model import Envelope, now_iso
from shared.outcomes import PermanentFailure
from shared.pipeline.jobs import merge
from shared.storage.tables import JobRow, Stores


def audit_job(stores: Stores, job: JobRow, connection: str, step: str, **detail: Any) -> None:
    stores.audit.append(str(job.fields.get("correlation_id", "")), step, connection=connection,
                        record=str(job.fields.get("record", "")), job_id=job.job_id, **detail)


def notification_of(job: JobRow) -> dict[str, Any]:
    """The notification the card was posted from (rendered facts, approver, work item)."""
    return Envelope.from_json(job.fields["envelope"]).payload


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
           key: str, how: str = "") -> None:
    """Record ``outcome`` once: claim it on the job (ConcurrencyError when another decision got
    there first), Validate and Complete in Dynamics, show it on the card, audit it. Handling the
    same ``key`` again (the queue's retry) resumes after the last step that was done."""
    from shared.channels.slack.client import decided_card

    if job.fields.get("decision_key") != key:  # of two racing decisions, one claims the job
        job = stores.jobs.update(job, {"decision": outcome, "decided_by": email, "decided_at": now_iso(),
                                       "decision_key": key})
    notification = notification_of(job)
    if "written" not in job.fields:
        connection_of_source = get_config().connections.get(str(job.fields.get("source", "")))
        written = write_back(connection_of_source, notification, outcome, email, how)
        job = merge_job(stores, job.job_id, {"written": written})
    if job.fields.get("shown"):
        return
    written = bool(job.fields["written"])
    title = str(notification.get("title") or "Approval")
    facts = [tuple(fact) for fact in notification.get("facts", [])]
    decision = f"{outcome}d" if written else "Closed in Dynamics before this click; nothing"
    text, blocks = decided_card(title, facts, decision, user, datetime.now(UTC))
    slack.update_card(str(job.fields.get("slack_channel", "")), str(job.fields.get("slack_ts", "")), text, blocks)
    if written:
        audit_job(stores, job, connection, "decided", user=user, outcome=outcome, by=email,
                  decided_at=job.fields["decided_at"], **({"confirmed": how} if how else {}))
    else:
        audit_job(stores, job, connection, "work-item-closed", user=user,
                  reason="the work item was completed or recalled elsewhere")
    merge_job(stores, job.job_id, {"shown": True})


def merge_job(stores: Stores, job_id: str, changes: dict[str, Any]) -> JobRow:
    """Apply ``changes`` to the job as it is now (``jobs.merge``); a job that vanished is a failure."""
    job = merge(stores, job_id, changes)
    if job is None:
        raise PermanentFailure(f"job {job_id} vanished")
    return job


def write_back(connection: Any, notification: dict[str, Any], outcome: str, email: str, how: str = "") -> bool:
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
    comment = f"{outcome}d in Slack by {email}" + (f", {how}" if how else "")
    writer.write_decision(connection, work_item, outcome, comment)
    return True
