"""The fake Sage X3: REST representations, GraphQL with connected-app tokens, SOAP, paging and failures."""

from __future__ import annotations

import base64
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests

from tests.fakes.sagex3 import FakeSageX3

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SECRET = "connected-app-secret-0123456789abcdef"  # 32+ bytes, as HS256 wants
BASIC = "Basic " + base64.b64encode(b"admin:x3-password").decode()


@pytest.fixture
def x3() -> Iterator[FakeSageX3]:
    with FakeSageX3() as fake:
        fake.register_application("app-1", SECRET, "admin")
        yield fake


def rest(fake: FakeSageX3, cls: str, **options: str) -> requests.Response:
    params = {"representation": f"Y{cls}.$query", **options}
    query = "&".join(f"{name}={quote(value, safe='$@,:')}" for name, value in params.items())
    return requests.get(f"{fake.base_url}/api1/x3/erp/SEED/{cls}?{query}", headers={"Authorization": BASIC},
                        timeout=5)


def follow(fake: FakeSageX3, first: requests.Response) -> list[dict[str, Any]]:
    rows, answer = [], first
    while True:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["$resources"]
        link = body.get("$links", {}).get("$next", {}).get("$url")
        if not link:
            return rows
        answer = requests.get(link, headers={"Authorization": BASIC}, timeout=5)


def token(claims: dict[str, Any], secret: str = SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 300, **claims}, secret, algorithm="HS256")


def graphql(fake: FakeSageX3, query: str, bearer: str | None = None, variables: dict | None = None,
            endpoint: str = "SEED") -> requests.Response:
    bearer = bearer or token({"iss": "app-1", "sub": "admin", "aud": fake.graphql_url})
    return requests.post(fake.graphql_url, json={"query": query, "variables": variables or {}}, timeout=5,
                         headers={"Authorization": f"Bearer {bearer}", "x-xtrem-endpoint": endpoint})


ORDERS = ("{ x3Purchasing { purchaseOrder { query(filter: $filter, first: $first, after: $after, orderBy: $orderBy) "
          "{ edges { node { id signatureStatus orderFromSupplier { code { code } } updateDateTime } } "
          "pageInfo { endCursor hasNextPage } } } } }")


# --- REST ------------------------------------------------------------------------------------------


def test_rest_needs_basic_credentials(x3: FakeSageX3) -> None:
    answer = requests.get(f"{x3.base_url}/api1/x3/erp/SEED/PORDER?representation=YPORDER.$query", timeout=5)
    assert answer.status_code == 401 and "Basic" in answer.headers["WWW-Authenticate"]
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    assert requests.get(answer.url, headers=wrong, timeout=5).status_code == 401


def test_rows_come_in_x3_shapes_with_its_quirks(x3: FakeSageX3) -> None:
    x3.add_order("PO1", updated=NOW, ORDREF="")
    x3.add_invoice("INV1", updated=NOW, due=None)
    [order] = rest(x3, "PORDER").json()["$resources"]
    assert {"$uuid", "$key", "$url", "$etag"} <= set(order) and order["$key"] == "PO1"
    assert order["ORDREF"] == " " and order["UPDDATTIM"] == "2026-11-22T12:00:00Z" and order["APPFLG"] == 1
    body = rest(x3, "PINVOICE").json()
    assert body["$resources"][0]["STRDUDDAT"] == "1753-01-01"
    assert body["$startIndex"] == 1 and body["$totalResults"] == 1 and "$links" not in body


def test_where_reads_ge_gt_eq_and_with_x3_literals(x3: FakeSageX3) -> None:
    for number, minutes, signed in (("PO1", 10, 3), ("PO2", 5, 1), ("PO3", 5, 3), ("O'NEIL", 1, 3)):
        x3.add_order(number, updated=NOW - timedelta(minutes=minutes), signed=signed)

    def keys(where: str) -> list[str]:
        answer = rest(x3, "PORDER", where=where, orderBy="UPDDATTIM,POHNUM")
        assert answer.status_code == 200, answer.text
        return [row["POHNUM"] for row in answer.json()["$resources"]]

    assert keys("UPDDATTIM ge @2026-11-22T11:55:00Z@") == ["PO2", "PO3", "O'NEIL"]
    assert keys("UPDDATTIM gt @2026-11-22T11:55:00Z@") == ["O'NEIL"]
    assert keys("UPDDATTIM ge @2026-11-22T11:55:00Z@ and APPFLG eq 3") == ["PO3", "O'NEIL"]
    assert keys("POHNUM eq 'O''NEIL'") == ["O'NEIL"]
    assert keys("ORDDAT ge @2026-11-22@ and APPFLG eq 1") == ["PO2"]
    # No Z: the server's own zone (UTC here).
    assert keys("UPDDATTIM ge @2026-11-22T11:58:00@") == ["O'NEIL"]


def test_an_unknown_property_in_where_is_a_500_as_in_x3(x3: FakeSageX3) -> None:
    answer = rest(x3, "PORDER", where="NOSUCH eq 1")
    assert answer.status_code == 500
    assert answer.json()["$diagnoses"][0]["$message"] == "Property NOSUCH does not exist"
    assert rest(x3, "PORDER", where="APPFLG le 3").status_code == 400  # only eq, ge, gt here
    assert rest(x3, "PORDER", orderBy="NOSUCH").status_code == 500


def test_local_stamps_without_z_when_the_server_is_not_utc() -> None:
    with FakeSageX3(time_zone="Europe/Paris") as fake:
        fake.add_order("PO1", updated=NOW)
        [row] = rest(fake, "PORDER", where="UPDDATTIM ge @2026-11-22T13:00:00@").json()["$resources"]
        assert row["UPDDATTIM"] == "2026-11-22T13:00:00"
        assert rest(fake, "PORDER", where="UPDDATTIM gt @2026-11-22T12:00:00Z@").json()["$resources"] == []


def test_next_links_resume_after_the_last_row_even_on_shared_stamps(x3: FakeSageX3) -> None:
    for index in range(7):
        x3.add_order(f"PO{index}", updated=NOW)  # all one stamp: only the key orders them
    first = rest(x3, "PORDER", where="UPDDATTIM ge @2026-11-22T11:00:00Z@", orderBy="UPDDATTIM,POHNUM", count="3")
    link = first.json()["$links"]["$next"]["$url"]
    assert link.startswith(x3.base_url + "/api1/x3/erp/SEED/PORDER?") and "key=gt." in link
    # A row of the first page changes before the second page is read: it moves to the end, nothing is skipped.
    x3.change("PORDER", "PO1", at=NOW + timedelta(seconds=5))
    rows = follow(x3, first)
    assert [row["POHNUM"] for row in rows] == ["PO0", "PO1", "PO2", "PO3", "PO4", "PO5", "PO6", "PO1"]


def test_custom_class_and_representation_names(x3: FakeSageX3) -> None:
    x3.add_order("PO1", updated=NOW)
    x3.publish("YPOH", "YPOHALL", "PORDER")
    answer = requests.get(f"{x3.base_url}/api1/x3/erp/SEED/YPOH?representation=YPOHALL.$query",
                          headers={"Authorization": BASIC}, timeout=5)
    assert [row["POHNUM"] for row in answer.json()["$resources"]] == ["PO1"]
    assert rest(x3, "NOPE").status_code == 404
    x3.unpublish("PORDER")
    assert rest(x3, "PORDER").status_code == 404


def test_fail_nth_fails_that_page_only(x3: FakeSageX3) -> None:
    for index in range(6):
        x3.add_order(f"PO{index}", updated=NOW)
    x3.fail_nth(3, status=500, match="/api1/")
    first = rest(x3, "PORDER", orderBy="POHNUM", count="2")
    second = requests.get(first.json()["$links"]["$next"]["$url"], headers={"Authorization": BASIC}, timeout=5)
    link = second.json()["$links"]["$next"]["$url"]
    assert requests.get(link, headers={"Authorization": BASIC}, timeout=5).status_code == 500
    assert requests.get(link, headers={"Authorization": BASIC}, timeout=5).status_code == 200


def test_throttling_answers_429_with_retry_after(x3: FakeSageX3) -> None:
    x3.fail_next(1, status=429, headers={"Retry-After": "7"})
    answer = rest(x3, "PORDER")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert rest(x3, "PORDER").status_code == 200


def test_synthetic_rows_are_cheap_and_read_like_others(x3: FakeSageX3) -> None:
    tracemalloc.start()
    try:
        x3.fill_synthetic("PORDER", 100_000, start=NOW - timedelta(seconds=24_999), per_second=4)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1_000_000  # bytes: nothing per row until read
    body = rest(x3, "PORDER", where="UPDDATTIM ge @2026-11-22T12:00:00Z@", orderBy="UPDDATTIM,POHNUM",
                count="1000").json()
    assert body["$totalResults"] == 4 and [row["POHNUM"] for row in body["$resources"]] == [
        "SYN00099996", "SYN00099997", "SYN00099998", "SYN00099999"]
    changed = x3.change("PORDER", "SYN00000001", at=NOW + timedelta(minutes=1), APPFLG=3)
    assert changed["APPFLG"] == 3 and x3.record("PORDER", "SYN00000001")["UPDDATTIM"] == "2026-11-22T12:01:00Z"
    assert rest(x3, "PORDER", where="APPFLG eq 3").json()["$totalResults"] == 1


# --- GraphQL -------------------------------------------------------------------------------------------


def test_graphql_pages_with_filter_first_and_after(x3: FakeSageX3) -> None:
    x3.add_supplier("S001", "Acme")
    for index in range(5):
        x3.add_order(f"PO{index}", updated=NOW, signed=3 if index != 2 else 1)
    variables = {"filter": "{updateDateTime:{_gte:'2026-11-22T11:00:00Z'},signatureStatus:{_eq:'totally'}}",
                 "orderBy": "{updateDateTime:1,id:1}", "first": 3, "after": None}
    seen = []
    while True:
        answer = graphql(x3, ORDERS, variables=variables)
        assert answer.status_code == 200, answer.text
        found = answer.json()["data"]["x3Purchasing"]["purchaseOrder"]["query"]
        seen += [edge["node"] for edge in found["edges"]]
        if not found["pageInfo"]["hasNextPage"]:
            break
        variables["after"] = found["pageInfo"]["endCursor"]
    assert [node["id"] for node in seen] == ["PO0", "PO1", "PO3", "PO4"]
    assert seen[0]["signatureStatus"] == "totally" and seen[0]["orderFromSupplier"] == {"code": {"code": "S001"}}


def test_graphql_nests_lines_and_refuses_unknown_fields(x3: FakeSageX3) -> None:
    x3.add_order("PO1", updated=NOW)
    x3.add_line("PO1", 1, expected=date(2026, 11, 25), updated=NOW + timedelta(minutes=2))
    x3.add_line("PO1", 2, expected=date(2026, 11, 26))
    answer = graphql(x3, "{ x3Purchasing { purchaseOrder { query(first: 5) { edges { node { id "
                         "purchaseOrderLines { query(first: 10) { edges { node { lineNumber updateDateTime } } } } "
                         "} } } } } }")
    [edge] = answer.json()["data"]["x3Purchasing"]["purchaseOrder"]["query"]["edges"]
    lines = edge["node"]["purchaseOrderLines"]["query"]["edges"]
    assert [line["node"]["lineNumber"] for line in lines] == [1, 2]
    assert lines[0]["node"]["updateDateTime"] == "2026-11-22T12:02:00Z"
    bad = graphql(x3, "{ x3Purchasing { purchaseOrder { query { edges { node { nosuch } } } } } }")
    assert bad.status_code == 400 and "nosuch" in bad.json()["errors"][0]["message"]


@pytest.mark.parametrize(("claims", "secret", "code"), [
    ({"iss": "stranger"}, SECRET, 41),
    ({"sub": "someone-else"}, SECRET, 42),
    ({"aud": "http://elsewhere/xtrem/api"}, SECRET, 45),
    ({}, "not-the-secret-of-this-application-at-all", 50),
    ({"exp": int(time.time()) - 10}, SECRET, 50),
])
def test_graphql_refuses_bad_tokens_with_x3_error_numbers(x3: FakeSageX3, claims: dict, secret: str,
                                                          code: int) -> None:
    bearer = token({"iss": "app-1", "sub": "admin", "aud": x3.graphql_url, **claims}, secret)
    answer = graphql(x3, ORDERS, bearer=bearer)
    assert answer.status_code == 401
    assert answer.json()["$diagnoses"][0]["$message"] == f"Error {code}: Invalid token"


def test_graphql_needs_the_endpoint_header_and_token_rejection_can_be_injected(x3: FakeSageX3) -> None:
    assert graphql(x3, ORDERS, endpoint="OTHER").status_code == 400
    x3.reject_tokens(1, code=50)
    assert graphql(x3, ORDERS).status_code == 401
    assert graphql(x3, ORDERS).status_code == 200


# --- SOAP ----------------------------------------------------------------------------------------------


def soap(fake: FakeSageX3, operation: str, public_name: str, key: str, object_xml: str | None = None,
         pool: str = "SEED") -> str:
    extra = f"<objectXml>{object_xml.replace('<', '&lt;')}</objectXml>" if object_xml else ""
    envelope = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:wss="http://www.adonix.com/WSS"><soapenv:Body>'
                f"<wss:{operation}><callContext><codeLang>ENG</codeLang><poolAlias>{pool}</poolAlias>"
                f"</callContext><publicName>{public_name}</publicName><objectKeys><item><key>POHNUM</key>"
                f"<value>{key}</value></item></objectKeys>{extra}</wss:{operation}></soapenv:Body>"
                "</soapenv:Envelope>")
    answer = requests.post(f"{fake.base_url}/soap-generic/syracuse/collaboration/syracuse/CAdxWebServiceXmlCC",
                           data=envelope, headers={"Authorization": BASIC, "Content-Type": "text/xml"}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_soap_read_and_modify_a_published_text_field(x3: FakeSageX3) -> None:
    x3.add_order("PO1", updated=NOW)
    assert "<status>1</status>" in soap(x3, "read", "YPOH", "PO1")
    answer = soap(x3, "modify", "YPOH", "PO1", '<PARAM><GRP ID="POH0_1"><FLD NAME="YNOTES">hello</FLD></GRP></PARAM>')
    assert "<status>1</status>" in answer
    row = x3.record("PORDER", "PO1")
    assert row["YNOTES"] == "hello" and row["UPDDATTIM"] != "2026-11-22T12:00:00Z"  # X3 stamps a modify


def test_soap_refusals_come_back_as_status_0_with_messages(x3: FakeSageX3) -> None:
    x3.add_order("PO1", updated=NOW)
    assert "Record NOPE does not exist" in soap(x3, "read", "YPOH", "NOPE")
    assert "Pool" in soap(x3, "read", "YPOH", "PO1", pool="OTHER")
    assert "not published" in soap(x3, "read", "YNOPE", "PO1")
    answer = soap(x3, "modify", "YPOH", "PO1", '<PARAM><GRP ID="POH0_1"><FLD NAME="TOTORD">1</FLD></GRP></PARAM>')
    assert "<status>0</status>" in answer and "Field TOTORD does not exist" in answer
