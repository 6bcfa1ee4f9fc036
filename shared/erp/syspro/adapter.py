"""SYSPRO 8 as a polled ERP: purchase orders, supplier invoices, and replies written back as notes.

Entities (named after the SYSPRO tables rules refer to), in the order one cycle reads them:

- ``PorMasterHdr``: purchase order headers changed since the last poll, by ``TimeStamp`` (a
  rowversion: database-wide, increasing on every insert and update; not a time).
- ``PorMasterHdr-status``: the same orders for setups where ``TimeStamp`` cannot be read
  (the OData service may not expose it): every header is read and a change of
  ``OrderStatus``, ``CancelledFlag`` or ``DatePoCompleted`` is news.
- ``ApInvoice``: supplier invoices, by ``TimeStamp``: posting inserts the row, and payments
  and changes update it (``payment_state`` tells them apart in rules).
- ``ApInvoice-journal``: invoices by the date of the journal that posted them
  (``JournalDate``: date-only, server local time) for setups without ``TimeStamp``; one
  alert per invoice posting.

Order records carry their line count and total from ``PorMasterDetail`` (MOrderQty x MPrice,
comment lines left out) and supplier records the name and phone from ``ApSupplier``. Both
are looked up only for records that are sent on (never for a baseline poll or an unchanged
order): per page of a stamp-driven entity, for the page's orders at once (chunks of
``LOOKUP_CHUNK`` per COMFND query); for the status entity, one query per changed order.
Suppliers are cached for the poll cycle.

Replies are written back through e.net whatever API the poll uses (OData is read-only): a
comment line on the purchase order (PORTOI), or a custom form field on the supplier
(COMSFM) for invoices and suppliers. SYSPRO silently ignores XML elements it does not know,
so every write is read back; a note that is not there afterwards is a permanent failure.
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from shared.erp.polling import (
    NONE,
    NUMBER,
    TIME,
    Note,
    Page,
    PageRequest,
    PolledEntity,
    Source,
    phone_or_as_stored,
)
from shared.erp.syspro.client import (
    Cond,
    EnetReader,
    EnetSession,
    ODataReader,
    RowVersion,
    TableQuery,
    TableReader,
    Where,
    after,
    any_of,
    chunks,
    enet_session,
    lease_name,
    read_all,
    transport,
)
from shared.erp.syspro.connection import SysproConnection, notes_unavailable
from shared.http import HttpClient
from shared.outcomes import PermanentFailure, RetryLater

if TYPE_CHECKING:
    from shared.storage.secrets import SecretProvider
    from shared.storage.tables import Stores

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # COMFND ReturnRows per page (one working client caps headers at 1000)
LOOKUP_CHUNK = 25  # keys per lookup query: the whole query travels in the URL
NOTE_LEASE_SECONDS = 120.0
# A poll holding the operator ends within seconds most times, well before its lease would run out: a
# note that meets one asks again this soon, not at the lease's end (it would wait a minute for nothing).
NOTE_RECHECK_SECONDS = 5.0

# --- PO status codes (OrderStatus): 4, 9 and * are documented; 0 and 1 are unconfirmed labels ---
ORDER_STATUS_TEXT: Mapping[str, str] = {
    "0": "in process", "1": "ready to print", "4": "printed", "9": "complete", "*": "cancelled",
}
# PorMasterDetail.LineType of a comment line (unconfirmed): left out of the line count and total.
COMMENT_LINE_TYPE = "6"

# --- tables ------------------------------------------------------------------------------------

PO_COLUMNS = ("PurchaseOrder", "Supplier", "OrderStatus", "CancelledFlag", "DatePoCompleted", "OrderEntryDate",
              "OrderDueDate", "Currency", "Buyer")
INVOICE_COLUMNS = ("Supplier", "Invoice", "InvoiceDate", "DueDate", "OrigInvValue", "MthInvBal1", "InvoiceStatus",
                   "Currency", "JournalDate", "Journal", "Reference")
DATE_COLUMNS = frozenset({"DatePoCompleted", "OrderEntryDate", "OrderDueDate", "InvoiceDate", "DueDate",
                          "JournalDate"})
STAMP = "TimeStamp"


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]


SPECS: Mapping[str, TableSpec] = {
    "PorMasterHdr": TableSpec("PorMasterHdr", (*PO_COLUMNS, STAMP)),
    "PorMasterHdr-status": TableSpec("PorMasterHdr", PO_COLUMNS),
    "ApInvoice": TableSpec("ApInvoice", (*INVOICE_COLUMNS, STAMP)),
    "ApInvoice-journal": TableSpec("ApInvoice", INVOICE_COLUMNS),
}


# --- one poll cycle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SupplierInfo:
    name: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class LineTotals:
    count: int = 0
    total: Decimal = Decimal(0)


@dataclass
class Cycle:
    """What one poll cycle reads through, and what it caches for its duration."""

    reader: TableReader
    region: str
    suppliers: dict[str, SupplierInfo] = field(default_factory=dict)

    def supplier(self, code: str | None) -> SupplierInfo:
        if not code:
            return SupplierInfo()
        self.load_suppliers([code])
        return self.suppliers.get(code, SupplierInfo())

    def load_suppliers(self, codes: Sequence[str]) -> None:
        missing = sorted({code for code in codes if code and code not in self.suppliers})
        for chunk in chunks(missing, LOOKUP_CHUNK):
            query = TableQuery("ApSupplier", ("Supplier", "SupplierName", "Telephone"), ("Supplier",),
                               len(chunk) + 1, any_of("Supplier", chunk))
            for row in read_all(self.reader, query):
                phone = phone_or_as_stored(row.get("Telephone"), self.region) or None
                self.suppliers[str(row["Supplier"])] = SupplierInfo(_text(row.get("SupplierName")), phone)
            for code in chunk:
                self.suppliers.setdefault(code, SupplierInfo())  # no such supplier: do not ask again

    def line_totals(self, orders: Sequence[str]) -> dict[str, LineTotals]:
        """Line count and total per order, from PorMasterDetail in as few queries as the URL allows."""
        totals: dict[str, list[Any]] = {order: [0, Decimal(0)] for order in orders if order}
        for chunk in chunks(sorted(totals), LOOKUP_CHUNK):
            for row in self._detail_lines(chunk):
                if str(row.get("LineType") or "").strip() == COMMENT_LINE_TYPE:
                    continue
                entry = totals.get(str(row["PurchaseOrder"]))
                if entry is not None:
                    entry[0] += 1
                    entry[1] += (_decimal(row.get("MOrderQty")) or 0) * (_decimal(row.get("MPrice")) or 0)
        return {order: LineTotals(count, total) for order, (count, total) in totals.items()}

    def _detail_lines(self, orders: Sequence[str]) -> Iterator[Mapping[str, Any]]:
        """Every line of ``orders``, page by page; orders already read whole drop out of the next query."""
        columns = ("PurchaseOrder", "Line", "LineType", "MOrderQty", "MPrice")
        size = min(PAGE_SIZE * 5, self.reader.max_rows)
        pending, where = list(orders), any_of("PurchaseOrder", orders)
        while True:
            page = self.reader.rows(TableQuery("PorMasterDetail", columns, ("PurchaseOrder", "Line"), size, where))
            yield from page
            if len(page) < size:
                return
            last_order, last_line = str(page[-1]["PurchaseOrder"]), _int(page[-1]["Line"])
            done = {str(row["PurchaseOrder"]) for row in page} - {last_order}
            pending = [order for order in pending if order not in done and order != last_order]
            where = ((Cond("PurchaseOrder", "eq", last_order), Cond("Line", "gt", last_line)),
                     *any_of("PurchaseOrder", pending))

    def close(self) -> None:
        self.reader.close()


class PageLookups:
    """A page's context: its suppliers and order lines, fetched for the whole page on first use, or per record.

    Lazy, because the framework asks for record fields only of rows it sends on.
    """

    def __init__(self, cycle: Cycle, suppliers: Sequence[str], orders: Sequence[str], whole_page: bool) -> None:
        self._cycle, self._suppliers, self._orders, self._whole_page = cycle, suppliers, orders, whole_page
        self._totals: dict[str, LineTotals] | None = None

    def supplier(self, code: str | None) -> SupplierInfo:
        if self._whole_page and self._suppliers:
            self._cycle.load_suppliers(self._suppliers)
            self._suppliers = ()
        return self._cycle.supplier(code)

    def lines(self, order: str) -> LineTotals:
        if not self._whole_page:
            return self._cycle.line_totals([order]).get(order, LineTotals())
        if self._totals is None:
            self._totals = self._cycle.line_totals(self._orders)
        return self._totals.get(order, LineTotals())


# --- reading pages ------------------------------------------------------------------------------


def _read_page(cycle: Cycle, entity: PolledEntity, request: PageRequest) -> Page:
    spec = SPECS[entity.name]
    stamp = entity.cursor_field
    order = (stamp, *entity.keys) if stamp else entity.keys
    where: Where = ()
    if request.token is not None:
        where = after(order, _from_token(request.token, entity))
    elif request.since is not None:
        where = ((Cond(stamp, "gt" if entity.cursor == NUMBER else "ge", _bound(entity, request.since)),),)
    size = min(request.size, cycle.reader.max_rows)
    rows = [_normalized(row, entity) for row in cycle.reader.rows(TableQuery(spec.table, spec.columns, order, size,
                                                                             where))]
    token = _to_token([rows[-1].get(column) for column in order]) if len(rows) >= size else None
    lookups = PageLookups(cycle, [str(row.get("Supplier") or "") for row in rows],
                          [str(row.get("PurchaseOrder") or "") for row in rows], whole_page=entity.cursor != NONE)
    return Page(rows, token, context=lookups)


def _bound(entity: PolledEntity, since: Any) -> Any:
    if entity.cursor == NUMBER:
        return RowVersion(since)
    if isinstance(since, datetime):
        return since.date()
    return since


def _normalized(row: Mapping[str, Any], entity: PolledEntity) -> dict[str, Any]:
    """Stamps as integers, dates as ``YYYY-MM-DD`` (both APIs alike), so hashes and tokens agree."""
    values = {name: (_day(value) if name in DATE_COLUMNS else value) for name, value in row.items()}
    if STAMP in values and values[STAMP] is not None:
        try:
            values[STAMP] = int(RowVersion.parse(values[STAMP]))
        except ValueError as error:
            raise PermanentFailure(f"SYSPRO {entity.name}: {error}") from None
    if any(values.get(key) in (None, "") for key in entity.keys):
        raise PermanentFailure(f"SYSPRO {entity.name}: a row without {', '.join(entity.keys)}")
    return values


def _to_token(values: Sequence[Any]) -> str:
    return json.dumps(values, separators=(",", ":"))


def _from_token(token: str, entity: PolledEntity) -> list[Any]:
    values = json.loads(token)
    if entity.cursor == NUMBER:
        values[0] = RowVersion(values[0])
    elif entity.cursor == TIME:
        values[0] = date.fromisoformat(values[0])
    return values


# --- record fields -------------------------------------------------------------------------------


def _order_fields(row: Mapping[str, Any], lookups: PageLookups | None = None) -> dict[str, Any]:
    number = str(row.get("PurchaseOrder") or "")
    supplier = lookups.supplier(row.get("Supplier")) if lookups else SupplierInfo()
    lines = lookups.lines(number) if lookups else LineTotals()
    status = str(row.get("OrderStatus") or "").strip()
    return {
        **row,
        "document": number,
        "supplier": row.get("Supplier"),
        "supplier_name": supplier.name,
        "supplier_phone": supplier.phone,
        "amount": float(round(lines.total, 2)),
        "currency": row.get("Currency"),
        "due_date": row.get("OrderDueDate"),
        "status": status,
        "status_text": ORDER_STATUS_TEXT.get(status, status),
        "cancelled": str(row.get("CancelledFlag") or "").strip().upper() == "Y",
        "completed_date": row.get("DatePoCompleted"),
        "line_count": lines.count,
    }


def _invoice_fields(row: Mapping[str, Any], lookups: PageLookups | None = None) -> dict[str, Any]:
    supplier = lookups.supplier(row.get("Supplier")) if lookups else SupplierInfo()
    original, balance = _decimal(row.get("OrigInvValue")), _decimal(row.get("MthInvBal1"))
    return {
        **row,
        "document": row.get("Invoice"),
        "supplier": row.get("Supplier"),
        "supplier_name": supplier.name,
        "supplier_phone": supplier.phone,
        "amount": _money(original),
        "balance": _money(balance),
        "payment_state": _payment_state(original, balance),
        "currency": row.get("Currency"),
        "due_date": row.get("DueDate"),
        "invoice_date": row.get("InvoiceDate"),
        "status": str(row.get("InvoiceStatus") or "").strip(),
        "journal": row.get("Journal"),
    }


def _payment_state(original: Decimal | None, balance: Decimal | None) -> str:
    """Balance 0 is paid, a balance below the invoice value part-paid (credit notes are negative)."""
    if balance is None or original is None:
        return ""
    if balance == 0:
        return "paid"
    return "part-paid" if abs(balance) < abs(original) else "unpaid"


# --- the entities ---------------------------------------------------------------------------------

ENTITIES: Mapping[str, PolledEntity] = {
    "PorMasterHdr": PolledEntity(
        name="PorMasterHdr", keys=("PurchaseOrder",), cursor=NUMBER, cursor_field=STAMP, read=_read_page,
        record_entity="PorMasterHdr", page_size=PAGE_SIZE, fields=_order_fields),
    "PorMasterHdr-status": PolledEntity(
        name="PorMasterHdr-status", keys=("PurchaseOrder",), cursor=NONE, read=_read_page,
        watched=("OrderStatus", "CancelledFlag", "DatePoCompleted"),
        record_entity="PorMasterHdr", page_size=PAGE_SIZE, fields=_order_fields),
    "ApInvoice": PolledEntity(
        name="ApInvoice", keys=("Supplier", "Invoice"), cursor=NUMBER, cursor_field=STAMP, read=_read_page,
        record_entity="ApInvoice", page_size=PAGE_SIZE, fields=_invoice_fields),
    "ApInvoice-journal": PolledEntity(
        name="ApInvoice-journal", keys=("Supplier", "Invoice"), cursor=TIME, cursor_field="JournalDate",
        date_only=True, read=_read_page, record_entity="ApInvoice", page_size=PAGE_SIZE, fields=_invoice_fields),
}


def open_source(connection: SysproConnection, *, secrets: SecretProvider | None = None,
                http: HttpClient | None = None) -> Source:
    """A poll cycle's view: nothing is sent until the first page is read (the logon is lazy)."""
    secrets = secrets or _secret_provider()
    http = http or transport(connection).http
    if connection.api == "odata":
        # No session and no seat: OData polls need no lease of the operator.
        cycle = Cycle(ODataReader(connection, secrets, http), connection.default_region)
        return Source(client=cycle, entities=ENTITIES, close=cycle.close)
    # The process's session of this operator: logged on by the first poll, kept for the next ones.
    cycle = Cycle(EnetReader(enet_session(connection, secrets, http)), connection.default_region)
    return Source(client=cycle, entities=ENTITIES, exclusive=lease_name(connection), close=cycle.close)


def _secret_provider() -> SecretProvider:
    from shared.storage.secrets import get_secret_provider

    return get_secret_provider()


# --- notes ---------------------------------------------------------------------------------------
# Everything below that names SYSPRO XML is unconfirmed: the PORTOI comment-line element names come
# from a Ruby model, COMSFM's REST path (a setup-class business object), the supplier form type, the
# custom form field and the table its values are read back from (AdmFormData) were not seen working.
# SYSPRO ignores elements it does not know, so a wrong name shows as a note missing on read-back.

COMMENT_LENGTH = 100  # PorMasterDetail.NComment
MAX_COMMENT_LINES = 16
PORTOI_PATH = "Transaction/Post"
COMSFM_PATH = "Setup/Update"
SUPPLIER_FORM_TYPE = "SUP"
SUPPLIER_NOTE_FIELD = "SMSREPLY"
CUSTOM_FORM_TABLE = "AdmFormData"
CUSTOM_FORM_VALUE_LENGTH = 255


def portoi_comment_xml(order: str, lines: Sequence[str]) -> tuple[str, str]:
    """(XmlParameters, XmlIn) of PORTOI adding comment lines to an existing order."""
    parameters = ("<PostPurchaseOrders><Parameters><ValidateOnly>N</ValidateOnly><IgnoreWarnings>N</IgnoreWarnings>"
                  "</Parameters></PostPurchaseOrders>")
    comments = "".join(f"<CommentLine><LineActionType>A</LineActionType><Comment>{escape(line)}</Comment>"
                       "</CommentLine>" for line in lines)
    xml_in = (f"<PostPurchaseOrders><Orders><OrderHeader><OrderActionType>C</OrderActionType>"
              f"<PurchaseOrder>{escape(order)}</PurchaseOrder></OrderHeader>"
              f"<OrderDetails>{comments}</OrderDetails></Orders></PostPurchaseOrders>")
    return parameters, xml_in


def comsfm_xml(form_type: str, key: str, field_name: str, value: str) -> tuple[str, str]:
    """(XmlParameters, XmlIn) of COMSFM setting one alphanumeric custom form field."""
    parameters = "<SetupCustomForm><Parameters><ValidateOnly>N</ValidateOnly></Parameters></SetupCustomForm>"
    xml_in = (f"<SetupCustomForm><Item><Key><FormType>{escape(form_type)}</FormType><KeyField>{escape(key)}</KeyField>"
              f"<FieldName>{escape(field_name)}</FieldName></Key><AlphaValue>{escape(value)}</AlphaValue></Item>"
              "</SetupCustomForm>")
    return parameters, xml_in


def custom_form_query(form_type: str, key: str, field_name: str) -> TableQuery:
    where = ((Cond("FormType", "eq", form_type), Cond("KeyField", "eq", key), Cond("FieldName", "eq", field_name)),)
    return TableQuery(CUSTOM_FORM_TABLE, ("FormType", "KeyField", "FieldName", "AlphaValue"),
                      ("FormType", "KeyField", "FieldName"), 2, where)


def comment_lines_query(order: str) -> TableQuery:
    # Only EQ on the key: the comment-line type is filtered here, not in COMFND.
    return TableQuery("PorMasterDetail", ("PurchaseOrder", "Line", "LineType", "NComment"),
                      ("PurchaseOrder", "Line"), PAGE_SIZE, any_of("PurchaseOrder", [order]))

# --------------------------------------------------------------------------------------------------


def write_note(connection: SysproConnection, note: Note, *, secrets: SecretProvider | None = None,
               http: HttpClient | None = None, stores: Stores | None = None) -> None:
    """Write ``note`` against its record: a PO comment, or the supplier's custom form field.

    Holds the operator's lease meanwhile (a poll on any instance would otherwise have its
    session ended by this logon); a busy lease is a ``RetryLater``. Written twice (a
    redelivered reply), the note is found on the record and not written again.
    """
    unavailable = notes_unavailable(connection)
    if unavailable:
        raise PermanentFailure(unavailable)
    writer = _NOTE_WRITERS.get(note.record_entity)
    if writer is None:
        raise PermanentFailure(f"SYSPRO notes cannot be written on {note.record_entity!r} records")
    session = enet_session(connection, secrets or _secret_provider(), http or transport(connection).http)
    with _operator_lease(connection, stores):
        writer(session, note)


def _write_order_comment(session: EnetSession, note: Note) -> None:
    order = note.record_key.split("|")[0].strip()
    lines = comment_lines(note)
    reader = EnetReader(session)
    if _has_lines(reader, order, lines):
        return  # written before (the reply was delivered again)
    parameters, xml_in = portoi_comment_xml(order, lines)
    session.post(PORTOI_PATH, "PORTOI", parameters, xml_in)
    if not _has_lines(reader, order, lines):
        raise PermanentFailure(f"SYSPRO PORTOI: the comment is not on purchase order {order} after the write "
                               "(element names ignored by SYSPRO?)")


def _has_lines(reader: TableReader, order: str, wanted: Sequence[str]) -> bool:
    comments = [str(row.get("NComment") or "") for row in read_all(reader, comment_lines_query(order))
                if str(row.get("LineType") or "").strip() == COMMENT_LINE_TYPE]
    width = len(wanted)
    return any(comments[start:start + width] == list(wanted) for start in range(len(comments) - width + 1))


def _write_supplier_field(session: EnetSession, note: Note) -> None:
    parts = note.record_key.split("|")
    supplier = parts[0].strip()
    document = parts[1].strip() if note.record_entity == "ApInvoice" and len(parts) > 1 else ""
    value = custom_form_value(note, document)
    reader = EnetReader(session)
    query = custom_form_query(SUPPLIER_FORM_TYPE, supplier, SUPPLIER_NOTE_FIELD)
    if _field_value(reader, query) == value:
        return
    parameters, xml_in = comsfm_xml(SUPPLIER_FORM_TYPE, supplier, SUPPLIER_NOTE_FIELD, value)
    session.post(COMSFM_PATH, "COMSFM", parameters, xml_in)
    if _field_value(reader, query) != value:
        raise PermanentFailure(f"SYSPRO COMSFM: the note is not on supplier {supplier} after the write "
                               "(form type, field or element names ignored by SYSPRO?)")


def _field_value(reader: TableReader, query: TableQuery) -> str | None:
    rows = reader.rows(query)
    return str(rows[0].get("AlphaValue") or "") if rows else None


_NOTE_WRITERS: Mapping[str, Callable[[EnetSession, Note], None]] = {
    "PorMasterHdr": _write_order_comment,
    "ApInvoice": _write_supplier_field,
    "ApSupplier": _write_supplier_field,
}


def note_heading(note: Note) -> str:
    moment = note.received_at.strftime("%Y-%m-%d %H:%M UTC")
    sent_by = "Alert" if note.outcome else f"SMS {moment} {note.sender}"
    heading = f"{sent_by} {moment} ref {note.reference}" if note.outcome else f"{sent_by} ref {note.reference}"
    return as_stored(heading)[:COMMENT_LENGTH]


def comment_lines(note: Note) -> list[str]:
    """The heading (with the message reference) and the text, each line short enough for NComment."""
    body = textwrap.wrap(as_stored(note.text), COMMENT_LENGTH) or [""]
    if len(body) > MAX_COMMENT_LINES - 1:
        body = [*body[: MAX_COMMENT_LINES - 2], body[MAX_COMMENT_LINES - 2][: COMMENT_LENGTH - 3] + "..."]
    return [note_heading(note), *body]


def custom_form_value(note: Note, document: str) -> str:
    about = f" {document}" if document else ""
    value = as_stored(f"{note_heading(note)}{about}: {' '.join(note.text.split())}")
    return value if len(value) <= CUSTOM_FORM_VALUE_LENGTH else value[: CUSTOM_FORM_VALUE_LENGTH - 3] + "..."


def as_stored(text: str) -> str:
    """Text as a Windows-1252 column keeps it (what read-back returns): other characters become '?'."""
    cleaned = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    return cleaned.encode("cp1252", errors="replace").decode("cp1252").strip()


@contextmanager
def _operator_lease(connection: SysproConnection, stores: Stores | None) -> Iterator[None]:
    from shared.storage.tables import LeaseBusy, get_stores

    stores = stores or get_stores()
    with ExitStack() as stack:
        try:
            stack.enter_context(stores.leases.held(lease_name(connection), NOTE_LEASE_SECONDS))
        except LeaseBusy as busy:
            raise RetryLater(busy.wait(most=NOTE_RECHECK_SECONDS),
                             f"{connection.name}: a poll is using the SYSPRO operator") from None
        yield


# --- values --------------------------------------------------------------------------------------

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(value: Any) -> str | None:
    """A date column as ``YYYY-MM-DD`` (COMFND and OData write them differently); None when empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text[:10] if _DAY.match(text) else (text or None)


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return None


def _int(value: Any) -> int:
    return int(Decimal(str(value).strip()))


def _money(value: Decimal | None) -> float | None:
    return float(round(value, 2)) if value is not None else None
