"""Escalation policies: when an alert is not delivered or not acknowledged in time, the next step.

A rule's ``escalation`` lists steps; the first is the rule's own send. When its event is routed, the
later steps are rendered while the record is at hand (their recipients and texts) into a plan, which
travels sealed on a scheduled follow-up (``shared.pipeline.followups``): one delayed message per
pending step, due ``after_minutes`` after the previous step's messages went out. When it comes due:

- someone acknowledged the alert already (its ERP change's ``acknowledged`` marker: an acknowledgement
  keyword in a reply, key 1 on a call, a Slack decision): nothing more happens. The cancellation was
  audited ``escalation-cancelled``, with who acknowledged and how, as soon as it came in;
- the previous step's messages are not out yet (paced, held for quiet hours): it waits for them, and
  the minutes count from when they went out;
- the step's ``unless: delivered`` holds (a message or call of an earlier step reached its recipient):
  it is skipped, audited ``escalation-skipped``, and the step after it is scheduled;
- otherwise the step is taken: one notification per recipient, each its own job with a stable id
  (event, rule, step, recipient), audited ``escalated`` with the reason ("not delivered within 5 min").

A step is claimed before it acts (by the follow-up that scheduled it) and marked done after: a step
message delivered twice, or a second copy of it, changes nothing; a retry of a step cut short finishes
it, its sends deduplicated by their job ids and its audit written once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.config.loading import get_config
from shared.config.model import Recipient, Rule
from shared.logs import mask_phone
from shared.model import NOTIFICATION, NOTIFICATIONS, Envelope, job_id_for, now_iso, parse_utc_time
from shared.pipeline.followups import EARLY_TOLERANCE_SECONDS, due_at_of, followup, schedule
from shared.storage.bus import MessageBus, get_bus
from shared.storage.tables import JobRow, Stores, get_stores

log = logging.getLogger(__name__)

ESCALATION = "escalation"
ACKNOWLEDGED_SCOPE = "acknowledged"  # one row per ERP change (correlation id): the first acknowledgement
STEP_SCOPE = "escalation-step"  # one row per step taken: who took it
STEP_DONE_SCOPE = "escalation-step-done"  # one row per step finished
# Replies that acknowledge an alert (whole message, any case); any other reply is only recorded and noted.
ACKNOWLEDGE_KEYWORDS = frozenset({"ACK", "ACKNOWLEDGE", "OK", "1"})
# Statuses that say a message or call reached its person: "unless: delivered" then skips the step.
REACHED = frozenset({"delivered", "read", "in-progress", "completed"})
# A step waits this long at most for the previous step's messages to go out, then goes ahead without them.
MAX_WAIT_FOR_PREVIOUS = timedelta(hours=24)

Render = Callable[[Rule, str, str], dict[str, Any]]  # (the step's rule, address, job id) -> notification payload


def escalation_id(event_key: str, rule_id: str) -> str:
    """The stable id of one rule's escalation of one ERP change."""
    return job_id_for(event_key, rule_id, ESCALATION, "")


def step_job_id(event_key: str, rule_id: str, step: int, channel: str, address: str) -> str:
    """The stable job id of one step's send to one recipient (step 0 is the rule's own job id)."""
    return job_id_for(event_key, rule_id if step == 0 else f"{rule_id}#step-{step}", channel, address)


# --- routing: the plan, and its first follow-up -------------------------------------------------


def schedule_escalation(bus: MessageBus, rule: Rule, first_jobs: Sequence[str], fields: Mapping[str, Any], *,
                        event_key: str, record: str, correlation_id: str, render: Render) -> None:
    """Render the later steps of ``rule``'s escalation now, and schedule the first of them."""
    if rule.escalation is None or not first_jobs:
        return
    steps: list[dict[str, Any]] = [{"channel": rule.channel, "jobs": list(first_jobs)}]
    for index, step in enumerate(rule.escalation.steps[1:], start=1):
        step_rule = replace(rule, channel=step.channel, via=step.via or rule.via, escalation=None)
        notifications = [render(step_rule, address, step_job_id(event_key, rule.id, index, step.channel, address))
                         for address in addresses(step.to or rule.to, fields)]
        steps.append({"channel": step.channel, "via": step_rule.via, "unless": step.unless,
                      "after_minutes": step.after_minutes, "jobs": [n["job_id"] for n in notifications],
                      "notifications": notifications})
    plan = {"escalation": escalation_id(event_key, rule.id), "rule": rule.id, "record": record, "steps": steps,
            "taken": [0]}
    _schedule_step(bus, rule.via, plan, 1, correlation_id)


def addresses(recipients: Iterable[Recipient], fields: Mapping[str, Any]) -> list[str]:
    """The step's recipients as addresses: fixed ones, and those the record holds (a missing one is left out)."""
    found = []
    for recipient in recipients:
        value = recipient.value if recipient.field is None else fields.get(recipient.field)
        if value not in (None, "") and str(value).strip() not in found:
            found.append(str(value).strip())
    return found


def _schedule_step(bus: MessageBus, via: str, plan: Mapping[str, Any], step: int, correlation_id: str,
                   due: datetime | None = None, nonce: str = "", waiting_since: str = "") -> None:
    due = due or datetime.now(UTC) + timedelta(minutes=float(plan["steps"][step]["after_minutes"]))
    payload = {**plan, "step": step, "nonce": nonce or uuid.uuid4().hex, "waiting_since": waiting_since}
    key = f"{plan['escalation']}|step-{step}|{due.isoformat()}"
    schedule(bus, ESCALATION, via, key, payload, correlation_id, due)


# --- a step comes due -----------------------------------------------------------------------------


@followup(ESCALATION)
def run_step(envelope: Envelope) -> None:
    payload, stores = envelope.payload, get_stores()
    if acknowledged(stores, envelope.correlation_id) is not None:
        return  # cancelled: audited when the acknowledgement came in
    plan_steps: list[dict[str, Any]] = payload["steps"]
    index = int(payload["step"])
    step = plan_steps[index]
    earlier = {number: [stores.jobs.get(job_id) for job_id in plan_steps[number]["jobs"]]
               for number in payload["taken"]}
    wait = _wait_for_previous(earlier[payload["taken"][-1]], float(step["after_minutes"]), payload)
    if wait is not None:
        _schedule_step(get_bus(), envelope.connection, payload, index, envelope.correlation_id, due=wait,
                       nonce=str(payload["nonce"]), waiting_since=str(payload.get("waiting_since") or now_iso()))
        return
    key = f"{payload['escalation']}|{index}"
    claim = stores.dedup.take(STEP_SCOPE, key, owner=str(payload["nonce"]))
    if claim == "taken" or (claim == "again" and stores.dedup.held(STEP_DONE_SCOPE, key) is not None):
        return  # another copy took this step, or this one finished it before
    reached = any(job is not None and job.status in REACHED for jobs in earlier.values() for job in jobs)
    if step.get("unless") == "delivered" and reached:
        _audit_step(stores, envelope, "escalation-skipped",
                    reason=f"delivered within {_minutes(step['after_minutes'])} min")
        taken = list(payload["taken"])
    else:
        _take_step(get_bus(), envelope, step)
        taken = [*payload["taken"], index]
    if index + 1 < len(plan_steps):
        _schedule_step(get_bus(), envelope.connection, {**payload, "taken": taken}, index + 1,
                       envelope.correlation_id)
    stores.dedup.claim(STEP_DONE_SCOPE, key)


def _wait_for_previous(previous: Sequence[JobRow | None], minutes: float,
                       payload: Mapping[str, Any]) -> datetime | None:
    """When to look again, or None when the step is due now: ``minutes`` after the previous step's
    first message went out. Before any went out (paced, held) it looks again ``minutes`` later, for a
    day at most; then it goes ahead without them."""
    now = datetime.now(UTC)
    started = [_went_out(job) for job in previous if job is not None]
    out = [moment for moment in started if moment is not None]
    if not out:
        since = payload.get("waiting_since")
        if since and now - parse_utc_time(str(since)) >= MAX_WAIT_FOR_PREVIOUS:
            return None
        return now + timedelta(minutes=minutes)
    due = min(out) + timedelta(minutes=minutes)
    return due if (due - now).total_seconds() > EARLY_TOLERANCE_SECONDS else None


def _went_out(job: JobRow) -> datetime | None:
    """When the job's message or call went out (or ended without going out); None while it has not."""
    fields = job.fields
    if fields.get("sent_at"):
        return parse_utc_time(str(fields["sent_at"]))
    if job.status in ("failed", "suppressed", "expired", "dead-lettered", "undelivered"):
        return parse_utc_time(str(fields.get("updated_at") or now_iso()))
    return None


def _take_step(bus: MessageBus, envelope: Envelope, step: Mapping[str, Any]) -> None:
    """One notification per recipient of the step, keyed by its job id (a repeat is sent once), then the audit."""
    notifications: list[dict[str, Any]] = step.get("notifications") or []
    for notification in notifications:
        bus.send(NOTIFICATIONS, Envelope(NOTIFICATION, str(notification["via"]), str(notification["job_id"]),
                                         notification, envelope.correlation_id))
    _audit_step(stores=get_stores(), envelope=envelope, step="escalated",
                reason=f"not {step.get('unless')} within {_minutes(step['after_minutes'])} min",
                channel=step.get("channel"), to=[mask_phone(str(n.get("to", ""))) for n in notifications],
                jobs=[str(n["job_id"]) for n in notifications])


def _audit_step(stores: Stores, envelope: Envelope, step: str, **detail: Any) -> None:
    """The step's audit row, written once however often the step runs (fixed by the step and when it was due)."""
    payload = envelope.payload
    due = due_at_of(envelope) or datetime.now(UTC)
    jobs = detail.get("jobs") or []
    stores.audit.append_once(envelope.correlation_id, step, once=f"{payload['escalation']}|{payload['step']}",
                             at=due, connection=envelope.connection, record=str(payload.get("record", "")),
                             job_id=jobs[0] if jobs else "", rule=payload.get("rule"), escalation_step=payload["step"],
                             **detail)


def _minutes(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


# --- acknowledgements -------------------------------------------------------------------------------


def acknowledged(stores: Stores, correlation_id: str) -> dict[str, Any] | None:
    """The first acknowledgement of the alerts of one ERP change (who, how, when), or None."""
    return stores.dedup.held(ACKNOWLEDGED_SCOPE, correlation_id)


def acknowledge(stores: Stores, job: JobRow, *, by: str, how: str, owner: str, connection: str) -> None:
    """Someone acknowledged the alert ``job`` belongs to: the escalations of its ERP change stop here.

    Written only where an escalation can be pending (a rule of the job's source escalates); the first
    acknowledgement is kept and audited ``escalation-cancelled``, later ones change nothing. ``owner``
    names the answer (its SID, the click), so that a retry of the same answer is not a second one."""
    source = str(job.fields.get("source", ""))
    if not any(rule.escalation is not None and rule.source == source for rule in get_config().rules):
        return
    correlation_id = str(job.fields.get("correlation_id", ""))
    if not correlation_id:
        return
    claim = stores.dedup.take(ACKNOWLEDGED_SCOPE, correlation_id, owner=owner, by=by, how=how, at=now_iso())
    if claim != "new":
        return
    stores.audit.append(correlation_id, "escalation-cancelled", connection=connection,
                        record=str(job.fields.get("record", "")), job_id=job.job_id, by=by, how=how,
                        reason=f"acknowledged by {by} ({how})")


def acknowledge_reply(stores: Stores, connection: str, number: str, body: str, job_id: str, owner: str) -> None:
    """An SMS reply that acknowledges (``ACKNOWLEDGE_KEYWORDS``) the alert last sent to that number."""
    if body.strip().upper() not in ACKNOWLEDGE_KEYWORDS or not job_id:
        return
    job = stores.jobs.get(job_id)
    if job is not None:
        acknowledge(stores, job, by=mask_phone(number), how="reply", owner=owner, connection=connection)


def acknowledge_key_press(stores: Stores, connection: str, job: JobRow, owner: str) -> None:
    """Key 1 on a call acknowledges the alert it is about."""
    acknowledge(stores, job, by=mask_phone(str(job.fields.get("to", ""))), how="key press", owner=owner,
                connection=connection)
