"""QAD EE / Adaptive ERP: polled through the Web UI's browses, notes written through QXtend.

The browses are read by ``shared.erp.qad.client`` (sign-in, paging by key within the connection's
domain, Progress values); this module names them and makes records of their rows.

Entities, in the order one poll cycle reads them:

1. ``GoodsReceipts``: ``tr_hist`` rows of type ``RCT-PO`` after the last ``tr_trnbr`` read
   (a number cursor), with ``prh_hist`` receiver, part and quantity where the browse joins it.
2. ``UnmatchedInvoices``: supplier invoices (EE ``CInvoice``) not yet through the three-way
   match. An invoice whose PO line already has a posted receipt (one read earlier in this
   cycle, or found in the ERP) waits on the match, not on the goods: ``status`` tells which.
   No stamp moves when they change: the watched fields (status, match status, hold) are hashed.
3. ``PendingPurchaseOrders``: open (blank ``po_stat``) purchase orders not yet confirmed;
   ``po_mstr`` has no modification date either: status, confirmation, total and revision are
   hashed.

The names and shapes this module cannot know for sure are in the block marked "check on the
customer's instance" below, in ``shared.erp.qad.client`` for sign-in and browse requests, and in
``shared.erp.qad.qxtend`` for the write-back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.erp.polling import NONE, NUMBER, Note, Page, PageRequest, PolledEntity, Source, phone_or_as_stored
from shared.erp.qad.client import Browse, QadClient, clean_row, number, qad_client, text, truthy
from shared.erp.qad.connection import QadConnection
from shared.outcomes import PermanentFailure

# --- check on the customer's instance --------------------------------------------------------------
# Nothing below is confirmed by QAD documentation; each item was chosen from working clients or
# the table definitions. Check them against the tenant (its Swagger, Browse Maintenance, a
# captured Web UI request) before going live.

RECEIPTS = Browse("receipts", "urn:browse:mfg:tr_hist_rct_po", key="tr_hist.tr_trnbr", domain="tr_hist.tr_domain",
                  conditions=(("tr_hist.tr_type", "eq", "RCT-PO"),), numeric_key=True)
INVOICES = Browse("invoices", "urn:browse:fin:cinvoice_ap_matching", key="CInvoice.CInvoice_ID",
                  domain="Domains.DomainCode", numeric_key=True)
PURCHASE_ORDERS = Browse("purchase_orders", "urn:browse:mfg:po_mstr_approval", key="po_mstr.po_nbr",
                         domain="po_mstr.po_domain")
SUPPLIERS = Browse("suppliers", "urn:browse:mfg:vd_mstr_ad_mstr", key="vd_mstr.vd_addr", domain="vd_mstr.vd_domain")
BROWSES: Mapping[str, Browse] = {browse.name: browse for browse in (RECEIPTS, INVOICES, PURCHASE_ORDERS, SUPPLIERS)}

# Receipt columns come from tr_hist and, when the browse joins it, prh_hist (on tr_lot = prh_receiver,
# tr_nbr = prh_nbr, tr_line = prh_line). Supplier invoice columns: EE CInvoice with Creditor and
# APMatching; the PO link, currency and hold columns are the least certain of all.
INVOICE_PO, INVOICE_PO_LINE = "PoNbr", "PoLine"
INVOICE_CURRENCY, INVOICE_HELD = "CurrencyCode", "CInvoiceIsHeld"
MATCH_FINISHED = "FINISHEDAPMATCHING"
# Calculated columns of the PO browse (po_mstr has no total of its own).
PO_TOTAL, PO_LINE_COUNT = "po_total", "po_line_count"
# --- end of the unconfirmed block -----------------------------------------------------------------

CYCLE_CACHE_LIMIT = 20_000  # per poll cycle: suppliers, receipt look-ups, PO lines received


# --- values ----------------------------------------------------------------------------------------


def quantity(value: Any) -> float | int | None:
    """A quantity as people read it: 250, not 250.0."""
    amount = number(value)
    return int(amount) if amount is not None and amount.is_integer() else amount


def po_status(value: Any) -> str:
    """``po_stat``: blank is open, ``c`` closed, ``x`` cancelled, in either case."""
    code = text(value).lower()
    return {"": "open", "c": "closed", "x": "cancelled"}.get(code, code)


# --- one poll cycle ----------------------------------------------------------------------------


class _Bounded(OrderedDict):
    """A dict that forgets its oldest entries beyond ``limit``: memory stays flat however much is read."""

    def __init__(self, limit: int = CYCLE_CACHE_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass(frozen=True)
class Supplier:
    name: str = ""
    phone: str = ""


POLine = tuple[str, str | None]  # PO number (upper case) and line (None: any line)


class QadCycle:
    """One poll cycle of a connection: the shared client, and what this cycle has learnt so far."""

    def __init__(self, client: QadClient, *, cache_limit: int = CYCLE_CACHE_LIMIT) -> None:
        self.client = client
        self.domain = client.domain
        self._suppliers: _Bounded = _Bounded(cache_limit)
        self._received: _Bounded = _Bounded(cache_limit)  # PO lines with a receipt read in this cycle or found

    def close(self) -> None:
        self._suppliers.clear()
        self._received.clear()

    def page(self, browse: Browse, request: PageRequest, after: Any) -> tuple[list[dict[str, Any]], str | None]:
        """Rows of one page in this domain, cleaned, and the token of the next page (None: last page)."""
        return self.client.page_after(browse, request.size, after)

    # --- suppliers: one look-up per supplier per cycle --------------------------------------------

    def add_suppliers(self, rows: Iterable[dict[str, Any]], code_field: str) -> None:
        rows = list(rows)
        for code in sorted({text(row.get(code_field)) for row in rows} - {""}):
            if code.upper() not in self._suppliers:
                self._suppliers[code.upper()] = self._fetch_supplier(code)
        for row in rows:
            found = self._suppliers.get(text(row.get(code_field)).upper(), Supplier())
            row["supplier_name"], row["supplier_phone"] = found.name, found.phone

    def _fetch_supplier(self, code: str) -> Supplier:
        try:
            rows = self.client.browse_page(SUPPLIERS, size=1, conditions=[(SUPPLIERS.key, "eq", code)])
        except ValueError:
            return Supplier()  # a code the filter cannot carry
        if not rows:
            return Supplier()
        row = clean_row(rows[0])
        name = text(row.get("ad_name")) or text(row.get("vd_sort"))
        return Supplier(name, phone_or_as_stored(row.get("ad_phone"), self.client.connection.default_region))

    # --- receipts: what this cycle read, and look-ups for the rest ------------------------------

    def saw_receipt(self, po: str, line: Any) -> None:
        self._received[(po.upper(), text(line) or None)] = True
        self._received[(po.upper(), None)] = True

    def receipts_posted(self, lines: Iterable[POLine]) -> dict[POLine, bool]:
        """Whether each PO line has a posted receipt; one browse call per line not seen in this cycle."""
        found: dict[POLine, bool] = {}
        for line in set(lines):
            if line not in self._received:
                self._received[line] = self._look_up_receipt(*line)
            found[line] = bool(self._received.get(line))
        return found

    def _look_up_receipt(self, po: str, line: str | None) -> bool:
        conditions = [("tr_hist.tr_nbr", "eq", po)] + ([("tr_hist.tr_line", "eq", line)] if line else [])
        try:
            return bool(self.client.browse_page(RECEIPTS, size=1, conditions=conditions))
        except ValueError:
            return False


def _after(request: PageRequest) -> Any:
    """The key the page starts after: the token of the page before, else the cursor's lower bound."""
    return request.token if request.token is not None else request.since


# --- goods receipts --------------------------------------------------------------------------------


def _read_receipts(cycle: QadCycle, entity: PolledEntity, request: PageRequest) -> Page:
    rows, token = cycle.page(RECEIPTS, request, _after(request))
    records = [receipt_fields(row, cycle.domain) for row in rows]
    for record in records:
        if record["po_number"]:
            cycle.saw_receipt(record["po_number"], record["po_line"])
    cycle.add_suppliers(records, "supplier")
    return Page(records, token)


def receipt_fields(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    received = quantity(row.get("prh_rcvd"))
    if received is None:
        received = quantity(row.get("tr_qty_loc"))
    cost = number(row.get("prh_pur_cost"))
    po = text(row.get("tr_nbr")) or text(row.get("prh_nbr"))
    return {
        **row,
        "domain": domain,
        "document": po,
        "po_number": po,
        "po_line": text(row.get("tr_line")) or text(row.get("prh_line")),
        "receiver": text(row.get("prh_receiver")) or text(row.get("tr_lot")),
        "part": text(row.get("prh_part")) or text(row.get("tr_part")),
        "quantity": received,
        "site": text(row.get("tr_site")),
        "supplier": text(row.get("prh_vend")),
        "amount": round(received * cost, 2) if received is not None and cost is not None else None,
        "currency": text(row.get("prh_curr")),
        "receipt_date": row.get("prh_rcp_date") or row.get("tr_effdate") or row.get("tr_date"),
        "status": "received",
        "line_count": 1,
    }


# --- supplier invoices waiting on the three-way match ---------------------------------------------

AWAITING_RECEIPT, AWAITING_MATCH = "awaiting-receipt", "awaiting-match"


def _read_invoices(cycle: QadCycle, entity: PolledEntity, request: PageRequest) -> Page:
    rows, token = cycle.page(INVOICES, request, _after(request))
    records = [invoice_fields(row, cycle.domain) for row in rows if _waits_on_match(row)]
    posted = cycle.receipts_posted(_po_line(record) for record in records)
    for record in records:
        received = posted[_po_line(record)]
        record["receipt_posted"] = "yes" if received else "no"
        record["status"] = AWAITING_MATCH if received else AWAITING_RECEIPT
    cycle.add_suppliers(records, "supplier")
    return Page(records, token)


def _waits_on_match(row: Mapping[str, Any]) -> bool:
    """Open, linked to a PO, and not through the match (a non-PO invoice has nothing to wait for)."""
    is_open = row.get("CInvoiceIsOpen")
    matched = text(row.get("APMatchingStatus")).upper() == MATCH_FINISHED
    return bool(text(row.get(INVOICE_PO))) and not matched and (is_open is None or truthy(is_open))


def _po_line(record: Mapping[str, Any]) -> POLine:
    return (text(record["po_number"]).upper(), text(record["po_line"]) or None)


def invoice_fields(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    reference = text(row.get("CInvoiceReference")) or text(row.get("CInvoiceVoucher"))
    return {
        **row,
        "domain": domain,
        "document": reference,
        "invoice_id": text(row.get("CInvoice_ID")),
        "voucher": text(row.get("CInvoiceVoucher")),
        "supplier": text(row.get("CreditorCode")),
        "amount": number(row.get("CInvoiceOriginalCreditTC")),
        "currency": text(row.get(INVOICE_CURRENCY)),
        "invoice_date": row.get("CInvoiceDate"),
        "due_date": row.get("CInvoiceDueDate"),
        "po_number": text(row.get(INVOICE_PO)),
        "po_line": text(row.get(INVOICE_PO_LINE)),
        "match_status": text(row.get("APMatchingStatus")).upper(),
        "on_hold": "yes" if truthy(row.get(INVOICE_HELD)) else "no",
    }


# --- purchase orders pending approval -----------------------------------------------------------


def _read_purchase_orders(cycle: QadCycle, entity: PolledEntity, request: PageRequest) -> Page:
    rows, token = cycle.page(PURCHASE_ORDERS, request, _after(request))
    records = [record for record in (purchase_order_fields(row, cycle.domain) for row in rows)
               if record["status"] == "open" and record["approval"] == "pending"]
    cycle.add_suppliers(records, "supplier")
    return Page(records, token)


def purchase_order_fields(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    lines = number(row.get(PO_LINE_COUNT))
    return {
        **row,
        "domain": domain,
        "document": text(row.get("po_nbr")),
        "po_number": text(row.get("po_nbr")),
        "supplier": text(row.get("po_vend")),
        "amount": number(row.get(PO_TOTAL)),
        "currency": text(row.get("po_curr")),
        "order_date": row.get("po_ord_date"),
        "due_date": row.get("po_due_date"),
        "buyer": text(row.get("po_buyer")),
        "status": po_status(row.get("po_stat")),
        "approval": "confirmed" if truthy(row.get("po_confirm")) else "pending",
        "line_count": int(lines) if lines is not None else None,
    }


# --- what the framework reads ------------------------------------------------------------------

RECEIPTS_ENTITY, INVOICES_ENTITY, PURCHASE_ORDERS_ENTITY = "GoodsReceipts", "UnmatchedInvoices", "PendingPurchaseOrders"
# Record entities: replies and delivery statuses are recorded against these, and notes written to them.
RECEIPT_RECORD, INVOICE_RECORD, PO_RECORD, SUPPLIER_RECORD = "Receipt", "SupplierInvoice", "PurchaseOrder", "Supplier"

ENTITIES: Mapping[str, PolledEntity] = {
    RECEIPTS_ENTITY: PolledEntity(
        name=RECEIPTS_ENTITY, keys=("tr_trnbr",), cursor=NUMBER, cursor_field="tr_trnbr", read=_read_receipts,
        record_entity=RECEIPT_RECORD, record_key=("domain", "po_number", "receiver")),
    INVOICES_ENTITY: PolledEntity(
        name=INVOICES_ENTITY, keys=("CInvoice_ID",), cursor=NONE, read=_read_invoices,
        watched=("status", "match_status", "on_hold"),
        record_entity=INVOICE_RECORD, record_key=("domain", "supplier", "document")),
    PURCHASE_ORDERS_ENTITY: PolledEntity(
        name=PURCHASE_ORDERS_ENTITY, keys=("po_nbr",), cursor=NONE, read=_read_purchase_orders,
        watched=("status", "approval", "amount", "currency", "po_rev", "line_count"),
        record_entity=PO_RECORD, record_key=("domain", "po_number")),
}


def open_source(connection: QadConnection) -> Source:
    cycle = QadCycle(qad_client(connection))
    entities = {name: replace(entity, page_size=connection.page_size) for name, entity in ENTITIES.items()}
    return Source(client=cycle, entities=entities, close=cycle.close)


# --- notes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommentTarget:
    """Where a note goes: the master comment of a PO or a supplier, and what it is about."""

    reference: str  # cmt_ref
    about: str  # a first line naming the record, when the reference alone does not


# Record entity -> number of key parts: domain first, then the PO or supplier, then the document.
_KEY_PARTS: Mapping[str, int] = {PO_RECORD: 2, RECEIPT_RECORD: 3, INVOICE_RECORD: 3, SUPPLIER_RECORD: 2}


def comment_target(connection: QadConnection, note: Note) -> CommentTarget:
    """The PO or supplier a reply about ``note.record_entity``/``record_key`` is written against."""
    parts = note.record_key.split("|")
    expected = _KEY_PARTS.get(note.record_entity)
    if expected is None:
        raise PermanentFailure(f"QAD notes can be written on {', '.join(_KEY_PARTS)}, not {note.record_entity!r}")
    if len(parts) != expected or not all(part.strip() for part in parts):
        raise PermanentFailure(f"{note.record_entity} key {note.record_key!r} does not name a QAD record")
    if parts[0].upper() != connection.domain.upper():
        raise PermanentFailure(f"{note.record_key!r} is in domain {parts[0]!r}, not {connection.domain!r}")
    if note.record_entity == RECEIPT_RECORD:
        return CommentTarget(parts[1], f"Receipt {parts[2]}")
    if note.record_entity == INVOICE_RECORD:
        return CommentTarget(parts[1], f"Invoice {parts[2]}")
    return CommentTarget(parts[1], "")


def write_note(connection: QadConnection, note: Note) -> None:
    """The reply as a master comment (cmt_det) on its PO or supplier, through QXtend Inbound."""
    from shared.erp.qad.qxtend import comment_lines, qxtend_client

    target = comment_target(connection, note)
    qxtend_client(connection).add_master_comment(target.reference, comment_lines(note, target.about),
                                                 message_id=note.reference)
