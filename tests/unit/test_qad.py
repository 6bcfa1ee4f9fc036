"""QAD: Progress values, record fields, templates, the QDoc request and reply, where notes go."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from shared.config.loading import config_from_dict
from shared.erp.polling import Note
from shared.erp.qad import adapter as qad
from shared.erp.qad.client import clean_row, progress_date, truthy
from shared.erp.qad.qxtend import (
    QdocResult,
    comment_lines,
    master_comment_request,
    parse_qdoc_reply,
    session_context,
)
from shared.pipeline.consume import PermanentFailure
from shared.templates import BUILTIN, render, sms_segments

CONNECTION = config_from_dict({"connections": {"qad-main": {
    "kind": "qad", "base_url": "https://qad.example.com/clouderp", "domain": "10USA", "username": "mlc",
    "password": {"secret": "qad-pw"}, "poll": {"entities": ["GoodsReceipts"]}}}}).connections["qad-main"]


@pytest.mark.parametrize(("raw", "iso"), [
    ("11/22/26", "2026-11-22"), ("01/02/99", "1999-01-02"), ("1/2/50", "1950-01-02"), ("12/31/49", "2049-12-31"),
    ("12/31/2049", "2049-12-31"), ("2026-11-22", "2026-11-22"), ("13/45/26", "13/45/26"),
])
def test_progress_dates_become_iso(raw: str, iso: str) -> None:
    assert progress_date(raw) == iso


def test_a_browse_row_gets_plain_names_nulls_and_iso_dates() -> None:
    row = clean_row({"tr_hist.tr_trnbr": 7, "tr_hist.tr_date": "11/22/26", "prh_hist.prh_ps_nbr": "?",
                     "tr_hist.tr_lot": "11/22/26", "local_variables.BrowseRowOrderIndex": 1,
                     "tr_hist.tr_hist_rowid": "0x1", "tr_hist.oid_tr_hist": 1.5, "local_variables.po_total": 9})
    assert row == {"tr_trnbr": 7, "tr_date": "2026-11-22", "prh_ps_nbr": None, "tr_lot": "11/22/26", "po_total": 9}


@pytest.mark.parametrize(("code", "status"), [("", "open"), (None, "open"), ("c", "closed"), ("C", "closed"),
                                              (" x ", "cancelled"), ("H", "h")])
def test_po_status_reads_blank_as_open_without_regard_to_case(code: str | None, status: str) -> None:
    assert qad.po_status(code) == status


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("yes", True), ("Y", True), ("true", True),
                                                 (False, False), ("no", False), ("", False), (None, False)])
def test_progress_logicals(value: object, expected: bool) -> None:
    assert truthy(value) is expected


def test_receipt_fields_prefer_the_prh_hist_columns_and_compute_the_amount() -> None:
    record = qad.receipt_fields({"tr_trnbr": 7, "tr_nbr": "PO100", "tr_line": 2, "tr_lot": "RC7", "tr_part": "BOLT",
                                 "tr_qty_loc": 4.0, "prh_rcvd": 5.0, "prh_pur_cost": 2.5, "prh_curr": "USD",
                                 "prh_vend": "S-1", "tr_date": "2026-11-22"}, "10USA")
    assert {k: record[k] for k in ("document", "po_number", "po_line", "receiver", "part", "quantity", "supplier",
                                   "amount", "currency", "receipt_date", "status", "domain")} == {
        "document": "PO100", "po_number": "PO100", "po_line": "2", "receiver": "RC7", "part": "BOLT", "quantity": 5.0,
        "supplier": "S-1", "amount": 12.5, "currency": "USD", "receipt_date": "2026-11-22", "status": "received",
        "domain": "10USA"}
    bare = qad.receipt_fields({"tr_trnbr": 8, "tr_nbr": "PO1", "tr_qty_loc": 3.0, "tr_lot": "RC8"}, "10USA")
    assert bare["quantity"] == 3.0 and bare["amount"] is None and bare["receiver"] == "RC8"


def test_purchase_order_fields() -> None:
    record = qad.purchase_order_fields({"po_nbr": "PO100", "po_vend": "S-1", "po_stat": "", "po_confirm": "no",
                                        "po_total": "1,234.50", "po_curr": "EUR", "po_line_count": 3,
                                        "po_due_date": "2026-12-01"}, "10USA")
    assert (record["status"], record["approval"], record["amount"], record["line_count"]) == ("open", "pending",
                                                                                              1234.5, 3)


def test_renders_of_the_qad_templates_fit_one_sms_and_the_call_says_the_facts() -> None:
    invoice = {"document": "INV-20931", "supplier_name": "Acme Steel Fabrication Inc", "amount": 48250.0,
               "currency": "USD", "due_date": "2026-12-22", "po_number": "PO-00012345"}
    receipt = {"po_number": "PO-00012345", "po_line": "12", "quantity": 250.0, "part": "BOLT-M12-STAINLESS",
               "supplier_name": "Acme Steel Fabrication Inc", "receiver": "RC00987654"}
    po = {"po_number": "PO-00012345", "supplier_name": "Acme Steel Fabrication Inc", "amount": 1234567.5,
          "currency": "USD", "due_date": "2026-12-22"}
    for name, record in (("qad-invoice-awaiting-receipt", invoice), ("qad-receipt-posted", receipt),
                         ("qad-po-approval", po)):
        sms = render(BUILTIN[name].sms, record)
        assert sms_segments(sms).count == 1, sms
        assert record["po_number"] in sms and record["supplier_name"] in sms
        assert record["po_number"] in render(BUILTIN[name].voice, record)
    assert "48,250.00 USD" in render(BUILTIN["qad-invoice-awaiting-receipt"].voice, invoice)
    assert BUILTIN["qad-invoice-awaiting-receipt"].gather  # a high-stakes call asks for a key press


def note(entity: str, key: str, text: str = "Will ship Friday") -> Note:
    return Note(entity, key, text, datetime(2026, 11, 22, 14, 3, tzinfo=UTC), "+1*******23", "SM0123")


@pytest.mark.parametrize(("entity", "key", "reference", "about"), [
    ("PurchaseOrder", "10USA|PO100", "PO100", ""),
    ("Receipt", "10usa|PO100|RC7", "PO100", "Receipt RC7"),
    ("SupplierInvoice", "10USA|S-1|INV-9", "S-1", "Invoice INV-9"),
    ("Supplier", "10USA|S-1", "S-1", ""),
])
def test_a_note_goes_to_the_po_or_the_supplier_of_its_record(entity: str, key: str, reference: str,
                                                             about: str) -> None:
    assert qad.comment_target(CONNECTION, note(entity, key)) == qad.CommentTarget(reference, about)


@pytest.mark.parametrize(("entity", "key", "reason"), [
    ("VendorInvoice", "10USA|X", "not 'VendorInvoice'"),
    ("PurchaseOrder", "10USA|PO1|extra", "does not name a QAD record"),
    ("PurchaseOrder", "10USA| ", "does not name a QAD record"),
    ("PurchaseOrder", "20CAN|PO1", "is in domain '20CAN', not '10USA'"),
])
def test_a_note_that_names_no_record_of_this_connection_fails_for_good(entity: str, key: str, reason: str) -> None:
    with pytest.raises(PermanentFailure, match=reason):
        qad.comment_target(CONNECTION, note(entity, key))


def test_comment_lines_name_the_sender_and_wrap_the_text_within_qad_limits() -> None:
    lines = comment_lines(note("SupplierInvoice", "10USA|S-1|INV-9", "word " * 30 + "\x07bell\nsecond paragraph"),
                          "Invoice INV-9")
    assert lines[0] == "SMS reply 2026-11-22 14:03 UTC from +1*******23"
    assert lines[1] == "Message SM0123, re Invoice INV-9"
    assert all(len(line) <= 76 for line in lines) and lines[-1] == "second paragraph"
    assert "\x07" not in "".join(lines)
    long = comment_lines(note("PurchaseOrder", "10USA|PO1", "x" * 2000))
    assert len(long) == 15 and long[-1].endswith("...") and len(long[-1]) <= 76


def test_the_qdoc_request_carries_the_session_context_and_the_escaped_comment() -> None:
    body = master_comment_request(
        receiver="QADERP", message_id="SM0123", reference="PO<1>&2", comment_type="SMS", language="us",
        context=session_context(domain="10USA", username="mlc", password="p<w>", version="ERP3_1"),
        lines=["a & b", "<c>"])
    root = ET.fromstring(body)
    soap, qcom, qdoc = ("http://schemas.xmlsoap.org/soap/envelope/", "urn:schemas-qad-com:xml-services:common",
                        "urn:schemas-qad-com:xml-services")
    operation = root.find(f"{{{soap}}}Body/{{{qdoc}}}maintainMasterComment")
    assert operation is not None
    context = {row.findtext(f"{{{qcom}}}propertyName"): row.findtext(f"{{{qcom}}}propertyValue") or ""
               for row in operation.iter(f"{{{qcom}}}ttContext")}
    assert context == {"domain": "10USA", "scopeTransaction": "true", "version": "ERP3_1", "mnemonicsRaw": "false",
                       "username": "mlc", "password": "p<w>", "action": "", "entity": "", "email": "",
                       "emailLevel": ""}
    record = operation.find(f"{{{qdoc}}}dsMasterComment/{{{qdoc}}}masterComment")
    assert record.findtext(f"{{{qdoc}}}cmtRef") == "PO<1>&2" and record.findtext(f"{{{qdoc}}}cmtType") == "SMS"
    assert [line.text for line in record.findall(f"{{{qdoc}}}cmtCmmt")] == ["a & b", "<c>"]
    wsa = "http://www.w3.org/2005/08/addressing"
    assert root.findtext(f"{{{soap}}}Header/{{{wsa}}}To") == "urn:services-qad-com:QADERP"
    assert root.findtext(f"{{{soap}}}Header/{{{wsa}}}MessageID") == "urn:messages-qad-com:SM0123"


@pytest.mark.parametrize(("body", "result", "messages", "succeeded"), [
    ("<ns1:result>success</ns1:result>", "success", (), True),
    ("<ns1:result>warning</ns1:result><ns3:dsExceptions><ns3:temp_err_msg><ns3:tt_msg_desc>Comment exists"
     "</ns3:tt_msg_desc></ns3:temp_err_msg></ns3:dsExceptions>", "warning", ("Comment exists",), True),
    ("<ns1:result>error</ns1:result><ns3:dsExceptions><ns3:temp_err_msg><ns3:tt_msg_desc>ERROR: bad"
     "</ns3:tt_msg_desc></ns3:temp_err_msg></ns3:dsExceptions>", "error", ("ERROR: bad",), False),
])
def test_qdoc_replies(body: str, result: str, messages: tuple, succeeded: bool) -> None:
    reply = (f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
             f'<ns1:maintainMasterCommentResponse xmlns:ns1="urn:schemas-qad-com:xml-services" '
             f'xmlns:ns3="urn:schemas-qad-com:xml-services:common">{body}</ns1:maintainMasterCommentResponse>'
             "</soapenv:Body></soapenv:Envelope>")
    parsed = parse_qdoc_reply(reply.encode())
    assert (parsed.result, parsed.messages, parsed.succeeded) == (result, messages, succeeded)


def test_a_soap_fault_is_its_own_result() -> None:
    fault = (b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
             b"<soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>QXtend is stopping</faultstring>"
             b"</soapenv:Fault></soapenv:Body></soapenv:Envelope>")
    assert parse_qdoc_reply(fault) == QdocResult("fault", ("QXtend is stopping",))
