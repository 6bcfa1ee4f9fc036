"""The fake QAD tenant itself: login and session, browses, paging, filters, quirks, failures, QXtend."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator

import pytest
import requests

from tests.fakes.qad import DEFAULT_PASSWORD, DEFAULT_USER, FakeQad

RECEIPTS = "urn:browse:mfg:tr_hist_rct_po"
POS = "urn:browse:mfg:po_mstr_approval"


@pytest.fixture
def fake() -> Iterator[FakeQad]:
    server = FakeQad().start()
    yield server
    server.stop()
    assert server.handler_errors == []


def logged_in(fake: FakeQad) -> requests.Session:
    session = requests.Session()
    answer = session.post(f"{fake.tenant_url}/j_spring_security_check",
                          data={"j_username": DEFAULT_USER, "j_password": DEFAULT_PASSWORD}, allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"] == "/qad-central/"
    assert "JSESSIONID" in session.cookies
    return session


def browse(session: requests.Session, fake: FakeQad, browse_id: str, *filters: str, page: int = 1, size: int = 50,
           sort: str | None = None) -> requests.Response:
    params = [("browseId", browse_id), ("page", str(page)), ("pageSize", str(size)), ("pageAction", "first"),
              *(("filter", condition) for condition in filters)] + ([("sort", sort)] if sort else [])
    return session.get(f"{fake.tenant_url}/api/qracore/browses", params=params, allow_redirects=False)


def rows(answer: requests.Response) -> list[dict]:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_a_wrong_password_redirects_to_the_login_error_and_gives_no_session(fake: FakeQad) -> None:
    session = requests.Session()
    answer = session.post(f"{fake.tenant_url}/j_spring_security_check",
                          data={"j_username": DEFAULT_USER, "j_password": "wrong"}, allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/login?error")
    assert "JSESSIONID" not in session.cookies
    assert browse(session, fake, RECEIPTS).status_code == 401


def test_browses_need_the_session_and_an_expired_one_answers_as_asked(fake: FakeQad) -> None:
    session = logged_in(fake)
    assert rows(browse(session, fake, RECEIPTS)) == []
    fake.expire_sessions()
    assert browse(session, fake, RECEIPTS).status_code == 401
    session = logged_in(fake)
    fake.expire_sessions(answer="redirect")
    answer = browse(session, fake, RECEIPTS)
    assert answer.status_code == 302 and answer.headers["Location"] == "/qad-central/login"
    session = logged_in(fake)
    fake.expire_sessions(answer="html")
    answer = browse(session, fake, RECEIPTS)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    assert fake.logins == 3


def test_receipt_rows_carry_progress_quirks_and_every_domain_unless_filtered(fake: FakeQad) -> None:
    fake.add_domain("20CAN")
    ours = fake.add_receipt("PO100", 1, "BOLT", 5, supplier="S-1")
    fake.add_receipt("PO900", 1, "NUT", 2, supplier="S-9", domain="20CAN")
    fake.add_receipt("PO100", 1, "BOLT", 1, supplier="S-1", tr_type="ISS-PRV")
    session = logged_in(fake)
    assert len(rows(browse(session, fake, RECEIPTS))) == 3
    [row] = rows(browse(session, fake, RECEIPTS, "tr_hist.tr_domain,eq,10usa,literal",
                        "tr_hist.tr_type,eq,RCT-PO,literal"))
    assert row["tr_hist.tr_trnbr"] == ours and row["prh_hist.prh_ps_nbr"] == "?"
    assert row["tr_hist.tr_date"].count("/") == 2 and len(row["tr_hist.tr_date"]) == 8  # mm/dd/yy
    assert row["local_variables.BrowseRowOrderIndex"] == ours


def test_pages_by_number_and_by_key_give_every_row_once(fake: FakeQad) -> None:
    first, last = fake.fill_receipts(7)
    session = logged_in(fake)
    by_page = [row["tr_hist.tr_trnbr"] for page in (1, 2, 3) for row in rows(browse(session, fake, RECEIPTS,
                                                                                      page=page, size=3))]
    assert by_page == list(range(first, last + 1))
    after, by_key = None, []
    while True:
        bound = [f"tr_hist.tr_trnbr,gt,{after},literal"] if after is not None else []
        page = rows(browse(session, fake, RECEIPTS, *bound, size=3, sort="tr_hist.tr_trnbr,asc"))
        by_key += [row["tr_hist.tr_trnbr"] for row in page]
        if len(page) < 3:
            break
        after = page[-1]["tr_hist.tr_trnbr"]
    assert by_key == by_page


def test_filters_compare_text_without_case_and_sort_any_column(fake: FakeQad) -> None:
    fake.add_po("po-b", "S-2", 300)
    fake.add_po("PO-A", "S-1", 100, status="C")
    fake.add_po("PO-C", "s-1", 200, confirmed=True)
    session = logged_in(fake)
    assert [r["po_mstr.po_nbr"] for r in rows(browse(session, fake, POS))] == ["PO-A", "po-b", "PO-C"]
    assert [r["po_mstr.po_nbr"] for r in rows(browse(session, fake, POS, "po_mstr.po_vend,eq,S-1"))] == ["PO-A",
                                                                                                        "PO-C"]
    assert [r["po_mstr.po_nbr"] for r in rows(browse(session, fake, POS, "po_mstr.po_nbr,gt,PO-A,literal"))] == [
        "po-b", "PO-C"]
    assert [r["po_mstr.po_nbr"] for r in rows(browse(session, fake, POS, "po_mstr.po_confirm,eq,false"))] == [
        "PO-A", "po-b"]
    assert [r["po_mstr.po_nbr"] for r in rows(browse(session, fake, POS, sort="local_variables.po_total,desc"))] == [
        "po-b", "PO-C", "PO-A"]
    total = session.get(f"{fake.tenant_url}/api/qracore/browses/totalCount/",
                        params={"browseId": POS, "filter": "po_mstr.po_vend,eq,s-1,literal"})
    assert total.json() == {"totalCount": 2}


@pytest.mark.parametrize(("params", "status"), [
    ({"browseId": "urn:browse:mfg:nothing", "page": "1", "pageSize": "5"}, 404),
    ({"browseId": POS, "page": "1"}, 400),
    ({"browseId": POS, "page": "1", "pageSize": "5", "filter": "po_mstr.po_none,eq,1"}, 400),
    ({"browseId": POS, "page": "1", "pageSize": "5", "filter": "po_mstr.po_nbr,like,1"}, 400),
    ({"browseId": POS, "page": "0", "pageSize": "5"}, 400),
])
def test_bad_browse_requests_are_refused(fake: FakeQad, params: dict, status: int) -> None:
    fake.add_po("PO-1", "S-1", 1)
    session = logged_in(fake)
    answer = session.get(f"{fake.tenant_url}/api/qracore/browses", params=params)
    assert answer.status_code == status and answer.json()["success"] is False


def test_fail_page_hits_the_third_page_of_a_read_whichever_way_it_is_asked_for(fake: FakeQad) -> None:
    fake.fill_receipts(10)
    fake.fill_receipts(10, domain="20CAN")
    fake.fail_page(3, browse="receipts", domain="10USA", times=2)
    session = logged_in(fake)
    domain = "tr_hist.tr_domain,eq,10USA,literal"
    assert browse(session, fake, RECEIPTS, domain, page=3, size=3).status_code == 500
    second = rows(browse(session, fake, RECEIPTS, domain, page=2, size=3))
    after = f"tr_hist.tr_trnbr,gt,{second[-1]['tr_hist.tr_trnbr']},literal"
    assert browse(session, fake, RECEIPTS, domain, after, size=3).status_code == 500  # page 3 by key
    assert browse(session, fake, RECEIPTS, "tr_hist.tr_domain,eq,20CAN", page=3, size=3).status_code == 200
    assert len(rows(browse(session, fake, RECEIPTS, domain, after, size=3))) == 3  # used up


def test_a_throttled_browse_says_when_to_come_back(fake: FakeQad) -> None:
    fake.fail_next(status=429, headers={"Retry-After": "7"}, match="GET /qad-central/api/qracore/browses")
    session = logged_in(fake)
    answer = browse(session, fake, RECEIPTS)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert browse(session, fake, RECEIPTS).status_code == 200


def test_oauth_tokens_open_browses_until_they_expire(fake: FakeQad) -> None:
    url = f"{fake.tenant_url}/oauth/token"
    assert requests.post(url, data={"grant_type": "password", "username": DEFAULT_USER,
                                    "password": "no"}).json()["error"] == "invalid_grant"
    token = requests.post(url, data={"grant_type": "password", "username": DEFAULT_USER,
                                     "password": DEFAULT_PASSWORD}).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    assert browse(session, fake, RECEIPTS).status_code == 200
    fake.expire_sessions()
    assert browse(session, fake, RECEIPTS).status_code == 401
    fake.register_oauth_client("app", "app-secret")
    assert requests.post(url, data={"grant_type": "password", "username": DEFAULT_USER,
                                    "password": DEFAULT_PASSWORD}).status_code == 401


def test_synthetic_receipts_cost_nothing_until_read(fake: FakeQad) -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        started = time.perf_counter()
        first, last = fake.fill_receipts(1_000_000)
        filled = time.perf_counter() - started
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert last - first + 1 == 1_000_000 and filled < 0.05 and grown < 200_000
    session = logged_in(fake)
    page = rows(browse(session, fake, RECEIPTS, f"tr_hist.tr_trnbr,gt,{last - 2},literal", size=10))
    assert [row["tr_hist.tr_trnbr"] for row in page] == [last - 1, last]


def qdoc(fake: FakeQad, password: str = DEFAULT_PASSWORD, domain: str = "10USA", reference: str = "PO100",
         content_type: str = "text/xml; charset=utf-8") -> requests.Response:
    from shared.erp.qad.qxtend import master_comment_request, session_context

    body = master_comment_request(receiver="QADERP", message_id="SM1", reference=reference, comment_type="SMS",
                                  language=None, lines=["first", "second"],
                                  context=session_context(domain=domain, username=DEFAULT_USER, password=password,
                                                          version="ERP3_1"))
    return requests.post(f"{fake.qxtend_url}/services/QdocWebService", data=body,
                         headers={"Content-Type": content_type, "SOAPAction": '""'})


def test_qxtend_stores_a_master_comment_and_says_success(fake: FakeQad) -> None:
    answer = qdoc(fake)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml")
    assert "<ns1:result>success</ns1:result>" in answer.text
    [comment] = fake.comments("po100")
    assert (comment.domain, comment.comment_type, comment.lines, comment.message_id) == (
        "10USA", "SMS", ["first", "second"], "urn:messages-qad-com:SM1")


def test_qxtend_answers_warning_error_and_faults(fake: FakeQad) -> None:
    fake.answer_qdoc_next("warning", "Comment already exists")
    assert "<ns1:result>warning</ns1:result>" in qdoc(fake).text and len(fake.comments()) == 1
    fake.answer_qdoc_next("error", "Record in use by another user")
    assert "Record in use" in qdoc(fake).text and len(fake.comments()) == 1
    assert "User ID or password is not valid." in qdoc(fake, password="wrong").text
    assert "Domain 99XX does not exist." in qdoc(fake, domain="99XX").text
    assert "Reference is required." in qdoc(fake, reference="").text
    assert qdoc(fake, content_type="application/json").status_code == 415
    fault = requests.post(f"{fake.qxtend_url}/services/QdocWebService", data=b"<not-xml",
                          headers={"Content-Type": "text/xml", "SOAPAction": ""})
    assert fault.status_code == 500 and "<faultstring>" in fault.text
    assert len(fake.comments()) == 1
