"""The console's live counters: queue depths, sends per minute, failures per hour.

The page asks every 10 seconds, so every read here is bounded:

- queue depths: one properties read per queue and per poison queue (eight small requests);
- sends per minute: the ``sent`` audit steps of the last ``SENDS_MINUTES`` minutes, only their times,
  at most ``SCAN_LIMIT`` rows (a scan filtered by the service on the step and its time; its cost
  grows with the audit table, which is why the window is short);
- failures per hour: the jobs that ended failed in the last ``FAILURE_HOURS`` hours (``Status`` and
  ``UpdatedAt`` columns, at most ``SCAN_LIMIT`` rows) plus the dead letters kept in that time.

``limited`` says when a count stopped at its limit (then it is a lower bound).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from shared.model import QUEUES, REPLAYABLE_STATUSES
from shared.storage.tables import Stores

SENDS_MINUTES = 5
FAILURE_HOURS = 24
SCAN_LIMIT = 2_000


def queue_depths(bus: Any) -> list[dict[str, Any]]:
    """Approximate messages waiting on each queue and its poison queue; None where the bus cannot say."""
    depth = getattr(bus, "depth", None)
    rows = []
    for queue in QUEUES:
        waiting, poison = depth(queue) if depth is not None else (None, None)
        rows.append({"queue": queue, "messages": waiting, "poison": poison})
    return rows


def sends_per_minute(stores: Stores, now: datetime) -> tuple[list[dict[str, Any]], bool]:
    """Sends of each of the last ``SENDS_MINUTES`` minutes, oldest first; whether the scan was cut short."""
    since = (now - timedelta(minutes=SENDS_MINUTES - 1)).replace(second=0, microsecond=0)
    steps = list(islice(stores.audit.steps_since("sent", since, with_detail=False), SCAN_LIMIT + 1))
    per_minute = Counter(entry.at.strftime("%Y-%m-%dT%H:%MZ") for entry in steps[:SCAN_LIMIT])
    minutes = [(since + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%MZ") for n in range(SENDS_MINUTES)]
    return [{"minute": minute, "sends": per_minute.get(minute, 0)} for minute in minutes], len(steps) > SCAN_LIMIT


def failures_per_hour(stores: Stores, now: datetime) -> tuple[list[dict[str, Any]], bool]:
    """Failed jobs and dead letters of each of the last ``FAILURE_HOURS`` hours, oldest first."""
    since = (now - timedelta(hours=FAILURE_HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    jobs = list(islice(stores.jobs.with_status(REPLAYABLE_STATUSES, since, now + timedelta(seconds=1)),
                       SCAN_LIMIT + 1))
    moments = [_hour(str(job.fields.get("updated_at") or "")) for job in jobs[:SCAN_LIMIT]]
    moments += [letter.at.astimezone(UTC).strftime("%Y-%m-%dT%H:00Z")
                for letter in stores.dead_letters.all(None, since=since)]
    per_hour = Counter(moment for moment in moments if moment)
    hours = [(since + timedelta(hours=n)).strftime("%Y-%m-%dT%H:00Z") for n in range(FAILURE_HOURS)]
    return [{"hour": hour, "failures": per_hour.get(hour, 0)} for hour in hours], len(jobs) > SCAN_LIMIT


def _hour(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:00Z")
    except ValueError:
        return ""


def counters(stores: Stores, bus: Any, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    sends, sends_limited = sends_per_minute(stores, now)
    failures, failures_limited = failures_per_hour(stores, now)
    return {"at": now.isoformat().replace("+00:00", "Z"), "queues": queue_depths(bus), "sends_per_minute": sends,
            "failures_per_hour": failures, "limited": sends_limited or failures_limited}
