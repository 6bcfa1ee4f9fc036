"""Scheduled polls of ERPs that do not push: which are due, and what changed since last time.

- The scheduler (a timer, every minute) enqueues one ``poll.run`` per connection whose
  interval has come round, naming its entities. The interval slot is claimed in the dedup
  table, so several instances firing the same minute enqueue it once. Each connection is
  its own message: one that fails or hangs never delays another.
- The worker reads the entities in the order their adapter declares (QAD receipts before
  invoices), each from its watermark: a ``time`` cursor from the watermark minus the
  overlap, in the ERP's time zone; a ``number`` cursor strictly after it; an entity with
  no cursor by comparing each record's watched fields with the snapshot kept of them.
  Pages are streamed, so memory does not grow with the number of rows, and a page token
  that comes back again is an error, not a loop.
- Each change becomes one ``erp.change`` on erp-events, keyed by connection + entity +
  record key + change stamp, and a page's changes are enqueued together (``send_many``);
  only once an entity's changes are all enqueued may its watermark move (and a snapshot
  only once its record's change is), never past the poll's own start, never backwards. A
  send that fails fails the poll; rows read again (the overlap, a retried poll) carry the
  same keys and are claimed only once downstream.
- A source whose reads must never overlap (a SYSPRO operator's session) is polled under a
  lease, renewed between pages once half of it has passed, so one entity read for longer
  than the lease keeps it. Progress (watermark, snapshots) is written only while the lease
  is ours: a poll whose lease another poll took over stops without writing and is retried.
- A note we wrote moves its record's stamp: that change alone is not sent on (``shared.pipeline.echoes``).
- An ``erp.change`` goes through the same claim, rules and templates as a business event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from shared.config.loading import get_config
from shared.config.model import AppConfig, Connection, PollSettings
from shared.erp.polling import (
    NONE,
    NUMBER,
    TIME,
    Finding,
    PageRequest,
    PolledEntity,
    Source,
    adapter,
    local_bound,
    number_stamp,
    row_key,
    time_stamp,
    watched_hash,
)
from shared.http import quiet_network_failures
from shared.model import BUSINESS_EVENT, ERP_CHANGE, ERP_EVENTS, POLL_JOBS, POLL_RUN, Change, Envelope, parse_utc_time
from shared.outcomes import PermanentFailure, RetryLater, WaitForSlot, cannot_connect, classify
from shared.pipeline.echoes import keep_sent, news_only
from shared.pipeline.pollhealth import (
    RunOutcome,
    due_entities,
    log_failed_run,
    record_run,
    requested_entities,
    slot_start,
)
from shared.pipeline.process import EVENT_SCOPE, queue_notifications, record_ref
from shared.pipeline.registry import handles
from shared.storage.bus import MessageBus, get_bus
from shared.storage.tables import HeldLease, LeaseBusy, Snapshot, Stores, get_stores

log = logging.getLogger(__name__)

POLL_SLOT_SCOPE = "poll-slot"
LEASE_SECONDS = 300.0  # renewed between pages once half has passed; lapses by itself if the instance dies
PROGRESS_EVERY_ROWS = 10_000


class PagingError(PermanentFailure):
    """The ERP's paging cannot be followed (a page token came back again)."""


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
        key = f"{connection.name}|{slot}"
        if not stores.dedup.claim(POLL_SLOT_SCOPE, key):
            continue  # another instance (or an earlier minute) took this slot
        # Once per slot: entities backing off after failures wait for their next run (pollhealth).
        due = due_entities(stores, connection.name, settings.entities, now)
        if not due:
            log.debug("poll of %s skipped: every entity backs off after failures", connection.name)
            continue
        bus.send(POLL_JOBS, Envelope(POLL_RUN, connection.name, key, {"entities": due, "slot_start": slot * period}))
        enqueued.append(key)
    return enqueued


def request_poll(config: AppConfig, bus: MessageBus, connection: str, entity: str | None = None) -> int | None:
    """"Poll now": run the connection's entities (or one) at once, whatever their backoff; the number of
    entities queued, or None when the configuration polls no such connection or entity."""
    names = requested_entities(config, connection, entity)
    if names is None:
        return None
    bus.send(POLL_JOBS, Envelope(POLL_RUN, connection, f"{connection}|now|{uuid.uuid4().hex}", {"entities": names}))
    return len(names)


@handles(POLL_JOBS, POLL_RUN)
def run_poll(envelope: Envelope) -> None:
    config, stores, bus = get_config(), get_stores(), get_bus()
    connection = config.connections.get(envelope.connection)
    settings = poll_settings(connection) if connection else None
    if connection is None or settings is None:
        raise PermanentFailure(f"{envelope.connection!r} is not a polled connection in the configuration")
    payload = envelope.payload
    names = payload.get("entities") or [payload.get("entity")]
    started = datetime.now(UTC)
    slot = payload.get("slot_start")
    run = RunOutcome(connection, settings, names, started,
                     float(slot) if isinstance(slot, int | float) else slot_start(settings, started))
    done: dict[str, int] = {}
    try:
        with quiet_network_failures():  # an ERP that is down: the run's one line below says so
            _run_cycle(envelope, connection, settings, names, stores, bus, done)
    except (WaitForSlot, LeaseLost):
        raise  # another poll of the same account runs or took over: the queue brings this one back
    except Exception as error:
        failed = record_run(stores, replace(run, done=list(done), error=error))
        if not (isinstance(classify(error), RetryLater) and cannot_connect(error)):
            # An ERP that answers but fails (5xx, 429, a licence limit) is retried from the queue, a permanent
            # failure dead-lettered and a bug left to the host, as before; the scheduler backs off meanwhile.
            raise
        if failed is not None:
            log_failed_run(failed, datetime.now(UTC))
        return  # the ERP cannot be reached: the scheduler tries again after the backoff
    record_run(stores, replace(run, done=list(done)))


def _run_cycle(envelope: Envelope, connection: Connection, settings: PollSettings, names: Sequence[str],
               stores: Stores, bus: MessageBus, done: dict[str, int]) -> None:
    try:
        source = adapter(connection.kind).open_source(connection)
    except ValueError as error:
        raise PermanentFailure(str(error)) from error
    try:
        poll_cycle(connection, settings, source, names, stores, bus, progress=done)
    except LeaseLost as lost:
        stores.audit.append(envelope.correlation_id, "poll-lease-lost", connection=connection.name,
                            reason=lost.reason)
        raise
    finally:
        source.close()


def poll_cycle(connection: Connection, settings: PollSettings, source: Source, names: Sequence[str],
               stores: Stores, bus: MessageBus, now: datetime | None = None,
               progress: dict[str, int] | None = None) -> dict[str, int]:
    """Poll the named entities of one connection in the adapter's order; changes enqueued per entity.
    ``progress`` (returned) holds each entity read through, so a run that fails half-way shows which."""
    unknown = [name for name in names if name not in source.entities]
    if unknown:
        raise PermanentFailure(f"{connection.name}: cannot poll {', '.join(map(repr, unknown))}")
    wanted = [entity for name, entity in source.entities.items() if name in names]
    counts: dict[str, int] = {} if progress is None else progress
    with ExitStack() as stack:
        lease = _hold(stores, source.exclusive, stack)
        for entity in wanted:
            counts[entity.name] = poll_entity(connection, settings, source, entity, stores, bus, now=now,
                                              lease=lease)
    return counts


def _hold(stores: Stores, name: str | None, stack: ExitStack) -> HeldLease | None:
    """The source's lease, held until ``stack`` closes; None when the source needs none."""
    if name is None:
        return None
    try:
        return stack.enter_context(stores.leases.held(name, LEASE_SECONDS))
    except LeaseBusy as busy:
        # Not a failure: another poll of the same ERP account is running; come back after it.
        raise WaitForSlot(busy.wait(), busy.until, f"{name} is in use by another poll") from None


class LeaseLost(RetryLater):
    """Another poll took the source's lease over (ours lapsed): stopped before writing progress."""


def _keep(lease: HeldLease | None, what: str) -> None:
    """Between pages: renew once half the lease has passed, so an entity read for longer keeps it."""
    if lease is not None and not lease.renew_if_due():
        _lost(lease, what)


def _fence(lease: HeldLease | None, what: str) -> None:
    """Right before a watermark write: renew now, so the write is made while this poll surely holds the lease."""
    if lease is not None and not lease.renew():
        _lost(lease, what)


def _lost(lease: HeldLease, what: str) -> NoReturn:
    # The other holder reads the same ERP account now; what this poll read is enqueued (claimed once
    # downstream) but its progress is not written: the next poll reads from the last watermark again.
    log.warning("poll of %s stopped without writing its progress: another poll took over lease %s",
                what, lease.name)
    raise LeaseLost(60.0, f"{what}: another poll took over {lease.name}; its progress was not written")


def poll_entity(connection: Connection, settings: PollSettings, source: Source, entity: PolledEntity,
                stores: Stores, bus: MessageBus, now: datetime | None = None, lease: HeldLease | None = None) -> int:
    """One poll of one entity; the number of changes enqueued. With ``lease``, progress is written only under it."""
    started = now or datetime.now(UTC)
    if entity.cursor == NONE:
        return _poll_snapshots(connection, source, entity, stores, bus, started, lease)
    watermark = stores.watermarks.get(connection.name, entity.name)
    # A counter's first poll only finds where the ERP stands: history is not news.
    baseline = watermark is None and entity.cursor == NUMBER and entity.baseline
    since = _lower_bound(entity, settings, watermark, started)
    newest: datetime | int | None = None
    count = 0
    for rows, context in read_pages(source, entity, since, connection.name, lease):
        changes = []
        for row in rows:
            stamp = _row_stamp(entity, settings, row)
            if not baseline:
                changes.append(change_envelope(connection.name, entity, row, context, stamp))
            if newest is None or stamp > newest:  # type: ignore[operator]
                newest = stamp
        news, sent = news_only(stores, connection, entity, changes)  # our own notes coming back are not news
        _enqueue(bus, news)
        keep_sent(stores, connection, entity, sent)
        count += len(news)
    # Everything read is on the queue: now the watermark may move, but not past our own start.
    _fence(lease, f"{connection.name}/{entity.name}")
    if entity.cursor == TIME:
        stores.watermarks.advance(connection.name, entity.name, min(newest or started, started))  # type: ignore[type-var]
    elif newest is not None:
        stores.watermarks.advance(connection.name, entity.name, newest)
    elif baseline:
        stores.watermarks.advance(connection.name, entity.name, 0)  # empty so far: every row from now on is news
    log.info("polled %s/%s since %s: %d change(s)%s", connection.name, entity.name, since, count,
             " (baseline: nothing sent)" if baseline else "")
    return count


def _lower_bound(entity: PolledEntity, settings: PollSettings, watermark: Any, started: datetime) -> Any:
    if entity.cursor == NUMBER:
        return watermark if isinstance(watermark, int) else None
    if not isinstance(watermark, datetime):
        watermark = started - timedelta(minutes=settings.interval_minutes)
    since = watermark - timedelta(seconds=settings.overlap_seconds)
    return local_bound(since, settings.zone, date_only=entity.date_only)


def _row_stamp(entity: PolledEntity, settings: PollSettings, row: Mapping[str, Any]) -> datetime | int:
    value = row.get(entity.cursor_field)
    try:
        if entity.cursor == NUMBER:
            return number_stamp(value)
        return time_stamp(value, settings.zone, date_only=entity.date_only)
    except ValueError as error:
        raise PermanentFailure(f"{entity.name} row {row_key(row, entity.keys)!r}: {error}") from error


def _poll_snapshots(connection: Connection, source: Source, entity: PolledEntity, stores: Stores,
                    bus: MessageBus, started: datetime, lease: HeldLease | None = None) -> int:
    """Read the whole watched set; a record whose watched fields hash differently is a change.

    Snapshots are written page by page, each page after the lease was checked (and renewed when due)
    and after its changes are all enqueued.
    """
    baseline = entity.baseline and stores.watermarks.get(connection.name, entity.name) is None
    count = 0
    for rows, context in read_pages(source, entity, None, connection.name, lease):
        changes: list[Envelope] = []
        snapshots: dict[str, Snapshot] = {}  # this page's, written once its changes are enqueued
        for row in rows:
            key = row_key(row, entity.keys)
            digest = watched_hash(row, entity.watched)
            # A key met earlier in the page (an order's second line due the same day) is that same record.
            known = snapshots.get(key) or stores.snapshots.get(connection.name, entity.name, key)
            if known is not None and known.hash == digest:
                continue
            version = known.version + 1 if known else 1
            if not baseline:
                # The version keeps A -> B -> A two changes; a retried poll computes the same stamp.
                changes.append(change_envelope(connection.name, entity, row, context, f"v{version}:{digest}"))
            snapshots[key] = Snapshot(digest, version)
        _enqueue(bus, changes)
        count += len(changes)
        for key, snapshot in snapshots.items():  # a snapshot moves only once its change is on the queue
            stores.snapshots.put(connection.name, entity.name, key, snapshot)
    _fence(lease, f"{connection.name}/{entity.name}")
    stores.watermarks.advance(connection.name, entity.name, started)  # when the set was last read whole
    log.info("polled %s/%s: %d change(s)%s", connection.name, entity.name, count,
             " (baseline: nothing sent)" if baseline else "")
    return count


def read_pages(source: Source, entity: PolledEntity, since: Any, connection: str = "",
               lease: HeldLease | None = None) -> Iterator[tuple[Sequence[Mapping[str, Any]], Any]]:
    """Each page of rows from ``since`` on with its context, one in memory at a time; the lease kept
    while pages come in."""
    token: str | None = None
    seen: set[str] = set()
    rows_read = 0
    while True:
        page = entity.read(source.client, entity, PageRequest(since, token, entity.page_size))
        _keep(lease, f"{connection}/{entity.name}")  # before this page's rows are acted on
        yield page.rows, page.context
        before = rows_read
        rows_read += len(page.rows)
        if rows_read // PROGRESS_EVERY_ROWS > before // PROGRESS_EVERY_ROWS:
            log.info("polling %s/%s: %d rows read", connection, entity.name, rows_read)
        if page.next_token is None:
            return
        if page.next_token in seen or page.next_token == token:
            raise PagingError(f"{connection}/{entity.name}: the page token {page.next_token[:80]!r} came back "
                              f"after {rows_read} rows; the ERP's paging would loop")
        seen.add(page.next_token)
        token = page.next_token


def change_key(connection: str, change: Change) -> str:
    stamp = change.stamp.isoformat() if isinstance(change.stamp, datetime) else str(change.stamp)
    return f"{connection}|{change.entity}|{change.key}|{stamp}"


def _enqueue(bus: MessageBus, changes: Sequence[Envelope]) -> None:
    """A page's changes in one go. When any send fails this raises, and the poll writes no progress past
    them: the retry sends the page again under the same keys, and the claim downstream takes each once."""
    if changes:
        bus.send_many(ERP_EVENTS, changes)


def change_envelope(connection: str, entity: PolledEntity, row: Mapping[str, Any], context: Any,
                    stamp: Any) -> Envelope:
    """The ``erp.change`` a changed row becomes, keyed by connection, entity, record key and stamp; or, when
    the row is a business fact, keyed by that fact (and sent as the ERP's own event of it, where it has one)."""
    fields = entity.fields(row, context)
    finding = entity.fact(connection, row, fields) if entity.fact else None
    if finding is not None and finding.event is not None:
        return fact_event_envelope(connection, entity, finding)
    record_key = ("|".join(str(fields.get(name, "")) for name in entity.record_key) if entity.record_key
                  else row_key(row, entity.keys))
    change = Change(entity=entity.name, key=row_key(row, entity.keys), stamp=stamp,
                    record_entity=entity.record_entity, record_key=record_key, fields=fields)
    payload = {
        "entity": change.entity, "key": change.key, "record_entity": change.record_entity,
        "record_key": change.record_key, "fields": _jsonable(change.fields),
        "stamp": stamp.isoformat() if isinstance(stamp, datetime) else stamp,
    }
    if isinstance(stamp, datetime) and not entity.date_only:
        payload["changed_at"] = stamp.isoformat()  # when it happened: a rule's validity period starts here
    return Envelope(ERP_CHANGE, connection, finding.key if finding else change_key(connection, change), payload)


def fact_event_envelope(connection: str, entity: PolledEntity, finding: Finding) -> Envelope:
    """A row found by the poll that stands for a pushed event: that event, under the fact's key, marked as found
    by the poll (it fills in an event that never arrived; rules on the entity's name still match it)."""
    payload = {"event": dict(finding.event or {}), "received_at": datetime.now(UTC).isoformat(),
               "source": "poll", "polled_entity": entity.name}
    return Envelope(BUSINESS_EVENT, connection, finding.key, payload)


def _jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in fields.items()}


def change_record_of(envelope: Envelope) -> str:
    payload = envelope.payload
    return record_ref(envelope.connection, str(payload.get("record_entity", "")), str(payload.get("record_key", "")))


def release_change_claim(envelope: Envelope, reason: str) -> None:
    """A dead-lettered change is not done: give its claim back, so the next poll or a redrive sends it."""
    get_stores().dedup.release(EVENT_SCOPE, envelope.key)


@handles(ERP_EVENTS, ERP_CHANGE, record_of=change_record_of, on_dead_letter=release_change_claim)
def process_change(envelope: Envelope) -> None:
    config, stores = get_config(), get_stores()
    payload = envelope.payload
    record = change_record_of(envelope)
    claim = stores.dedup.take(EVENT_SCOPE, envelope.key, owner=envelope.correlation_id)
    if claim == "taken":
        stores.audit.append(envelope.correlation_id, "duplicate", connection=envelope.connection, record=record,
                            entity=payload["entity"])
        return
    if claim == "new":
        stores.audit.append(envelope.correlation_id, "received", connection=envelope.connection, record=record,
                            entity=payload["entity"], stamp=payload.get("stamp"), source="poll")
    queue_notifications(config, stores, get_bus(), source=envelope.connection, event_type=payload["entity"],
                        event_key=envelope.key, record=record, fields=payload["fields"],
                        correlation_id=envelope.correlation_id, changed_at=_changed_at(payload))


def _changed_at(payload: Mapping[str, Any]) -> datetime | None:
    raw = payload.get("changed_at")
    try:
        return parse_utc_time(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
