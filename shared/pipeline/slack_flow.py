"""Slack: approval cards out, Approve / Reject clicks back to the ERP.

- A card goes to its rule's channel, or to the approver's direct messages when the
  recipient is an email address; each send first takes a slot on its channel (about one
  message per second per channel across all instances).
- One card per job, whatever happens around the post: the job is claimed (``dispatching``)
  before posting (a card's first delivery creates its job already claimed, once its channel is
  resolved), every card carries its job id in message metadata, and a job found
  ``dispatching`` (a crash, or a post that got no answer) first has the channel's history
  since the dispatch began searched for its card, which is adopted when there; only when
  every page back to then was read without it is the card posted.
- A channel named in a rule (``#ap-approvals``) is resolved to its ID first and the card
  posted there, so the job records the ID its history is read by. When Slack will not say
  whether the card is there (the lookup is refused: a missing history scope, an app that is
  not a member; the channel cannot be resolved; too many messages since the dispatch), the
  card is not posted again: the job is left ``unknown`` and audited ``lookup-unavailable``
  with Slack's error, and an operator replays it once the cause is fixed, accepting that the
  channel may then hold the card twice (as for an email whose answer was lost). A second card
  is never risked silently.
- A click is honoured once (claimed by channel, message, action and user), only from the
  approver the card was sent for, and only while the Dynamics work item is still open:
  Validate, then Complete with the outcome and a comment naming the approver. The card
  then shows who decided and when, without buttons. Every step is audited.
- A high-value card's Approve first asks for a one-time code (``shared.pipeline.slack_codes``);
  the decision is the same (``shared.pipeline.slack_decisions``), taken once the code is approved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.channels.slack.connection import SlackConnection
from shared.config.loading import get_config
from shared.config.model import Rule
from shared.model import CALLBACKS, SLACK_EVENT, SLACK_INTERACTION, Envelope, now_iso, status_rank
from shared.outcomes import PermanentFailure, RetryLater, WaitForSlot
from shared.pipeline.jobs import (
    AMBIGUOUS_RECHECK_SECONDS,
    Step,
    change,
    open_claimed_job,
    open_job,
    reached_provider,
    wait_for_live_dispatch,
    write,
)
from shared.pipeline.pacing import SLACK_CHANNEL_INTERVAL, return_delay, sleep_until, take_slot
from shared.pipeline.registry import handles
from shared.pipeline.rules import needs_approval_code
from shared.pipeline.slack_decisions import audit_job, decide, job_named_by, notification_of, tell
from shared.storage.tables import ConcurrencyError, JobRow, Stores, get_stores
from shared.templates import Template, display_fields
from shared.templates import render as render_template

if TYPE_CHECKING:
    from shared.channels.slack.client import PostedMessage

log = logging.getLogger(__name__)

# What a card shows, in this order, when the record has it: a pending invoice's vendor, amount, due
# date and dimensions; a ledger journal's number, description and totals.
CARD_FACTS = (("Document", "document"), ("Vendor", "vendor_name"), ("Amount", "money"), ("Invoice", "invoice_id"),
              ("Due", "due_date"), ("Dimensions", "dimensions"), ("Journal", "journal"),
              ("Description", "description"), ("Total debit", "total_debit"), ("Total credit", "total_credit"),
              ("Legal entity", "legal_entity"), ("Assigned to", "assignee_email"))
TOTALS = ("total_debit", "total_credit")

CLICK_SCOPE = "slack-click"
# A post without an answer is looked up again soon: the lookup is one history read, not a post.
UNKNOWN_POST_RECHECK_SECONDS = 5.0
OUTCOMES = {"approve": "Approve", "reject": "Reject"}


def slack_ref(channel: str, ts: str) -> str:
    return f"slack:{channel}|{ts}"



def render(rule: Rule, template: Template, fields: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """The card's title and facts, who may approve it, and how Approve is confirmed."""
    shown = display_fields(fields) | {name: _amount(fields[name]) for name in TOTALS if name in fields}
    payload: dict[str, Any] = {
        "title": render_template(template.sms, fields) if template.sms else event_type,
        "facts": [[label, shown[name]] for label, name in CARD_FACTS if shown.get(name)],
        "approver": str(fields.get("assignee_email") or ""),
        "work_item_id": str(fields.get("work_item_id") or ""),
    }
    if fields.get("record_url"):
        payload["link"] = str(fields["record_url"])
    if needs_approval_code(rule, fields):
        payload["code"] = approval_code(rule, fields)
    if rule.reject_reason:
        payload["reject_reason"] = True
    return payload


def _amount(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,.2f}"
    return "" if value is None else str(value)


def approval_code(rule: Rule, fields: Mapping[str, Any]) -> dict[str, Any]:
    """How Approve on this card is confirmed: a Verify code through ``verify_via``, to the phone
    in the record field ``verify_phone_field`` (kept now) or else on the approver's Slack profile."""
    phone_field, amount = rule.verify_phone_field, fields.get(rule.verify_amount_field)
    return {"via": rule.verify_via, "above": rule.verify_above, "amount": "" if amount is None else str(amount),
            "phone_field": phone_field or "", "phone": str(fields.get(phone_field) or "") if phone_field else ""}


def deliver(stores: Stores, connection: SlackConnection, envelope: Envelope, job: JobRow) -> None:
    from shared.channels.slack.client import SlackPermanentError, slack_channel

    audit = _auditor(stores, connection, envelope)
    if reached_provider(job):
        audit("duplicate", reason=f"job already {job.status}; not posted again")
        return
    slack = slack_channel(connection)
    try:
        target = card_target(slack, connection, envelope, audit)
        if job.status == "dispatching":
            wait_for_live_dispatch(job)  # RetryLater while another delivery may be posting it
            try:
                earlier = earlier_card(slack, job, target)
            except LookupUnavailable as unavailable:
                leave_unknown(stores, job, audit, unavailable)
                return
            if earlier is not None:
                record_card(stores, connection.name, job, earlier, adopted=True)
                return
        job = claim_card_post(stores, job, target)
        post_claimed_card(stores, connection, envelope, job, slack, target)
    except SlackPermanentError as exc:
        fail_card(stores, job, audit, exc)


def deliver_fresh(stores: Stores, connection: SlackConnection, envelope: Envelope,
                  expired: Callable[[JobRow], bool]) -> bool:
    """A card's first delivery, before its job exists: its channel is resolved first, with nothing written,
    then the job is created already claimed for posting there (one write, not a create and a claim) and the
    card posted. A stop after the create leaves it ``dispatching``, and the next delivery looks the card up in
    the channel before any second post, as for any claimed job.

    False, with nothing written, when Slack refuses to resolve the channel: the usual path then records why.
    A job that exists after all (a redelivery after a stop, a duplicate) goes on from its row unless ``expired``."""
    from shared.channels.slack.client import SlackPermanentError, slack_channel

    slack, audit = slack_channel(connection), _auditor(stores, connection, envelope)
    try:
        target = card_target(slack, connection, envelope, audit)
    except SlackPermanentError:
        return False
    claimed = open_claimed_job(stores, envelope, str(envelope.payload.get("to", "")), slack_target=target)
    if claimed is None:
        job = open_job(stores, envelope)
        if not expired(job):
            deliver(stores, connection, envelope, job)
        return True
    try:
        post_claimed_card(stores, connection, envelope, claimed, slack, target)
    except SlackPermanentError as exc:
        fail_card(stores, claimed, audit, exc)
    return True


def _auditor(stores: Stores, connection: SlackConnection, envelope: Envelope) -> Callable[..., None]:
    """How this delivery audits a step of its job."""
    payload = envelope.payload

    def audit(step: str, **detail: Any) -> None:
        stores.audit.append(envelope.correlation_id, step, connection=connection.name,
                            record=payload.get("record", ""), job_id=payload["job_id"], **detail)

    return audit


def card_target(slack: Any, connection: SlackConnection, envelope: Envelope, audit: Callable[..., None]) -> str:
    """The channel the card goes to, by id where Slack lists it."""
    return resolved_channel(slack, direct_or_fallback(slack, connection, str(envelope.payload.get("to", "")), audit),
                            audit)


def post_claimed_card(stores: Stores, connection: SlackConnection, envelope: Envelope, job: JobRow, slack: Any,
                      target: str) -> None:
    """Post the card of a job claimed for posting to ``target``, at the channel's next slot, and record it."""
    from shared.channels.slack.client import PostOutcomeUnknown, card_metadata

    job_id = envelope.payload["job_id"]
    text, blocks = card_of(envelope.payload, job_id)
    # The slot after the claim, so that nothing but the wait for it comes between: the post
    # reaches Slack at its slot, not one storage call later, which could crowd the next card.
    try:
        slot = take_slot(stores.pacing, connection.name, target, envelope.payload.get("paced_slot"),
                         interval=SLACK_CHANNEL_INTERVAL)
    except WaitForSlot:
        stores.jobs.update(job, {"status": "pending", "updated_at": now_iso()})  # nothing posted: back later
        raise
    sleep_until(slot)
    try:
        posted = slack.post_card(target, text, blocks, metadata=card_metadata(job_id), wait_when_throttled=False)
    except PostOutcomeUnknown as unknown:
        # Left dispatching: the next attempt looks the card up before posting it again.
        stores.jobs.update(job, {"ambiguous": True, "updated_at": now_iso()})
        reason = f"Slack may have posted the card: {unknown.reason}"
        raise RetryLater(UNKNOWN_POST_RECHECK_SECONDS, reason) from None
    except RetryLater as throttled:
        # Slack still found it too fast: back through pacing for a new slot of our own.
        stores.jobs.update(job, {"status": "pending", "updated_at": now_iso()})
        now = time.time()
        slot = stores.pacing.reserve(connection.name, target, max(now + throttled.delay, now), SLACK_CHANNEL_INTERVAL)
        reason = f"Slack throttled the post: {throttled.reason}"
        raise WaitForSlot(return_delay(slot, now), slot, reason) from None
    record_card(stores, connection.name, job, posted)


def fail_card(stores: Stores, job: JobRow, audit: Callable[..., None], error: Exception) -> None:
    """Slack refused the card for good: the job fails, saying why."""
    stores.jobs.update(job, {"status": "failed", "reason": str(error), "updated_at": now_iso()})
    audit("failed", status="failed", reason=str(error), channel="slack")


def card_of(payload: dict[str, Any], job_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The card's fallback text and blocks; no buttons when there is no work item to decide."""
    from shared.channels.slack.client import CODE_VALUE_SUFFIX, REASON_VALUE_SUFFIX, approval_card

    facts = [tuple(fact) for fact in payload.get("facts", [])]
    title = str(payload.get("title") or payload.get("event") or "Approval needed")
    # The suffixes tell the endpoint which modal a click opens, with no configuration read while Slack waits.
    approve = job_id + (CODE_VALUE_SUFFIX if payload.get("code") else "")
    reject = job_id + (REASON_VALUE_SUFFIX if payload.get("reject_reason") else "")
    link = str(payload.get("link") or "") or None
    text, blocks = approval_card(title, facts, link, approve, reject, job_id[:8])
    if not payload.get("work_item_id"):
        blocks = [block for block in blocks if block.get("type") != "actions"]  # nothing to decide
    return text, blocks


def claim_card_post(stores: Stores, job: JobRow, target: str) -> JobRow:
    """Move the job to dispatching (ETag-conditional: of two deliveries one posts), noting where
    and since when, so that a later attempt knows which history to search."""
    try:
        return stores.jobs.update(job, {
            "status": "dispatching", "dispatch_at": now_iso(), "ambiguous": False, "slack_target": target,
            "dispatch_started": job.fields.get("dispatch_started") or now_iso(), "updated_at": now_iso()})
    except ConcurrencyError:
        raise RetryLater(AMBIGUOUS_RECHECK_SECONDS, "another delivery of this card is under way") from None


class LookupUnavailable(Exception):
    """Slack cannot tell whether an earlier attempt posted the card; ``error`` is Slack's code, if any."""

    def __init__(self, reason: str, error: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def resolved_channel(slack: Any, target: str, audit: Any) -> str:
    """A channel named in a rule as its ID (conversations.list), so the card is posted to, recorded
    with and looked up by the ID; the name as given when Slack lists no such channel or refuses
    the list (audited: a post without an answer cannot then be looked up)."""
    from shared.channels.slack.client import SlackPermanentError, is_conversation_id

    if is_conversation_id(target):
        return target
    try:
        found = slack.conversation_id(target)
    except SlackPermanentError as exc:
        audit("channel-unresolved", error=exc.error,
              reason=f"Slack refused to list its channels ({exc.error}); posted to {target} by name")
        return target
    if found is None:
        audit("channel-unresolved", reason=f"no channel the app can see is named {target}; posted by name")
        return target
    return found


def earlier_card(slack: Any, job: JobRow, target: str) -> PostedMessage | None:
    """A job left dispatching (a crash, or a post without an answer): the card an earlier attempt
    posted, found by the job id in its metadata; None when the channel's history back to the
    dispatch start surely holds none. LookupUnavailable when Slack cannot tell."""
    from shared.channels.slack.client import HistoryTooLong, SlackPermanentError, is_conversation_id

    claimed = str(job.fields.get("slack_target") or target)  # where the earlier attempt posted
    channel = claimed if is_conversation_id(claimed) else _channel_id_or_unavailable(slack, claimed)
    started = job.fields.get("dispatch_started") or job.fields.get("created_at") or now_iso()
    try:
        return slack.find_card(channel, job.job_id, datetime.fromisoformat(started).timestamp())
    except SlackPermanentError as exc:  # no history scope, or not a member
        raise LookupUnavailable(f"Slack refused to show the history of {channel}: {exc.error}", exc.error) from None
    except HistoryTooLong as exc:
        raise LookupUnavailable(str(exc)) from None


def _channel_id_or_unavailable(slack: Any, name: str) -> str:
    from shared.channels.slack.client import SlackPermanentError

    try:
        found = slack.conversation_id(name)
    except SlackPermanentError as exc:
        raise LookupUnavailable(f"Slack refused to list its channels, so the history of {name} cannot be "
                                f"read: {exc.error}", exc.error) from None
    if found is None:
        raise LookupUnavailable(f"no channel the app can see is named {name}, so its history cannot be read")
    return str(found)


def leave_unknown(stores: Stores, job: JobRow, audit: Any, unavailable: LookupUnavailable) -> None:
    """Slack cannot tell whether the card was posted: not posted again. The job is left unknown
    (an operator sees it and replays it once the cause is fixed, accepting a possible second card)."""
    why = f"{unavailable.reason}; the card may have been posted: not posted again, replay the job to post it"
    stores.jobs.update(job, {"status": "unknown", "ambiguous": True, "reason": why, "updated_at": now_iso()})
    audit("lookup-unavailable", status="unknown", channel="slack", reason=why,
          **({"error": unavailable.error} if unavailable.error else {}))
    log.warning("Slack job %s: outcome unknown (%s); not posted again", job.job_id, unavailable.reason)


def record_card(stores: Stores, connection: str, job: JobRow, posted: PostedMessage, *, adopted: bool = False) -> None:
    # No provider-id link: a click finds its job by the job id its buttons carry (clicked_job), and a click on
    # a card its job never recorded adopts it by that id (adopt_clicked_card).
    ref = slack_ref(posted.channel, posted.ts)
    detail = {"status": "sent", "channel": "slack", "to": posted.channel, "provider_id": ref}
    step = Step("sent", connection, {**detail, "adopted": True} if adopted else detail)
    write(stores, job, {"status": "sent", "provider_id": ref, "slack_channel": posted.channel, "slack_ts": posted.ts,
                        "ambiguous": False, "sent_at": now_iso(), "updated_at": now_iso()}, step)


def direct_or_fallback(slack: Any, connection: SlackConnection, target: str, audit: Any) -> str:
    """A channel as given; an approver's email becomes their DMs with the app, or, when Slack
    knows no such user, the connection's default channel (SlackPermanentError without one)."""
    from shared.channels.slack.client import SlackPermanentError

    if "@" not in target:
        return target
    try:
        return slack.open_dm(slack.user_id_for_email(target))
    except SlackPermanentError as exc:
        if exc.error != "users_not_found" or not connection.default_channel:
            raise
        audit("no-slack-user", reason=f"no Slack user has the email of the approver; posted to "
                                      f"{connection.default_channel} instead")
        return connection.default_channel


@handles(CALLBACKS, SLACK_INTERACTION)
def handle_click(envelope: Envelope) -> None:
    from shared.channels.slack.client import slack_channel

    config, stores = get_config(), get_stores()
    connection = config.connections.get(envelope.connection)
    if not isinstance(connection, SlackConnection):
        raise PermanentFailure(f"no Slack connection named {envelope.connection!r} in the configuration")
    click = envelope.payload["payload"]
    view_id = str(envelope.payload.get("view_id") or "")  # the code modal opened for this click
    user = (click.get("user") or {}).get("id", "")
    container = click.get("container") or {}
    channel_id, ts = container.get("channel_id", ""), container.get("message_ts", "")
    action_id = (click.get("actions") or [{}])[0].get("action_id", "")
    job = clicked_job(stores, connection.name, click)
    if job is None or action_id not in OUTCOMES:
        log.warning("a click on %s %s that no card of ours carries", channel_id, ts)
        return
    notification = notification_of(job)
    slack = slack_channel(connection)

    def audit(step: str, **detail: Any) -> None:
        audit_job(stores, job, connection.name, step, user=user, **detail)

    def first_time() -> bool:
        """A click answered without a decision is answered once, whatever Slack or the queue repeat;
        a decision is kept once by its claim on the job."""
        return stores.dedup.claim(CLICK_SCOPE, envelope.key, owner=envelope.correlation_id)

    # A Reject that opened the reason modal (the endpoint says so with "view_id") decides nothing:
    # the submitted reason does (slack_reasons). What it is told goes to the channel and the modal.
    asks_reason = action_id == "reject" and "view_id" in envelope.payload

    def say(text: str) -> None:
        if asks_reason:
            from shared.pipeline.slack_reasons import notice

            notice(slack, channel_id, user, view_id, text)
        else:
            tell(slack, channel_id, user, view_id, text)

    if job.fields.get("decision") and job.fields.get("decision_key") != envelope.key:
        if first_time():
            say(f"This was already decided: {job.fields['decision']}.")
        return
    profile = slack.profile_for_user(user)
    email = profile.email or ""
    if email.casefold() != str(notification.get("approver", "")).casefold() or not email:
        if first_time():
            say("You are not the approver of this item; nothing was changed.")
            audit("refused", reason="the clicking user is not the approver")
        return
    if asks_reason:
        if not view_id and first_time():
            from shared.pipeline.slack_reasons import NOT_OPENED

            say(NOT_OPENED)
        return
    outcome = OUTCOMES[action_id]
    if outcome == "Approve" and notification.get("code"):
        from shared.pipeline.slack_codes import send_code

        current = stores.jobs.get(job.job_id) if job.remembered else job  # a code is a text: sent on the row as it is
        if current is None or not first_time():
            return
        if current.fields.get("decision"):
            tell(slack, channel_id, user, view_id, f"This was already decided: {current.fields['decision']}.")
            return
        send_code(stores, slack, current, click, profile, view_id)  # the decision waits for the code
        return
    try:
        decide(stores, slack, connection.name, job, outcome, user, email, key=envelope.key,
               owner=envelope.correlation_id)
    except ConcurrencyError:
        if first_time():
            slack.post_ephemeral(channel_id, user, "Another decision on this item is being recorded.")


def clicked_job(stores: Stores, connection: str, click: dict[str, Any]) -> JobRow | None:
    """The job of the card clicked; None when no card of ours carries the click.

    The button names its job, and Slack sends a click only to the app that posted its card, signed: a job of
    this connection that records a card is the clicked card's job, whichever of its cards it was (the one it
    records, or one from before a replay). A job that records no card yet adopts this one. A button that names
    no job (a card from before cards named their job) is found by the card's link. As this process last wrote
    it when it can (it posted the card): the decision is written under that ETag and is refused, the row read
    again, if the job moved on.
    """
    named = job_named_by(click)
    if not named:
        container = click.get("container") or {}
        link = stores.providers.lookup(slack_ref(str(container.get("channel_id") or ""),
                                                 str(container.get("message_ts") or "")))
        return (stores.jobs.recent(link.job_id) or stores.jobs.get(link.job_id)) if link is not None else None
    job = stores.jobs.recent(named) or stores.jobs.get(named)
    if job is None or job.fields.get("via") != connection:
        return None
    if job.fields.get("provider_id"):
        return job
    return adopt_clicked_card(stores, connection, click)


def adopt_clicked_card(stores: Stores, connection: str, click: dict[str, Any]) -> JobRow | None:
    """A click on a card whose job never recorded it (a stop between the post and the job update, or
    a job left ``unknown`` because Slack could not say whether its card was there): the button names
    its job, and Slack signed the click, so the card is adopted now (the job sent, recording this card)
    and the click goes on. None when the button names no job of this connection, or one with another card."""
    container = click.get("container") or {}
    channel, ts = str(container.get("channel_id") or ""), str(container.get("message_ts") or "")
    named = job_named_by(click)
    job = stores.jobs.get(named) if named else None
    ref = slack_ref(channel, ts)
    if job is None or job.fields.get("via") != connection or job.fields.get("provider_id") not in (None, "", ref):
        return None
    adopted = change(stores, job, lambda row: {
        "status": row.status if status_rank(row.status) >= status_rank("sent") else "sent", "provider_id": ref,
        "slack_channel": channel, "slack_ts": ts, "ambiguous": False})
    if adopted is None:
        return None
    audit_job(stores, adopted, connection, "sent", status=adopted.status, channel="slack", to=channel,
              provider_id=ref, adopted=True, how="a click on the card")
    return adopted


@handles(CALLBACKS, SLACK_EVENT)
def record_event(envelope: Envelope) -> None:
    """Events API callbacks: each event_id counts once, whatever Slack retries."""
    stores = get_stores()
    if stores.dedup.claim("slack-event", envelope.key, owner=envelope.correlation_id):
        event = envelope.payload.get("event") or {}
        log.info("Slack event %s (%s) on %s", envelope.key, event.get("type", "?"), envelope.connection)
