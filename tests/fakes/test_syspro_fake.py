"""The fake SYSPRO answers as the reference says e.net and OData do."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date

import pytest
import requests

from tests.fakes.syspro import SESSION_ENDED_TEXT, FakeSyspro

OPERATOR, PASSWORD, ODATA_PASSWORD = "ADMIN", "op-secret", "odata-secret"


@pytest.fixture
def fake() -> Iterator[FakeSyspro]:
    server = FakeSyspro().start()
    server.add_operator(OPERATOR, PASSWORD, ODATA_PASSWORD)
    server.add_company("EDU1")
    server.add_company("EDU2", password="co-secret")
    yield server
    server.stop()
    assert not server.handler_errors


def logon(fake: FakeSyspro, company: str = "EDU1", company_password: str = "", **overrides: str) -> requests.Response:
    params = {"Operator": OPERATOR, "OperatorPassword": PASSWORD, "CompanyId": company,
              "CompanyPassword": company_password, **overrides}
    return requests.get(f"{fake.rest_url}/Logon", params=params, timeout=5)


def user_id(fake: FakeSyspro, company: str = "EDU1", company_password: str = "") -> str:
    return logon(fake, company, company_password).json()


def comfnd(fake: FakeSyspro, uid: str, xml_in: str, business_object: str = "COMFND") -> requests.Response:
    return requests.get(f"{fake.rest_url}/Query/Query", params={"UserId": uid, "BusinessObject": business_object,
                                                                  "XmlIn": xml_in}, timeout=5)


def expression(column: str, condition: str, value: str, *, and_or: str = "", open_: str = "",
               close: str = "") -> str:
    return (f"<Expression><OpenBracket>{open_}</OpenBracket>" + (f"<AndOr>{and_or}</AndOr>" if and_or else "")
            + f"<Column>{column}</Column><Condition>{condition}</Condition><Value>{value}</Value>"
            f"<CloseBracket>{close}</CloseBracket></Expression>")


def query_xml(table: str, columns: list[str], where: str = "", order: list[str] | None = None,
              rows: int | None = None) -> str:
    return (f"<Query><TableName>{table}</TableName>" + (f"<ReturnRows>{rows}</ReturnRows>" if rows else "")
            + "<Columns>" + "".join(f"<Column>{c}</Column>" for c in columns) + "</Columns>"
            + (f"<Where>{where}</Where>" if where else "")
            + ("<OrderBy>" + "".join(f"<Column>{c}</Column>" for c in order) + "</OrderBy>" if order else "")
            + "</Query>")


def column_values(body: str, column: str) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body.split("?>", 1)[1])
    return [row.findtext(column) or "" for row in root.iter("Row")]


# --- logon and sessions --------------------------------------------------------------------------


@pytest.mark.parametrize(("wrap", "shape"), [("json", '"{}"'), ("bare", "{}"),
                                             ("string", '<string xmlns="http://schemas.microsoft.com/2003/10/'
                                                        'Serialization/">{}</string>')])
def test_logon_answers_a_session_id_in_each_shape(fake: FakeSyspro, wrap: str, shape: str) -> None:
    fake.logon_wrap = wrap
    response = logon(fake)
    assert response.status_code == 200
    [session] = fake.active_sessions()
    assert response.text == shape.format(session.user_id)


def test_logon_failures_are_http_200_error_texts(fake: FakeSyspro) -> None:
    assert logon(fake, OperatorPassword="wrong").json() == "ERROR: Invalid operator password"
    assert logon(fake, "NOPE").json().startswith("ERROR: Company")
    assert logon(fake, "EDU2", "wrong").json() == "ERROR: Invalid company password"
    assert logon(fake, "EDU2", "co-secret").json()[:5] != "ERROR"
    # A blank value is accepted, a missing parameter is not.
    response = requests.get(f"{fake.rest_url}/Logon", params={"Operator": OPERATOR, "OperatorPassword": PASSWORD,
                                                               "CompanyId": "EDU1"}, timeout=5)
    assert response.status_code == 200 and response.json() == "ERROR: Parameter CompanyPassword is missing"


def test_a_second_logon_by_the_same_operator_ends_the_first_session(fake: FakeSyspro) -> None:
    first = user_id(fake)
    second = user_id(fake, "EDU2", "co-secret")
    xml_in = query_xml("ApSupplier", ["Supplier"])
    assert comfnd(fake, first, xml_in).text == SESSION_ENDED_TEXT.format(user_id=first)
    assert comfnd(fake, second, xml_in).text.startswith("<?xml")
    fake.expire_sessions()
    assert comfnd(fake, second, xml_in).text.startswith("ERROR:")


def test_logoff_ends_the_session_and_a_full_licence_class_refuses_logons(fake: FakeSyspro) -> None:
    uid = user_id(fake)
    requests.get(f"{fake.rest_url}/Logoff", params={"UserId": uid}, timeout=5)
    assert not fake.active_sessions()
    fake.licences = 0
    assert "No licences" in logon(fake).json()


def test_a_session_idle_past_the_timeout_has_ended_and_each_call_restarts_the_idle_time(fake: FakeSyspro) -> None:
    fake.session_timeout = 600
    uid = user_id(fake)
    xml_in = query_xml("ApSupplier", ["Supplier"])
    fake.pass_time(590)
    assert comfnd(fake, uid, xml_in).text.startswith("<?xml")  # used: idle from now
    fake.pass_time(590)
    assert comfnd(fake, uid, xml_in).text.startswith("<?xml")
    fake.pass_time(601)
    assert comfnd(fake, uid, xml_in).text == SESSION_ENDED_TEXT.format(user_id=uid)


def test_a_full_licence_class_evicts_only_a_session_idle_past_the_timeout(fake: FakeSyspro) -> None:
    fake.session_timeout, fake.licences = 600, 1
    user_id(fake)
    fake.add_operator("OTHER", "other-secret")
    other = {"Operator": "OTHER", "OperatorPassword": "other-secret"}
    fake.pass_time(300)
    assert "No licences" in logon(fake, **other).json()
    fake.pass_time(301)
    assert logon(fake, **other).json()[:5] != "ERROR"
    assert [session.operator for session in fake.active_sessions()] == ["OTHER"]


# --- COMFND ----------------------------------------------------------------------------------------


def test_comfnd_rows_are_windows_1252_xml_with_one_child_per_column(fake: FakeSyspro) -> None:
    fake.add_supplier("S1", "Café Ñandú €", "0415 555 0100")
    response = comfnd(fake, user_id(fake), query_xml("ApSupplier", ["Supplier", "SupplierName", "Contact"]))
    assert response.headers["Content-Type"] == "application/xml"
    assert response.content.startswith(b'<?xml version="1.0" encoding="Windows-1252"?>')
    assert b"Caf\xe9 \xd1and\xfa \x80" in response.content
    assert b"<Contact/>" in response.content  # NULL


def test_comfnd_where_order_and_return_rows(fake: FakeSyspro) -> None:
    for number, supplier, status in [("P1", "S1", "1"), ("P2", "S2", "4"), ("P3", "S1", "9"), ("P4", "S2", "1")]:
        fake.add_purchase_order(number, supplier, status=status)
    uid = user_id(fake)
    # S1 or (S2 and status 1): And binds tighter than Or.
    where = (expression("Supplier", "EQ", "s1", open_="(", close=")")
             + expression("Supplier", "EQ", "S2", and_or="Or", open_="(")
             + expression("OrderStatus", "EQ", "1", and_or="And", close=")"))
    body = comfnd(fake, uid, query_xml("PorMasterHdr", ["PurchaseOrder"], where, ["Supplier", "PurchaseOrder"])).text
    assert column_values(body, "PurchaseOrder") == ["P1", "P3", "P4"]
    limited = comfnd(fake, uid, query_xml("PorMasterHdr", ["PurchaseOrder"], order=["TimeStamp"], rows=2)).text
    assert column_values(limited, "PurchaseOrder") == ["P1", "P2"]
    stamps = column_values(comfnd(fake, uid, query_xml("PorMasterHdr", ["TimeStamp"], order=["TimeStamp"])).text,
                           "TimeStamp")
    assert all(stamp.startswith("0x") and len(stamp) == 18 for stamp in stamps)
    after = comfnd(fake, uid, query_xml("PorMasterHdr", ["PurchaseOrder"], expression("TimeStamp", "GT", stamps[1]),
                                        ["TimeStamp"])).text
    assert column_values(after, "PurchaseOrder") == ["P3", "P4"]


def test_comfnd_errors(fake: FakeSyspro) -> None:
    uid = user_id(fake)
    assert comfnd(fake, uid, query_xml("ApSupplier", ["Nope"])).text.startswith("ERROR: Column 'Nope'")
    assert comfnd(fake, uid, query_xml("NoTable", ["X"])).text.startswith("ERROR: Table")
    assert comfnd(fake, uid, "<Query>").text == "ERROR: XmlIn is not valid XML"
    bad = query_xml("ApSupplier", ["Supplier"], expression("Supplier", "LIKE", "S"))
    assert comfnd(fake, uid, bad).text.startswith("ERROR: Invalid condition")
    assert "100000" in comfnd(fake, uid, query_xml("ApSupplier", ["Supplier"]), "APSQRY").text


def test_every_write_moves_the_database_wide_rowversion(fake: FakeSyspro) -> None:
    order = fake.add_purchase_order("P1", "S1", [(1, 2), (3, 4)])
    supplier = fake.add_supplier("S1", "Acme")
    changed = fake.update_row("PorMasterHdr", "P1", OrderStatus="4")
    assert order["TimeStamp"] < supplier["TimeStamp"] < changed["TimeStamp"]
    assert fake.row("PorMasterHdr", "p1")["OrderStatus"] == "4"  # keys ignore case
    assert fake.company("EDU2").rowversion < changed["TimeStamp"]  # one counter per company database


def test_failure_injection_counts_queries_of_one_table(fake: FakeSyspro) -> None:
    uid = user_id(fake)
    fake.on_query(2, table="ApSupplier", status=500, times=2)
    suppliers, orders = query_xml("ApSupplier", ["Supplier"]), query_xml("PorMasterHdr", ["PurchaseOrder"])
    assert comfnd(fake, uid, suppliers).status_code == 200
    assert comfnd(fake, uid, orders).status_code == 200  # another table: not counted
    assert [comfnd(fake, uid, suppliers).status_code for _ in range(3)] == [500, 500, 200]
    fake.on_query(1, action="expire")
    assert comfnd(fake, uid, suppliers).text.startswith("ERROR: e.net exception 100001")


def test_synthetic_records_are_cheap_and_behave_like_rows(fake: FakeSyspro) -> None:
    first, last = fake.add_synthetic_purchase_orders(100_000, lines=2)
    uid = user_id(fake)
    started = time.monotonic()
    body = comfnd(fake, uid, query_xml("PorMasterHdr", ["PurchaseOrder", "TimeStamp"], order=["TimeStamp",
                                                                                             "PurchaseOrder"],
                                       rows=1000, where=expression("TimeStamp", "GT", "0x0")))
    assert time.monotonic() - started < 2
    orders = column_values(body.text, "PurchaseOrder")
    assert orders[0] == first and len(orders) == 1000
    near_end = column_values(comfnd(fake, uid, query_xml(
        "PorMasterHdr", ["PurchaseOrder"], expression("PurchaseOrder", "GE", last), ["PurchaseOrder"], 5)).text,
        "PurchaseOrder")
    assert near_end == [last]
    lines = comfnd(fake, uid, query_xml("PorMasterDetail", ["Line", "MOrderQty"],
                                        expression("PurchaseOrder", "EQ", last), ["PurchaseOrder", "Line"])).text
    assert column_values(lines, "Line") == ["1", "2"]
    changed = fake.update_row("PorMasterHdr", last, OrderStatus="4")
    assert fake.row("PorMasterHdr", last)["OrderStatus"] == "4" and changed["TimeStamp"] > 100_000
    newest = comfnd(fake, uid, query_xml("PorMasterHdr", ["PurchaseOrder"], order=["TimeStamp", "PurchaseOrder"],
                                         where=expression("TimeStamp", "GE", f"0x{changed['TimeStamp']:X}"))).text
    assert column_values(newest, "PurchaseOrder") == [last]
    invoices = fake.add_synthetic_invoices(10)
    assert fake.row("ApInvoice", ("S100", invoices[1]))["OrigInvValue"] == 125


# --- write-backs -----------------------------------------------------------------------------------


def portoi(fake: FakeSyspro, uid: str, order: str, comments: list[str]) -> requests.Response:
    lines = "".join(f"<CommentLine><LineActionType>A</LineActionType><Comment>{c}</Comment></CommentLine>"
                    for c in comments)
    xml_in = (f"<PostPurchaseOrders><Orders><OrderHeader><OrderActionType>C</OrderActionType>"
              f"<PurchaseOrder>{order}</PurchaseOrder></OrderHeader><OrderDetails>{lines}</OrderDetails></Orders>"
              "</PostPurchaseOrders>")
    return requests.get(f"{fake.rest_url}/Transaction/Post", timeout=5, params={
        "UserId": uid, "BusinessObject": "PORTOI", "XmlParameters": "<PostPurchaseOrders/>", "XmlIn": xml_in})


def test_portoi_adds_comment_lines_unless_writes_are_dropped(fake: FakeSyspro) -> None:
    fake.add_purchase_order("P1", "S1", [(1, 2)])
    uid = user_id(fake)
    assert "<ItemsProcessed>000001</ItemsProcessed>" in portoi(fake, uid, "P1", ["hello", "x" * 120]).text
    assert fake.comments("P1") == ["hello", "x" * 100]  # NComment is 100 characters
    assert [row["Line"] for row in fake.rows("PorMasterDetail")] == [1, 2, 3]
    fake.drop_writes = True
    assert portoi(fake, uid, "P1", ["lost"]).status_code == 200
    assert fake.comments("P1") == ["hello", "x" * 100]
    assert portoi(fake, uid, "P9", ["x"]).text == "ERROR: Purchase order 'P9' not on file"


def test_comsfm_sets_a_custom_form_field(fake: FakeSyspro) -> None:
    uid = user_id(fake)
    xml_in = ("<SetupCustomForm><Item><Key><FormType>SUP</FormType><KeyField>S1</KeyField><FieldName>SMSREPLY"
              "</FieldName></Key><AlphaValue>ok ✓</AlphaValue></Item></SetupCustomForm>")
    response = requests.get(f"{fake.rest_url}/Setup/Update", timeout=5, params={
        "UserId": uid, "BusinessObject": "COMSFM", "XmlParameters": "<SetupCustomForm/>", "XmlIn": xml_in})
    assert response.status_code == 200 and not response.text.startswith("ERROR")
    assert fake.custom_form_value("SUP", "S1", "SMSREPLY") == "ok ?"  # a Windows-1252 column


# --- OData ------------------------------------------------------------------------------------------


def odata(fake: FakeSyspro, table: str, auth: tuple[str, str] | None = (OPERATOR, ODATA_PASSWORD),
          **options: str) -> requests.Response:
    return requests.get(f"{fake.odata_url}/EDU1/{table}", params={f"${k}": v for k, v in options.items()},
                        auth=auth, timeout=10)


def test_odata_needs_the_operators_odata_password(fake: FakeSyspro) -> None:
    assert odata(fake, "ApSupplier", auth=None).status_code == 401
    assert odata(fake, "ApSupplier", auth=(OPERATOR, PASSWORD)).status_code == 401
    assert odata(fake, "ApSupplier").status_code == 200
    assert odata(fake, "NoTable").status_code == 404


def test_odata_filters_orders_and_caps_pages(fake: FakeSyspro) -> None:
    fake.add_invoice("S1", "I1", "10.00", journal_date=date(2026, 11, 19))
    fake.add_invoice("S1", "I2", "20.00", journal_date=date(2026, 11, 20))
    fake.add_invoice("S2", "I3", "30.00", journal_date=date(2026, 11, 21))
    body = odata(fake, "ApInvoice", filter="JournalDate ge 2026-11-20T00:00:00Z", orderby="Invoice",
                 select="Invoice,OrigInvValue,JournalDate").json()
    assert [row["Invoice"] for row in body["value"]] == ["I2", "I3"]
    assert body["value"][0] == {"Invoice": "I2", "OrigInvValue": 20.0, "JournalDate": "2026-11-20T00:00:00Z"}
    assert [r["Invoice"] for r in odata(fake, "ApInvoice", top="1", skip="1").json()["value"]] == ["I2"]
    fake.add_synthetic_invoices(5001)
    capped = odata(fake, "ApInvoice").json()
    assert len(capped["value"]) == 5000 and "$skip=5000" in capped["@odata.nextLink"]
    assert odata(fake, "ApInvoice", filter="Nope eq 1").status_code == 400


def test_odata_may_not_expose_the_rowversion(fake: FakeSyspro) -> None:
    fake.add_supplier("S1", "Acme")
    assert "TimeStamp" in odata(fake, "ApSupplier").json()["value"][0]
    fake.odata_timestamp = False
    assert "TimeStamp" not in odata(fake, "ApSupplier").json()["value"][0]
    response = odata(fake, "ApSupplier", filter="TimeStamp gt 1")
    assert response.status_code == 400 and "TimeStamp" in json.dumps(response.json())
