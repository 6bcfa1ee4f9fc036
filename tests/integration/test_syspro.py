"""SYSPRO polls and notes: the adapter against the fake SYSPRO, the poll framework against Azurite."""

from __future__ import annotations

import logging
import traceback
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.config.loading import config_from_dict
from shared.erp.polling import Note
from shared.erp.syspro.adapter import (
    COMMENT_LENGTH,
    CUSTOM_FORM_VALUE_LENGTH,
    ENTITIES,
    SUPPLIER_FORM_TYPE,
    SUPPLIER_NOTE_FIELD,
    open_source,
    write_note,
)
from shared.erp.syspro.client import EnetReader, EnetSession, SysproError, TableQuery, lease_name, reset_sessions
from shared.erp.syspro.connection import SysproConnection
from shared.http import HttpClient, HttpFailure, RetryLater, RetryPolicy
from shared.model import Envelope
from shared.pipeline.consume import PermanentFailure
from shared.pipeline.poll import poll_cycle
from shared.pipeline.process import EVENT_SCOPE
from shared.storage.secrets import EnvSecretProvider
from shared.storage.tables import Stores
from tests.fakes.syspro import REST, FakeSyspro
from tests.integration.test_poll import RecordingBus
from tests.support.waiting import wait_for

PASSWORD, ODATA_PASSWORD, OPS_PASSWORD = "Op-Pass-9x7q", "OData-Pass-4k2w", "Ops-Pass-5q1e"
SECRETS = EnvSecretProvider(env={"syspro-password": PASSWORD, "syspro-odata-password": ODATA_PASSWORD,
                                 "syspro-ops-password": OPS_PASSWORD})
START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CHICAGO = ZoneInfo("America/Chicago")
FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
ALL = tuple(ENTITIES)


@pytest.fixture
def erp() -> Iterator[FakeSyspro]:
    fake = FakeSyspro().start()
    fake.add_operator("ADMIN", PASSWORD, ODATA_PASSWORD)
    fake.add_operator("OPS", OPS_PASSWORD)
    fake.add_company("EDU1")
    fake.add_company("EDU2")
    fake.add_supplier("S1", "Acme Supplies", "(415) 555-0123")
    fake.add_supplier("S2", "Bolt & Nut Ltd", "ask reception")
    fake.add_supplier("S9", "Other company supplier", "+14155550999", company="EDU2")
    for company in ("EDU1", "EDU2"):  # the history a first poll finds (an empty table stays a baseline)
        fake.add_purchase_order("OLD-1", "S1", company=company)
        fake.add_invoice("S1", "OLD-1", "1.00", journal_date=date(2026, 10, 1), company=company)
    yield fake
    reset_sessions()  # the kept sessions log off while their SYSPRO still answers
    fake.stop()
    assert not fake.handler_errors


@pytest.fixture
def http() -> Iterator[HttpClient]:
    client = HttpClient(FAST)
    yield client
    client.close()


def connection(erp: FakeSyspro, name: str = "syspro-main", **overrides: object) -> SysproConnection:
    body = {"kind": "syspro", "base_url": erp.rest_url, "operator": "ADMIN", "password": {"secret": "syspro-password"},
            "company_id": "EDU1", "poll": {"entities": list(ALL), "time_zone": "America/Chicago"}, **overrides}
    found = config_from_dict({"connections": {name: body}}).connections[name]
    assert isinstance(found, SysproConnection)
    return found


def poll(conn: SysproConnection, names: Sequence[str], stores: Stores, bus: RecordingBus, http: HttpClient, *,
         page_size: int | None = None, now: datetime = START) -> dict[str, int]:
    source = open_source(conn, secrets=SECRETS, http=http)
    if page_size is not None:
        source.entities = {name: replace(entity, page_size=page_size) for name, entity in source.entities.items()}
    try:
        return poll_cycle(conn, conn.poll, source, names, stores, bus, now=now)
    finally:
        source.close()


def changes(bus: RecordingBus) -> list[Envelope]:
    return [envelope for _, envelope in bus.sent]  # type: ignore[misc]


def claimed(stores: Stores, bus: RecordingBus) -> list[Envelope]:
    """What the process stage would let through: each change key once."""
    return [envelope for envelope in changes(bus) if stores.dedup.claim(EVENT_SCOPE, envelope.key)]


# --- purchase orders -----------------------------------------------------------------------------


def test_changed_orders_alert_once_each_then_nothing_then_again(erp: FakeSyspro, stores: Stores,
                                                                 http: HttpClient) -> None:
    conn = connection(erp)
    erp.add_purchase_order("P1", "S1", [(2, "10.50"), (1, 3)], status="1")
    first = RecordingBus()
    assert poll(conn, ["PorMasterHdr"], stores, first, http) == {"PorMasterHdr": 0}  # history is not news

    erp.update_row("PorMasterHdr", "P1", OrderStatus="4")
    erp.add_purchase_order("P2", "S2", [(5, 1)], status="1")
    bus = RecordingBus()
    assert poll(conn, ["PorMasterHdr"], stores, bus, http) == {"PorMasterHdr": 2}
    [p1, p2] = claimed(stores, bus)
    fields = p1.payload["fields"]
    assert p1.payload["record_entity"] == "PorMasterHdr" and p1.payload["record_key"] == "P1"
    assert {k: fields[k] for k in ("document", "supplier", "supplier_name", "supplier_phone", "amount", "currency",
                                   "due_date", "status", "status_text", "line_count", "cancelled")} == {
        "document": "P1", "supplier": "S1", "supplier_name": "Acme Supplies", "supplier_phone": "+14155550123",
        "amount": 24.0, "currency": "USD", "due_date": "2026-12-01", "status": "4", "status_text": "printed",
        "line_count": 2, "cancelled": False}
    assert p2.payload["fields"]["supplier_phone"] == "ask reception"  # not a number: as stored

    quiet = RecordingBus()
    assert poll(conn, ["PorMasterHdr"], stores, quiet, http) == {"PorMasterHdr": 0}

    erp.update_row("PorMasterHdr", "P2", OrderStatus="9", DatePoCompleted=date(2026, 11, 22))
    again = RecordingBus()
    poll(conn, ["PorMasterHdr"], stores, again, http)
    [p2_again] = claimed(stores, again)
    assert p2_again.payload["fields"]["status_text"] == "complete" and p2_again.key != p2.key
    assert len(erp.logons()) == 1 and len(erp.active_sessions()) == 1  # one session kept across the four polls


def test_the_logon_waits_for_the_first_read(erp: FakeSyspro, http: HttpClient) -> None:
    source = open_source(connection(erp), secrets=SECRETS, http=http)
    source.close()
    assert erp.logons() == [] and erp.requests_to(f"GET {erp.rest_url[len(erp.base_url):]}/Logoff") == []
    assert source.exclusive == lease_name(connection(erp))


def test_a_status_change_without_a_stamp_is_found_by_its_watched_fields(erp: FakeSyspro, stores: Stores,
                                                                         http: HttpClient) -> None:
    conn = connection(erp)
    for number in ("P1", "P2", "P3"):
        erp.add_purchase_order(number, "S1", [(1, 100)])
    assert poll(conn, ["PorMasterHdr-status"], stores, RecordingBus(), http, page_size=2) == {
        "PorMasterHdr-status": 0}
    erp.update_row("PorMasterHdr", "P2", Buyer="BOB")  # not watched
    erp.update_row("PorMasterHdr", "P3", CancelledFlag="Y", OrderStatus="*")
    before = len(erp.queries("PorMasterDetail"))
    bus = RecordingBus()
    assert poll(conn, ["PorMasterHdr-status"], stores, bus, http, page_size=2) == {"PorMasterHdr-status": 1}
    [change] = claimed(stores, bus)
    assert change.payload["record_key"] == "P3"
    assert change.payload["fields"]["cancelled"] is True and change.payload["fields"]["amount"] == 100.0
    assert len(erp.queries("PorMasterDetail")) == before + 1  # lines read for the changed order only


# --- supplier invoices ---------------------------------------------------------------------------


def test_invoices_and_their_payments(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    conn = connection(erp)
    poll(conn, ["ApInvoice"], stores, RecordingBus(), http)  # baseline
    erp.add_invoice("S1", "INV-1", "1200.00")
    bus = RecordingBus()
    poll(conn, ["ApInvoice"], stores, bus, http)
    [posted] = claimed(stores, bus)
    fields = posted.payload["fields"]
    assert posted.payload["record_key"] == "S1|INV-1" and posted.payload["record_entity"] == "ApInvoice"
    assert (fields["document"], fields["amount"], fields["payment_state"], fields["due_date"],
            fields["supplier_phone"]) == ("INV-1", 1200.0, "unpaid", "2026-12-20", "+14155550123")
    erp.update_row("ApInvoice", ("S1", "INV-1"), MthInvBal1="200.00")
    paid = RecordingBus()
    poll(conn, ["ApInvoice"], stores, paid, http)
    [payment] = claimed(stores, paid)
    assert payment.payload["fields"]["payment_state"] == "part-paid"


def test_ten_polls_with_overlaps_and_shared_stamps_across_page_edges(erp: FakeSyspro, stores: Stores,
                                                                     http: HttpClient) -> None:
    """POs by rowversion and invoices by journal date (overlapping windows across the ERP's midnight)."""
    conn = connection(erp)
    start = datetime(2026, 11, 22, 5, 30, tzinfo=UTC)  # 23:30 in Chicago: the polls cross the local midnight
    poll(conn, ["PorMasterHdr"], stores, RecordingBus(), http, page_size=2, now=start)
    expected: set[tuple[str, str]] = set()
    alerted: list[tuple[str, str]] = []
    for index in range(10):
        now = start + timedelta(minutes=10 * (index + 1))
        company = erp.company()
        # Three orders sharing one stamp (equal stamps cannot come from one rowversion column, but can from a
        # view or a copied table), straddling the edge of two-row pages.
        shared = company.next_rowversion()
        for suffix in "abc":
            row = erp.add_purchase_order(f"P{index}{suffix}", "S1", timestamp=shared)
            expected.add(("PorMasterHdr", f"P{index}{suffix}|{row['TimeStamp']}"))
        if index:
            row = erp.update_row("PorMasterHdr", f"P{index - 1}a", OrderStatus="4")
            expected.add(("PorMasterHdr", f"P{index - 1}a|{row['TimeStamp']}"))
        journal = (now - timedelta(minutes=5)).astimezone(CHICAGO).date()  # the ERP's own date
        for suffix in "xyz":
            erp.add_invoice("S2", f"I{index}{suffix}", "10.00", journal_date=journal)
            expected.add(("ApInvoice-journal", f"S2|I{index}{suffix}|{journal}"))
        bus = RecordingBus()
        poll(conn, ["PorMasterHdr", "ApInvoice-journal"], stores, bus, http, page_size=2, now=now)
        for envelope in claimed(stores, bus):
            payload = envelope.payload
            stamp = str(payload["stamp"])
            day = datetime.fromisoformat(stamp).astimezone(CHICAGO).date() if "T" in stamp else stamp
            alerted.append((payload["entity"], f"{payload['key']}|{day}"))
    assert len(alerted) == len(set(alerted))  # nothing sent twice
    assert set(alerted) == expected  # nothing missed


def test_a_poll_failing_on_page_3_resumes_while_other_connections_poll(erp: FakeSyspro, stores: Stores,
                                                                        http: HttpClient) -> None:
    main = connection(erp)
    other = connection(erp, "syspro-other", operator="OPS", password={"secret": "syspro-ops-password"},
                       company_id="EDU2")
    poll(main, ["PorMasterHdr"], stores, RecordingBus(), http, page_size=2)
    poll(other, ["PorMasterHdr"], stores, RecordingBus(), http, page_size=2)
    for number in range(7):
        erp.add_purchase_order(f"P{number}", "S1")
    watermark = stores.watermarks.get("syspro-main", "PorMasterHdr")
    erp.on_query(3, table="PorMasterHdr", status=500, times=FAST.max_attempts)

    failed = RecordingBus()
    with pytest.raises(HttpFailure) as failure:
        poll(main, ["PorMasterHdr"], stores, failed, http, page_size=2)
    assert str(failure.value) == "SYSPRO Query/Query COMFND: gave up after 2 attempts: HTTP 500"
    assert stores.watermarks.get("syspro-main", "PorMasterHdr") == watermark
    assert len(erp.active_sessions()) == 2  # each operator's session is kept for its next poll

    erp.add_purchase_order("Q1", "S9", company="EDU2")
    meanwhile = RecordingBus()
    assert poll(other, ["PorMasterHdr"], stores, meanwhile, http, page_size=2) == {"PorMasterHdr": 1}

    resumed = RecordingBus()
    assert poll(main, ["PorMasterHdr"], stores, resumed, http, page_size=2) == {"PorMasterHdr": 7}
    sent = [envelope.payload["key"] for envelope in claimed(stores, failed) + claimed(stores, resumed)]
    assert sorted(sent) == [f"P{number}" for number in range(7)]


# --- sessions ------------------------------------------------------------------------------------


def test_a_session_expiring_mid_poll_logs_on_again_and_the_poll_succeeds(erp: FakeSyspro, stores: Stores,
                                                                         http: HttpClient) -> None:
    conn = connection(erp)
    poll(conn, ["PorMasterHdr"], stores, RecordingBus(), http, page_size=2)
    for number in range(5):
        erp.add_purchase_order(f"P{number}", "S1")
    erp.on_query(2, table="PorMasterHdr", action="expire")
    logons = len(erp.logons())
    bus = RecordingBus()
    assert poll(conn, ["PorMasterHdr"], stores, bus, http, page_size=2) == {"PorMasterHdr": 5}
    assert len(claimed(stores, bus)) == 5
    assert len(erp.logons()) == logons + 1  # one renewal: the session of the first poll was kept


def test_one_logon_serves_every_poll_and_note_of_the_process(erp: FakeSyspro, stores: Stores,
                                                              http: HttpClient) -> None:
    conn = connection(erp)
    erp.add_purchase_order("P1", "S1")
    for _ in range(3):
        poll(conn, ["PorMasterHdr", "ApInvoice"], stores, RecordingBus(), http)
    write_note(conn, note("PorMasterHdr", "P1"), secrets=SECRETS, http=http, stores=stores)
    poll(conn, ["PorMasterHdr"], stores, RecordingBus(), http)

    assert len(erp.logons()) == 1 and erp.requests_to(f"GET {REST}/Logoff") == []
    assert len(erp.active_sessions()) == 1 and len(erp.comments("P1")) == 2


def test_a_session_unused_for_session_minutes_is_renewed_before_syspro_times_it_out(erp: FakeSyspro,
                                                                                    http: HttpClient) -> None:
    erp.session_timeout = 20 * 60  # SYSPRO's idle timeout on this server
    session = EnetSession(connection(erp, session_minutes=15), SECRETS, http, clock=erp.clock)
    reader, query = EnetReader(session), TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10)
    reader.rows(query)

    erp.pass_time(14 * 60)
    reader.rows(query)  # used again within 15 minutes: the same session, its idle time starts anew
    erp.pass_time(14 * 60)
    reader.rows(query)
    assert (session.logons, session.renewals) == (1, 0)

    erp.pass_time(16 * 60)  # past session_minutes, not yet past SYSPRO's timeout
    assert len(reader.rows(query)) == 2
    assert (session.logons, session.renewals) == (2, 1)
    assert len(erp.requests_to(f"GET {REST}/Logoff")) == 1  # the old session gave its seat back
    assert erp.refused_as_ended == 0  # no call ever met a timed-out session


def test_a_session_syspro_timed_out_sooner_logs_on_again_once(erp: FakeSyspro, http: HttpClient) -> None:
    erp.session_timeout = 10 * 60  # shorter than the connection's session_minutes assumes
    session = EnetSession(connection(erp, session_minutes=15), SECRETS, http, clock=erp.clock)
    reader, query = EnetReader(session), TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10)
    reader.rows(query)
    erp.pass_time(12 * 60)

    assert len(reader.rows(query)) == 2
    assert erp.refused_as_ended == 1 and session.logons == 2 and len(erp.active_sessions()) == 1


def test_two_sessions_of_one_operator_take_turns(erp: FakeSyspro, http: HttpClient) -> None:
    """A second logon by the same operator ends the first session: each call still gets through."""
    first = EnetReader(EnetSession(connection(erp), SECRETS, http))
    second = EnetReader(EnetSession(connection(erp, company_id="EDU2"), SECRETS, http))
    query = TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10)
    for _ in range(2):
        assert len(first.rows(query)) == 2
        assert [row["Supplier"] for row in second.rows(query)] == ["S9"]
    assert first.session.logons == 2 and second.session.logons == 2
    first.close()
    second.close()


def test_a_session_that_ends_again_right_after_a_new_logon_is_retried_later(erp: FakeSyspro,
                                                                           http: HttpClient) -> None:
    reader = EnetReader(EnetSession(connection(erp), SECRETS, http))
    erp.on_query(1, action="expire")
    erp.on_query(2, action="expire")
    with pytest.raises(RetryLater, match="ended again"):
        reader.rows(TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10))
    reader.close()


@pytest.mark.parametrize("wrap", ["json", "bare", "string"])
def test_every_shape_of_answer_is_read(erp: FakeSyspro, http: HttpClient, wrap: str) -> None:
    erp.logon_wrap = erp.answer_wrap = wrap
    reader = EnetReader(EnetSession(connection(erp), SECRETS, http))
    rows = reader.rows(TableQuery("ApSupplier", ("Supplier", "SupplierName"), ("Supplier",), 10))
    assert rows == [{"Supplier": "S1", "SupplierName": "Acme Supplies"},
                    {"Supplier": "S2", "SupplierName": "Bolt & Nut Ltd"}]
    reader.close()


def test_business_failures(erp: FakeSyspro, http: HttpClient) -> None:
    wrong = EnetReader(EnetSession(connection(erp), EnvSecretProvider(env={"syspro-password": "not-it"}), http))
    with pytest.raises(SysproError, match=r"^SYSPRO Logon: ERROR: Invalid operator password$"):
        wrong.rows(TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10))
    reader = EnetReader(EnetSession(connection(erp), SECRETS, http))
    with pytest.raises(SysproError, match=r"^SYSPRO Query/Query COMFND: ERROR: Column 'Nope'"):
        reader.rows(TableQuery("ApSupplier", ("Nope",), ("Supplier",), 10))
    with pytest.raises(PermanentFailure, match="not installed or licensed"):
        reader.session.query("APSQRY", "<Query/>")
    reader.close()
    erp.licences = 0
    full = EnetReader(EnetSession(connection(erp), SECRETS, http))
    with pytest.raises(RetryLater, match="No licences"):
        full.rows(TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10))


def test_no_password_or_session_id_in_logs_or_exceptions(erp: FakeSyspro, stores: Stores, http: HttpClient,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # it logs every request's URL at DEBUG: shown here as asked for
    conn = connection(erp)
    failures: list[BaseException] = []
    erp.add_purchase_order("P1", "S1")
    poll(conn, ["PorMasterHdr", "PorMasterHdr-status"], stores, RecordingBus(), http)
    erp.update_row("PorMasterHdr", "P1", OrderStatus="4")
    erp.on_query(1, table="PorMasterHdr", action="expire")
    poll(conn, ["PorMasterHdr"], stores, RecordingBus(), http)
    session_ids = [session.user_id for session in erp.sessions.values()]
    erp.on_query(1, table="PorMasterHdr", status=500, times=2)
    erp.on_query(1, table="ApSupplier", status=503, headers={"Retry-After": "600"})
    reader = EnetReader(EnetSession(conn, SECRETS, http))
    for query in (TableQuery("PorMasterHdr", ("PurchaseOrder",), ("PurchaseOrder",), 5),
                  TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 5),
                  TableQuery("ApSupplier", ("Nope",), ("Supplier",), 5)):
        try:
            reader.rows(query)
        except Exception as error:
            failures.append(error)
    erp.on_query(1, action="expire")
    erp.on_query(2, action="expire")  # ends again right after the new logon: its text names the session
    try:
        reader.rows(TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 5))
    except Exception as error:
        failures.append(error)
    session_ids += [session.user_id for session in erp.sessions.values()]
    reader.close()
    erp.stop()  # connection refused: requests' own message quotes the URL
    try:
        EnetReader(EnetSession(conn, SECRETS, http)).rows(TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 5))
    except Exception as error:
        failures.append(error)
    assert [type(error).__name__ for error in failures] == ["HttpFailure", "RetryLater", "SysproError",
                                                            "RetryLater", "HttpFailure"]
    texts = ["".join(traceback.format_exception(error)) + repr(vars(error)) for error in failures]
    own_lines = [record.getMessage() for record in caplog.records if record.name.startswith("shared")]
    assert session_ids and own_lines and any(record.name.startswith("urllib3") for record in caplog.records)
    for secret in (PASSWORD, *session_ids):
        assert all(secret not in text for text in texts)
        assert all(secret not in line for line in own_lines)
        assert secret not in caplog.text
    assert "SYSPRO Query/Query COMFND" in texts[0] and "ended again" in texts[3] and "SYSPRO Logon" in texts[4]
    assert any("OperatorPassword=***" in record.getMessage() and "UserId" not in record.getMessage()
               for record in caplog.records if record.name == "urllib3.connectionpool")
    erp.start()


# --- OData ----------------------------------------------------------------------------------------


def odata_connection(erp: FakeSyspro) -> SysproConnection:
    return connection(erp, api="odata", odata_url=erp.odata_url, odata_password={"secret": "syspro-odata-password"})


def test_polls_over_odata_need_no_session(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    conn = odata_connection(erp)
    erp.add_purchase_order("P1", "S1", [(3, "2.50")])
    poll(conn, ["PorMasterHdr", "PorMasterHdr-status"], stores, RecordingBus(), http, page_size=2)
    erp.update_row("PorMasterHdr", "P1", OrderStatus="4")
    erp.add_invoice("S1", "INV-9", "99.95", journal_date=date(2026, 11, 22))
    bus = RecordingBus()
    counts = poll(conn, ["PorMasterHdr", "PorMasterHdr-status", "ApInvoice-journal"], stores, bus, http,
                  page_size=2, now=datetime(2026, 11, 22, 18, 0, tzinfo=UTC))
    assert counts == {"PorMasterHdr": 1, "PorMasterHdr-status": 1, "ApInvoice-journal": 1}
    by_entity = {envelope.payload["entity"]: envelope.payload["fields"] for envelope in changes(bus)}
    assert by_entity["PorMasterHdr-status"]["amount"] == 7.5 and by_entity["PorMasterHdr-status"]["status"] == "4"
    assert by_entity["ApInvoice-journal"]["supplier_phone"] == "+14155550123"
    assert by_entity["ApInvoice-journal"]["JournalDate"] == "2026-11-22"
    assert erp.logons() == []
    assert open_source(conn, secrets=SECRETS, http=http).exclusive is None


def odata_only_connection(erp: FakeSyspro) -> SysproConnection:
    body = {"kind": "syspro", "api": "odata", "odata_url": erp.odata_url, "operator": "ADMIN",
            "odata_password": {"secret": "syspro-odata-password"}, "company_id": "EDU1",
            "poll": {"entities": list(ALL), "time_zone": "America/Chicago"}}
    found = config_from_dict({"connections": {"syspro-odata": body}}).connections["syspro-odata"]
    assert isinstance(found, SysproConnection)
    return found


def test_odata_alone_polls_without_enet_and_refuses_notes_with_the_reason(erp: FakeSyspro, stores: Stores,
                                                                          http: HttpClient) -> None:
    conn = odata_only_connection(erp)
    poll(conn, ["PorMasterHdr"], stores, RecordingBus(), http)
    erp.add_purchase_order("P1", "S1", [(1, 5)])
    bus = RecordingBus()

    assert poll(conn, ["PorMasterHdr"], stores, bus, http) == {"PorMasterHdr": 1}
    with pytest.raises(PermanentFailure, match="reads SYSPRO through OData only"):
        write_note(conn, note("PorMasterHdr", "P1"), secrets=SECRETS, http=http, stores=stores)
    assert erp.logons() == [] and erp.comments("P1") == []


def test_odata_without_a_readable_timestamp(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    erp.odata_timestamp = False
    conn = odata_connection(erp)
    with pytest.raises(HttpFailure, match=r"^SYSPRO OData PorMasterHdr: HTTP 400$"):
        poll(conn, ["PorMasterHdr"], stores, RecordingBus(), http)
    assert poll(conn, ["PorMasterHdr-status"], stores, RecordingBus(), http) == {"PorMasterHdr-status": 0}
    wrong = EnvSecretProvider(env={"syspro-odata-password": "not-it"})
    source = open_source(conn, secrets=wrong, http=http)
    with pytest.raises(HttpFailure, match="HTTP 401"):
        poll_cycle(conn, conn.poll, source, ["PorMasterHdr-status"], stores, RecordingBus(), now=START)


# --- notes ----------------------------------------------------------------------------------------


def note(entity: str, key: str, text: str = "Delivery moved to Friday, sorry.") -> Note:
    return Note(record_entity=entity, record_key=key, text=text, received_at=datetime(2026, 11, 22, 14, 3, tzinfo=UTC),
                sender="+1*******23", reference="SM" + uuid.uuid4().hex)


def test_a_reply_on_an_order_becomes_comment_lines(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    erp.add_purchase_order("P1", "S1", [(1, 5)])
    reply = note("PorMasterHdr", "P1", "Gerne! Lieferung am Freitag 🚚 " + "und noch viel mehr Text " * 6)
    write_note(connection(erp), reply, secrets=SECRETS, http=http, stores=stores)
    comments = erp.comments("P1")
    assert comments[0] == f"SMS 2026-11-22 14:03 UTC +1*******23 ref {reply.reference}"
    assert comments[1].startswith("Gerne! Lieferung am Freitag ? und")  # what a Windows-1252 column keeps
    assert len(comments) == 3 and all(len(line) <= COMMENT_LENGTH for line in comments)
    posts = len(erp.requests_to(f"GET {erp.rest_url[len(erp.base_url):]}/Transaction/Post"))
    write_note(connection(erp), reply, secrets=SECRETS, http=http, stores=stores)  # the reply delivered again
    assert erp.comments("P1") == comments
    assert len(erp.requests_to(f"GET {erp.rest_url[len(erp.base_url):]}/Transaction/Post")) == posts
    assert len(erp.logons()) == 1 and len(erp.active_sessions()) == 1  # both writes used the one kept session
    # The framework lease is free again: a poll can take it.
    assert stores.leases.acquire(lease_name(connection(erp)), "poll", 10) is None


def test_a_write_syspro_ignored_is_a_permanent_failure(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    erp.add_purchase_order("P1", "S1")
    erp.drop_writes = True
    with pytest.raises(PermanentFailure, match="not on purchase order P1 after the write"):
        write_note(connection(erp), note("PorMasterHdr", "P1"), secrets=SECRETS, http=http, stores=stores)
    with pytest.raises(PermanentFailure, match="not on supplier S1 after the write"):
        write_note(connection(erp), note("ApSupplier", "S1"), secrets=SECRETS, http=http, stores=stores)
    erp.drop_writes = False
    with pytest.raises(SysproError, match="Purchase order 'P7' not on file"):
        write_note(connection(erp), note("PorMasterHdr", "P7"), secrets=SECRETS, http=http, stores=stores)
    with pytest.raises(PermanentFailure, match="cannot be written on 'GenMaster'"):
        write_note(connection(erp), note("GenMaster", "1000"), secrets=SECRETS, http=http, stores=stores)


def test_a_reply_on_an_invoice_goes_to_the_suppliers_custom_form(erp: FakeSyspro, stores: Stores,
                                                                  http: HttpClient) -> None:
    erp.add_invoice("S2", "INV-3", "10.00")
    reply = note("ApInvoice", "S2|INV-3", "Credit note follows. " * 20)
    write_note(connection(erp), reply, secrets=SECRETS, http=http, stores=stores)
    value = erp.custom_form_value(SUPPLIER_FORM_TYPE, "S2", SUPPLIER_NOTE_FIELD)
    assert value is not None and value.startswith(f"SMS 2026-11-22 14:03 UTC +1*******23 ref {reply.reference} INV-3: "
                                                  "Credit note follows.")
    assert len(value) == CUSTOM_FORM_VALUE_LENGTH and value.endswith("...")


def test_a_write_that_timed_out_is_not_sent_again(erp: FakeSyspro, stores: Stores) -> None:
    erp.add_purchase_order("P1", "S1")
    impatient = HttpClient(RetryPolicy(max_attempts=3, base_delay=0.01, read_timeout=0.3))
    posts = f"GET {erp.rest_url[len(erp.base_url):]}/Transaction/Post"
    erp.delay_next(1, seconds=1.0, match=posts)
    reply = note("PorMasterHdr", "P1")
    with pytest.raises(HttpFailure, match="may have been processed"):
        write_note(connection(erp), reply, secrets=SECRETS, http=impatient, stores=stores)
    assert len(erp.requests_to(posts)) == 1
    # The stalled write landed on the kept session: the reply delivered again reads the order
    # first, finds the note and writes nothing, and so does a third delivery.
    wait_for(lambda: erp.handled(posts) == 1, what="the stalled write answered")
    write_note(connection(erp), reply, secrets=SECRETS, http=impatient, stores=stores)
    write_note(connection(erp), reply, secrets=SECRETS, http=impatient, stores=stores)
    assert len(erp.requests_to(posts)) == 1 and len(erp.comments("P1")) == 2
    impatient.close()


def test_a_note_waits_while_a_poll_holds_the_operator(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    erp.add_purchase_order("P1", "S1")
    assert stores.leases.acquire(lease_name(connection(erp)), "a-poll", 30) is None
    with pytest.raises(RetryLater, match="a poll is using the SYSPRO operator") as waiting:
        write_note(connection(erp), note("PorMasterHdr", "P1"), secrets=SECRETS, http=http, stores=stores)
    assert erp.logons() == []
    # Asked again within seconds, as a poll ends, not when its 30 s lease would run out.
    assert 1.0 <= waiting.value.delay <= 5.0


# --- memory ----------------------------------------------------------------------------------------


class CountingBus(RecordingBus):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def send(self, queue: str, envelope: object, delay_seconds: float = 0) -> None:
        self.count += 1


def peak_memory_of_a_poll(erp: FakeSyspro, stores: Stores, http: HttpClient, records: int, name: str) -> int:
    """Invoices (no line lookups) in pages of 500: a few requests, so the URL caches of requests stay small."""
    conn = connection(erp, name)
    poll(conn, ["ApInvoice"], stores, CountingBus(), http, page_size=500)
    erp.add_synthetic_invoices(records, supplier="S1")
    bus = CountingBus()
    tracemalloc.start()
    try:
        poll(conn, ["ApInvoice"], stores, bus, http, page_size=500)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bus.count == records
    return peak


def test_memory_does_not_grow_with_the_number_of_records(erp: FakeSyspro, stores: Stores, http: HttpClient) -> None:
    erp.keep_log = False  # the fake runs in this process: its request log would be measured too
    # At most two pages are held at once (the one being handed out while the next is read).
    small = peak_memory_of_a_poll(erp, stores, http, 1_000, "syspro-small")  # two pages
    large = peak_memory_of_a_poll(erp, stores, http, 6_000, "syspro-large")  # twelve pages
    # Kept records would cost about a kilobyte each: 5,000 more would show as megabytes.
    assert large < small * 1.5, (small, large)


def test_an_unexpected_error_logs_on_again_and_the_read_succeeds(erp: FakeSyspro, http: HttpClient) -> None:
    reader = EnetReader(EnetSession(connection(erp), SECRETS, http))
    query = TableQuery("ApSupplier", ("Supplier",), ("Supplier",), 10)
    assert len(reader.rows(query)) == 2
    first_session = reader.session.logons
    erp.on_query(1, table="ApSupplier", action="error", text="ERROR: Object reference not set to an instance")
    assert [row["Supplier"] for row in reader.rows(query)] == ["S1", "S2"]
    assert reader.session.logons == first_session + 1
    assert len(erp.requests_to(f"GET {REST}/Logoff")) == 1  # the old session gave its seat back
    reader.close()


def test_an_unexpected_error_twice_fails_with_the_answers_text(erp: FakeSyspro, stores: Stores,
                                                               http: HttpClient) -> None:
    erp.add_purchase_order("P1", "S1")
    erp.on_query(1, table="PorMasterHdr", action="error", times=2, text="ERROR: Unexpected e.net failure 42")
    with pytest.raises(SysproError, match=r"^SYSPRO Query/Query COMFND: ERROR: Unexpected e.net failure 42$"):
        poll(connection(erp), ["PorMasterHdr"], stores, RecordingBus(), http)
    assert len(erp.logons()) == 2  # the first logon and one retry on a fresh session
    assert stores.watermarks.get("syspro-main", "PorMasterHdr") is None
