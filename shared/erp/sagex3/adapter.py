"""Sage X3 V12 as a poll-framework adapter: purchase orders, supplier invoices, payments.

Entities (in the order one poll reads them; rules match them by name as ``event``):

- ``PORDER``: purchase orders changed since the last poll (``UPDDATTIM``). ``is_new`` says
  the order was created since the last poll, ``approved`` that it is totally signed.
- ``PORDER-approved``: purchase orders totally signed (``APPFLG`` 3) and changed in the last
  ``approval_lookback_days``, compared with what the last poll saw: one alert per revision
  (``REVNUM``) signed, none for later edits.
- ``PORDER-delivery``: open order lines expected within ``delivery_window_days`` (0: today),
  not yet received: one alert per order and expected date.
- ``PINVOICE``: supplier invoices changed since the last poll.
- ``PINVOICE-due``: unpaid invoices due (``STRDUDDAT``) within ``due_window_days``: one
  alert per invoice and due date. A window, not a change: the first poll alerts too.
- ``PAYMENTH``: payments changed since the last poll.

Every row gets ``document``, ``supplier``, ``supplier_name``, ``supplier_phone`` (the main
contact's mobile, else the default address's phone, E.164 where it parses), ``amount``,
``currency``, ``due_date``, ``status`` and, where the row has lines, ``line_count``.
Suppliers are looked up once per poll. X3's quirks are undone on the way in: a single
space is an empty string, and a date up to 1900-01-01 is no date.

The purchase order representation read by REST has no lines, so a change to a line alone
is seen only when X3 also stamps the header. Where the row carries lines (the GraphQL
query asks for them), the change stamp is the later of the header's and its lines'.

Replies are written back as timestamped notes appended to a text field through SOAP
(see ``shared.erp.sagex3.client`` for the unconfirmed names), never into tables directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.erp.polling import (
    NONE,
    TIME,
    Note,
    Page,
    PageRequest,
    PolledEntity,
    Source,
    phone_or_as_stored,
    time_stamp,
)
from shared.erp.sagex3.client import (
    Query,
    SageX3Api,
    SageX3Error,
    Term,
    object_xml,
    sagex3_api,
)
from shared.erp.sagex3.connection import SageX3Connection
from shared.http import HttpFailure
from shared.outcomes import PermanentFailure

log = logging.getLogger(__name__)

CHANGED_AT = "changed_at"  # the later of the header's and its lines' UPDDATTIM: the change stamp
PAGE_SIZE = 500
SUPPLIER_LOOKUP_ROWS = 50
LAST_EMPTY_DATE = date(1900, 1, 1)  # X3 stores "no date" as a low sentinel date
SIGNED = 3  # APPFLG: 1 not signed, 2 partly signed, 3 totally signed, 4 not managed
OPEN = 1  # CLEFLG / LINCLEFLG: 1 open, 2 closed
YES = 2  # X3 local menu "No/Yes": 1 no, 2 yes
APPROVAL_LABELS: Mapping[int, str] = {1: "not signed", 2: "partly signed", 3: "signed", 4: "no signature needed"}
_DATE_START = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:$|T)")


# --- X3 values ------------------------------------------------------------------------------------


def clean_value(value: Any) -> Any:
    """X3's stored value as meant: ``" "`` is empty text, a date up to 1900-01-01 is None."""
    if isinstance(value, str):
        if not value.strip():
            return ""
        found = _DATE_START.match(value)
        if found and (int(found.group(1)), int(found.group(2)), int(found.group(3))) <= (1900, 1, 1):
            return None
        return value
    if isinstance(value, list):
        return [clean_row(item) if isinstance(item, Mapping) else clean_value(item) for item in value]
    return value


def clean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: clean_value(value) for name, value in row.items()}


def x3_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_START.match(value):
        return date.fromisoformat(value[:10])
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def menu(value: Any) -> int | None:
    """A local-menu value (``APPFLG``, ``CLEFLG``...) as its number."""
    found = number(value)
    return int(found) if found is not None else None


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


# --- one poll cycle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Supplier:
    name: str
    phone: str


class SageX3Session:
    """One poll cycle of a connection: the shared API client, and the suppliers looked up so far."""

    def __init__(self, api: SageX3Api, connection: SageX3Connection,
                 today: Callable[[], date] | None = None) -> None:
        self.api = api
        self.connection = connection
        self.zone = connection.poll.zone
        self._today = today or (lambda: datetime.now(self.zone).date())
        self._suppliers: dict[str, Supplier] = {}
        self._warned: set[str] = set()

    def today(self) -> date:
        """Today in the ERP's time zone: where due-date windows start."""
        return self._today()

    def page(self, query: Query, size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        rows, next_token = self.api.page(query, size, token)
        return [clean_row(row) for row in rows], next_token

    def finish(self, row: dict[str, Any], supplier_field: str, since: datetime | None = None) -> dict[str, Any]:
        """The row with its change stamp, whether it was created since the last poll, its supplier's name and phone."""
        row[CHANGED_AT] = later_stamp(row, self.zone)
        if since is not None:
            # The framework reads from its watermark minus the overlap: a record created after the
            # watermark was not there when the last poll read, so it is new. Rows re-read in the
            # overlap are not new again; a change to them is a change.
            watermark = since.replace(tzinfo=self.zone) + timedelta(seconds=self.connection.poll.overlap_seconds)
            created = row.get("CREDATTIM")
            row["is_new"] = bool(created) and time_stamp(created, self.zone) > watermark
        supplier = self.supplier(text(row.get(supplier_field)))
        row["supplier_name"] = text(row.get("BPANAM")) or supplier.name
        row["supplier_phone"] = supplier.phone
        return row

    def supplier(self, code: str) -> Supplier:
        """Name and phone of a supplier, read once per poll."""
        if not code:
            return Supplier("", "")
        found = self._suppliers.get(code)
        if found is None:
            found = self._suppliers[code] = Supplier(self._supplier_name(code), self._supplier_phone(code))
        return found

    def _supplier_name(self, code: str) -> str:
        rows = self._lookup(Query("BPSUPPLIER", (Term("BPSNUM", "eq", code),), ("BPSNUM",)))
        return text(rows[0].get("BPSNAM")) if rows else ""

    def _supplier_phone(self, code: str) -> str:
        contacts = self._lookup(Query("CONTACT", (Term("BPANUM", "eq", code),), ("BPANUM", "CCNCRM")))
        mobile = _first(contacts, "CNTMOB", preferred=lambda row: menu(row.get("CNTFLG")) == YES)
        if not mobile:
            addresses = self._lookup(Query("BPADDRESS", (Term("BPANUM", "eq", code),), ("BPANUM", "BPAADD")))
            mobile = _first(addresses, "TEL", preferred=lambda row: menu(row.get("BPAADDFLG")) == YES)
        return phone_or_as_stored(mobile, self.connection.default_region)

    def _lookup(self, query: Query) -> list[dict[str, Any]]:
        # A supplier detail X3 will not give (a class not published) costs the phone, not the poll.
        if query.table in self._warned:
            return []
        try:
            rows, _ = self.page(query, SUPPLIER_LOOKUP_ROWS, None)
        except (HttpFailure, SageX3Error) as failure:
            self._warned.add(query.table)
            log.warning("%s: supplier details from %s unavailable this poll: %s", self.connection.name, query.table,
                        failure)
            return []
        return rows


def _first(rows: Sequence[Mapping[str, Any]], name: str, preferred: Callable[[Mapping[str, Any]], bool]) -> str:
    ordered = sorted(rows, key=lambda row: not preferred(row))  # stable: preferred rows first
    return next((text(row.get(name)) for row in ordered if text(row.get(name))), "")


def later_stamp(row: Mapping[str, Any], zone: Any) -> Any:
    """The row's UPDDATTIM, or a line's when that is later (as X3 wrote it); CREDATTIM when never updated."""
    candidates = [row.get("UPDDATTIM") or row.get("CREDATTIM")]
    candidates += [line.get("UPDDATTIM") for line in row.get("lines") or () if isinstance(line, Mapping)]
    stamps = [value for value in candidates if value]
    if not stamps:
        return None
    return max(stamps, key=lambda value: time_stamp(value, zone))


# --- reads ---------------------------------------------------------------------------------------


def _changes(table: str, supplier_field: str) -> Callable[[SageX3Session, PolledEntity, PageRequest], Page]:
    """Rows changed from ``since`` on (``UPDDATTIM ge``), in stamp then key order."""

    def read(session: SageX3Session, entity: PolledEntity, request: PageRequest) -> Page:
        since = _moment(request.since)
        query = Query(table, (Term("UPDDATTIM", "ge", since),), ("UPDDATTIM", *entity.keys))
        rows, token = session.page(query, request.size, request.token)
        return Page([session.finish(row, supplier_field, since) for row in rows], token)

    return read


def _moment(since: Any) -> datetime:
    if isinstance(since, datetime):
        return since.replace(microsecond=0)  # X3 stamps have whole seconds; the bound stays inclusive
    if isinstance(since, date):
        return datetime.combine(since, time())
    raise ValueError(f"a Sage X3 poll needs a date-time lower bound, not {since!r}")


def _read_approved(session: SageX3Session, entity: PolledEntity, request: PageRequest) -> Page:
    since = datetime.combine(session.today() - timedelta(days=session.connection.approval_lookback_days), time())
    query = Query("PORDER", (Term("APPFLG", "eq", SIGNED), Term("UPDDATTIM", "ge", since)), ("POHNUM",))
    rows, token = session.page(query, request.size, request.token)
    return Page([session.finish(row, "BPSNUM") for row in rows], token)


def _read_delivery(session: SageX3Session, entity: PolledEntity, request: PageRequest) -> Page:
    first = session.today()
    last = first + timedelta(days=session.connection.delivery_window_days)
    query = Query("PORDERQ", (Term("LINCLEFLG", "eq", OPEN), Term("EXTRCPDAT", "ge", first)),
                  ("EXTRCPDAT", "POHNUM", "POPLIN", "POQSEQ"))
    rows, token = session.page(query, request.size, request.token)
    inside, token = _until(rows, token, "EXTRCPDAT", last)
    return Page([_with_days_left(session.finish(row, "BPSNUM"), "EXTRCPDAT", first)
                 for row in inside if _outstanding(row)], token)


def _read_due_invoices(session: SageX3Session, entity: PolledEntity, request: PageRequest) -> Page:
    first = session.today()
    last = first + timedelta(days=session.connection.due_window_days)
    query = Query("PINVOICE", (Term("STRDUDDAT", "ge", first),), ("STRDUDDAT", "NUM"))
    rows, token = session.page(query, request.size, request.token)
    inside, token = _until(rows, token, "STRDUDDAT", last)
    return Page([_with_days_left(session.finish(row, "BPR"), "STRDUDDAT", first)
                 for row in inside if _unpaid(row)], token)


def _until(rows: list[dict[str, Any]], token: str | None, name: str,
           last: date) -> tuple[list[dict[str, Any]], str | None]:
    """The rows up to ``last`` (rows come in date order): past it, the window and the reading end."""
    for index, row in enumerate(rows):
        day = x3_date(row.get(name))
        if day is not None and day > last:
            return rows[:index], None
    return rows, token


def _with_days_left(row: dict[str, Any], name: str, today: date) -> dict[str, Any]:
    day = x3_date(row.get(name))
    row["days_left"] = (day - today).days if day else None
    return row


def _outstanding(line: Mapping[str, Any]) -> bool:
    ordered, received = number(line.get("QTYSTU")), number(line.get("RCPQTYSTU"))
    return ordered is None or received is None or received < ordered


def _unpaid(invoice: Mapping[str, Any]) -> bool:
    # PAYCUR (paid so far, from the invoice's open items) is what the representation must expose: unconfirmed.
    total, paid = number(invoice.get("AMTATI")), number(invoice.get("PAYCUR"))
    return total is None or paid is None or paid < total


# --- record fields -------------------------------------------------------------------------------


def _record(row: Mapping[str, Any], **normalized: Any) -> dict[str, Any]:
    fields = {name: value for name, value in row.items() if name != "lines"}
    if isinstance(row.get("lines"), list):
        fields["line_count"] = len(row["lines"])
    return {**fields, **normalized}


def _order_fields(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    approval = menu(row.get("APPFLG"))
    amount = number(row.get("TTVORD"))
    return _record(row, document=text(row.get("POHNUM")), supplier=text(row.get("BPSNUM")),
                   amount=amount if amount is not None else number(row.get("TOTORD")), currency=text(row.get("CUR")),
                   status="closed" if menu(row.get("CLEFLG")) == 2 else "open",
                   approval=APPROVAL_LABELS.get(approval or 0, ""), approved=approval == SIGNED,
                   order_date=row.get("ORDDAT"))


def _delivery_fields(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    return _record(row, document=text(row.get("POHNUM")), supplier=text(row.get("BPSNUM")),
                   due_date=row.get("EXTRCPDAT"), item=text(row.get("ITMREF")),
                   quantity=number(row.get("QTYSTU")), status="open")


def _invoice_fields(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    return _record(row, document=text(row.get("NUM")), supplier=text(row.get("BPR")),
                   supplier_document=text(row.get("BPRVCR")), amount=number(row.get("AMTATI")),
                   currency=text(row.get("CUR")), due_date=row.get("STRDUDDAT"), status=text(row.get("STA")))


def _payment_fields(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    return _record(row, document=text(row.get("NUM")), supplier=text(row.get("BPR")),
                   amount=number(row.get("AMTBAN")), currency=text(row.get("CUR")),
                   payment_date=row.get("ACCDAT"), reference=text(row.get("REF")), status=text(row.get("STA")))


# What a note we write moves on its record: the notes text, the update stamp, and so whether it reads as new.
NOTE_ECHOES = ("YNOTES", "UPDDATTIM", "is_new")

ENTITIES: Mapping[str, PolledEntity] = {
    "PORDER": PolledEntity(name="PORDER", keys=("POHNUM",), cursor=TIME, cursor_field=CHANGED_AT,
                           read=_changes("PORDER", "BPSNUM"), record_entity="PORDER", fields=_order_fields,
                           page_size=PAGE_SIZE, echoes=NOTE_ECHOES),
    "PORDER-approved": PolledEntity(name="PORDER-approved", keys=("POHNUM",), cursor=NONE,
                                    watched=("APPFLG", "REVNUM"), read=_read_approved, record_entity="PORDER",
                                    fields=_order_fields, page_size=PAGE_SIZE),
    # Keyed by order and date: the lines of one order expected the same day make one alert.
    "PORDER-delivery": PolledEntity(name="PORDER-delivery", keys=("POHNUM", "EXTRCPDAT"), cursor=NONE,
                                    watched=("EXTRCPDAT",), baseline=False, read=_read_delivery,
                                    record_entity="PORDER", record_key=("document",), fields=_delivery_fields,
                                    page_size=PAGE_SIZE),
    "PINVOICE": PolledEntity(name="PINVOICE", keys=("NUM",), cursor=TIME, cursor_field=CHANGED_AT,
                             read=_changes("PINVOICE", "BPR"), record_entity="PINVOICE", fields=_invoice_fields,
                             page_size=PAGE_SIZE, echoes=NOTE_ECHOES),
    "PINVOICE-due": PolledEntity(name="PINVOICE-due", keys=("NUM",), cursor=NONE, watched=("STRDUDDAT",),
                                 baseline=False, read=_read_due_invoices, record_entity="PINVOICE",
                                 fields=_invoice_fields, page_size=PAGE_SIZE),
    "PAYMENTH": PolledEntity(name="PAYMENTH", keys=("NUM",), cursor=TIME, cursor_field=CHANGED_AT,
                             read=_changes("PAYMENTH", "BPR"), record_entity="PAYMENTH", fields=_payment_fields,
                             page_size=PAGE_SIZE, echoes=NOTE_ECHOES),
}


def open_source(connection: SageX3Connection) -> Source:
    # The API client is the connection's process-wide one (pool, token); the supplier cache is this poll's.
    return Source(client=SageX3Session(sagex3_api(connection), connection), entities=ENTITIES)


# --- notes ---------------------------------------------------------------------------------------


def write_note(connection: SageX3Connection, note: Note) -> None:
    """Append the reply as a timestamped line to the record's text field (SOAP read, then modify).

    A reply already written (its reference is in the text) is not written again, so a
    redelivered message leaves one line.
    """
    api = sagex3_api(connection)
    target = api.names.notes.get(note.record_entity)
    if target is None:
        known = ", ".join(api.names.notes)
        raise PermanentFailure(f"{connection.name}: notes cannot be written on {note.record_entity!r} (only {known})")
    key = note.record_key.strip()
    if not key or "|" in key:
        raise PermanentFailure(f"{connection.name}: {note.record_key!r} is not a {note.record_entity} key")
    keys = [(target.key, key)]
    current = api.soap("read", target.public_name, keys)
    if current.status != 1:
        raise PermanentFailure(f"Sage X3 cannot read {note.record_entity} {key!r} through {target.public_name}: "
                               f"{'; '.join(current.messages) or 'no message'}")
    existing = text(current.fields().get(target.field))
    marker = f"[{note.reference}]"
    if note.reference and marker in existing:
        log.info("%s: the note %s is already on %s %s", connection.name, note.reference, note.record_entity, key)
        return
    line = note_line(note, connection.poll.zone)
    written = api.soap("modify", target.public_name, keys,
                       object_xml(target.group, {target.field: f"{existing}\n{line}" if existing else line}))
    if written.status != 1:
        raise PermanentFailure(f"Sage X3 refused the note on {note.record_entity} {key!r}: "
                               f"{'; '.join(written.messages) or 'no message'}")


def note_line(note: Note, zone: Any) -> str:
    """``2026-11-22 09:15 UTC SMS from +1******0123: text [SM…]``, in the ERP's own time zone."""
    moment = (note.received_at if note.received_at.tzinfo else note.received_at.replace(tzinfo=UTC)).astimezone(zone)
    body = " ".join(note.text.split())
    reference = f" [{note.reference}]" if note.reference else ""
    if note.outcome:
        return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()} {body}{reference}"
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()} SMS from {note.sender}: {body}{reference}"
