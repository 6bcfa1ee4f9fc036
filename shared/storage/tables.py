"""Table Storage: dedup claims, job state, audit trail, watermarks, provider-id index.

Each store is a thin class over one table, so tests run them against Azurite and
the pipeline never sees the SDK. Tables are created on first use, once per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal, overload

from shared import telemetry
from shared.logs import scrub
from shared.settings import StorageSettings, env_str
from shared.storage.protect import LazyProtector, Protector

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

# Characters a PartitionKey/RowKey may hold verbatim; anything else (/ \ # ? and
# control characters are forbidden by the service) is hashed into a stable key.
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9\-_.:@|=+,;!~ ]{1,400}$")
_TABLE_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,20}$")
DEFAULT_TABLE_PREFIX = "mlc"
# Storage that does not answer is a transient failure to hand back to the queue, not minutes of
# waiting inside a function: short timeouts and two quick retries (azure-core's default is ten).
BOUNDED_CALLS: dict[str, Any] = {"connection_timeout": 3.0, "read_timeout": 10.0, "retry_total": 2,
                                   "retry_backoff_factor": 0.4, "retry_backoff_max": 2.0}

log = logging.getLogger(__name__)

DEDUP, JOBS, AUDIT, AUDIT_RECORDS, WATERMARKS, PROVIDER_IDS, OPT_OUTS, CONTACTS, GATES, PACING = (
    "dedup", "jobs", "audit", "auditrecords", "watermarks", "providerids", "optouts", "contacts", "gates", "pacing",
)
SNAPSHOTS, LEASES, DEAD_LETTERS, POLL_STATUS, SILENCE = "snapshots", "leases", "deadletters", "pollstatus", "silence"
_MAX_BATCH = 100  # operations in one entity-group transaction
# In the jobs table, a job's row and its own audit steps share the job's partition: the job under JOB_ROW,
# each step under a key of STEP_PREFIX and its time, so that one transaction writes a change and its step.
JOB_ROW, STEP_PREFIX, _STEPS_END = "job", "step-", "step."  # "." follows "-": every step key sorts before it
TABLES: tuple[str, ...] = (DEDUP, JOBS, AUDIT, AUDIT_RECORDS, WATERMARKS, PROVIDER_IDS, OPT_OUTS, CONTACTS, GATES,
                           PACING, SNAPSHOTS, LEASES, DEAD_LETTERS, POLL_STATUS, SILENCE)


class ConcurrencyError(RuntimeError):
    """The row changed since it was read (stale ETag); read it again and re-decide."""


def table_key(value: str) -> str:
    """A PartitionKey/RowKey for any string: itself where allowed, else a stable hash."""
    if _PLAIN_KEY.match(value):
        return value
    return "h:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


class Tables:
    """The account's tables under one name prefix; each created if missing on first use."""

    def __init__(self, settings: StorageSettings, prefix: str = DEFAULT_TABLE_PREFIX,
                 protector: Protector | None = None) -> None:
        if not _TABLE_PREFIX.match(prefix):
            raise ValueError(f"table prefix {prefix!r}: letters and digits only, starting with a letter")
        self.prefix = prefix
        # Seals phone numbers and message texts before they are written (shared.storage.protect).
        self.protector: Protector = protector or LazyProtector()
        self._service = _service_client(settings)
        self._clients: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    def table(self, name: str) -> TableClient:
        client = self._clients.get(name)
        if client is None:
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    client = self._service.create_table_if_not_exists(self.prefix + name)
                    self._clients[name] = client
        return client

    def row(self, name: str, partition_key: str, row_key: str) -> Any:
        """The entity at these keys in table ``name``, or None when there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.table(name).get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None

    def write_over(self, name: str, entity: Mapping[str, Any], seen: Any, *, replace: bool = False) -> bool:
        """Write ``entity`` over the row of table ``name`` as it was read (``seen``; None: there was none):
        created, or updated under the ETag it was read with (merged, or with ``replace`` replaced). False
        when another writer got there first: the row appeared, changed or went since the read."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        table = self.table(name)
        try:
            if seen is None:
                table.create_entity(entity)
            else:
                table.update_entity(entity, mode=UpdateMode.REPLACE if replace else UpdateMode.MERGE,
                                    etag=seen.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def transaction(self, name: str, operations: Iterable[Any]) -> list[Mapping[str, Any]]:
        """``operations`` on table ``name`` as one entity-group transaction: what the SDK's ``submit_transaction``
        sends, answers and raises, at about the CPU of one request (``shared.storage.batch``), under an SDK
        release that module was checked against; else through ``submit_transaction`` itself."""
        from shared.storage.batch import checked_release, submit

        if not checked_release():
            return self.table(name).submit_transaction(list(operations))
        return submit(self.table(name), operations)

    def ping(self, timeout: float = 3.0) -> None:
        """One cheap request that proves the table service answers and accepts our credentials.

        A single attempt with a short timeout: a health probe must answer "unreachable"
        quickly rather than wait through the SDK's retries.
        """
        pages = self._service.list_tables(
            results_per_page=1, retry_total=0, connection_timeout=timeout, read_timeout=timeout
        ).by_page()
        next(iter(pages), None)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._service.close()


def _service_client(settings: StorageSettings) -> TableServiceClient:
    from azure.data.tables import TableServiceClient

    from shared.storage.transport import storage_client_options, storage_endpoint

    options = storage_client_options(storage_endpoint(settings, "table"), **BOUNDED_CALLS)
    if settings.connection_string:
        return TableServiceClient.from_connection_string(settings.connection_string, **options)
    from azure.identity import DefaultAzureCredential

    if not settings.table_service_uri:  # StorageSettings.from_env sets one whenever there is no connection string
        raise ValueError("AzureWebJobsStorage__tableServiceUri or __accountName is needed for tables")
    credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
    return TableServiceClient(endpoint=settings.table_service_uri, credential=credential, **options)


# --- dedup -----------------------------------------------------------------------------------


class DedupStore:
    """"New or seen": an insert that fails on conflict decides, across every instance."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def claim(self, scope: str, key: str, owner: str = "", **info: str | int) -> bool:
        """True for the one caller that saw ``key`` first in ``scope``; False for every repeat.

        With an ``owner`` (the correlation id of one piece of work), that owner's own
        retries are let through again: a requeued attempt is not a duplicate of itself.
        """
        return self.take(scope, key, owner, **info) != "taken"

    def take(self, scope: str, key: str, owner: str = "", **info: str | int) -> Literal["new", "again", "taken"]:
        """``new`` for the first caller, ``again`` for the same owner once more (a retry of its own
        work), ``taken`` for anyone else."""
        from azure.core.exceptions import ResourceExistsError

        partition, row_key = table_key(scope), table_key(key)
        entity = {"PartitionKey": partition, "RowKey": row_key, "Key": key, "Owner": owner, **info}
        try:
            self._tables.table(DEDUP).create_entity(entity)
        except ResourceExistsError:
            if not owner:
                return "taken"
            held = self._tables.row(DEDUP, partition, row_key)
            if held is None:  # released meanwhile: take it afresh
                return self.take(scope, key, owner, **info)
            return "again" if held.get("Owner") == owner else "taken"
        return "new"

    def held(self, scope: str, key: str) -> dict[str, Any] | None:
        """The claim of ``key`` in ``scope`` (its ``Owner`` and info) while someone holds it; None otherwise."""
        row = self._tables.row(DEDUP, table_key(scope), table_key(key))
        return None if row is None else dict(row)

    def release(self, scope: str, key: str) -> None:
        """Give a claim back when the work it guarded was dead-lettered: a resend is then new.
        Releasing a claim that is not there is no error."""
        self._tables.table(DEDUP).delete_entity(table_key(scope), table_key(key))


# --- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    """One job's stored state and the ETag it was read with."""

    job_id: str
    fields: Mapping[str, Any]
    etag: str
    # Taken from what this process last wrote or read (``JobStore.recent``), not read now: good for a
    # write under its ETag, which fails if the row moved on, but not for deciding to leave the row be.
    remembered: bool = field(default=False, compare=False)

    @property
    def status(self) -> str:
        return str(self.fields.get("status", ""))


def _job_entity(job_id: str, fields: Mapping[str, Any], protector: Protector) -> dict[str, Any]:
    # Status and UpdatedAt are columns of their own so that operators can query by them; the
    # fields (recipient, message text) are sealed.
    return {"PartitionKey": table_key(job_id), "RowKey": JOB_ROW, "JobId": job_id,
            "Fields": protector.seal(_dump(fields)), "Status": str(fields.get("status", "")), "UpdatedAt": utc_now()}


def _dump(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), default=str, ensure_ascii=False)


class JobStore:
    """Job state, one row per job id; every update is conditional on the ETag it read. A job's own audit
    steps (its send, the provider's statuses) are rows of its partition, each written in one transaction
    with the job change that causes it (``update`` with a ``step``): both or neither.

    The rows this process last created, read or wrote are remembered (``recent``), so that the
    next change of a job (its status callbacks, an approval's steps) can be written under the ETag
    it already has instead of reading the row first; the write fails if another instance moved it.
    """

    _REMEMBERED = 2_000

    def __init__(self, tables: Tables, audit: AuditLog | None = None) -> None:
        self._tables = tables
        self._audit = audit or AuditLog(tables)
        self._recent: dict[str, JobRow] = {}
        self._lock = threading.Lock()

    def create(self, job_id: str, fields: Mapping[str, Any]) -> JobRow | None:
        """Insert a new job; None when a job with that id already exists."""
        from azure.core.exceptions import ResourceExistsError

        try:
            meta = self._tables.table(JOBS).create_entity(_job_entity(job_id, fields, self._tables.protector))
        except ResourceExistsError:
            return None
        return self._remember(JobRow(job_id, dict(fields), meta["etag"]))

    def get(self, job_id: str) -> JobRow | None:
        entity = self._tables.row(JOBS, table_key(job_id), JOB_ROW)
        if entity is None:
            return None
        return self._remember(JobRow(job_id, self._fields(entity), entity.metadata["etag"]))

    def recent(self, job_id: str) -> JobRow | None:
        """The job as this process last created, read or wrote it, marked ``remembered``; None when
        it has not seen it lately. Another instance may have changed it since."""
        with self._lock:
            row = self._recent.get(job_id)
        return None if row is None else JobRow(row.job_id, row.fields, row.etag, remembered=True)

    def _remember(self, row: JobRow) -> JobRow:
        with self._lock:
            self._recent.pop(row.job_id, None)
            if len(self._recent) >= self._REMEMBERED:
                del self._recent[next(iter(self._recent))]  # the oldest
            self._recent[row.job_id] = row
        return row

    def with_status(self, statuses: Iterable[str], since: datetime, until: datetime) -> Iterator[JobRow]:
        """Jobs now in one of ``statuses`` whose last change falls in [since, until)."""
        wanted = sorted(set(statuses))
        parameters: dict[str, Any] = {"since": since, "until": until, "job": JOB_ROW}
        parameters.update({f"s{index}": status for index, status in enumerate(wanted)})
        either = " or ".join(f"Status eq @s{index}" for index in range(len(wanted)))
        # Spaces inside the parentheses: the SDK finds @names by splitting the filter on whitespace.
        # Job rows only: the steps beside them in the same partitions are not jobs.
        query = f"RowKey eq @job and UpdatedAt ge @since and UpdatedAt lt @until and ( {either} )"
        for entity in self._tables.table(JOBS).query_entities(query, parameters=parameters):
            # The SDK types the ETag optional (entities built locally have none); the service sends one with every row.
            yield JobRow(entity["JobId"], self._fields(entity), entity.metadata["etag"])  # type: ignore[arg-type]

    def _fields(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        return json.loads(self._tables.protector.open(entity["Fields"]))

    def update(self, row: JobRow, changes: Mapping[str, Any], step: AuditEntry | None = None,
               step_key: str = "") -> JobRow:
        """Apply ``changes`` over the row as read; ConcurrencyError if it changed meanwhile.

        With a ``step`` (an audit step of this job), the step is written in the same request as the change,
        under ``step_key`` (``new_step_key``), which the job keeps as ``last_step``: a try whose answer was
        lost is recognised by it, so that the step is written once."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError
        from azure.data.tables import UpdateMode

        fields = {**row.fields, **changes}
        if step is not None:
            step_key = step_key or new_step_key(step.at)
            fields["last_step"] = step_key
        entity = _job_entity(row.job_id, fields, self._tables.protector)
        try:
            if step is None:
                meta: Mapping[str, Any] = self._tables.table(JOBS).update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=row.etag, match_condition=MatchConditions.IfNotModified)
            else:
                meta = self._update_with_step(entity, row.etag, step, step_key)
        except ResourceModifiedError:
            raise ConcurrencyError(f"job {row.job_id} changed since it was read") from None
        if step is not None:
            self._audit.written(step)
        return self._remember(JobRow(row.job_id, fields, meta["etag"]))

    def _update_with_step(self, entity: dict[str, Any], etag: str, step: AuditEntry,
                          step_key: str) -> Mapping[str, Any]:
        """The job's update and its step's insert as one entity-group transaction: a stale ETag refuses both."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError
        from azure.data.tables import TableTransactionError, UpdateMode

        conditional = {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified}
        row = {**self._audit.row_of(step, key=step_key), "PartitionKey": entity["PartitionKey"]}
        try:
            answers = self._tables.transaction(JOBS, [("update", entity, conditional), ("create", row)])
        except TableTransactionError as error:
            if error.status_code == 412:
                raise ResourceModifiedError(error.message) from None
            raise
        return answers[0]


def new_step_key(at: datetime) -> str:
    """The row key of a job's step written at ``at``: after the job's row, in time order."""
    return f"{STEP_PREFIX}{at.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


# --- audit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    correlation_id: str
    step: str
    at: datetime
    connection: str = ""
    record: str = ""
    job_id: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


class AuditLog:
    """Append-only trail. Rows live in the correlation id's partition (one ERP change);
    a small index maps an ERP record to the correlation ids that touched it, written
    once per pair per process, so "everything about this invoice" stays two queries.
    """

    _INDEX_MEMORY = 10_000

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._indexed: dict[tuple[str, str], None] = {}
        self._lock = threading.Lock()

    def append(
        self,
        correlation_id: str,
        step: str,
        *,
        connection: str = "",
        record: str = "",
        job_id: str = "",
        at: datetime | None = None,
        **detail: Any,
    ) -> AuditEntry:
        return self.add(AuditEntry(correlation_id, step, at or utc_now(), connection, record, job_id, detail))

    def add(self, entry: AuditEntry) -> AuditEntry:
        """Write ``entry`` as it is, in its correlation id's partition."""
        self._tables.table(AUDIT).create_entity(self._row(entry))
        self.written(entry)
        return entry

    def append_once(self, correlation_id: str, step: str, *, once: str, at: datetime, connection: str = "",
                    record: str = "", job_id: str = "", **detail: Any) -> bool:
        """Append a step that must be written at most once, whatever retries write it again: its row key is
        fixed by ``at`` and ``once`` (both the same on every try), so a second insert is refused. False then."""
        from azure.core.exceptions import ResourceExistsError

        entry = AuditEntry(correlation_id, step, at, connection, record, job_id, detail)
        suffix = hashlib.sha256(once.encode()).hexdigest()[:8]
        try:
            self._tables.table(AUDIT).create_entity(self._row(entry, suffix))
        except ResourceExistsError:
            return False
        self.written(entry)
        return True

    def batch(self, correlation_id: str) -> AuditBatch:
        """Steps of one piece of work kept until ``flush``, then written in one request per 100."""
        return AuditBatch(self, correlation_id)

    def write_all(self, entries: list[AuditEntry]) -> None:
        """Entries of one correlation id (one partition), written as entity-group transactions."""
        for start in range(0, len(entries), _MAX_BATCH):
            chunk = entries[start:start + _MAX_BATCH]
            self._tables.transaction(AUDIT, [("create", self._row(entry)) for entry in chunk])
        for entry in entries:
            self.written(entry)  # a record is indexed once per correlation id however many steps name it

    def written(self, entry: AuditEntry) -> None:
        """What follows a step once it is stored (here, or beside its job with the job's change): its record
        indexed, its log line."""
        if entry.record:
            self._index(entry.record, entry.correlation_id)
        _log_step(entry)

    def row_of(self, entry: AuditEntry, *, key: str) -> dict[str, Any]:
        """The stored row of ``entry`` under the row key ``key``; its partition is the correlation id's."""
        return {**self._row(entry), "RowKey": key}

    def _row(self, entry: AuditEntry, suffix: str | None = None) -> dict[str, Any]:
        return {
            "PartitionKey": table_key(entry.correlation_id),
            "RowKey": f"{entry.at.strftime('%Y%m%dT%H%M%S%fZ')}-{suffix or uuid.uuid4().hex[:8]}",
            "CorrelationId": entry.correlation_id,
            "Step": entry.step,
            "At": entry.at,
            "Connection": entry.connection,
            "Record": entry.record,
            "JobId": entry.job_id,
            "Detail": self._tables.protector.seal(_dump(entry.detail)) if entry.detail else "{}",
        }

    def _index(self, record: str, correlation_id: str) -> None:
        pair = (record, correlation_id)
        if pair in self._indexed:
            return
        self._tables.table(AUDIT_RECORDS).upsert_entity(
            {"PartitionKey": table_key(record), "RowKey": table_key(correlation_id),
             "Record": record, "CorrelationId": correlation_id}
        )
        with self._lock:
            if len(self._indexed) >= self._INDEX_MEMORY:
                self._indexed.clear()
            self._indexed[pair] = None

    def by_correlation(self, correlation_id: str, *, job_steps: bool = True) -> list[AuditEntry]:
        """Every step of one ERP change, oldest first: its own rows, and (``job_steps``) the steps its jobs
        wrote in their partitions of the jobs table; the jobs are those its steps name (``routed``, ...)."""
        rows = self._tables.table(AUDIT).query_entities(
            "PartitionKey eq @pk", parameters={"pk": table_key(correlation_id)}
        )
        entries = [_audit_entry(row, self._tables.protector) for row in rows]
        if not job_steps:
            return entries
        for job_id in _jobs_named(entries):
            entries.extend(entry for entry in self.of_job(job_id) if entry.correlation_id == correlation_id)
        return sorted(entries, key=lambda entry: entry.at)  # stable: steps of one instant keep their row order

    def of_job(self, job_id: str) -> list[AuditEntry]:
        """The steps a job wrote with its changes, oldest first (one partition of the jobs table)."""
        rows = self._tables.table(JOBS).query_entities(
            "PartitionKey eq @pk and RowKey gt @first and RowKey lt @last",
            parameters={"pk": table_key(job_id), "first": STEP_PREFIX, "last": _STEPS_END})
        return [_audit_entry(row, self._tables.protector) for row in rows]

    def by_record(self, record: str) -> list[AuditEntry]:
        """Every step of every ERP change that concerned ``record``, oldest first."""
        index = self._tables.table(AUDIT_RECORDS).query_entities(
            "PartitionKey eq @pk", parameters={"pk": table_key(record)}
        )
        entries = [entry for row in index for entry in self.by_correlation(row["CorrelationId"])]
        return sorted(entries, key=lambda entry: entry.at)

    def records_since(self, since: datetime) -> Iterator[str]:
        """The records of the index rows written since ``since`` (a scan of the index; the caller bounds it)."""
        rows = self._tables.table(AUDIT_RECORDS).query_entities(
            "Timestamp ge @since", parameters={"since": since}, select=["Record"], results_per_page=1000)
        return (str(row.get("Record") or "") for row in rows)

    def steps_since(self, step: str, since: datetime, *, with_detail: bool = True) -> Iterator[AuditEntry]:
        """Every ``step`` written at or after ``since``, across correlation ids (a scan of the table: the
        caller bounds it); ``with_detail`` False reads only the step's time, the cheapest answer."""
        columns = ["CorrelationId", "Step", "At", "Record", "JobId", "Connection"] + (["Detail"] if with_detail else [])
        rows = self._tables.table(AUDIT).query_entities(
            "Step eq @step and At ge @since", parameters={"step": step, "since": since}, select=columns,
            results_per_page=1000)
        # And the jobs' own steps, beside their jobs: the row key range leaves the job rows out.
        job_rows = self._tables.table(JOBS).query_entities(
            "RowKey gt @first and RowKey lt @last and Step eq @step and At ge @since",
            parameters={"first": STEP_PREFIX, "last": _STEPS_END, "step": step, "since": since}, select=columns,
            results_per_page=1000)
        return (_audit_entry(row, self._tables.protector) for row in chain(rows, job_rows))


class AuditBatch:
    """Audit steps of one correlation id, appended as to ``AuditLog`` and written at ``flush``:
    one request for a stage's steps instead of one each."""

    def __init__(self, log: AuditLog, correlation_id: str) -> None:
        self._log, self.correlation_id = log, correlation_id
        self._entries: list[AuditEntry] = []

    def append(self, correlation_id: str, step: str, *, connection: str = "", record: str = "", job_id: str = "",
               at: datetime | None = None, **detail: Any) -> AuditEntry:
        if correlation_id != self.correlation_id:  # another partition: no transaction can hold it
            return self._log.append(correlation_id, step, connection=connection, record=record, job_id=job_id,
                                    at=at, **detail)
        entry = AuditEntry(correlation_id, step, at or utc_now(), connection, record, job_id, detail)
        self._entries.append(entry)
        return entry

    def flush(self) -> None:
        entries, self._entries = self._entries, []
        if entries:
            self._log.write_all(entries)


def _jobs_named(entries: Iterable[AuditEntry]) -> list[str]:
    """The job ids steps name: each step's job, and the jobs an escalation step started."""
    named: dict[str, None] = {}
    for entry in entries:
        for job_id in [entry.job_id, *(entry.detail.get("jobs") or [])]:
            if job_id:
                named[str(job_id)] = None
    return list(named)


def _log_step(entry: AuditEntry) -> None:
    """One log line per audit step, with the step and what it concerns as dimensions: the
    failed-notifications alert and the saved queries read these lines."""
    detail = entry.detail
    reason = scrub(str(detail.get("reason") or detail.get("error_code") or ""))
    with telemetry.scope(step=entry.step, correlation_id=entry.correlation_id, connection=entry.connection,
                         erp_record=entry.record, job_id=entry.job_id, channel=detail.get("channel"),
                         status=detail.get("status"), reason=reason):
        log.info("audit step %s%s", entry.step, f": {reason}" if reason else "")


def _audit_entry(row: Mapping[str, Any], protector: Protector) -> AuditEntry:
    at = row["At"]
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return AuditEntry(
        correlation_id=row["CorrelationId"],
        step=row["Step"],
        at=at,
        connection=row.get("Connection", ""),
        record=row.get("Record", ""),
        job_id=row.get("JobId", ""),
        detail=_audit_detail(row.get("Detail"), protector),
    )


def _audit_detail(stored: str | None, protector: Protector) -> dict[str, Any]:
    # A step without detail is stored as plain "{}"; anything else was sealed.
    if not stored or stored == "{}":
        return {}
    return dict(json.loads(protector.open(stored)))


# --- watermarks ------------------------------------------------------------------------------

WatermarkValue = int | datetime | str


def _encode_watermark(value: WatermarkValue) -> tuple[str, str]:
    if isinstance(value, bool):
        raise TypeError("a watermark is an int, a timezone-aware datetime or a string")
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime watermark must carry its time zone")
        return "datetime", value.astimezone(UTC).isoformat()
    if isinstance(value, str):
        return "str", value
    raise TypeError("a watermark is an int, a timezone-aware datetime or a string")


def _decode_watermark(kind: str, raw: str) -> WatermarkValue:
    if kind == "int":
        return int(raw)
    if kind == "datetime":
        return datetime.fromisoformat(raw)
    return raw


class WatermarkStore:
    """How far each connection's entity has been read. A watermark only moves forward."""

    _MAX_TRIES = 10

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def get(self, connection: str, entity: str) -> WatermarkValue | None:
        row = self._read(connection, entity)
        return None if row is None else _decode_watermark(row["Kind"], row["Value"])

    def _read(self, connection: str, entity: str) -> Any:
        return self._tables.row(WATERMARKS, table_key(connection), table_key(entity))

    def advance(self, connection: str, entity: str, value: WatermarkValue) -> bool:
        """Move the watermark to ``value`` if that is further; True when it moved.

        Concurrent pollers race through ETags: the loser re-reads and re-compares,
        so the stored value is always the largest one any of them offered.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        kind, raw = _encode_watermark(value)
        table = self._tables.table(WATERMARKS)
        entity_row = {"PartitionKey": table_key(connection), "RowKey": table_key(entity),
                      "Connection": connection, "Entity": entity, "Kind": kind, "Value": raw,
                      "UpdatedAt": utc_now()}
        for _ in range(self._MAX_TRIES):
            current = self._read(connection, entity)
            if current is None:
                try:
                    table.create_entity(entity_row)
                    return True
                except ResourceExistsError:
                    continue
            if current["Kind"] != kind:
                raise ValueError(
                    f"watermark {connection}/{entity} holds a {current['Kind']}, not a {kind}"
                )
            if not value > _decode_watermark(kind, current["Value"]):  # type: ignore[operator]
                return False
            try:
                table.update_entity(entity_row, etag=current.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)
                return True
            except ResourceModifiedError:
                continue
        raise ConcurrencyError(f"watermark {connection}/{entity}: too much contention")

    def all(self) -> dict[tuple[str, str], WatermarkValue]:
        """Every watermark by (connection, entity), in one query: the table holds one row per polled entity."""
        rows = self._tables.table(WATERMARKS).list_entities(select=["Connection", "Entity", "Kind", "Value"])
        return {(row["Connection"], row["Entity"]): _decode_watermark(row["Kind"], row["Value"]) for row in rows}


# --- poll status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PollStatus:
    """How the polls of one connection's entity fare; ``failures`` counts the failed runs in a row."""

    connection: str
    entity: str
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    failures: int = 0
    next_run: datetime | None = None


class PollStatusStore:
    """Per connection and entity, the health of its polls. A connection's rows share its partition, so
    one poll run writes them all in one transaction, merged: a failure keeps the last success."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def of(self, connection: str) -> dict[str, PollStatus]:
        """A connection's statuses by entity, in one query."""
        rows = self._tables.table(POLL_STATUS).query_entities("PartitionKey eq @pk",
                                                              parameters={"pk": table_key(connection)})
        return {status.entity: status for status in map(_poll_status, rows)}

    def all(self) -> list[PollStatus]:
        return [_poll_status(row) for row in self._tables.table(POLL_STATUS).list_entities()]

    def record(self, statuses: Iterable[PollStatus]) -> None:
        """Write one run's statuses (of one connection). A status without ``last_success`` leaves the stored one."""
        from azure.data.tables import UpdateMode

        operations: list[Any] = [("upsert", _poll_status_row(status), {"mode": UpdateMode.MERGE})
                                 for status in statuses]
        for start in range(0, len(operations), _MAX_BATCH):
            self._tables.transaction(POLL_STATUS, operations[start:start + _MAX_BATCH])


def _poll_status_row(status: PollStatus) -> dict[str, Any]:
    row: dict[str, Any] = {"PartitionKey": table_key(status.connection), "RowKey": table_key(status.entity),
                           "Connection": status.connection, "Entity": status.entity,
                           "LastError": status.last_error or "", "Failures": status.failures}
    for name, moment in (("LastAttempt", status.last_attempt), ("LastSuccess", status.last_success),
                         ("NextRun", status.next_run)):
        if moment is not None:
            row[name] = moment
    return row


def _poll_status(row: Mapping[str, Any]) -> PollStatus:
    def moment(name: str) -> datetime | None:
        value = row.get(name)
        return _aware(value) if isinstance(value, datetime) else None

    return PollStatus(connection=row["Connection"], entity=row["Entity"], last_attempt=moment("LastAttempt"),
                      last_success=moment("LastSuccess"), last_error=row.get("LastError") or None,
                      failures=int(row.get("Failures") or 0), next_run=moment("NextRun"))


# --- provider ids ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderLink:
    provider_id: str
    job_id: str
    connection: str


class ProviderIndex:
    """SendGrid message id -> the job it belongs to (its event webhook carries only that). Twilio's sids are linked
    beside their contacts (``ContactStore``) and a Slack card needs no link (its buttons name the job); links of
    either that this table holds are still read."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def link(self, provider_id: str, job_id: str, connection: str) -> None:
        self._tables.table(PROVIDER_IDS).upsert_entity(
            {"PartitionKey": table_key(provider_id), "RowKey": "", "ProviderId": provider_id,
             "JobId": job_id, "Connection": connection}
        )

    def lookup(self, provider_id: str) -> ProviderLink | None:
        row = self._tables.row(PROVIDER_IDS, table_key(provider_id), "")
        if row is None:
            return None
        return ProviderLink(provider_id, row["JobId"], row["Connection"])


# --- opt-outs and contacts ---------------------------------------------------------------------


# Consent is recorded per number, purpose (a rule's category) and channel; "*" stands for every purpose.
EVERY_PURPOSE = "*"
CONSENT_CHANNELS = ("sms", "voice")
GRANTED, WITHDRAWN = "granted", "withdrawn"


@dataclass(frozen=True)
class ConsentFact:
    """One opt-in or opt-out: for what (channel, purpose), which way, who said so (a keyword such as
    STOP, Twilio's error 21610, an import) and when."""

    channel: str
    purpose: str
    status: str  # GRANTED or WITHDRAWN
    source: str
    at: datetime

    @property
    def column(self) -> str:
        return consent_column(self.channel, self.purpose)

    def stored(self) -> str:
        return json.dumps({"status": self.status, "source": self.source, "at": self.at.isoformat(),
                           "purpose": self.purpose, "channel": self.channel}, separators=(",", ":"))


def consent_column(channel: str, purpose: str) -> str:
    """The row's column for one (channel, purpose): property names are identifiers, so a category's
    hyphens become underscores (categories hold no underscores, so no two share a column)."""
    if purpose == EVERY_PURPOSE:
        return f"ConsentAll_{channel}"
    return f"Consent_{channel}_{purpose.replace('-', '_')}"


@dataclass(frozen=True)
class Consent:
    """What one number said to one sending connection, read in one request."""

    facts: Mapping[tuple[str, str], ConsentFact]

    def withdrawal(self, channel: str, purpose: str) -> ConsentFact | None:
        """The opt-out that stops a message of ``purpose`` on ``channel``: the latest fact about that purpose
        or every purpose, when it withdrew consent; None when nothing was said or the latest granted it."""
        said = [fact for key in ((channel, purpose), (channel, EVERY_PURPOSE)) if (fact := self.facts.get(key))]
        if not said:
            return None
        latest = max(said, key=lambda fact: fact.at)
        return latest if latest.status == WITHDRAWN else None


def _consent_facts(row: Mapping[str, Any]) -> dict[tuple[str, str], ConsentFact]:
    facts: dict[tuple[str, str], ConsentFact] = {}
    for name, value in row.items():
        if name.startswith(("Consent_", "ConsentAll_")) and isinstance(value, str):
            stored = json.loads(value)
            fact = ConsentFact(stored["channel"], stored["purpose"], stored["status"], stored["source"],
                               datetime.fromisoformat(stored["at"]))
            facts[(fact.channel, fact.purpose)] = fact
    if "OptedOut" in row:  # a row from before the registry: a STOP or START, about texts and calls alike
        at = row.get("At")
        for channel in CONSENT_CHANNELS:
            facts.setdefault((channel, EVERY_PURPOSE), ConsentFact(
                channel, EVERY_PURPOSE, WITHDRAWN if row["OptedOut"] else GRANTED, str(row.get("Keyword") or ""),
                _aware(at) if isinstance(at, datetime) else utc_now()))
    return facts


class OptOutStore:
    """The consent registry: per sending connection and number (blinded; the number itself sealed), one row
    holding every opt-in and opt-out of that number, one column per (channel, purpose). A send reads that one
    row. STOP and START (and Twilio's 21610) speak for every purpose on texts and calls; an import speaks per
    purpose and channel."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def _keys(self, connection: str, number: str) -> dict[str, Any]:
        protector = self._tables.protector
        return {"PartitionKey": table_key(connection), "RowKey": protector.blind(number), "Connection": connection,
                "Number": protector.seal(number)}

    def record(self, connection: str, number: str, opted_out: bool, keyword: str) -> None:
        """An opt-out keyword (STOP...), opt-in (START...) or Twilio's 21610: every purpose, on texts and calls
        alike (carriers require it of texts; a revocation by any reasonable means covers the sender's calls
        too). A merge of its own columns: the number's other facts stay."""
        now = utc_now()
        status = WITHDRAWN if opted_out else GRANTED
        facts = [ConsentFact(channel, EVERY_PURPOSE, status, keyword, now) for channel in CONSENT_CHANNELS]
        self._tables.table(OPT_OUTS).upsert_entity(
            {**self._keys(connection, number), "OptedOut": opted_out, "Keyword": keyword, "At": now,
             **{fact.column: fact.stored() for fact in facts}})

    def consent(self, connection: str, number: str) -> Consent:
        row = self._tables.row(OPT_OUTS, table_key(connection), self._tables.protector.blind(number))
        return Consent(_consent_facts(row) if row is not None else {})

    def is_opted_out(self, connection: str, number: str) -> bool:
        return self.consent(connection, number).withdrawal("sms", EVERY_PURPOSE) is not None

    def put(self, connection: str, number: str, fact: ConsentFact) -> bool:
        """Record ``fact`` unless the registry holds a later one for its (channel, purpose): an import of
        old records never undoes a newer STOP. False when it was older."""
        for _ in range(5):
            row = self._tables.row(OPT_OUTS, table_key(connection), self._tables.protector.blind(number))
            held = _consent_facts(row).get((fact.channel, fact.purpose)) if row is not None else None
            if held is not None and held.at > fact.at:
                return False
            if self._tables.write_over(OPT_OUTS, {**self._keys(connection, number), fact.column: fact.stored()}, row):
                return True
            # A STOP or another import meanwhile: decide again on the row as it is now.
        raise ConcurrencyError(f"consent of a number on {connection}: too much contention")

    def every_fact(self, connection: str | None = None) -> Iterator[tuple[str, str, ConsentFact]]:
        """(connection, number, fact) for every fact of the registry (of one connection when given)."""
        table = self._tables.table(OPT_OUTS)
        rows = table.query_entities("PartitionKey eq @pk", parameters={"pk": table_key(connection)}) \
            if connection else table.list_entities()
        for row in rows:
            number = self._tables.protector.open(row["Number"])
            for fact in _consent_facts(row).values():
                yield row.get("Connection") or row["PartitionKey"], number, fact


@dataclass(frozen=True)
class LastContact:
    job_id: str
    record: str
    correlation_id: str


class ContactStore:
    """Per connection: the last message sent to each number (a reply is recorded against what it was about), and
    the job each message or call is (its sid's link: status callbacks and the search for an earlier send read it).
    A send writes both in one entity-group transaction: the connection's partition holds them."""

    def __init__(self, tables: Tables, providers: ProviderIndex) -> None:
        self._tables = tables
        self._providers = providers

    def remember(self, connection: str, number: str, contact: LastContact, *, sid: str = "") -> None:
        """``contact`` as the last to ``number`` (none when ``number`` is ""), and with ``sid`` its message or
        call linked to its job: both or neither."""
        partition = table_key(connection)
        rows: list[dict[str, Any]] = [
            {"PartitionKey": partition, "RowKey": _SID_PREFIX + sid, "ProviderId": sid, "JobId": contact.job_id}
        ] if sid else []
        if number:
            rows.append({"PartitionKey": partition, "RowKey": self._tables.protector.blind(number),
                         "JobId": contact.job_id, "Record": contact.record, "CorrelationId": contact.correlation_id,
                         "At": utc_now()})
        if len(rows) == 1:
            self._tables.table(CONTACTS).upsert_entity(rows[0])
        elif rows:
            self._tables.transaction(CONTACTS, [("upsert", row) for row in rows])

    def last(self, connection: str, number: str) -> LastContact | None:
        row = self._tables.row(CONTACTS, table_key(connection), self._tables.protector.blind(number))
        if row is None:
            return None
        return LastContact(row["JobId"], row["Record"], row["CorrelationId"])

    def job_of_sid(self, connection: str, sid: str) -> ProviderLink | None:
        """The job the message or call ``sid`` of ``connection`` is; a link ``providerids`` holds (written apart
        from its contact) is read when the connection's partition has none."""
        row = self._tables.row(CONTACTS, table_key(connection), _SID_PREFIX + sid) if sid else None
        if row is not None:
            return ProviderLink(sid, row["JobId"], connection)
        return self._providers.lookup(sid)


# A message's link beside the contacts: a blinded number's row key starts "b:", never this.
_SID_PREFIX = "sid-"


# --- verification gates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """An action waiting for a one-time passcode from ``number``: the envelope to release."""

    job_id: str
    envelope_json: str


class GateStore:
    """Open Verify gates, one per (connection, number): the latest request wins."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def open(self, connection: str, number: str, gate: Gate) -> None:
        self._tables.table(GATES).upsert_entity(
            {"PartitionKey": table_key(connection), "RowKey": self._tables.protector.blind(number),
             "JobId": gate.job_id, "Envelope": self._tables.protector.seal(gate.envelope_json), "At": utc_now()}
        )

    def find(self, connection: str, number: str) -> Gate | None:
        row = self._tables.row(GATES, table_key(connection), self._tables.protector.blind(number))
        if row is None:
            return None
        return Gate(row["JobId"], self._tables.protector.open(row["Envelope"]))

    def close(self, connection: str, number: str) -> None:
        self._tables.table(GATES).delete_entity(table_key(connection), self._tables.protector.blind(number))


# --- pacing --------------------------------------------------------------------------------------


class PacingStore:
    """Send slots per (connection, channel), shared by every instance: the next free moment.

    A reservation is one conditional write of the channel's row. This process remembers the row
    as it last wrote or read it (its next free slot and ETag), so a send on a channel it paced
    before writes without reading first; only when another instance took a slot meanwhile does
    the write fail and the row get read again. Sends of this process on one channel reserve one
    at a time, so they do not make each other's writes fail.
    """

    _MAX_TRIES = 20

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._known: dict[tuple[str, str], tuple[float, str]] = {}  # keys -> (NextSlot, ETag) as last seen
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    @overload
    def reserve(self, connection: str, channel: str, now: float, interval: float, horizon: None = None) -> float: ...
    @overload
    def reserve(self, connection: str, channel: str, now: float, interval: float, horizon: float) -> float | None: ...

    def reserve(self, connection: str, channel: str, now: float, interval: float,
                horizon: float | None = None) -> float | None:
        """Take the next free slot: its time. With ``horizon``, only one starting within that many
        seconds of ``now``; None (nothing taken) when the channel is booked further out."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        table = self._tables.table(PACING)
        keys = (table_key(connection), table_key(channel))
        with self._lock_of(keys):
            known = self._known.get(keys)
            for _ in range(self._MAX_TRIES):
                if known is None:
                    known = self._read(keys)
                slot = max(now, known[0]) if known is not None else now
                if horizon is not None and slot - now > horizon:
                    # NextSlot only grows, so a row remembered from earlier is booked at least this far.
                    return None
                entity = {"PartitionKey": keys[0], "RowKey": keys[1], "NextSlot": slot + interval}
                try:
                    if known is None:
                        meta = table.create_entity(entity)
                    else:
                        meta = table.update_entity(entity, etag=known[1], match_condition=MatchConditions.IfNotModified)
                except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                    known = None  # another instance took a slot meanwhile: read the row again
                    self._known.pop(keys, None)
                    continue
                self._known[keys] = (slot + interval, meta["etag"])
                return slot
        raise ConcurrencyError(f"pacing {connection}/{channel}: too much contention")

    def _read(self, keys: tuple[str, str]) -> tuple[float, str] | None:
        row = self._tables.row(PACING, *keys)
        return None if row is None else (float(row["NextSlot"]), row.metadata["etag"])

    def _lock_of(self, keys: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(keys, threading.Lock())

    def next_free(self, connection: str, channel: str) -> float | None:
        row = self._tables.row(PACING, table_key(connection), table_key(channel))
        return None if row is None else float(row["NextSlot"])


# --- snapshots of records that carry no change stamp -----------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The last seen hash of a record's watched fields, and how many changes it has had."""

    hash: str
    version: int


class SnapshotStore:
    """Per (connection, entity) and record key: the hash of the watched fields last alerted on."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def get(self, connection: str, entity: str, key: str) -> Snapshot | None:
        row = self._tables.row(SNAPSHOTS, table_key(f"{connection}|{entity}"), table_key(key))
        if row is None:
            return None
        return Snapshot(row["Hash"], int(row["Version"]))

    def put(self, connection: str, entity: str, key: str, snapshot: Snapshot) -> None:
        self._tables.table(SNAPSHOTS).upsert_entity(
            {"PartitionKey": table_key(f"{connection}|{entity}"), "RowKey": table_key(key), "Key": key,
             "Hash": snapshot.hash, "Version": snapshot.version, "SeenAt": utc_now()}
        )


# --- our own writes to ERP records, as a poll may see them again ----------------------------------------


@dataclass(frozen=True)
class Echo:
    """Of one ERP record: the digest of its fields last sent on as a change and since when it stands, and
    when we last wrote a note to it (None: never)."""

    sent: str | None
    sent_at: datetime | None
    noted_at: datetime | None


class EchoStore:
    """Per ERP record, in the snapshots table under its own partitions: what the poll last sent of it and
    when we last wrote to it. Two writers touch one row (the poll, the note stage): each merges its own columns."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    @staticmethod
    def _keys(connection: str, entity: str, key: str) -> dict[str, str]:
        return {"PartitionKey": table_key(f"echo:{connection}|{entity}"), "RowKey": table_key(key), "Key": key}

    def get(self, connection: str, entity: str, key: str) -> Echo | None:
        keys = self._keys(connection, entity, key)
        row = self._tables.row(SNAPSHOTS, keys["PartitionKey"], keys["RowKey"])
        if row is None:
            return None
        return Echo(row.get("Sent"), _aware_or_none(row.get("SentAt")), _aware_or_none(row.get("NotedAt")))

    def sent(self, connection: str, entity: str, digests: Mapping[str, str]) -> None:
        """What a poll sent on, by record key: one partition, so written as entity-group transactions."""
        from azure.data.tables import UpdateMode

        now = utc_now()
        rows = [{**self._keys(connection, entity, key), "Sent": digest, "SentAt": now}
                for key, digest in digests.items()]
        for start in range(0, len(rows), _MAX_BATCH):
            chunk = rows[start:start + _MAX_BATCH]
            self._tables.transaction(SNAPSHOTS, [("upsert", row, {"mode": UpdateMode.MERGE}) for row in chunk])

    def noted(self, connection: str, entity: str, key: str) -> None:
        self._merge({**self._keys(connection, entity, key), "NotedAt": utc_now()})

    def _merge(self, entity: dict[str, Any]) -> None:
        from azure.data.tables import UpdateMode

        self._tables.table(SNAPSHOTS).upsert_entity(entity, mode=UpdateMode.MERGE)


def _aware_or_none(value: Any) -> datetime | None:
    return _aware(value) if isinstance(value, datetime) else None


# --- leases --------------------------------------------------------------------------------------------


class LeaseBusy(Exception):
    """Someone else holds the lease until ``until`` (epoch seconds)."""

    def __init__(self, name: str, until: float) -> None:
        super().__init__(f"lease {name} is held until {until:.0f}")
        self.name, self.until = name, until

    def wait(self, most: float = 60.0) -> float:
        """Seconds to wait before asking again: until it frees, at least one, at most ``most``."""
        return min(max(1.0, self.until - utc_now().timestamp()), most)


@dataclass
class HeldLease:
    store: LeaseStore
    name: str
    holder: str
    seconds: float
    renewed_at: float = 0.0  # epoch seconds of the last acquire or renewal

    def renew(self) -> bool:
        """Extend the lease from now; False when another holder took it over after it expired."""
        moment = self.store.now()
        if self.store.acquire(self.name, self.holder, self.seconds, now=moment) is not None:
            return False
        self.renewed_at = moment
        return True

    def renew_if_due(self) -> bool:
        """Renew once half the lease time has passed since the last renewal; False when it was lost.

        Cheap enough to call between pages: a storage round trip only when renewal is due.
        """
        if self.store.now() - self.renewed_at < self.seconds / 2:
            return True
        return self.renew()


class LeaseStore:
    """Named leases shared by every instance: one holder at a time, until released or expired."""

    _MAX_TRIES = 10

    def __init__(self, tables: Tables, clock: Callable[[], float] | None = None) -> None:
        self._tables = tables
        self._clock = clock

    def now(self) -> float:
        """Epoch seconds, as leases count them."""
        return self._clock() if self._clock is not None else utc_now().timestamp()

    def acquire(self, name: str, holder: str, seconds: float, now: float | None = None) -> float | None:
        """Take the lease for ``seconds``: None when taken, else the moment the current holder's lease ends."""
        keys = {"PartitionKey": table_key(name), "RowKey": "lease"}
        for _ in range(self._MAX_TRIES):
            moment = self.now() if now is None else now
            row = self._tables.row(LEASES, keys["PartitionKey"], keys["RowKey"])
            if row is not None and row["Holder"] != holder and float(row["Until"]) > moment:
                return float(row["Until"])
            if self._tables.write_over(LEASES, {**keys, "Name": name, "Holder": holder, "Until": moment + seconds},
                                       row):
                return None
        raise ConcurrencyError(f"lease {name}: too much contention")

    @contextmanager
    def held(self, name: str, seconds: float) -> Iterator[HeldLease]:
        """Hold the lease for the block, released at its end; ``LeaseBusy`` when someone else has it."""
        holder, moment = uuid.uuid4().hex, self.now()
        busy_until = self.acquire(name, holder, seconds, now=moment)
        if busy_until is not None:
            raise LeaseBusy(name, busy_until)
        try:
            yield HeldLease(self, name, holder, seconds, moment)
        finally:
            self.release(name, holder)

    def release(self, name: str, holder: str) -> None:
        """Give the lease up, if this holder still has it."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        table = self._tables.table(LEASES)
        try:
            row = table.get_entity(table_key(name), "lease")
            if row["Holder"] == holder:
                table.delete_entity(row, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # gone or taken over after expiry: nothing of ours to release


# --- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """Work that was given up on: what it was, why, and whether it was sent again.

    ``body`` is the original message text (its payload sealed as it travelled); the other fields
    are read from its envelope where it has one, for listing without opening anything.
    """

    id: str
    queue: str
    at: datetime
    reason: str
    origin: str  # "app" or "host"
    body: str
    type: str = ""
    connection: str = ""
    correlation_id: str = ""
    key: str = ""
    job_id: str = ""
    record: str = ""
    attempt: int = 0
    state: str = "open"  # "open", or "redriven" once sent again
    redriven_at: datetime | None = None
    redrives: int = 0


class DeadLetterStore:
    """Every dead letter, kept once (its id is a hash of where it was and what it said), so that
    operators can list, show and redrive them from one place whatever the queue backend."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def add(self, letter: DeadLetter) -> bool:
        """Keep ``letter``; False when it is kept already (collected twice)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self._tables.table(DEAD_LETTERS).create_entity(self._entity(letter))
        except ResourceExistsError:
            return False
        return True

    def get(self, letter_id: str) -> DeadLetter | None:
        row = self._tables.row(DEAD_LETTERS, "deadletter", table_key(letter_id))
        return None if row is None else self._letter(row)

    def all(self, state: str | None = "open", since: datetime | None = None) -> list[DeadLetter]:
        """Oldest first; ``state`` None for every one; ``since`` only those dead-lettered from then on."""
        query, parameters = "PartitionKey eq @pk", dict[str, Any]({"pk": "deadletter"})
        if state:
            query, parameters = query + " and State eq @state", {**parameters, "state": state}
        if since is not None:
            query, parameters = query + " and At ge @since", {**parameters, "since": since}
        rows = self._tables.table(DEAD_LETTERS).query_entities(query, parameters=parameters)
        return sorted((self._letter(row) for row in rows), key=lambda letter: letter.at)

    def mark_redriven(self, letter: DeadLetter) -> DeadLetter:
        from dataclasses import replace

        done = replace(letter, state="redriven", redriven_at=utc_now(), redrives=letter.redrives + 1)
        self._tables.table(DEAD_LETTERS).upsert_entity(self._entity(done))
        return done

    def _entity(self, letter: DeadLetter) -> dict[str, Any]:
        return {"PartitionKey": "deadletter", "RowKey": table_key(letter.id), "Id": letter.id, "Queue": letter.queue,
                "At": letter.at, "Reason": letter.reason[:4000], "Origin": letter.origin,
                "Body": self._tables.protector.seal(letter.body), "Type": letter.type,
                "Connection": letter.connection, "CorrelationId": letter.correlation_id, "Key": letter.key,
                "JobId": letter.job_id, "Record": letter.record, "Attempt": letter.attempt, "State": letter.state,
                "RedrivenAt": letter.redriven_at, "Redrives": letter.redrives}

    def _letter(self, row: Mapping[str, Any]) -> DeadLetter:
        return DeadLetter(
            id=row["Id"], queue=row["Queue"], at=_aware(row["At"]), reason=row.get("Reason", ""),
            origin=row.get("Origin", ""), body=self._tables.protector.unseal(row.get("Body", "")),
            type=row.get("Type", ""), connection=row.get("Connection", ""),
            correlation_id=row.get("CorrelationId", ""), key=row.get("Key", ""), job_id=row.get("JobId", ""),
            record=row.get("Record", ""), attempt=int(row.get("Attempt") or 0), state=row.get("State", "open"),
            redriven_at=_aware(row["RedrivenAt"]) if row.get("RedrivenAt") else None,
            redrives=int(row.get("Redrives") or 0))


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# --- process-wide access ---------------------------------------------------------------------


@dataclass
class Stores:
    tables: Tables
    dedup: DedupStore
    jobs: JobStore
    audit: AuditLog
    watermarks: WatermarkStore
    providers: ProviderIndex
    opt_outs: OptOutStore
    contacts: ContactStore
    gates: GateStore
    pacing: PacingStore
    snapshots: SnapshotStore
    leases: LeaseStore
    dead_letters: DeadLetterStore
    polls: PollStatusStore

    @classmethod
    def open(cls, settings: StorageSettings, prefix: str = DEFAULT_TABLE_PREFIX,
             protector: Protector | None = None) -> Stores:
        tables = Tables(settings, prefix, protector)
        audit, providers = AuditLog(tables), ProviderIndex(tables)
        return cls(tables, DedupStore(tables), JobStore(tables, audit), audit,
                   WatermarkStore(tables), providers, OptOutStore(tables), ContactStore(tables, providers),
                   GateStore(tables), PacingStore(tables), SnapshotStore(tables), LeaseStore(tables),
                   DeadLetterStore(tables), PollStatusStore(tables))

    def close(self) -> None:
        self.tables.close()


_stores: Stores | None = None
_stores_lock = threading.Lock()


def get_stores() -> Stores:
    """The process-wide stores over ``AzureWebJobsStorage``, opened on first use."""
    global _stores
    if _stores is None:
        with _stores_lock:
            if _stores is None:
                prefix = env_str("STORAGE_TABLE_PREFIX", DEFAULT_TABLE_PREFIX)
                _stores = Stores.open(StorageSettings.from_env(), prefix)
    return _stores


def reset_stores() -> None:
    global _stores
    with _stores_lock:
        if _stores is not None:
            _stores.close()
        _stores = None
