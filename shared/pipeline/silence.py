"""The silence alarm: a legal entity that sends no business event for a number of business hours.

Business events stop without a sound (an endpoint deleted, its Key Vault secret rotated, the batch
job halted); the poll can fill in the facts it reads, but someone must learn that push stopped.

- Each pushed event of a watched connection upserts one row (connection, legal entity) with the time
  it was received: one write, no read.
- The poll scheduler's timer (every minute) reads the row of each watched legal entity (a point read
  each, no scan) and counts the business hours since that time in the alarm's days, window and zone.
  A row not there yet is written with now: silence is counted from the first check.
- Past the limit, the alarm is raised once per silence: an ETag-conditional update marks the row, so of
  two instances one raises it. Raising logs a warning (step ``silence-alarm``), audits it on the record
  ``<connection>|LegalEntity|<legal entity>`` and queues the rules on the event ``SilenceAlarm``.
  The first event after it clears the alarm at the next check (``silence-cleared``, the same trail).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.config.model import AppConfig
from shared.erp.dynamics.connection import DynamicsConnection, SilenceAlarm
from shared.pipeline.lastevent import row_keys
from shared.pipeline.process import queue_notifications, record_ref
from shared.storage.bus import MessageBus
from shared.storage.tables import SILENCE, Stores
from shared.telemetry import scope

log = logging.getLogger(__name__)

SILENCE_ALARM_EVENT = "SilenceAlarm"  # rules on this event are told of an alarm
LEGAL_ENTITY = "LegalEntity"  # the record entity the alarm is audited on
_MOST_DAYS = 400  # a silence longer than this is past any limit: no need to count further


def business_hours_between(since: datetime, until: datetime, alarm: SilenceAlarm) -> float:
    """The hours of [since, until] inside the alarm's business days and daily window, in its time zone."""
    zone, days = ZoneInfo(alarm.time_zone), alarm.weekdays()
    opens, closes = time.fromisoformat(alarm.start), time.fromisoformat(alarm.end)
    day: date = since.astimezone(zone).date()
    last = min(until.astimezone(zone).date(), day + timedelta(days=_MOST_DAYS))
    seconds = 0.0
    while day <= last:
        if day.weekday() in days:
            start = max(datetime.combine(day, opens, zone), since)
            end = min(datetime.combine(day, closes, zone), until)
            seconds += max((end - start).total_seconds(), 0.0)
        day += timedelta(days=1)
    return seconds / 3600


def check_silence(config: AppConfig, stores: Stores, bus: MessageBus, now: datetime) -> list[str]:
    """Raise or clear the alarm of every watched legal entity; what changed, as ``raised|clear <record>``."""
    changed: list[str] = []
    for connection in config.connections.values():
        if not isinstance(connection, DynamicsConnection) or connection.silence_alarm is None:
            continue
        for legal_entity in connection.watched_legal_entities():
            outcome = _check_one(config, stores, bus, connection, legal_entity, now)
            if outcome:
                changed.append(f"{outcome} {record_ref(connection.name, LEGAL_ENTITY, legal_entity)}")
    return changed


def _check_one(config: AppConfig, stores: Stores, bus: MessageBus, connection: DynamicsConnection,
               legal_entity: str, now: datetime) -> str:
    assert connection.silence_alarm is not None
    keys = row_keys(connection.name, legal_entity)
    row = stores.tables.row(SILENCE, keys["PartitionKey"], keys["RowKey"])
    if row is None:
        # The first check: silence is counted from now (unless an event or another instance wrote first).
        stores.tables.write_over(SILENCE, {**keys, "LastEvent": now}, None)
        return ""
    last, alarm_since = _moment(row.get("LastEvent")), _moment(row.get("AlarmSince"))
    record = record_ref(connection.name, LEGAL_ENTITY, legal_entity)
    if alarm_since is not None:
        if last is None or last <= alarm_since:
            return ""  # still silent: raised already, once
        # Events came again: clear the mark (only if no event or instance changed the row since it was read).
        if not stores.tables.write_over(SILENCE, {**keys, "LastEvent": last}, row, replace=True):
            return ""  # decided again at the next check
        _tell_cleared(stores, connection.name, legal_entity, record, row.get("AlarmCorrelation") or "", last)
        return "cleared"
    since = last or now
    hours = connection.silence_alarm.business_hours
    if business_hours_between(since, now, connection.silence_alarm) < hours:
        return ""
    correlation_id = uuid.uuid5(uuid.NAMESPACE_URL, f"silence|{record}|{since.isoformat()}").hex
    marked = {**keys, "LastEvent": since, "AlarmSince": since, "AlarmRaisedAt": now, "AlarmCorrelation": correlation_id}
    if not stores.tables.write_over(SILENCE, marked, row, replace=True):
        return ""  # an event came in, or another instance raised it
    _raise(config, stores, bus, connection, legal_entity, record, correlation_id, since, now)
    return "raised"


def _raise(config: AppConfig, stores: Stores, bus: MessageBus, connection: DynamicsConnection, legal_entity: str,
           record: str, correlation_id: str, since: datetime, now: datetime) -> None:
    assert connection.silence_alarm is not None
    hours = connection.silence_alarm.business_hours
    reason = f"no business event from {legal_entity} for {hours:g} business hours (the last at {since.isoformat()})"
    with scope(connection=connection.name, erp_record=record, correlation_id=correlation_id, step="silence-alarm",
               reason=reason):
        log.warning("silence alarm: %s on %s", reason, connection.name)
    stores.audit.append(correlation_id, "silence-alarm", connection=connection.name, record=record,
                        legal_entity=legal_entity, silent_since=since.isoformat(), business_hours=hours,
                        reason=reason)
    rules = tuple(rule for rule in config.rules_for(connection.name) if rule.event == SILENCE_ALARM_EVENT)
    if rules:  # only rules that name the alarm: a rule on every event of the connection is about records
        fields: Mapping[str, Any] = {"legal_entity": legal_entity, "connection": connection.name,
                                     "silent_since": since.isoformat(), "business_hours": f"{hours:g}",
                                     "raised_at": now.isoformat()}
        queue_notifications(dataclasses.replace(config, rules=rules), stores, bus, source=connection.name,
                            event_type=SILENCE_ALARM_EVENT, event_key=f"silence|{record}|{since.isoformat()}",
                            record=record, fields=fields, correlation_id=correlation_id)


def _tell_cleared(stores: Stores, connection: str, legal_entity: str, record: str, correlation_id: str,
                  last: datetime) -> None:
    correlation_id = correlation_id or uuid.uuid4().hex
    with scope(connection=connection, erp_record=record, correlation_id=correlation_id, step="silence-cleared"):
        log.info("silence alarm cleared: business events from %s on %s came again at %s", legal_entity, connection,
                 last.isoformat())
    stores.audit.append(correlation_id, "silence-cleared", connection=connection, record=record,
                        legal_entity=legal_entity, event_at=last.isoformat())


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
