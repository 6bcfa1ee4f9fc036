"""Scheduled polls of ERPs that do not push: which are due, and what changed since last time.

- The scheduler (a timer, every minute) enqueues one ``poll.run`` per connection and entity
  whose interval has come round. The interval slot is claimed in the dedup table, so
  several instances firing the same minute enqueue it once.
- The worker reads the watermark, asks the ERP for rows changed since the watermark minus
  the overlap (late commits and clock skew), streams them page by page and puts one
  ``erp.change`` on erp-events per change, keyed by entity + record key + change stamp.
  Only then does the watermark move: to the newest stamp seen, never past the poll's own
  start, never backwards. Re-read rows in the overlap are filtered by their keys.
- An ``erp.change`` goes through the same claim, rules and templates as a business event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from shared.config import AppConfig, Connection, DynamicsConnection, PollSettings, get_config
from shared.model import ERP_CHANGE, ERP_EVENTS, POLL_JOBS, POLL_RUN, Change, Envelope
from shared.pipeline.consume import PermanentFailure
from shared.pipeline.process import EVENT_SCOPE, queue_notifications, record_ref
from shared.pipeline.registry import handles
from shared.storage.bus import MessageBus, get_bus
from shared.storage.tables import Stores, get_stores

log = logging.getLogger(__name__)

POLL_SLOT_SCOPE = "poll-slot"
ChangeReader = Callable[[str, datetime], Iterator[Change]]


def poll_settings(connection: Connection) -> PollSettings | None:
    return getattr(connection, "poll", None)


def schedule_polls(config: AppConfig, stores: Stores, bus: MessageBus, now: datetime) -> list[str]:
    """Enqueue the polls that are due at ``now``; the keys of those this call enqueued."""
    enqueued = []
    for connection in config.connections.values():
        settings = poll_settings(connection)
        if settings is None:
            continue
        period = settings.interval_minutes * 60
        slot = int(now.timestamp() // period)
        for entity in settings.entities:
            key = f"{connection.name}|{entity}|{slot}"
            if not stores.dedup.claim(POLL_SLOT_SCOPE, key):
                continue  # another instance (or an earlier minute) took this slot
            bus.send(POLL_JOBS, Envelope(POLL_RUN, connection.name, key,
                                         {"entity": entity, "slot_start": slot * period}))
            enqueued.append(key)
    return enqueued


def change_reader(connection: Connection) -> ChangeReader:
    """How to read changes from this connection's ERP."""
    if isinstance(connection, DynamicsConnection):
        from shared.erp.dynamics import dynamics_changes, dynamics_client

        client = dynamics_client(connection)
        return lambda entity, since: dynamics_changes(client, entity, since)
    raise PermanentFailure(f"{connection.kind} connections cannot be polled yet")


def change_key(connection: str, change: Change) -> str:
    stamp = change.stamp.isoformat() if isinstance(change.stamp, datetime) else str(change.stamp)
    return f"{connection}|{change.entity}|{change.key}|{stamp}"


@handles(POLL_JOBS, POLL_RUN)
def run_poll(envelope: Envelope) -> None:
    config, stores, bus = get_config(), get_stores(), get_bus()
    connection = config.connections.get(envelope.connection)
    settings = poll_settings(connection) if connection else None
    if connection is None or settings is None:
        raise PermanentFailure(f"{envelope.connection!r} is not a polled connection in the configuration")
    poll(connection, settings, envelope.payload["entity"], stores, bus, change_reader(connection))


def poll(connection: Connection, settings: PollSettings, entity: str, stores: Stores, bus: MessageBus,
         read: ChangeReader, now: datetime | None = None) -> int:
    """One poll of one entity; the number of changes enqueued."""
    started = now or datetime.now(UTC)
    watermark = stores.watermarks.get(connection.name, entity)
    since = (watermark if isinstance(watermark, datetime) else started - timedelta(minutes=settings.interval_minutes))
    since -= timedelta(seconds=settings.overlap_seconds)
    newest: datetime | None = None
    count = 0
    for change in read(entity, since):
        bus.send(ERP_EVENTS, Envelope(ERP_CHANGE, connection.name, change_key(connection.name, change), {
            "entity": change.entity, "key": change.key, "record_entity": change.record_entity,
            "record_key": change.record_key, "fields": change.fields,
            "stamp": change.stamp.isoformat() if isinstance(change.stamp, datetime) else change.stamp,
        }))
        count += 1
        if isinstance(change.stamp, datetime) and (newest is None or change.stamp > newest):
            newest = change.stamp
    # Everything read is on the queue: now the watermark may move, but not past our own start.
    stores.watermarks.advance(connection.name, entity, min(newest or started, started))
    log.info("polled %s/%s since %s: %d change(s)", connection.name, entity, since.isoformat(), count)
    return count


@handles(ERP_EVENTS, ERP_CHANGE)
def process_change(envelope: Envelope) -> None:
    config, stores = get_config(), get_stores()
    payload = envelope.payload
    record = record_ref(envelope.connection, payload["record_entity"], payload["record_key"])
    if not stores.dedup.claim(EVENT_SCOPE, envelope.key, owner=envelope.correlation_id):
        stores.audit.append(envelope.correlation_id, "duplicate", connection=envelope.connection, record=record,
                            entity=payload["entity"])
        return
    if envelope.attempt == 0:
        stores.audit.append(envelope.correlation_id, "received", connection=envelope.connection, record=record,
                            entity=payload["entity"], stamp=payload.get("stamp"), source="poll")
    queue_notifications(config, stores, get_bus(), source=envelope.connection, event_type=payload["entity"],
                        event_key=envelope.key, record=record, fields=payload["fields"],
                        correlation_id=envelope.correlation_id)
