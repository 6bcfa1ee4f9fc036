"""A Slack Reject asks for a reason, which goes to Dynamics as the work item's comment.

1. The click, while Slack waits (3 s): the interactions endpoint opens the reason modal with the
   click's ``trigger_id`` (valid 3 s, once; one Slack call) and queues the click with the modal's
   view id. Behind the queue the click gets the checks of every click (already decided, not the
   approver), told to the user in the channel and in the modal; nothing is decided yet.
2. The submitted reason, while Slack waits: an empty one keeps the modal open; otherwise it is
   queued, keyed by the modal, and the modal says the rejection is being recorded.
3. The queued reason: the approver check again (the modal is the user's, not the card's), then
   the decision of a plain click, once (``slack_decisions.decide``): Validate, Complete with
   outcome Reject and the reason in the comment, the card, the audit.

The reason is the approver's own text: it travels sealed on the queue and is neither logged nor audited.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from shared.channels.slack.connection import SlackConnection
from shared.config.loading import get_config
from shared.model import CALLBACKS, SLACK_REJECT_REASON, Envelope
from shared.outcomes import PermanentFailure, RetryLater
from shared.pipeline.registry import handles
from shared.pipeline.slack_decisions import audit_job, decide, notification_of, open_modal
from shared.storage.tables import ConcurrencyError, get_stores

log = logging.getLogger(__name__)

REASON_SCOPE = "slack-reason"
RECORDING = "Your rejection is being recorded in Dynamics 365 with your reason; the card will show it."
NO_REASON = "Say in a few words why this is rejected."
NOT_OPENED = "The reason window could not be opened in time; nothing was rejected. Click Reject again."
UNKNOWN = "This request is no longer known; nothing was rejected."


# --- 1. the click, while Slack waits -------------------------------------------------------------


def open_reason_modal(connection: SlackConnection, click: Mapping[str, Any]) -> str:
    """Open the reason modal for this Reject click before its trigger_id expires: the view id, or ""."""
    from shared.channels.slack.client import reason_modal

    return open_modal(connection, click, reason_modal, "reason modal")


def notice(slack: Any, channel_id: str, user: str, view_id: str, text: str) -> None:
    """Tell the user who clicked Reject: in the channel, and in the reason modal when it is open."""
    from shared.channels.slack.client import REASON_CALLBACK_ID, REASON_VIEW_TITLE, SlackPermanentError, notice_modal

    slack.post_ephemeral(channel_id, user, text)
    if view_id:
        with contextlib.suppress(SlackPermanentError):  # closed meanwhile: the channel has the message
            slack.update_view(view_id, notice_modal(text, title=REASON_VIEW_TITLE, callback_id=REASON_CALLBACK_ID))


# --- 2. the submitted reason, while Slack waits --------------------------------------------------


def accept_reason(connection: SlackConnection, submission: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's answer to a submitted reason: errors (the modal stays) or an update, the reason queued."""
    from shared.channels.slack.client import (
        REASON_BLOCK_ID,
        REASON_CALLBACK_ID,
        REASON_MAX_CHARS,
        REASON_VIEW_TITLE,
        notice_modal,
    )
    from shared.storage.bus import get_bus

    view = submission.get("view") or {}
    reason = _typed_reason(view)
    if not reason:
        return {"response_action": "errors", "errors": {REASON_BLOCK_ID: NO_REASON}}
    job_id, view_id = _job_named(view), str(view.get("id") or "")
    if job_id and view_id:
        user = str((submission.get("user") or {}).get("id", ""))
        payload = {"job_id": job_id, "user": user, "view_id": view_id, "reason": reason[:REASON_MAX_CHARS]}
        get_bus().send(CALLBACKS, Envelope(SLACK_REJECT_REASON, connection.name, f"{job_id}|reason|{view_id}",
                                           payload))
    text = RECORDING if job_id and view_id else UNKNOWN
    return {"response_action": "update",
            "view": notice_modal(text, title=REASON_VIEW_TITLE, callback_id=REASON_CALLBACK_ID)}


def _typed_reason(view: Mapping[str, Any]) -> str:
    from shared.channels.slack.client import REASON_ACTION_ID, REASON_BLOCK_ID

    values = ((view.get("state") or {}).get("values") or {}).get(REASON_BLOCK_ID) or {}
    return str((values.get(REASON_ACTION_ID) or {}).get("value") or "").strip()


def _job_named(view: Mapping[str, Any]) -> str:
    try:
        metadata = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        return ""
    return str(metadata.get("job", "")) if isinstance(metadata, dict) else ""


# --- 3. the queued reason ------------------------------------------------------------------------


@handles(CALLBACKS, SLACK_REJECT_REASON)
def record_rejection(envelope: Envelope) -> None:
    """Write back a Reject with its reason, once, if the user who gave it is the card's approver."""
    from shared.channels.slack.client import slack_channel

    config, stores = get_config(), get_stores()
    connection = config.connections.get(envelope.connection)
    if not isinstance(connection, SlackConnection):
        raise PermanentFailure(f"no Slack connection named {envelope.connection!r} in the configuration")
    payload = envelope.payload
    job = stores.jobs.get(str(payload.get("job_id", "")))
    if job is None:
        log.warning("a reason for a job that is not there; nothing written")
        return
    slack = slack_channel(connection)
    user, channel_id = str(payload.get("user", "")), str(job.fields.get("slack_channel", ""))

    def first_time() -> bool:
        return stores.dedup.claim(REASON_SCOPE, envelope.key, owner=envelope.correlation_id)

    if job.fields.get("decision") and job.fields.get("decision_key") != envelope.key:
        if first_time():
            slack.post_ephemeral(channel_id, user, f"This was already decided: {job.fields['decision']}.")
        return
    email = slack.profile_for_user(user).email or ""
    if not email or email.casefold() != str(notification_of(job).get("approver", "")).casefold():
        if first_time():
            slack.post_ephemeral(channel_id, user, "You are not the approver of this item; nothing was changed.")
            audit_job(stores, job, connection.name, "refused", user=user, reason="the user is not the approver")
        return
    try:
        decide(stores, slack, connection.name, job, "Reject", user, email, key=envelope.key,
               owner=envelope.correlation_id, reason=str(payload.get("reason") or ""))
    except ConcurrencyError:
        raise RetryLater(1.0, "another decision on this item is being recorded") from None
