"""How the polls of each connection's entities fare, and how a failing one backs off.

- Every poll run writes, per entity it was asked for, one status row (``pollstatus``, one transaction
  per run): when it was tried, when it last succeeded, the last error in words, the failed runs in a
  row, and when the scheduler runs it next.
- After a success the next run is the next slot of the connection's interval. After the n-th failure
  in a row it is pushed out: one interval, then 2, 4, 8 ... intervals after the slot that failed, at
  most ``BACKOFF_CAP_SECONDS`` (an hour; a longer interval is never shortened), on a slot boundary.
  The scheduler skips an entity until then; "poll now" runs it at once all the same.
- An ERP that cannot be reached (name not resolved, connection refused, no connection in time) is no
  bug and no dead letter: its failed run logs one line (connection, entity, why, when the next try is)
  and its work is done; the watermark has not moved, so the next successful poll reads from where the
  last one stopped. Any other failure is recorded the same way, then raised as before: an ERP that
  answers but fails (5xx, 429, a licence limit) is retried from the queue, a permanent failure is
  dead-lettered, a bug is left to the host.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared import telemetry
from shared.config.model import AppConfig, Connection, PollSettings
from shared.outcomes import describe, network_problem, peer_of
from shared.storage.tables import PollStatus, Stores, WatermarkValue

log = logging.getLogger(__name__)

BACKOFF_CAP_SECONDS = 3600.0
MAX_REASON = 300


def period_seconds(settings: PollSettings) -> float:
    return settings.interval_minutes * 60.0


def slot_start(settings: PollSettings, moment: datetime) -> float:
    """The start (epoch seconds) of the interval slot ``moment`` falls in."""
    period = period_seconds(settings)
    return math.floor(moment.timestamp() / period) * period


def next_run(settings: PollSettings, slot: float, failures: int) -> datetime:
    """When the run after one of slot ``slot`` (epoch seconds) is due, after ``failures`` failed runs in a row."""
    period = period_seconds(settings)
    delay = period if failures <= 0 else min(period * 2 ** min(failures - 1, 30), max(BACKOFF_CAP_SECONDS, period))
    return datetime.fromtimestamp(math.ceil((slot + delay) / period) * period, UTC)


def due_entities(stores: Stores, connection: str, entities: Sequence[str], now: datetime) -> list[str]:
    """The entities of ``connection`` whose next run has come (or that never ran), in one query."""
    statuses = stores.polls.of(connection)
    return [name for name in entities if _due(statuses.get(name), now)]


def _due(status: PollStatus | None, now: datetime) -> bool:
    return status is None or status.next_run is None or status.next_run <= now


@dataclass(frozen=True)
class RunOutcome:
    """One poll run of a connection: which entities it read through, and the error that stopped it."""

    connection: Connection
    settings: PollSettings
    entities: Sequence[str]
    started: datetime
    slot: float
    done: Sequence[str] = ()
    error: BaseException | None = None


def record_run(stores: Stores, run: RunOutcome) -> PollStatus | None:
    """Write the run's statuses in one transaction; the failed entity's status when it failed."""
    succeeded = PollStatus(run.connection.name, "", last_attempt=run.started, last_success=run.started,
                           next_run=next_run(run.settings, run.slot, 0))
    statuses = [_named(succeeded, name) for name in run.entities if name in run.done]
    failed: PollStatus | None = None
    if run.error is not None:
        reason = failure_reason(run.error, run.connection)
        before = stores.polls.of(run.connection.name)  # read only when a run fails: how many in a row
        for name in (name for name in run.entities if name not in run.done):
            failures = (before[name].failures if name in before else 0) + 1
            status = PollStatus(run.connection.name, name, last_attempt=run.started, last_error=reason,
                                failures=failures, next_run=next_run(run.settings, run.slot, failures))
            failed = failed or status  # the entity the run stopped at; the later ones were not read
            statuses.append(status)
    stores.polls.record(statuses)
    return failed


def _named(status: PollStatus, entity: str) -> PollStatus:
    return PollStatus(status.connection, entity, status.last_attempt, status.last_success, None, 0, status.next_run)


def log_failed_run(status: PollStatus, now: datetime) -> None:
    """The one line a failed run logs: which poll, why, and when it tries again."""
    wait = max((status.next_run - now).total_seconds(), 0.0) if status.next_run else 0.0
    with telemetry.scope(step="poll-failed", reason=status.last_error):
        log.warning("poll of %s/%s failed (%d in a row): %s; next try at %s (in %s)", status.connection,
                    status.entity, status.failures, status.last_error, iso(status.next_run), _duration(wait))


def failure_reason(error: BaseException, connection: Connection) -> str:
    """Why a poll failed, in words an operator acts on; never a path, a query, a secret or a record's data."""
    words = network_problem(error)
    if words:
        return f"cannot reach {peer_of(error) or origin(connection) or connection.name}: {words}"[:MAX_REASON]
    return describe(error)[:MAX_REASON]


def origin(connection: Connection) -> str | None:
    """The scheme, host and port of the connection's ERP, from its base URL (no credentials, path or query)."""
    for name in ("base_url", "environment_url"):
        url = getattr(connection, name, None)
        if isinstance(url, str) and url:
            parts = urlsplit(url)
            host = parts.hostname or ""
            return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def iso(moment: datetime | None) -> str | None:
    """A UTC time as ISO 8601 with a Z, to the second."""
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- what operators see --------------------------------------------------------------------------------


def polled_entities(config: AppConfig) -> list[tuple[Connection, PollSettings, str]]:
    """Every (connection, its poll settings, entity) the configuration polls, in its order."""
    found: list[tuple[Connection, PollSettings, str]] = []
    for connection in config.connections.values():
        settings: PollSettings | None = getattr(connection, "poll", None)
        if settings is not None:
            found.extend((connection, settings, entity) for entity in settings.entities)
    return found


def poll_rows(config: AppConfig, stores: Stores, now: datetime) -> list[dict[str, Any]]:
    """One row per polled connection and entity, even before its first poll (two queries in all)."""
    statuses = {(status.connection, status.entity): status for status in stores.polls.all()}
    watermarks = stores.watermarks.all()
    rows = []
    for connection, settings, entity in polled_entities(config):
        status = statuses.get((connection.name, entity)) or PollStatus(connection.name, entity)
        rows.append(poll_row(connection, settings, status, watermarks.get((connection.name, entity)), now))
    return rows


def poll_row(connection: Connection, settings: PollSettings, status: PollStatus, watermark: WatermarkValue | None,
             now: datetime) -> dict[str, Any]:
    return {
        "connection": connection.name, "kind": connection.kind, "entity": status.entity,
        "last_success": iso(status.last_success), "last_attempt": iso(status.last_attempt),
        "watermark": _watermark_text(watermark), "lag_seconds": lag_seconds(watermark, status, now),
        "last_error": status.last_error, "failures": status.failures,
        "next_run": iso(scheduled(settings, status, now)),
    }


def lag_seconds(watermark: WatermarkValue | None, status: PollStatus, now: datetime) -> float | None:
    """How far behind the ERP the app is: since the watermark when it is a time (the newest change read,
    or the start of the last poll that read everything), else since the last success."""
    since = watermark if isinstance(watermark, datetime) else status.last_success
    return None if since is None else round(max((now - since).total_seconds(), 0.0), 1)


def scheduled(settings: PollSettings, status: PollStatus, now: datetime) -> datetime:
    """When the scheduler will run it: the first slot boundary from now on, not before its backoff ends."""
    upcoming = datetime.fromtimestamp(slot_start(settings, now) + period_seconds(settings), UTC)
    return max(upcoming, status.next_run) if status.next_run else upcoming


def _watermark_text(watermark: WatermarkValue | None) -> str | None:
    if watermark is None:
        return None
    return iso(watermark) if isinstance(watermark, datetime) else str(watermark)


def requested_entities(config: AppConfig, connection: str, entity: str | None) -> list[str] | None:
    """The entities a "poll now" of ``connection`` (or of one ``entity``) runs; None when the configuration
    polls no such connection or entity."""
    found = config.connections.get(connection)
    settings: PollSettings | None = getattr(found, "poll", None) if found is not None else None
    if settings is None:
        return None
    if entity is None:
        return list(settings.entities)
    return [entity] if entity in settings.entities else None

