"""The Sage X3 adapter against the fake X3 over loopback, with the poll framework on Azurite."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.erp.polling import Note, Source
from shared.erp.sagex3.adapter import ENTITIES, SageX3Session, open_source, write_note
from shared.erp.sagex3.client import SageX3Api, SageX3Error, SageX3Unavailable, reset_sagex3_clients
from shared.erp.sagex3.connection import SageX3Connection
from shared.http import HttpClient, HttpFailure, RetryPolicy
from shared.pipeline.consume import PermanentFailure
from shared.pipeline.poll import poll_cycle, poll_entity
from shared.storage.secrets import EnvSecretProvider
from shared.storage.tables import Stores
from tests.fakes.sagex3 import FakeSageX3
from tests.support.app import REPO_ROOT

pytestmark = pytest.mark.timeout(120)

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = date(2026, 11, 22)
APP_SECRET = "connected-app-secret-0123456789abcdef"
PASSWORD = "x3-password"
SECRETS = {"x3-password": PASSWORD, "x3-app-secret": APP_SECRET}


class RecordingBus:
    """Keeps what would be queued; ``keys`` are the change keys in order."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, queue: str, envelope: Any, delay_seconds: float = 0) -> None:
        self.sent.append(envelope)

    def send_many(self, queue: str, envelopes: Sequence[Any]) -> None:
        for envelope in envelopes:
            self.send(queue, envelope)

    def dead_letter(self, queue: str, body: object, reason: str) -> None:
        raise AssertionError(reason)

    def close(self) -> None:
        pass

    @property
    def keys(self) -> list[str]:
        return [envelope.key for envelope in self.sent]

    def documents(self) -> list[str]:
        return [envelope.payload["fields"]["document"] for envelope in self.sent]


class CountingBus(RecordingBus):
    """Counts without keeping: memory stays flat however many changes go by."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def send(self, queue: str, envelope: Any, delay_seconds: float = 0) -> None:
        self.count += 1


@pytest.fixture
def x3() -> Iterator[FakeSageX3]:
    with FakeSageX3() as fake:
        fake.register_application("app-1", APP_SECRET, "admin")
        fake.add_supplier("S001", "Acme Parts", mobile="(415) 555-0134", phone="415 555 0100")
        fake.add_supplier("S002", "Bolt & Nut", phone="+44 20 7946 0958")
        yield fake
        assert fake.handler_errors == []


def connection(fake: FakeSageX3 | str, api: str = "rest", name: str = "x3", **extra: Any) -> SageX3Connection:
    base_url = fake if isinstance(fake, str) else fake.base_url
    body = {"kind": "sagex3", "base_url": base_url, "folder": "SEED", "username": "admin", "api": api,
            "password": {"secret": "x3-password"}, "client_id": "app-1", "client_secret": {"secret": "x3-app-secret"},
            "soap_pool_alias": "SEED", "poll": {"entities": list(ENTITIES), "interval_minutes": 10,
                                                "overlap_seconds": 120}, **extra}
    return config_from_dict({"connections": {name: body}}).connection_of(name, SageX3Connection)


def fast_http() -> HttpClient:
    return HttpClient(RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, read_timeout=5.0))


def source(conn: SageX3Connection, page_size: int | None = None, today: date = TODAY,
           http: HttpClient | None = None) -> Source:
    api = SageX3Api(conn, EnvSecretProvider(env=SECRETS), http=http or fast_http())
    entities = {name: dataclasses.replace(entity, page_size=page_size or entity.page_size)
                for name, entity in ENTITIES.items()}
    return Source(SageX3Session(api, conn, today=lambda: today), entities)


def poll(conn: SageX3Connection, src: Source, name: str, stores: Stores, now: datetime) -> RecordingBus:
    bus = RecordingBus()
    poll_entity(conn, conn.poll, src, src.entities[name], stores, bus, now=now)
    return bus


def claimed(stores: Stores, bus: RecordingBus) -> list[str]:
    """The keys downstream would treat as new: the claim every change goes through."""
    return [key for key in bus.keys if stores.dedup.claim("event", key)]


# --- changes: once each, none when nothing changed, again after a new change ----------------------------


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_each_change_alerts_once_and_a_later_change_again(x3: FakeSageX3, stores: Stores, api: str) -> None:
    for number in ("PO1", "PO2", "PO3"):
        x3.add_order(number, updated=START - timedelta(minutes=5))
    x3.add_order("OLD", updated=START - timedelta(days=2))
    conn = connection(x3, api)
    src = source(conn)

    first = poll(conn, src, "PORDER", stores, START)
    assert sorted(first.documents()) == ["PO1", "PO2", "PO3"]
    assert len(claimed(stores, first)) == 3
    fields = first.sent[0].payload["fields"]
    assert fields["supplier_name"] == "Acme Parts" and fields["supplier_phone"] == "+14155550134"
    assert fields["is_new"] is True and fields["amount"] == 1080.0 and fields["status"] == "open"
    assert first.sent[0].payload["record_entity"] == "PORDER" and first.sent[0].payload["record_key"] == "PO1"

    again = poll(conn, src, "PORDER", stores, START + timedelta(minutes=10))
    assert claimed(stores, again) == []  # the overlap re-read them, under the same keys

    x3.change("PORDER", "PO2", at=START + timedelta(minutes=12), APPFLG=3)
    later = poll(conn, src, "PORDER", stores, START + timedelta(minutes=20))
    new = claimed(stores, later)
    assert len(new) == 1 and "|PO2|" in new[0]
    changed = next(envelope for envelope in later.sent if envelope.key == new[0]).payload["fields"]
    assert changed["approved"] is True and changed["is_new"] is False


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_ten_overlapping_polls_with_shared_stamps_across_page_edges(x3: FakeSageX3, stores: Stores, api: str) -> None:
    conn = connection(x3, api)
    src = source(conn, page_size=3)
    versions: set[tuple[str, str]] = set()
    new_keys: list[str] = []
    for round_ in range(10):
        moment = START + timedelta(minutes=round_)
        for index in range(4):  # four rows share one stamp, across the 3-row page edge
            number = f"PO{round_:02d}-{index}"
            x3.add_order(number, updated=moment)
            versions.add((number, x3.stamp(moment)))
        if round_ >= 2:  # an older row changes again, on the stamp of this round
            number = f"PO{round_ - 2:02d}-1"
            x3.change("PORDER", number, at=moment)
            versions.add((number, x3.stamp(moment)))
        bus = poll(conn, src, "PORDER", stores, moment + timedelta(seconds=30))
        new_keys += claimed(stores, bus)
    found = {(key.split("|")[2], key.split("|")[3].replace("+00:00", "Z")) for key in new_keys}
    assert len(new_keys) == len(set(new_keys))  # nothing twice
    assert found == versions  # nothing missed


def test_a_poll_failing_on_page_3_resumes_and_other_connections_go_on(x3: FakeSageX3, stores: Stores) -> None:
    for index in range(7):
        x3.add_order(f"PO{index}", updated=START - timedelta(minutes=3))
    conn = connection(x3, name="x3-a")
    src = source(conn, page_size=2)
    x3.fail_nth(3, status=500, match="/api1/x3/erp/SEED/PORDER", times=3)  # page 3 and both retries
    x3.delay_next(1, seconds=1.0, match="/api1/x3/erp/SEED/PORDER")  # page 1 is slow: B runs meanwhile
    failed_bus = RecordingBus()
    failure: list[BaseException] = []

    def poll_a() -> None:
        try:
            poll_cycle(conn, conn.poll, src, ["PORDER"], stores, failed_bus, now=START)
        except HttpFailure as error:
            failure.append(error)

    worker = threading.Thread(target=poll_a)
    worker.start()
    with FakeSageX3() as other:
        other.add_supplier("S001", "Acme Parts")
        other.add_order("B1", updated=START - timedelta(minutes=1))
        conn_b = connection(other, name="x3-b")
        bus_b = RecordingBus()
        poll_cycle(conn_b, conn_b.poll, source(conn_b), ["PORDER"], stores, bus_b, now=START)
        assert bus_b.documents() == ["B1"] and worker.is_alive()  # B finished while A was still reading
    worker.join(timeout=30)
    [error] = failure
    assert error.status == 500 and "PORDER" in str(error) and "check the names" in str(error)
    assert failed_bus.documents() == ["PO0", "PO1", "PO2", "PO3"]  # pages 1 and 2 went out
    assert stores.watermarks.get("x3-a", "PORDER") is None  # the watermark did not move
    first_claims = claimed(stores, failed_bus)

    retry = poll(conn, src, "PORDER", stores, START + timedelta(minutes=1))
    second_claims = claimed(stores, retry)
    assert sorted(retry.documents()) == [f"PO{index}" for index in range(7)]
    assert len(first_claims) == 4 and len(second_claims) == 3  # nothing lost, nothing twice
    assert stores.watermarks.get("x3-a", "PORDER") == START - timedelta(minutes=3)


def test_throttling_waits_what_retry_after_says(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_order("PO1", updated=START - timedelta(minutes=1))
    conn = connection(x3)
    x3.fail_next(1, status=429, headers={"Retry-After": "1"}, match="/api1/x3/erp/SEED/PORDER")
    bus = poll(conn, source(conn), "PORDER", stores, START)
    assert bus.documents() == ["PO1"]
    first, second = x3.requests_to("/api1/x3/erp/SEED/PORDER")[:2]
    assert second.at - first.at >= 1.0


def test_an_unknown_property_gives_a_500_that_names_it(x3: FakeSageX3, stores: Stores) -> None:
    x3.publish("PORDER", "YLITE", "BPSUPPLIER")  # a representation without APPFLG
    conn = connection(x3, representations={"PORDER": {"class": "PORDER", "representation": "YLITE"}})
    with pytest.raises(HttpFailure) as caught:
        poll(conn, source(conn), "PORDER-approved", stores, START)
    assert caught.value.status == 500
    assert "Property APPFLG does not exist" in str(caught.value) and "YLITE" in str(caught.value)


def test_custom_representation_names_are_used(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_order("PO1", updated=START - timedelta(minutes=1))
    x3.publish("YPOH", "YPOHALL", "PORDER")
    conn = connection(x3, representations={"PORDER": {"class": "YPOH", "representation": "YPOHALL"}})
    assert poll(conn, source(conn), "PORDER", stores, START).documents() == ["PO1"]
    assert x3.requests_to("/api1/x3/erp/SEED/YPOH")[0].query_value("representation") == "YPOHALL.$query"


# --- GraphQL tokens -----------------------------------------------------------------------------------


def test_a_refused_token_is_renewed_once(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_order("PO1", updated=START - timedelta(minutes=1))
    conn = connection(x3, "graphql")
    x3.reject_tokens(1, code=50)
    assert poll(conn, source(conn), "PORDER", stores, START).documents() == ["PO1"]
    refused, accepted = x3.requests_to("POST /xtrem/api")[:2]
    assert refused.headers["Authorization"] != accepted.headers["Authorization"]
    assert accepted.headers["x-xtrem-endpoint"] == "SEED"


@pytest.mark.parametrize(("extra", "code", "meaning"), [
    ({"token_audience": "https://x3.example.com/xtrem/api"}, 45, "audience"),
    ({"client_id": "unknown-app"}, 41, "issuer"),
    ({"username": "someone-else"}, 42, "subject"),
])
def test_a_token_refused_twice_fails_with_what_the_number_means(x3: FakeSageX3, stores: Stores, extra: dict,
                                                                code: int, meaning: str) -> None:
    conn = connection(x3, "graphql", **extra)
    with pytest.raises(SageX3Error) as caught:
        poll(conn, source(conn), "PORDER", stores, START)
    assert f"Error {code}: Invalid token" in str(caught.value) and meaning in str(caught.value)
    assert len(x3.requests_to("POST /xtrem/api")) == 2  # renewed once, then gave up


def test_a_wrong_secret_is_error_50(x3: FakeSageX3, stores: Stores) -> None:
    conn = connection(x3, "graphql")
    api = SageX3Api(conn, EnvSecretProvider(env={**SECRETS, "x3-app-secret": "a-different-secret-of-32-bytes!!"}),
                    http=fast_http())
    with pytest.raises(SageX3Error, match=r"Error 50: Invalid token .*signature"):
        poll(conn, Source(SageX3Session(api, conn), ENTITIES), "PORDER", stores, START)


# --- a server that stops answering --------------------------------------------------------------------


def test_a_server_that_stops_answering_is_reported_within_a_bound(x3: FakeSageX3, stores: Stores) -> None:
    conn = connection(x3, timeout_seconds=1)
    x3.delay_next(5, seconds=4.0, match="/api1/")
    src = Source(SageX3Session(SageX3Api(conn, EnvSecretProvider(env=SECRETS)), conn), ENTITIES)
    started = time.monotonic()
    with pytest.raises(SageX3Unavailable) as caught:
        poll(conn, src, "PORDER", stores, START)
    assert time.monotonic() - started < 8  # three tries of one second, and short waits between
    message = str(caught.value)
    assert "did not answer" in message and "licence volume" in message and PASSWORD not in message
    assert caught.value.delay >= 60


# --- suppliers ----------------------------------------------------------------------------------------


def test_suppliers_are_looked_up_once_per_poll(x3: FakeSageX3, stores: Stores) -> None:
    for index in range(6):
        x3.add_order(f"PO{index}", supplier="S001" if index % 2 else "S002", updated=START - timedelta(minutes=1))
    conn = connection(x3)
    bus = poll(conn, source(conn, page_size=2), "PORDER", stores, START)
    phones = {envelope.payload["fields"]["supplier"]: envelope.payload["fields"]["supplier_phone"]
              for envelope in bus.sent}
    assert phones == {"S001": "+14155550134", "S002": "+442079460958"}  # mobile, else the address's phone
    assert len(x3.requests_to("/api1/x3/erp/SEED/BPSUPPLIER")) == 2
    assert len(x3.requests_to("/api1/x3/erp/SEED/CONTACT")) == 2
    assert len(x3.requests_to("/api1/x3/erp/SEED/BPADDRESS")) == 1  # S001 has a mobile
    poll(conn, source(conn), "PORDER", stores, START)  # a new poll reads them afresh
    assert len(x3.requests_to("/api1/x3/erp/SEED/BPSUPPLIER")) == 4


def test_a_supplier_detail_x3_will_not_give_costs_the_phone_not_the_poll(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_order("PO1", updated=START - timedelta(minutes=1))
    x3.unpublish("CONTACT")
    x3.unpublish("BPADDRESS")
    conn = connection(x3)
    [envelope] = poll(conn, source(conn), "PORDER", stores, START).sent
    assert envelope.payload["fields"]["supplier_phone"] == "" and envelope.payload["fields"]["supplier_name"]


# --- windows: due invoices, signatures, deliveries ------------------------------------------------------


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_invoices_due_soon_alert_once_per_due_date(x3: FakeSageX3, stores: Stores, api: str) -> None:
    x3.add_invoice("INV-SOON", updated=START, due=TODAY + timedelta(days=1), amount=1200)
    x3.add_invoice("INV-PAID", updated=START, due=TODAY + timedelta(days=2), amount=300, paid=300)
    x3.add_invoice("INV-TODAY", updated=START, due=TODAY, amount=50, paid=20)
    x3.add_invoice("INV-PAST", updated=START, due=TODAY - timedelta(days=1))
    x3.add_invoice("INV-NONE", updated=START, due=None)
    for index in range(12):
        x3.add_invoice(f"INV-LATER-{index:02d}", updated=START, due=TODAY + timedelta(days=30))
    conn = connection(x3, api)
    src = source(conn, page_size=2)

    first = poll(conn, src, "PINVOICE-due", stores, START)
    assert sorted(first.documents()) == ["INV-SOON", "INV-TODAY"]  # no baseline: a window alerts at once
    soon = next(envelope for envelope in first.sent if envelope.payload["key"] == "INV-SOON").payload["fields"]
    assert soon["days_left"] == 1 and soon["due_date"] == (TODAY + timedelta(days=1)).isoformat()
    reads = len(x3.requests_to("/api1/") if api == "rest" else x3.requests_to("POST /xtrem/api"))
    assert reads <= 2 + 3  # two pages reach past the window (plus supplier lookups): the far future is not read

    assert poll(conn, src, "PINVOICE-due", stores, START + timedelta(minutes=10)).sent == []
    x3.change("PINVOICE", "INV-SOON", STRDUDDAT=TODAY + timedelta(days=3))
    moved = poll(conn, src, "PINVOICE-due", stores, START + timedelta(minutes=20))
    assert moved.documents() == ["INV-SOON"]
    x3.change("PINVOICE", "INV-TODAY", PAYCUR=50)
    assert poll(conn, src, "PINVOICE-due", stores, START + timedelta(minutes=30)).sent == []


def test_an_order_alerts_once_when_it_is_signed(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_order("PO-SIGNED", updated=START - timedelta(days=1), signed=3)
    x3.add_order("PO-NEW", updated=START - timedelta(days=1), signed=1)
    conn = connection(x3)
    src = source(conn)
    assert poll(conn, src, "PORDER-approved", stores, START).sent == []  # the first poll records, it does not alert
    x3.change("PORDER", "PO-NEW", at=START, APPFLG=3)
    signed = poll(conn, src, "PORDER-approved", stores, START + timedelta(minutes=10))
    assert signed.documents() == ["PO-NEW"] and signed.sent[0].payload["fields"]["approval"] == "signed"
    x3.change("PORDER", "PO-NEW", at=START + timedelta(minutes=11), TOTORD=2000)
    assert poll(conn, src, "PORDER-approved", stores, START + timedelta(minutes=20)).sent == []
    x3.change("PORDER", "PO-NEW", at=START + timedelta(minutes=21), REVNUM=1)  # a revision, signed again
    assert poll(conn, src, "PORDER-approved", stores, START + timedelta(minutes=30)).documents() == ["PO-NEW"]


def test_deliveries_due_alert_once_per_order_and_date(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_order("PO1", updated=START)
    x3.add_line("PO1", 1, expected=TODAY)
    x3.add_line("PO1", 2, expected=TODAY, supplier="S001")
    x3.add_line("PO2", 1, expected=TODAY, received=10)  # all received
    x3.add_line("PO3", 1, expected=TODAY, closed=2)  # closed
    x3.add_line("PO4", 1, expected=TODAY + timedelta(days=1))  # not today
    conn = connection(x3)
    src = source(conn)
    first = poll(conn, src, "PORDER-delivery", stores, START)
    assert first.documents() == ["PO1"]
    assert first.sent[0].payload["record_key"] == "PO1" and first.sent[0].payload["record_entity"] == "PORDER"
    assert poll(conn, src, "PORDER-delivery", stores, START + timedelta(minutes=10)).sent == []
    wider = connection(x3, delivery_window_days=1)
    assert poll(wider, source(wider), "PORDER-delivery", stores, START).documents() == ["PO4"]


def test_payments_and_invoices_carry_their_fields(x3: FakeSageX3, stores: Stores) -> None:
    x3.add_payment("PAY1", supplier="S002", supplier_name="Bolt & Nut Ltd", updated=START - timedelta(minutes=1),
                   amount=99.5, currency="GBP")
    x3.add_invoice("INV1", updated=START - timedelta(minutes=1), due=TODAY, amount=10)
    conn = connection(x3)
    src = source(conn)
    [payment] = poll(conn, src, "PAYMENTH", stores, START).sent
    assert {name: payment.payload["fields"][name] for name in ("document", "supplier_name", "amount", "currency",
                                                                "reference", "supplier_phone")} == {
        "document": "PAY1", "supplier_name": "Bolt & Nut Ltd", "amount": 99.5, "currency": "GBP",
        "reference": "REF-PAY1", "supplier_phone": "+442079460958"}
    [invoice] = poll(conn, src, "PINVOICE", stores, START).sent
    assert invoice.payload["fields"]["supplier_document"] == "SUP-INV1" and invoice.payload["record_key"] == "INV1"


def test_open_source_serves_a_whole_poll_cycle(x3: FakeSageX3, stores: Stores,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X3_PASSWORD", PASSWORD)
    x3.add_order("PO1", updated=START - timedelta(minutes=1), signed=3)
    x3.add_invoice("INV1", updated=START - timedelta(minutes=1), due=datetime.now(UTC).date())
    conn = connection(x3)
    src = open_source(conn)
    try:
        bus = RecordingBus()
        counts = poll_cycle(conn, conn.poll, src, list(ENTITIES), stores, bus, now=START)
    finally:
        src.close()
        reset_sagex3_clients()
    assert counts["PORDER"] == 1 and counts["PORDER-approved"] == 0 and counts["PINVOICE-due"] == 1
    assert [envelope.payload["entity"] for envelope in bus.sent] == ["PORDER", "PINVOICE", "PINVOICE-due"]


# --- notes --------------------------------------------------------------------------------------------


@pytest.fixture
def notes(x3: FakeSageX3, monkeypatch: pytest.MonkeyPatch) -> Iterator[SageX3Connection]:
    monkeypatch.setenv("X3_PASSWORD", PASSWORD)
    x3.add_order("PO1", updated=START)
    yield connection(x3)
    reset_sagex3_clients()


def note(entity: str, key: str, text: str, reference: str) -> Note:
    return Note(entity, key, text, datetime(2026, 11, 22, 9, 15, tzinfo=UTC), "+1******0134", reference)


def test_a_reply_becomes_a_timestamped_note_on_the_document(x3: FakeSageX3, notes: SageX3Connection) -> None:
    write_note(notes, note("PORDER", "PO1", "Delivery moves to Friday", "SM001"))
    write_note(notes, note("PORDER", "PO1", "Delivery moves to Friday", "SM001"))  # redelivered: one line
    write_note(notes, note("PORDER", "PO1", "Confirmed", "SM002"))
    assert x3.record("PORDER", "PO1")["YNOTES"] == (
        "2026-11-22 09:15 UTC SMS from +1******0134: Delivery moves to Friday [SM001]\n"
        "2026-11-22 09:15 UTC SMS from +1******0134: Confirmed [SM002]")
    modifies = [request for request in x3.requests_to("POST /soap-generic/") if b"wss:modify" in request.body]
    assert len(modifies) == 2 and b"<poolAlias>SEED</poolAlias>" in modifies[0].body


def test_a_reply_can_go_on_the_supplier(x3: FakeSageX3, notes: SageX3Connection) -> None:
    write_note(notes, note("BPSUPPLIER", "S001", "Call me back", "SM003"))
    assert x3.record("BPSUPPLIER", "S001")["YNOTES"].endswith("Call me back [SM003]")


def test_a_reply_can_go_on_the_customer_once(x3: FakeSageX3, notes: SageX3Connection) -> None:
    x3.add_customer("C042", "Northwind")

    write_note(notes, note("BPCUSTOMER", "C042", "Please call after 3pm", "SM004"))
    write_note(notes, note("BPCUSTOMER", "C042", "Please call after 3pm", "SM004"))  # redelivered: one line

    assert x3.record("BPCUSTOMER", "C042")["YNOTES"] == (
        "2026-11-22 09:15 UTC SMS from +1******0134: Please call after 3pm [SM004]")
    modifies = [request for request in x3.requests_to("POST /soap-generic/") if b"wss:modify" in request.body]
    assert len(modifies) == 1 and b"YBPC" in modifies[0].body


@pytest.mark.parametrize(("entity", "key", "reason"), [
    ("PORDER", "NOPE", "Record NOPE does not exist"),
    ("GACCDUDATE", "X", "notes cannot be written on 'GACCDUDATE'"),
    ("PORDER", "US01|PO1", "is not a PORDER key"),
])
def test_notes_that_cannot_be_written_fail_for_good(notes: SageX3Connection, entity: str, key: str,
                                                    reason: str) -> None:
    with pytest.raises(PermanentFailure, match=reason):
        write_note(notes, note(entity, key, "text", "SM9"))


def test_notes_need_the_soap_pool(x3: FakeSageX3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X3_PASSWORD", PASSWORD)
    x3.add_order("PO1", updated=START)
    body = connection(x3)
    without_pool = dataclasses.replace(body, soap_pool_alias=None)
    try:
        with pytest.raises(SageX3Error, match="soap_pool_alias"):
            write_note(without_pool, note("PORDER", "PO1", "text", "SM9"))
    finally:
        reset_sagex3_clients()


# --- memory ---------------------------------------------------------------------------------------------


def peak_memory_of_a_poll(rows: int, stores: Stores) -> tuple[int, int]:
    """Peak bytes this process allocates while polling ``rows`` changed orders; the fake runs elsewhere."""
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.sagex3", "--rows", str(rows), "--start",
                               (START - timedelta(minutes=5)).isoformat(), "--per-second", str(rows)],
                              cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        base_url = (server.stdout.readline() if server.stdout else "").strip()
        conn = connection(base_url, name=f"mem-{rows}")
        src = source(conn)
        bus = CountingBus()
        poll(conn, src, "PORDER", stores, START)  # warm: imports, pools, supplier cache paths
        tracemalloc.start()
        try:
            bus = CountingBus()
            poll_entity(conn, conn.poll, src, src.entities["PORDER"], stores, bus, now=START)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return bus.count, peak
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=10)


def test_memory_does_not_grow_with_the_number_of_rows(stores: Stores) -> None:
    small_count, small_peak = peak_memory_of_a_poll(1_000, stores)
    large_count, large_peak = peak_memory_of_a_poll(10_000, stores)
    assert (small_count, large_count) == (1_000, 10_000)
    assert large_peak < small_peak * 1.5 + 512 * 1024, (small_peak, large_peak)



def test_names_x3_does_not_know_fail_for_good_with_its_message(x3: FakeSageX3, stores: Stores) -> None:
    conn = connection(x3, representations={"PORDER": {"class": "PORDER", "representation": "YNOPE"}})
    with pytest.raises(SageX3Error, match=r"HTTP 404\): Class PORDER with representation YNOPE not found"):
        poll(conn, source(conn), "PORDER", stores, START)
    x3.hide_graphql_field("changeNumber")
    graphql = connection(x3, "graphql")
    with pytest.raises(SageX3Error, match="Cannot query field 'changeNumber'"):
        poll(graphql, source(graphql), "PORDER", stores, START)
