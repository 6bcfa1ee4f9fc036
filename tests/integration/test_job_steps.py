"""A job's own steps beside it in the jobs table: written in one request with the job change that causes
them, and read back by the audit as if they were in the audit table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.settings import StorageSettings
from shared.storage.tables import JOBS, ConcurrencyError, JobRow, Stores, table_key

RECORD = "fo|VendorInvoice|usmf|INV-STEPS"
NUMBER = "+14155550123"


def routed_job(stores: Stores, status: str = "queued") -> tuple[str, str, JobRow]:
    """A job its ERP change routed, as the process stage leaves it: named on the trail by a ``routed`` step."""
    job_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    stores.audit.append(correlation_id, "routed", connection="fo", record=RECORD, job_id=job_id, channel="sms")
    job = stores.jobs.create(job_id, {"status": status, "correlation_id": correlation_id, "record": RECORD,
                                      "channel": "sms", "to": NUMBER, "on_trail": True})
    assert job is not None
    return job_id, correlation_id, job


def rows_of_job(stores: Stores, job_id: str) -> list[str]:
    rows = stores.tables.table(JOBS).query_entities("PartitionKey eq @pk", parameters={"pk": table_key(job_id)})
    return [row["RowKey"] for row in rows]


def status_callback(stores: Stores, job_id: str, correlation_id: str, sid: str, status: str) -> None:
    from shared.pipeline.callbacks import apply_status

    apply_status(stores, "twilio-main", {"MessageSid": sid, "MessageStatus": status}, job_id, correlation_id)


@pytest.fixture
def other_instance(storage_connection_string: str, table_prefix: str) -> Stores:
    """The same tables as another app instance sees them: nothing of this process remembered."""
    return Stores.open(StorageSettings(storage_connection_string, None, None, None), table_prefix)


def test_a_status_callback_writes_its_step_beside_the_job_with_the_change(app_stores: Stores) -> None:
    job_id, correlation_id, _ = routed_job(app_stores)
    sid = "SM" + uuid.uuid4().hex

    status_callback(app_stores, job_id, correlation_id, sid, "delivered")

    job = app_stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered"
    [step] = app_stores.audit.of_job(job_id)
    assert (step.step, step.correlation_id, step.record, step.job_id) == ("status", correlation_id, RECORD, job_id)
    assert step.detail == {"status": "delivered", "provider_id": sid}
    assert job.fields["last_step"] in rows_of_job(app_stores, job_id)
    # Nothing of it in the audit table: the ERP change's own rows are only its routing.
    assert [entry.step for entry in app_stores.audit.by_correlation(correlation_id, job_steps=False)] == ["routed"]


def test_a_callback_under_a_stale_etag_writes_neither_and_its_retry_writes_both_once(
        app_stores: Stores, other_instance: Stores) -> None:
    job_id, correlation_id, _ = routed_job(app_stores)
    sid = "SM" + uuid.uuid4().hex
    status_callback(app_stores, job_id, correlation_id, sid, "sent")  # this process now remembers the job's ETag
    moved = other_instance.jobs.get(job_id)
    assert moved is not None
    other_instance.jobs.update(moved, {"note": "changed by another instance"})

    status_callback(app_stores, job_id, correlation_id, sid, "delivered")  # first try refused, then read and written

    job = app_stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered" and job.fields["note"] == "changed by another instance"
    assert [entry.detail["status"] for entry in app_stores.audit.of_job(job_id)] == ["sent", "delivered"]
    other_instance.close()


def test_a_job_change_refused_for_its_etag_writes_no_step(stores: Stores) -> None:
    from shared.pipeline.jobs import Step

    job_id, _, seen = routed_job(stores)
    stores.jobs.update(seen, {"status": "delivered"})

    with pytest.raises(ConcurrencyError):
        stores.jobs.update(seen, {"status": "failed"}, Step("status", "twilio-main", {"status": "failed"}).entry(seen))

    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered"
    assert stores.audit.of_job(job_id) == [] and rows_of_job(stores, job_id) == ["job"]


def test_a_change_whose_answer_was_lost_is_not_written_again(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.pipeline import jobs
    from shared.pipeline.jobs import Step, change

    job_id, _, seen = routed_job(stores)
    key = "step-20261205T100000000000Z-landed00"
    monkeypatch.setattr(jobs, "new_step_key", lambda at: key)
    step = Step("status", "twilio-main", {"status": "delivered"})
    # The first try landed, but its answer never came back: the caller still holds the row as it was.
    stores.jobs.update(seen, {"status": "delivered"}, step.entry(seen), key)

    written = change(stores, seen, lambda row: {"status": "delivered"}, step=step)

    assert written is not None and written.status == "delivered"
    assert [entry.step for entry in stores.audit.of_job(job_id)] == ["status"]


def test_steps_beside_their_jobs_read_as_the_audit_did(app_stores: Stores) -> None:
    from shared.console.story import story
    from shared.pipeline.replay import REPLAYABLE_STATUSES

    before = datetime.now(UTC) - timedelta(seconds=1)
    job_id, correlation_id, _ = routed_job(app_stores)
    sid = "SM" + uuid.uuid4().hex
    for status in ("sent", "undelivered"):
        status_callback(app_stores, job_id, correlation_id, sid, status)

    trail = app_stores.audit.by_correlation(correlation_id)
    assert [(entry.step, entry.detail.get("status")) for entry in trail] == [
        ("routed", None), ("status", "sent"), ("status", "undelivered")]
    assert [entry.step for entry in app_stores.audit.by_record(RECORD)
            if entry.correlation_id == correlation_id] == ["routed", "status", "status"]
    assert {(entry.job_id, entry.detail["status"]) for entry in app_stores.audit.steps_since("status", before)} >= {
        (job_id, "sent"), (job_id, "undelivered")}
    told = story(app_stores, RECORD)
    assert [step["step"] for step in told["timeline"] if step["correlation_id"] == correlation_id][-2:] == [
        "status", "status"]
    # A step row is never taken for a job: the failed jobs are the job rows alone.
    failed = list(app_stores.jobs.with_status(REPLAYABLE_STATUSES, before, datetime.now(UTC) + timedelta(seconds=1)))
    assert [row.job_id for row in failed if row.job_id == job_id] == [job_id]
