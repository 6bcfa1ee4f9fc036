"""The console's Failures view: jobs that did not reach their recipient, and open dead letters.

Both reads are bounded: failed jobs of the last ``FAILURE_DAYS`` by their last change (the jobs
table's ``Status`` and ``UpdatedAt`` columns, at most ``FAILURE_LIMIT`` rows), and the open dead
letters (one partition, at most ``FAILURE_LIMIT`` shown). Addresses are masked; texts never appear.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from shared.model import REPLAYABLE_STATUSES
from shared.storage.tables import JobRow, Stores

FAILURE_DAYS = 7
FAILURE_LIMIT = 200


def failed_job(job: JobRow) -> dict[str, Any]:
    """One failed job as an operator sees it: why, where, to whom (masked)."""
    from shared.pipeline.replay import preview_of

    fields = job.fields
    reason = str(fields.get("reason") or "")
    code = str(fields.get("error_code") or "")
    return {"job_id": job.job_id, **preview_of(job), "updated_at": fields.get("updated_at") or "",
            "correlation_id": fields.get("correlation_id") or "",
            "reason": reason or (f"provider error {code}" if code else f"job is {job.status}")}


def failures(stores: Stores, now: datetime | None = None) -> dict[str, Any]:
    """Failed jobs, newest first, and open dead letters, oldest first."""
    from shared.pipeline.deadletters import summary

    now = now or datetime.now(UTC)
    since = now - timedelta(days=FAILURE_DAYS)
    # A second of slack: a job failed this very instant still shows.
    rows = list(islice(stores.jobs.with_status(REPLAYABLE_STATUSES, since, now + timedelta(seconds=1)),
                       FAILURE_LIMIT + 1))
    jobs = sorted((failed_job(job) for job in rows[:FAILURE_LIMIT]), key=lambda job: str(job["updated_at"]),
                  reverse=True)
    letters = stores.dead_letters.all("open")
    return {"days": FAILURE_DAYS, "jobs": jobs, "jobs_limited": len(rows) > FAILURE_LIMIT,
            "dead_letters": [summary(letter) for letter in letters[:FAILURE_LIMIT]],
            "dead_letters_total": len(letters)}
