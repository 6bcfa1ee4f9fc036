"""SYSPRO answers, queries and notes, without a server."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from shared.config.loading import config_from_dict
from shared.erp.polling import Note
from shared.erp.syspro.adapter import (
    COMMENT_LENGTH,
    CUSTOM_FORM_VALUE_LENGTH,
    MAX_COMMENT_LINES,
    as_stored,
    comment_lines,
    custom_form_value,
)
from shared.erp.syspro.client import (
    SESSION_ENDED,
    Cond,
    EnetSession,
    RowVersion,
    SysproError,
    TableQuery,
    after,
    any_of,
    both,
    comfnd_xml,
    decode_body,
    lease_name,
    odata_filter,
    table_rows,
    unwrap,
)
from shared.erp.syspro.connection import SysproConnection
from shared.storage.secrets import EnvSecretProvider
from tests.fakes.syspro import SESSION_ENDED_TEXT


def connection(**overrides: object) -> SysproConnection:
    body = {"kind": "syspro", "base_url": "https://erp.example:31002/SYSPROWCFService/Rest", "operator": "ADMIN",
            "password": {"secret": "pw"}, "company_id": "EDU1", "poll": {"entities": ["PorMasterHdr"]}, **overrides}
    found = config_from_dict({"connections": {"syspro-main": body}}).connections["syspro-main"]
    assert isinstance(found, SysproConnection)
    return found


# --- answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ['"ABC123"', "ABC123", "  ABC123\r\n",
                                  '<string xmlns="http://schemas.microsoft.com/2003/10/Serialization/">ABC123</string>',
                                  '<?xml version="1.0"?><string>ABC123</string>'])
def test_a_session_id_comes_json_quoted_bare_or_wrapped(body: str) -> None:
    assert unwrap(body) == "ABC123"


def test_xml_answers_come_bare_or_wrapped() -> None:
    xml = '<?xml version="1.0" encoding="Windows-1252"?><COMFND><Row><A>é</A></Row></COMFND>'
    assert unwrap(xml) == xml
    assert unwrap('"' + xml.replace('"', '\\"') + '"') == xml
    assert unwrap("<string>" + xml.replace("&", "&amp;").replace("<", "&lt;") + "</string>") == xml


def test_answers_are_windows_1252_unless_the_header_says_otherwise() -> None:
    assert decode_body("Café €".encode("cp1252"), "application/xml") == "Café €"
    assert decode_body("Café €".encode(), "application/json; charset=utf-8") == "Café €"
    assert decode_body(b"abc", "text/xml; charset=no-such-codec") == "abc"


def test_rows_are_keyed_by_the_requested_names_whatever_case_comes_back() -> None:
    root = ET.fromstring("<COMFND><ROW><SUPPLIER>S1</SUPPLIER><suppliername>Acme</suppliername><Telephone/></ROW>"
                         "<Row><Supplier>S2</Supplier></Row></COMFND>")
    assert table_rows(root, ("Supplier", "SupplierName", "Telephone")) == [
        {"Supplier": "S1", "SupplierName": "Acme", "Telephone": None},
        {"Supplier": "S2", "SupplierName": None, "Telephone": None}]


def session() -> EnetSession:
    return EnetSession(connection(), EnvSecretProvider(env={"pw": "secret-pw"}), http=None)  # type: ignore[arg-type]


def test_error_texts_and_elements_are_business_failures_without_secrets() -> None:
    with pytest.raises(SysproError, match=r"^what: ERROR: bad \*\*\*$"):
        session()._checked("ERROR: bad secret-pw", "what", "uid")
    with pytest.raises(SysproError, match=r"^what: Line 1 invalid; Supplier \*\*\* on hold$"):
        session()._checked("<PostPurchaseOrders><Order><ErrorDescription>Line 1 invalid</ErrorDescription>"
                           "<x><ErrorMessage>Supplier uid on hold</ErrorMessage></x></Order></PostPurchaseOrders>",
                           "what", "uid")
    assert session()._checked("<Ok/>", "what", "uid").tag == "Ok"


@pytest.mark.parametrize("text", [SESSION_ENDED_TEXT.format(user_id="X1"), "ERROR: Invalid UserId",
                                  "ERROR: The session has expired", "ERROR: GUID not found"])
def test_ended_sessions_are_recognised(text: str) -> None:
    assert SESSION_ENDED.search(text)


@pytest.mark.parametrize("text", ["ERROR: Invalid operator password", "ERROR: Column 'X' is not valid for table T",
                                  "ERROR: e.net exception 100000 - Business object APSQRY is not installed"])
def test_other_errors_are_not_taken_for_ended_sessions(text: str) -> None:
    assert not SESSION_ENDED.search(text)


# --- stamps and queries ----------------------------------------------------------------------------


def test_rowversions_in_every_form() -> None:
    assert RowVersion.parse(2001) == RowVersion.parse("2001") == RowVersion.parse("0x00000000000007D1") == 2001
    assert RowVersion.parse(base64.b64encode((2001).to_bytes(8, "big")).decode()) == 2001
    for bad in (None, True, "", "zz", base64.b64encode(b"abc").decode()):
        with pytest.raises(ValueError):
            RowVersion.parse(bad)


def test_a_keyset_bound_is_an_or_of_and_groups() -> None:
    stamp = RowVersion(9)
    assert after(("TimeStamp", "Supplier", "Invoice"), (stamp, "S1", "I1")) == (
        (Cond("TimeStamp", "gt", stamp),),
        (Cond("TimeStamp", "eq", stamp), Cond("Supplier", "gt", "S1")),
        (Cond("TimeStamp", "eq", stamp), Cond("Supplier", "eq", "S1"), Cond("Invoice", "gt", "I1")))
    assert both((), any_of("A", ["1"])) == any_of("A", ["1"])
    assert both(any_of("A", ["1", "2"]), ((Cond("B", "eq", 3),),)) == (
        (Cond("A", "eq", "1"), Cond("B", "eq", 3)), (Cond("A", "eq", "2"), Cond("B", "eq", 3)))
    with pytest.raises(ValueError):
        Cond("A", "like", "x")


def test_comfnd_xml_brackets_each_and_group_and_joins_groups_with_or() -> None:
    query = TableQuery("PorMasterHdr", ("PurchaseOrder", "TimeStamp"), ("TimeStamp", "PurchaseOrder"), 500,
                       after(("TimeStamp", "PurchaseOrder"), (RowVersion(0x7D1), "P<1>")))
    root = ET.fromstring(comfnd_xml(query))
    assert root.findtext("TableName") == "PorMasterHdr" and root.findtext("ReturnRows") == "500"
    assert [c.text for c in root.findall("OrderBy/Column")] == ["TimeStamp", "PurchaseOrder"]
    expressions = [{child.tag: child.text or "" for child in e} for e in root.findall("Where/Expression")]
    assert expressions == [
        {"OpenBracket": "(", "Column": "TimeStamp", "Condition": "GT", "Value": "0x00000000000007D1",
         "CloseBracket": ")"},
        {"OpenBracket": "(", "AndOr": "Or", "Column": "TimeStamp", "Condition": "EQ", "Value": "0x00000000000007D1",
         "CloseBracket": ""},
        {"OpenBracket": "", "AndOr": "And", "Column": "PurchaseOrder", "Condition": "GT", "Value": "P<1>",
         "CloseBracket": ")"}]
    dated = ET.fromstring(comfnd_xml(TableQuery("ApInvoice", ("Invoice",), ("Invoice",), 1,
                                                ((Cond("JournalDate", "ge", date(2026, 11, 20)),),))))
    assert dated.findtext("Where/Expression/Value") == "2026-11-20"


def test_odata_filters() -> None:
    assert odata_filter(()) is None
    assert odata_filter(((Cond("JournalDate", "ge", date(2026, 11, 20)),),)) == "JournalDate ge 2026-11-20T00:00:00Z"
    assert odata_filter(after(("TimeStamp", "PurchaseOrder"), (RowVersion(5), "O'Neil"))) == (
        "(TimeStamp gt 5) or (TimeStamp eq 5 and PurchaseOrder gt 'O''Neil')")
    prices = ((Cond("Line", "gt", 3), Cond("MPrice", "ge", Decimal("1.5"))),)
    assert odata_filter(prices) == "Line gt 3 and MPrice ge 1.5"


def test_one_lease_per_server_company_and_operator() -> None:
    assert lease_name(connection()) == lease_name(connection(operator="admin", company_id="edu1"))
    assert lease_name(connection()) != lease_name(connection(company_id="EDU2"))
    assert "secret" not in lease_name(connection())


# --- record fields and notes -------------------------------------------------------------------------


def reply(text: str) -> Note:
    return Note(record_entity="PorMasterHdr", record_key="P1", text=text, sender="+1*******23",
                received_at=datetime(2026, 11, 22, 14, 3, tzinfo=UTC), reference="SM0123")


def test_a_note_as_comment_lines() -> None:
    lines = comment_lines(reply("Thanks\nall good ✓"))
    assert lines == ["SMS 2026-11-22 14:03 UTC +1*******23 ref SM0123", "Thanks all good ?"]
    long = comment_lines(reply("word " * 1000))
    assert len(long) == MAX_COMMENT_LINES and long[-1].endswith("...")
    assert all(len(line) <= COMMENT_LENGTH for line in long)


def test_a_note_as_a_custom_form_value() -> None:
    assert custom_form_value(reply("ok"), "INV-1") == "SMS 2026-11-22 14:03 UTC +1*******23 ref SM0123 INV-1: ok"
    assert len(custom_form_value(reply("x" * 400), "")) == CUSTOM_FORM_VALUE_LENGTH
    assert as_stored("Grüße €\t🚚") == "Grüße € ?"
