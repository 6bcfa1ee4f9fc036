"""One-time codes before high-value Slack approvals.

A Slack rule with ``verify_above`` and ``verify_via`` marks the cards of records whose amount
is above the threshold (or unknown): their Approve button asks for a Twilio Verify code
before anything is written. Reject needs no code.

1. The click, while Slack waits (3 s): the interactions endpoint opens the code modal with
   the click's ``trigger_id`` (valid 3 s, once; one Slack call, everything it needs is in the
   click) and queues the click with the modal's view id.
2. The queued click: the approver check of every click; then a code goes by SMS to the
   approver's phone (their Slack profile, or a record field), the job keeps the attempt (who,
   which number, which modal) and the modal asks for the code.
3. The submitted code, while Slack waits: the attempt named by the modal is read back and
   must match the stored one (job, modal, user); Verify checks the code. A wrong code keeps
   the modal open to try again, up to Verify's limit; nothing is written before "approved".
4. The queued approval: the decision of a plain click, once: Validate, Complete, the card,
   the audit.

Every step is audited: otp-sent, otp-wrong, otp-exhausted, otp-approved, otp-failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.channels.slack.connection import SlackConnection
from shared.channels.twilio.connection import TwilioConnection
from shared.config.loading import get_config
from shared.logs import mask_phone
from shared.model import CALLBACKS, SLACK_CODE_APPROVED, Envelope, now_iso
from shared.outcomes import PermanentFailure, RetryLater
from shared.pipeline.registry import handles
from shared.pipeline.slack_decisions import audit_job, decide, merge_job, notification_of, open_modal, tell
from shared.pipeline.verify import looks_like_code
from shared.storage.tables import ConcurrencyError, JobRow, Stores, get_stores

if TYPE_CHECKING:
    from shared.channels.slack.client import SlackChannel, SlackProfile

log = logging.getLogger(__name__)

CONFIRMED = "confirmed with a one-time code"
SENDING = "A one-time code is on its way by text message to the approver's phone. Enter it below to approve."
NOT_OPENED = "The code window could not be opened in time; nothing was approved. Click Approve again."
WRONG = "That code is not right. Check the text message and try again."
NOT_DIGITS = "Enter the digits of the code from the text message."
NOT_YET = "No code has been sent for this window yet. Wait for the text message, then enter the code."
UNCHECKED = "The code could not be checked just now. Try again in a moment."
EXHAUSTED = ("Too many wrong codes: nothing was approved. A new code can be asked for with Approve on the "
             "card once this one has expired.")
ENDED = "This code is no longer valid: nothing was approved. Click Approve on the card again for a new code."
NOT_SET_UP = "Codes cannot be used: the connector is not set up for them. Nothing was approved; ask your administrator."
ACCEPTED = "Code accepted. Your approval is being recorded in Dynamics 365; the card will show it."


# --- 1. the click, while Slack waits -------------------------------------------------------------


def open_code_modal(connection: SlackConnection, click: Mapping[str, Any]) -> str:
    """Open the code modal for this click now, before its trigger_id expires: the view id, or ""."""
    from shared.channels.slack.client import code_modal

    return open_modal(connection, click, lambda job_id, about: code_modal(job_id, SENDING, about), "code modal")


# --- 2. the queued click: send the code ----------------------------------------------------------


def send_code(stores: Stores, slack: SlackChannel, job: JobRow, click: Mapping[str, Any], profile: SlackProfile,
              view_id: str) -> None:
    """The approver clicked Approve on a card that needs a code: text it to them, ask for it."""
    from shared.channels.slack.client import SlackPermanentError, code_modal
    from shared.channels.twilio.client import PermanentSendError, twilio_channel
    from shared.phones import InvalidNumber, normalize_number

    user = str((click.get("user") or {}).get("id", ""))
    channel_id = str(job.fields.get("slack_channel", ""))
    code = notification_of(job)["code"]
    connection = slack.connection.name

    def fail(reason: str, text: str) -> None:
        audit_job(stores, job, connection, "otp-failed", user=user, reason=reason)
        tell(slack, channel_id, user, view_id, text)

    if not view_id:
        fail("the code modal did not open within Slack's 3 seconds", NOT_OPENED)
        return
    twilio = get_config().connections.get(str(code.get("via", "")))
    if not isinstance(twilio, TwilioConnection) or not twilio.verify_service_sid:
        fail(f"no twilio connection {code.get('via')!r} with a Verify service", NOT_SET_UP)
        return
    source = f"record field {code['phone_field']}" if code.get("phone_field") else "Slack profile"
    raw = str(code.get("phone") or "") if code.get("phone_field") else (profile.phone or "")
    try:
        number = normalize_number(raw, twilio.default_region)
    except InvalidNumber:  # the reason quotes the number: neither audited nor shown
        fail(f"no usable phone number in the approver's {source}",
             f"There is no usable mobile number for you ({source}), so no code can be sent. Nothing was "
             "approved; add your number or ask your administrator.")
        return
    try:
        started = twilio_channel(twilio).start_verification(number)
    except PermanentSendError as exc:
        fail(f"Verify did not send the code: error {exc.code}, HTTP {exc.status}",
             f"The code could not be sent (Twilio error {exc.code}). Nothing was approved.")
        return
    attempt = {"state": "sent", "user": user, "email": profile.email or "", "phone": number, "via": twilio.name,
               "view": view_id, "verification_sid": started.sid, "sent_at": now_iso()}
    merge_job(stores, job.job_id, {"code_attempt": attempt})
    audit_job(stores, job, connection, "otp-sent", user=user, to=mask_phone(number), phone_from=source,
              verification_sid=started.sid, amount=code.get("amount", ""), above=code.get("above"))
    about = str((click.get("message") or {}).get("text") or "")
    message = f"We sent a code by text message to {mask_phone(number)}. Enter it below to approve."
    try:
        slack.update_view(view_id, code_modal(job.job_id, message, about))
    except SlackPermanentError as exc:
        log.info("the code modal of job %s was closed (%s); Approve on the card opens another",
                 job.job_id, exc.error)


# --- 3. the submitted code, while Slack waits ----------------------------------------------------


def answer_code(connection: SlackConnection, submission: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's answer to a submitted code modal: errors (the modal stays, to try again) or an update.

    The code is checked here, while Slack waits, not behind the queue: only the answer to the
    submission itself can keep the modal open with "wrong code, try again" (response_action
    errors); a queued check could only replace the modal afterwards. It is one Verify call with
    short timeouts and no retries, well inside Slack's 3 seconds; the write-back, which is
    slower, is queued.
    """
    from shared.channels.twilio.client import TwilioSendError, interactive_twilio_channel

    stores = get_stores()
    view = submission.get("view") or {}
    user = str((submission.get("user") or {}).get("id", ""))
    job_id = _job_named(view)
    job = stores.jobs.get(job_id) if job_id else None
    found = _current_attempt(job, view, user)
    if isinstance(found, dict):
        return found
    attempt, job = found
    if attempt["state"] == "approved":  # checked before; the hand-off may not have happened
        return _approved(stores, connection, job, attempt)
    code = looks_like_code(_typed_code(view))
    if code is None:
        return _errors(NOT_DIGITS)
    twilio = get_config().connections.get(str(attempt.get("via", "")))
    if not isinstance(twilio, TwilioConnection):
        log.error("no twilio connection %r to check the code of job %s", attempt.get("via"), job.job_id)
        return _notice(NOT_SET_UP)
    try:
        status = interactive_twilio_channel(twilio).check_verification(str(attempt["phone"]), code)
    except (TwilioSendError, RetryLater) as exc:
        audit_job(stores, job, connection.name, "otp-failed", user=user, can_retry=True,
                  reason=f"the code was not checked ({type(exc).__name__})")
        return _errors(UNCHECKED)
    return _after_check(stores, connection, job, attempt, status)


def _after_check(stores: Stores, connection: SlackConnection, job: JobRow, attempt: dict[str, Any],
                 status: str) -> dict[str, Any]:
    user = attempt["user"]
    if status == "approved":
        attempt = {**attempt, "state": "approved", "approved_at": now_iso()}
        job = merge_job(stores, job.job_id, {"code_attempt": attempt})
        audit_job(stores, job, connection.name, "otp-approved", user=user, by=attempt["email"],
                  approved_at=attempt["approved_at"], verification_sid=attempt.get("verification_sid", ""))
        return _approved(stores, connection, job, attempt)
    if status == "pending":  # Verify's word for a wrong code
        audit_job(stores, job, connection.name, "otp-wrong", user=user)
        return _errors(WRONG)
    state = "exhausted" if status == "max_attempts_reached" else "ended"
    merge_job(stores, job.job_id, {"code_attempt": {**attempt, "state": state}})
    if state == "exhausted":
        audit_job(stores, job, connection.name, "otp-exhausted", user=user, reason="Verify's check limit was reached")
        return _notice(EXHAUSTED)
    audit_job(stores, job, connection.name, "otp-failed", user=user, reason=f"Verify says the code is {status}")
    return _notice(ENDED)


def _approved(stores: Stores, connection: SlackConnection, job: JobRow, attempt: dict[str, Any]) -> dict[str, Any]:
    """Hand the approval to the queue; its key is the same however often this runs."""
    from shared.storage.bus import get_bus

    key = f"{job.job_id}|code-approved|{attempt.get('verification_sid', '')}"
    get_bus().send(CALLBACKS, Envelope(SLACK_CODE_APPROVED, connection.name, key, {"job_id": job.job_id},
                                       str(job.fields["correlation_id"])))
    return _notice(ACCEPTED)


def _current_attempt(job: JobRow | None, view: Mapping[str, Any],
                     user: str) -> tuple[dict[str, Any], JobRow] | dict[str, Any]:
    """The stored attempt this modal belongs to, or the answer when there is none to check."""
    if job is None:
        return _notice(ENDED)
    if job.fields.get("decision"):
        return _notice(f"This was already decided: {job.fields['decision']}.")
    attempt = job.fields.get("code_attempt") or {}
    if attempt.get("view") != view.get("id") or attempt.get("user") != user:
        return _errors(NOT_YET)  # the queued click has not sent this modal's code (yet)
    if attempt.get("state") not in ("sent", "approved"):
        return _notice(ENDED)
    return dict(attempt), job


def _job_named(view: Mapping[str, Any]) -> str:
    try:
        metadata = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        return ""
    return str(metadata.get("job", "")) if isinstance(metadata, dict) else ""


def _typed_code(view: Mapping[str, Any]) -> str:
    from shared.channels.slack.client import CODE_ACTION_ID, CODE_BLOCK_ID

    values = ((view.get("state") or {}).get("values") or {}).get(CODE_BLOCK_ID) or {}
    return str((values.get(CODE_ACTION_ID) or {}).get("value") or "")


def _errors(text: str) -> dict[str, Any]:
    from shared.channels.slack.client import CODE_BLOCK_ID

    return {"response_action": "errors", "errors": {CODE_BLOCK_ID: text}}


def _notice(text: str) -> dict[str, Any]:
    from shared.channels.slack.client import notice_modal

    return {"response_action": "update", "view": notice_modal(text)}


# --- 4. the queued approval ----------------------------------------------------------------------


@handles(CALLBACKS, SLACK_CODE_APPROVED)
def record_code_approval(envelope: Envelope) -> None:
    """Write back an approval whose code Verify approved; the stored attempt must say so."""
    from shared.channels.slack.client import slack_channel

    config, stores = get_config(), get_stores()
    connection = config.connections.get(envelope.connection)
    if not isinstance(connection, SlackConnection):
        raise PermanentFailure(f"no Slack connection named {envelope.connection!r} in the configuration")
    job = stores.jobs.get(str(envelope.payload.get("job_id", "")))
    if job is None:
        return
    attempt = job.fields.get("code_attempt") or {}
    if attempt.get("state") != "approved":
        log.warning("an approval of job %s whose code is not approved; nothing written", job.job_id)
        return
    slack = slack_channel(connection)
    if job.fields.get("decision") and job.fields.get("decision_key") != envelope.key:
        slack.post_ephemeral(str(job.fields.get("slack_channel", "")), attempt["user"],
                             f"This was already decided: {job.fields['decision']}.")
        return
    try:
        decide(stores, slack, connection.name, job, "Approve", attempt["user"], attempt["email"],
               key=envelope.key, how=CONFIRMED)
    except ConcurrencyError:
        raise RetryLater(1.0, "another decision on this item is being recorded") from None
