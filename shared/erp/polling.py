"""What an ERP adapter declares so that the poll framework can read it.

An adapter module (``shared.erp.<kind>.adapter``, named in ``shared.kinds``) meets
``ErpAdapter``:

- ``ENTITIES``: the entities it can poll, in the order one poll cycle reads them, each a
  ``PolledEntity`` (name, key fields, cursor, page size, how to read one page); their
  names are those its ``connection.py`` declares, so settings are checked without it;
- ``open_source(connection) -> Source``: a client for one poll cycle, closed at its end
  (SYSPRO logs its session off there);
- ``write_note(connection, note) -> None`` (``WritesNotes``, for kinds listed with
  ``notes=True``): a reply written back against an ERP record;
- ``decision_open`` and ``write_decision`` (``WritesDecisions``, for kinds listed with
  ``decisions=True``): an approval card's Approve or Reject written back to the ERP's
  workflow item.

The framework (``shared.pipeline.poll``) owns the rest: which polls are due, watermarks,
overlap, time zones, the page loop and its checks, change keys, snapshots of watched
fields, and enqueueing.

Three kinds of cursor, as the ERPs offer them:

- ``time``: a modified date-time (Sage X3 ``UPDDATTIM_0``, Dynamics ``ModifiedDateTime``).
  Read again from the watermark minus an overlap, in the ERP's time zone when its stamps
  carry none; a date-only stamp re-reads its whole day.
- ``number``: a counter that only grows (SYSPRO ``TimeStamp`` rowversion, QAD
  ``tr_hist.tr_trnbr``); read strictly after the watermark, no overlap needed.
- ``none``: nothing moves when the record changes (QAD purchase orders, a SYSPRO status
  change). Every poll reads the whole watched set; a hash of the watched fields per record
  is kept, and a record whose hash changed (or a new one) is a change.

A page request carries the lower bound and the token the previous page returned. The
token must resume right after the last row of that page in the adapter's order, so rows
sharing a stamp across a page edge are neither lost nor read twice.

Rows are plain mappings. What an adapter looks up for a whole page (SYSPRO's suppliers and
order lines) travels beside them as the page's ``context``, and the framework hands it to
the entity's ``fields(row, context)`` for each record it sends on; adapters that look
nothing up leave it None and ignore it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, Literal, Protocol

from shared import kinds

Cursor = Literal["time", "number", "none"]
TIME: Cursor = "time"
NUMBER: Cursor = "number"
NONE: Cursor = "none"

@dataclass(frozen=True)
class PageRequest:
    """One page to read.

    ``since`` is the lower bound: for a ``time`` cursor a naive date-time in the ERP's own
    time zone (a ``date`` when the stamp is date-only), inclusive; for a ``number`` cursor
    the last counter already read, exclusive; for ``none`` it is None. ``token`` is what
    the previous page returned as ``next_token`` (None for the first page).
    """

    since: datetime | date | int | None
    token: str | None
    size: int


@dataclass(frozen=True)
class Page:
    """One page of rows; ``context`` is what the adapter looked up for them, given to ``fields``."""

    rows: Sequence[Mapping[str, Any]]
    next_token: str | None = None  # None: this was the last page
    # Lookups can be lazy: fields is called only for records sent on (never for a baseline or an unchanged row).
    context: Any = None


ReadPage = Callable[[Any, "PolledEntity", PageRequest], Page]
RecordFields = Callable[[Mapping[str, Any], Any], dict[str, Any]]  # (row, its page's context) -> record fields


@dataclass(frozen=True)
class Finding:
    """A changed row that is a business fact, counted once per document and kind, not once per change.

    ``key`` is the fact's event key, the one the ERP's own pushed event of the same fact gets, so push
    and poll together claim it once. ``event`` is that pushed event's payload when the ERP has one (the
    row then travels as that event, through the same reads and rules); None keeps it a change.
    """

    key: str
    event: Mapping[str, Any] | None = None


# (connection, row, record fields) -> the fact the row stands for, or None for an ordinary change.
FindFact = Callable[[str, Mapping[str, Any], Mapping[str, Any]], Finding | None]


def _as_is(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    return dict(row)


@dataclass(frozen=True, kw_only=True)
class PolledEntity:
    """One thing a poll reads, and how.

    ``read(client, entity, request)`` fetches one page. ``fields(row, context)`` turns a row
    (with its page's context) into the record fields rules and templates see; ``record_key`` names the fields (of that
    record) that identify the ERP record replies are written against.
    """

    name: str
    keys: tuple[str, ...]  # the row's key fields
    cursor: Cursor
    read: ReadPage
    record_entity: str
    record_key: tuple[str, ...] = ()  # record fields; defaults to ``keys`` read from the row
    cursor_field: str = ""  # the stamp's field, for time and number cursors
    page_size: int = 1000
    date_only: bool = False  # a time stamp that has no time of day
    watched: tuple[str, ...] = ()  # for cursor "none": the fields whose change matters
    fields: RecordFields = _as_is
    # The first poll of a number or none cursor records where things stand without alerting,
    # so connecting an ERP does not send one message per historic row. A window rule (say,
    # invoices due within a week) wants its first poll to alert, and sets this False.
    baseline: bool = True
    # Record fields a note we write moves (an update stamp, the notes text itself): a change of only these
    # (and the cursor) on a record we noted since its last alert is our own write coming back, not news.
    echoes: tuple[str, ...] = ()
    fact: FindFact | None = None  # rows that stand for a business fact the ERP may also push

    def __post_init__(self) -> None:
        if self.cursor not in (TIME, NUMBER, NONE):
            raise ValueError(f"{self.name}: unknown cursor {self.cursor!r}")
        if self.cursor in (TIME, NUMBER) and not self.cursor_field:
            raise ValueError(f"{self.name}: a {self.cursor} cursor needs cursor_field")
        if self.cursor == NONE and not self.watched:
            raise ValueError(f"{self.name}: a poll without a cursor needs watched fields")
        if not self.keys or self.page_size < 1:
            raise ValueError(f"{self.name}: keys and a positive page size are required")


@dataclass
class Source:
    """One poll cycle's view of an ERP connection."""

    client: Any
    entities: Mapping[str, PolledEntity]
    # A lease name when reads of this ERP account must never overlap, even across instances
    # (a second SYSPRO logon by the same operator ends the first session).
    exclusive: str | None = None
    close: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class Note:
    """A reply (who answered, when, and what) or an alert's outcome, to write against an ERP record."""

    record_entity: str
    record_key: str  # key parts joined by "|"
    text: str
    received_at: datetime
    sender: str  # masked phone number or a name; never the full number
    reference: str  # the provider's message id, so the ERP side can tell duplicates
    # An alert's outcome (an SMS delivered, a call answered) written by the connector, not a person's reply:
    # its text says it all, and no sender heads it.
    outcome: bool = False


class ErpAdapter(Protocol):
    """What the poll framework reads an ERP through (met by an adapter module)."""

    ENTITIES: Mapping[str, PolledEntity]

    def open_source(self, connection: Any) -> Source: ...


class WritesNotes(ErpAdapter, Protocol):
    def write_note(self, connection: Any, note: Note) -> None: ...


class WritesDecisions(ErpAdapter, Protocol):
    def decision_open(self, connection: Any, item: str) -> bool: ...

    def write_decision(self, connection: Any, item: str, outcome: str, comment: str) -> None: ...


def adapter(kind: str) -> ErpAdapter:
    """The adapter of an ERP kind; imported on first use to keep cold start short."""
    found = kinds.ERPS.get(kind)
    if found is None:
        raise ValueError(f"{kind!r} connections cannot be polled")
    return kinds.load(found.adapter)


def note_writer(kind: str) -> WritesNotes | None:
    """The adapter of an ERP kind that writes replies back as notes, or None when it does not."""
    found = kinds.ERPS.get(kind)
    return kinds.load(found.adapter) if found is not None and found.notes else None


def notes_unavailable(connection: Any) -> str | None:
    """Why this connection's records take no notes although its kind writes them (the adapter's optional
    ``notes_unavailable(connection)``, e.g. a connection configured without the API notes go through);
    None when they take notes."""
    check = getattr(note_writer(connection.kind), "notes_unavailable", None)
    return check(connection) if callable(check) else None


def decision_writer(kind: str) -> WritesDecisions | None:
    """The adapter of an ERP kind that takes approval decisions back, or None when it does not."""
    found = kinds.ERPS.get(kind)
    return kinds.load(found.adapter) if found is not None and found.decisions else None


# --- stamps ----------------------------------------------------------------------------------------


def time_stamp(value: Any, zone: tzinfo, *, date_only: bool = False) -> datetime:
    """An ERP date-time (ISO text, datetime or date) as an aware UTC datetime.

    Stamps without a zone are in the ERP's own time zone; a date-only stamp is the start of
    its day there.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        value = date.fromisoformat(text) if date_only and len(text) == 10 else datetime.fromisoformat(text)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ValueError(f"a time stamp must be an ISO 8601 date-time, not {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def number_stamp(value: Any) -> int:
    """A counter: an integer, decimal text, or hexadecimal text (SQL Server rowversion, ``0x...``)."""
    if isinstance(value, bool):
        raise ValueError(f"a change counter must be a number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 16) if text.lower().startswith("0x") else int(text)
        except ValueError:
            pass
    raise ValueError(f"a change counter must be a number, not {value!r}")


def local_bound(moment: datetime, zone: tzinfo, *, date_only: bool = False) -> datetime | date:
    """The lower bound to send to an ERP whose stamps are in ``zone``: naive local time, or its date."""
    local = moment.astimezone(zone).replace(tzinfo=None)
    return local.date() if date_only else local


def watched_hash(row: Mapping[str, Any], watched: Sequence[str]) -> str:
    """A short stable digest of the watched fields; a change of any of them changes it."""
    values = json.dumps([row.get(name) for name in watched], default=str, separators=(",", ":"))
    return hashlib.sha256(values.encode()).hexdigest()[:16]


def row_key(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    return "|".join(str(row.get(name, "")).strip() for name in keys)


def phone_or_as_stored(raw: Any, region: str) -> str:
    """A phone number from an ERP in E.164 when it parses in ``region``; otherwise the text as stored.

    ERP masters hold numbers as people typed them; a rule can still send to those that parse,
    and the audit shows the others as they are.
    """
    text = str(raw or "").strip()
    if not text:
        return ""
    from shared.phones import InvalidNumber, normalize_number

    try:
        return normalize_number(text, region)
    except InvalidNumber:
        return text
