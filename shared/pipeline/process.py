"""erp-events: claim the event, read its record, apply the rules, queue one job per recipient.

The claim (the event key: the business fact the event reports, which the poll's finding of the same fact
shares, else connection + ControlNumber; owned by this event's correlation id) decides whether the event is new;
a requeued attempt of the same event passes its own claim.
Each job id is a stable hash of event key, rule, channel and recipient, and is the
notification's MessageId: however often this stage runs for one ERP change, one send
per recipient is all that can follow.

Failures to read the record (Dynamics 5xx or 429, Entra unreachable, DNS, timeouts) are not
handled here: the queue consumer classifies them, retries with backoff, and audits each
``retrying``. A record Dynamics says is not there ends the event as ``failed``. When the
event is dead-lettered its claim is released, so Dynamics' resend, or a redrive, is processed.

An attempt's audit steps (received, enriched, routed; or failed) are written in one request at its
end, or at the failure that ends it. An event that comes back to its own claim (a retry, or the
host's redelivery after a stop) writes its ``received`` step again only if the trail lacks it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import kinds
from shared.config.loading import get_config
from shared.config.model import AppConfig, Rule
from shared.erp.dynamics.connection import DynamicsConnection
from shared.erp.dynamics.events import (
    BusinessEvent,
    EnrichmentError,
    EventError,
    event_record,
    parse_event,
    record_fields,
)
from shared.model import (
    BUSINESS_EVENT,
    ERP_EVENTS,
    NOTIFICATION,
    NOTIFICATIONS,
    Envelope,
    job_id_for,
    parse_utc_time,
)
from shared.outcomes import PermanentFailure
from shared.pipeline.escalation import schedule_escalation
from shared.pipeline.jobs import ON_TRAIL
from shared.pipeline.lastevent import heard_from
from shared.pipeline.quiet import window_for
from shared.pipeline.registry import handles, in_place_runner
from shared.pipeline.rules import targets
from shared.settings import env_str
from shared.storage.bus import MessageBus, get_bus
from shared.storage.tables import AuditBatch, Stores, get_stores

log = logging.getLogger(__name__)

EVENT_SCOPE = "event"
# Notifications of one ERP change tried at once by the stage that routed them; more wait on the queue, so that
# one change with many recipients does not hold this stage through all of their sends.
INLINE_DELIVERIES = 3


def record_ref(connection: str, entity: str, key: str) -> str:
    """How the audit names an ERP record: ``connection|entity|key`` (key parts joined by ``|``)."""
    return f"{connection}|{entity}|{key}"


def event_record_of(envelope: Envelope) -> str:
    """The ERP record a business event concerns, as the audit names it ("" when it names none)."""
    try:
        entity, key = event_record(parse_event(envelope.payload.get("event")))
    except ValueError:
        return ""
    return record_ref(envelope.connection, entity, key) if key else ""


def release_event_claim(envelope: Envelope, reason: str) -> None:
    """A dead-lettered event is not done: give its claim back, so a resend of it is new."""
    get_stores().dedup.release(EVENT_SCOPE, envelope.key)


@handles(ERP_EVENTS, BUSINESS_EVENT, record_of=event_record_of, on_dead_letter=release_event_claim)
def process_business_event(envelope: Envelope) -> None:
    config, stores = get_config(), get_stores()
    connection = config.connections.get(envelope.connection)
    if not isinstance(connection, DynamicsConnection):
        raise PermanentFailure(f"no Dynamics connection named {envelope.connection!r} in the configuration")
    try:
        event = parse_event(envelope.payload.get("event"))
    except EventError as exc:
        raise PermanentFailure(f"not a business event: {exc}") from None
    entity, key = event_record(event)
    known_record = record_ref(connection.name, entity, key) if key else ""
    found_by_poll = envelope.payload.get("source") == "poll"
    if not found_by_poll and connection.silence_alarm is not None:
        heard_from(stores, connection.name, event.legal_entity, _received_at(envelope) or datetime.now(UTC))
    audit = stores.audit
    claim = stores.dedup.take(EVENT_SCOPE, envelope.key, owner=envelope.correlation_id)
    origin: dict[str, Any] = {"source": "poll"} if found_by_poll else {}
    if claim == "taken":
        audit.append(envelope.correlation_id, "duplicate", connection=connection.name, record=known_record,
                     event=event.business_event_id, control_number=event.control_number, **origin)
        return
    # The event's steps are written together: at the end, or at the failure that ends this attempt.
    steps = audit.batch(envelope.correlation_id)
    if claim == "new" or not received_on_trail(stores, envelope.correlation_id):  # "again": a retry, or a stop
        steps.append(envelope.correlation_id, "received", connection=connection.name, record=known_record,
                     event=event.business_event_id, control_number=event.control_number,
                     legal_entity=event.legal_entity, **origin)
    try:
        enrich_and_route(config, stores, connection, envelope, event, known_record, steps)
    finally:
        steps.flush()


def received_on_trail(stores: Stores, correlation_id: str) -> bool:
    """Whether an earlier attempt of this event wrote its ``received`` step (a stop before its steps
    were written leaves none): read only when the event comes back, never on its first attempt."""
    return any(entry.step == "received" for entry in stores.audit.by_correlation(correlation_id, job_steps=False))


def enrich_and_route(config: AppConfig, stores: Stores, connection: DynamicsConnection, envelope: Envelope,
                     event: BusinessEvent, known_record: str, steps: AuditBatch) -> None:
    from shared.erp.dynamics.client import dynamics_client
    from shared.erp.dynamics.documents import document_fields

    try:
        enriched = record_fields(event, dynamics_client(connection))
    except EnrichmentError as exc:
        steps.append(envelope.correlation_id, "failed", connection=connection.name, record=known_record,
                     event=event.business_event_id, reason=f"record not readable: {exc}")
        return
    enriched.fields.update(document_fields(enriched.fields, connection))
    record = record_ref(connection.name, enriched.record_entity, enriched.record_key)
    steps.append(envelope.correlation_id, "enriched", connection=connection.name, record=record,
                 reads=enriched.reads)
    polled_entity = envelope.payload.get("polled_entity")
    queue_notifications(config, stores, get_bus(), source=connection.name, event_type=event.business_event_id,
                        event_key=envelope.key, record=record, fields=enriched.fields,
                        correlation_id=envelope.correlation_id, steps=steps,
                        changed_at=event.event_time, received_at=_received_at(envelope),
                        also=(polled_entity,) if isinstance(polled_entity, str) else ())


def _received_at(envelope: Envelope) -> datetime | None:
    raw = envelope.payload.get("received_at")
    try:
        return parse_utc_time(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def validity_start(changed_at: datetime | None, received_at: datetime | None) -> datetime:
    """Where a rule's validity period starts: when the ERP change happened if the ERP says so (the
    person waits from then, whatever the ERP's own queue or the poll interval added), else when the
    event was received, else now; never later than now, so an ERP clock ahead of ours buys no time."""
    now = datetime.now(UTC)
    return min(changed_at or received_at or now, now)


def queue_notifications(config: AppConfig, stores: Stores, bus: MessageBus, *, source: str, event_type: str,
                        event_key: str, record: str, fields: Mapping[str, Any], correlation_id: str,
                        steps: AuditBatch | None = None, changed_at: datetime | None = None,
                        received_at: datetime | None = None, also: tuple[str, ...] = ()) -> int:
    """Route one record and queue a job per (rule, recipient); the number of jobs queued. Rules on ``event_type``
    or on one of the names in ``also`` match it.

    Its audit steps join ``steps`` (else a batch of their own) and are written together at the end,
    or at the failure that ends the attempt: whatever was queued before it is on the trail.
    ``changed_at`` and ``received_at`` start the validity period of rules that have one."""
    audit = steps or stores.audit.batch(correlation_id)
    routed: list[Envelope] = []
    try:
        queued = _route(config, audit, bus, routed, source=source, event_type=event_type, event_key=event_key,
                        record=record, fields=fields, correlation_id=correlation_id,
                        since=validity_start(changed_at, received_at), also=also)
    finally:
        audit.flush()
    deliver_first_tries(bus, routed)
    return queued


def deliver_first_tries(bus: MessageBus, routed: list[Envelope]) -> None:
    """Hand the routed notifications on: the first ``INLINE_DELIVERIES`` are tried here and now (no queue round
    trip for the usual alert), the rest go onto ``notifications``; all of them do when ``DELIVER_INLINE`` is off
    or this process has no queue consumer to run the delivery stage as it would. Those are put there first, so
    that a stop during a send here holds none of them back; a stop here brings this stage's own message back,
    which routes the same job ids again, and a job once claimed is never sent twice."""
    run_now = in_place_runner() if deliver_inline() else None
    inline = routed[:INLINE_DELIVERIES] if run_now is not None else []
    queued = routed[len(inline):]
    if len(queued) == 1:
        bus.send(NOTIFICATIONS, queued[0])
    elif queued:
        bus.send_many(NOTIFICATIONS, queued)
    if run_now is not None:
        for envelope in inline:
            run_now(NOTIFICATIONS, envelope, bus)


def deliver_inline() -> bool:
    """``DELIVER_INLINE`` (default on): off sends every notification through the queue, so that stopping the
    notifications function pauses every send."""
    return env_str("DELIVER_INLINE", "true").strip().lower() not in {"0", "false", "no", "off"}


def _route(config: AppConfig, audit: AuditBatch, bus: MessageBus, routed: list[Envelope], *, source: str,
           event_type: str, event_key: str, record: str, fields: Mapping[str, Any], correlation_id: str,
           since: datetime, also: tuple[str, ...] = ()) -> int:
    """Route the record: each notification it calls for is appended to ``routed`` (for the caller to hand on)
    and audited ``routed``; escalations are scheduled. The number of notifications."""
    found = targets(config, source, event_type, fields, also)
    if not found:
        audit.append(correlation_id, "no-rule", connection=source, record=record, event=event_type)
        return 0
    queued = 0
    first_jobs: dict[str, list[str]] = {}  # per escalating rule: the jobs of its own send
    for target in found:
        rule = target.rule
        if target.problem:
            audit.append(correlation_id, "no-recipient", connection=source, record=record, rule=rule.id,
                         reason=target.problem)
            continue
        job_id = job_id_for(event_key, rule.id, rule.channel, target.address)
        payload = notification_payload(config, rule, target.address, fields, job_id=job_id, source=source,
                                       record=record, event_type=event_type, since=since)
        routed.append(Envelope(NOTIFICATION, rule.via, job_id, payload, correlation_id))
        _audit_routed(audit, correlation_id, source, record, job_id, rule.id, rule.channel, target.address)
        queued += 1
        if rule.escalation is not None:
            first_jobs.setdefault(rule.id, []).append(job_id)
    for rule in {target.rule.id: target.rule for target in found if target.rule.id in first_jobs}.values():
        schedule_escalation(bus, rule, first_jobs[rule.id], fields, event_key=event_key, record=record,
                            correlation_id=correlation_id,
                            render=lambda step_rule, address, job_id: notification_payload(
                                config, step_rule, address, fields, job_id=job_id, source=source, record=record,
                                event_type=event_type, since=since))
    return queued


def notification_payload(config: AppConfig, rule: Rule, address: str, fields: Mapping[str, Any], *,
                         job_id: str, source: str, record: str, event_type: str,
                         since: datetime | None = None) -> dict[str, Any]:
    """Everything the delivery stage needs, rendered now while the record is at hand; with the
    deadline (``expires_at``, fixed now from ``since``) when the rule has a validity period."""
    payload: dict[str, Any] = {
        "job_id": job_id, "rule": rule.id, "channel": rule.channel, "via": rule.via, "to": address,
        "source": source, "record": record, "event": event_type, "verify": rule.verify,
        ON_TRAIL: True,  # routed (or escalated) by job id on the ERP change's audit
    }
    if rule.valid_for_minutes is not None:
        start = since or datetime.now(UTC)
        payload["expires_at"] = (start + timedelta(minutes=rule.valid_for_minutes)).isoformat()
    payload |= consent_and_quiet_hours(config, rule, fields)
    carrier = kinds.carrier_of(rule.channel)
    if carrier is None:
        raise PermanentFailure(f"rule {rule.id!r}: no channel kind carries {rule.channel!r}")
    flow = kinds.load(carrier.flow)
    return payload | flow.render(rule, config.template(rule.template), fields, event_type)


def consent_and_quiet_hours(config: AppConfig, rule: Rule, fields: Mapping[str, Any]) -> dict[str, Any]:
    """What delivery checks before sending: the purpose consent is asked for, and the quiet window
    (in the recipient's zone, read from the record now) with whether the rule overrides it."""
    extra: dict[str, Any] = {"category": rule.category}
    window = window_for(rule, config.connections.get(rule.via), fields)
    if window is not None:
        extra["quiet_hours"] = window
        if rule.critical:
            extra["critical"] = True
    return extra


def _audit_routed(audit: AuditBatch, correlation_id: str, source: str, record: str, job_id: str, rule: str,
                  channel: str, address: str) -> None:
    audit.append(correlation_id, "routed", connection=source, record=record, job_id=job_id, rule=rule,
                 channel=channel, to=kinds.shown_address(channel, address))
