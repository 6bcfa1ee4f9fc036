"""QAD: the adapter against the fake tenant, the poll framework against Azurite.

What each change becomes, that nothing is lost or repeated over many polls and page edges, a
poll that fails on page 3, expired sessions and tokens, the domain on every request, the
three-way match check, notes through QXtend, and memory that stays flat however many rows.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.erp.polling import Note, Source
from shared.erp.qad import adapter as qad
from shared.erp.qad.client import QadClient, QadLoginRefused, QadPagingError
from shared.erp.qad.connection import QadConnection
from shared.erp.qad.qxtend import QXTEND_READ_TIMEOUT, QxtendClient, reset_qxtend_clients
from shared.http import HttpClient, HttpFailure, RetryLater, RetryPolicy
from shared.model import ERP_EVENTS, Envelope
from shared.pipeline.consume import PermanentFailure
from shared.pipeline.poll import poll_cycle
from shared.storage.secrets import EnvSecretProvider, reset_secret_provider
from shared.storage.tables import Stores
from tests.fakes.qad import DEFAULT_PASSWORD, DEFAULT_USER, FakeQad

ALL = (qad.RECEIPTS_ENTITY, qad.INVOICES_ENTITY, qad.PURCHASE_ORDERS_ENTITY)
SAME_MOMENT = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


class RecordingBus:
    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        assert queue == ERP_EVENTS
        self.sent.append(envelope)

    def send_many(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.send(queue, envelope)

    def dead_letter(self, queue: str, body: object, reason: str) -> None:
        raise AssertionError(reason)

    def close(self) -> None:
        pass

    def take(self) -> list[Envelope]:
        sent, self.sent = self.sent, []
        return sent


class CountingBus(RecordingBus):
    """Counts instead of keeping: memory must not grow with what is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        self.count += 1


@pytest.fixture
def fake() -> Iterator[FakeQad]:
    server = FakeQad().start()
    server.add_domain("20CAN")
    for domain in ("10USA", "20CAN"):
        server.add_supplier("S-100", "Acme Steel", "(415) 555-0100", domain=domain)
        server.add_supplier("S-200", "Globex Parts", "+44 20 7946 0958", domain=domain)
    yield server
    server.stop()
    assert server.handler_errors == []


def connection(fake: FakeQad, name: str = "qad-main", domain: str = "10USA", **extra: Any) -> QadConnection:
    body = {"kind": "qad", "base_url": fake.tenant_url, "domain": domain, "username": DEFAULT_USER,
            "password": {"secret": "qad-it-password"}, "page_size": 2, "poll": {"entities": list(ALL)},
            "qxtend": {"url": fake.qxtend_url, "receiver": "QADERP", "comment_type": "SMS"}, **extra}
    return config_from_dict({"connections": {name: body}}).connections[name]  # type: ignore[return-value]


@dataclass
class Poller:
    """Polls one connection as the worker does, with a client that lives across polls."""

    connection: QadConnection
    stores: Stores
    client: QadClient

    def source(self) -> Source:
        cycle = qad.QadCycle(self.client)
        entities = {name: replace(entity, page_size=self.connection.page_size)
                    for name, entity in qad.ENTITIES.items()}
        return Source(cycle, entities, close=cycle.close)

    def poll(self, *names: str, bus: RecordingBus | None = None) -> list[Envelope]:
        bus = bus or RecordingBus()
        source = self.source()
        try:
            poll_cycle(self.connection, self.connection.poll, source, names or ALL, self.stores, bus)
        finally:
            source.close()
        return bus.take()


def poller(fake: FakeQad, stores: Stores, **extra: Any) -> Poller:
    conn = connection(fake, **extra)
    secrets = EnvSecretProvider(env={"qad-it-password": DEFAULT_PASSWORD, "qad-it-client": "app-secret"})
    return Poller(conn, stores, QadClient(conn, secrets, http=HttpClient(FAST)))


def by_entity(envelopes: list[Envelope]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for envelope in envelopes:
        found.setdefault(envelope.payload["entity"], []).append(envelope.payload)
    return found


def test_each_change_is_reported_once_and_again_only_when_it_changes_again(fake: FakeQad, stores: Stores) -> None:
    fake.add_receipt("PO-OLD", 1, "BOLT", 1, supplier="S-100")
    fake.add_po("PO-OLD", "S-100", 10.0)
    qad_main = poller(fake, stores)
    assert qad_main.poll() == []  # the first poll learns where things stand: history is not news

    trnbr = fake.add_receipt("PO100", 1, "BOLT", 5, supplier="S-100", cost=2.5)
    fake.add_po("PO200", "S-200", 1234.5, lines=3)
    fake.add_po("PO201", "S-200", 99.0, confirmed=True)  # approved already: not pending
    invoice = fake.add_invoice("INV-9", "S-200", "PO200", 15000.0, line=1)
    fake.add_invoice("INV-MATCHED", "S-200", "PO-OLD", 5.0, match_status="FinishedAPMatching")
    changes = by_entity(qad_main.poll())
    [receipt] = changes[qad.RECEIPTS_ENTITY]
    assert receipt["key"] == str(trnbr) and receipt["stamp"] == trnbr
    assert (receipt["record_entity"], receipt["record_key"]) == ("Receipt", f"10USA|PO100|RC{trnbr}")
    assert {k: receipt["fields"][k] for k in ("po_number", "quantity", "amount", "supplier_name", "supplier_phone")} \
        == {"po_number": "PO100", "quantity": 5.0, "amount": 12.5, "supplier_name": "Acme Steel",
            "supplier_phone": "+14155550100"}
    [blocked] = changes[qad.INVOICES_ENTITY]
    assert (blocked["record_entity"], blocked["record_key"]) == ("SupplierInvoice", "10USA|S-200|INV-9")
    assert blocked["fields"]["status"] == "awaiting-receipt" and blocked["fields"]["supplier_phone"] == \
        "+442079460958"
    [po] = changes[qad.PURCHASE_ORDERS_ENTITY]
    assert (po["record_entity"], po["record_key"]) == ("PurchaseOrder", "10USA|PO200")
    assert (po["fields"]["amount"], po["fields"]["approval"], po["fields"]["line_count"]) == (1234.5, "pending", 3)

    assert qad_main.poll() == []  # nothing new

    fake.change_po("PO200", total=1500.0)
    fake.change_invoice(invoice, held=True)
    again = by_entity(qad_main.poll())
    assert [p["record_key"] for p in again[qad.PURCHASE_ORDERS_ENTITY]] == ["10USA|PO200"]
    assert again[qad.INVOICES_ENTITY][0]["fields"]["on_hold"] == "yes"
    assert qad.RECEIPTS_ENTITY not in again

    fake.change_po("PO200", status="C")  # closed: no longer waiting for approval, nothing to say
    assert qad_main.poll() == []


def test_ten_polls_with_receipts_sharing_a_moment_across_page_edges_lose_and_repeat_nothing(
        fake: FakeQad, stores: Stores) -> None:
    qad_main = poller(fake, stores)
    fake.add_receipt("PO-0", 1, "P", 1, supplier="S-100", when=SAME_MOMENT)
    assert qad_main.poll(qad.RECEIPTS_ENTITY, qad.PURCHASE_ORDERS_ENTITY) == []
    added: list[int] = []
    keys: list[str] = []
    po_changes: list[str] = []
    for poll in range(10):
        # 0 to 5 receipts per poll, all at the same moment, so equal times straddle every page edge (page size 2).
        added += [fake.add_receipt(f"PO-{poll}", n, "P", 1, supplier="S-100", when=SAME_MOMENT)
                  for n in range(poll % 6)]
        if poll % 3 == 0:
            fake.add_po(f"PO-N{poll}", "S-100", 10.0 + poll)
        sent = qad_main.poll(qad.RECEIPTS_ENTITY, qad.PURCHASE_ORDERS_ENTITY)
        keys += [envelope.key for envelope in sent]
        po_changes += [e.payload["record_key"] for e in sent if e.payload["entity"] == qad.PURCHASE_ORDERS_ENTITY]
    receipts = [int(key.split("|")[2]) for key in keys if f"|{qad.RECEIPTS_ENTITY}|" in key]
    assert sorted(receipts) == added and len(set(keys)) == len(keys)
    assert po_changes == ["10USA|PO-N0", "10USA|PO-N3", "10USA|PO-N6", "10USA|PO-N9"]
    assert stores.watermarks.get("qad-main", qad.RECEIPTS_ENTITY) == max(added)


def test_a_poll_failing_on_page_three_resumes_without_loss_or_repeat_while_others_go_on(
        fake: FakeQad, stores: Stores) -> None:
    usa, can = poller(fake, stores), poller(fake, stores, name="qad-canada", domain="20CAN")
    fake.add_receipt("PO-0", 1, "P", 1, supplier="S-100")
    fake.add_receipt("PO-0", 1, "P", 1, supplier="S-100", domain="20CAN")
    assert usa.poll(qad.RECEIPTS_ENTITY) == [] and can.poll(qad.RECEIPTS_ENTITY) == []
    watermark = stores.watermarks.get("qad-main", qad.RECEIPTS_ENTITY)
    ours = [fake.add_receipt("PO-1", n, "P", 1, supplier="S-100") for n in range(1, 8)]
    theirs = [fake.add_receipt("PO-9", n, "P", 1, supplier="S-200", domain="20CAN") for n in range(1, 8)]
    fake.fail_page(3, browse="receipts", domain="10USA")  # every attempt at 10USA's page 3 fails

    bus = RecordingBus()
    with pytest.raises(HttpFailure) as failed:
        usa.poll(qad.RECEIPTS_ENTITY, bus=bus)
    assert failed.value.status == 500
    first_try = bus.take()
    assert [e.payload["stamp"] for e in first_try] == ours[:4]  # pages 1 and 2 went out before page 3 failed
    assert stores.watermarks.get("qad-main", qad.RECEIPTS_ENTITY) == watermark  # not moved

    assert [e.payload["stamp"] for e in can.poll(qad.RECEIPTS_ENTITY)] == theirs  # the other connection went on

    fake.clear_failures()
    second_try = usa.poll(qad.RECEIPTS_ENTITY)
    assert [e.payload["stamp"] for e in second_try] == ours
    # Downstream, an event key is claimed once: what the first try sent is not sent again.
    claimed = [e.payload["stamp"] for e in first_try + second_try if stores.dedup.claim("event", e.key)]
    assert claimed == ours


@pytest.mark.parametrize("answer", ["401", "redirect", "html"])
def test_an_expired_session_logs_in_once_and_the_poll_goes_on(fake: FakeQad, stores: Stores, answer: str) -> None:
    fake.add_receipt("PO0", 1, "P", 1, supplier="S-100")
    qad_main = poller(fake, stores)
    qad_main.poll(qad.RECEIPTS_ENTITY)
    qad_main.poll(qad.RECEIPTS_ENTITY)
    assert fake.logins == 1  # the session is kept between polls
    new = fake.add_receipt("PO1", 1, "P", 1, supplier="S-100")
    fake.expire_sessions(answer=answer)
    assert [e.payload["stamp"] for e in qad_main.poll(qad.RECEIPTS_ENTITY)] == [new]
    assert fake.logins == 2
    logins = fake.requests_to("POST /qad-central/j_spring_security_check")
    assert all("j_password" not in login.target and login.form_value("j_password") == DEFAULT_PASSWORD
               for login in logins)  # the password travels in the body, never in the URL


def test_a_refused_login_fails_the_poll_for_good(fake: FakeQad, stores: Stores) -> None:
    conn = connection(fake)
    client = QadClient(conn, EnvSecretProvider(env={"qad-it-password": "wrong"}), http=HttpClient(FAST))
    with pytest.raises(QadLoginRefused, match=r"refused the login of 'mfg@qad\.com'") as refused:
        Poller(conn, stores, client).poll(qad.RECEIPTS_ENTITY)
    assert "wrong" not in str(refused.value)


def test_oauth_polls_with_a_bearer_token_and_renews_it_once_after_a_401(fake: FakeQad, stores: Stores) -> None:
    fake.register_oauth_client("app", "app-secret")
    fake.add_receipt("PO0", 1, "P", 1, supplier="S-100")
    qad_main = poller(fake, stores, auth="oauth", client_id="app", client_secret={"secret": "qad-it-client"})
    qad_main.poll(qad.RECEIPTS_ENTITY)
    new = fake.add_receipt("PO1", 1, "P", 1, supplier="S-100")
    fake.expire_sessions()
    assert [e.payload["stamp"] for e in qad_main.poll(qad.RECEIPTS_ENTITY)] == [new]
    assert fake.tokens_issued == 2 and fake.logins == 0
    assert all(r.headers["Authorization"].startswith("Bearer ")
               for r in fake.requests_to("GET /qad-central/api/qracore/browses"))


def test_a_throttled_browse_waits_for_retry_after(fake: FakeQad, stores: Stores) -> None:
    fake.add_receipt("PO0", 1, "P", 1, supplier="S-100")
    qad_main = poller(fake, stores)
    qad_main.poll(qad.RECEIPTS_ENTITY)
    new = fake.add_receipt("PO1", 1, "P", 1, supplier="S-100")
    fake.clear_log()
    fake.fail_next(status=429, headers={"Retry-After": "1"}, match="GET /qad-central/api/qracore/browses")
    assert [e.payload["stamp"] for e in qad_main.poll(qad.RECEIPTS_ENTITY)] == [new]
    throttled, retried = fake.requests_to("GET /qad-central/api/qracore/browses")[:2]
    assert throttled.scripted == "fail" and retried.at - throttled.at >= 1.0


def test_every_request_is_scoped_to_the_domain_and_other_domains_rows_are_dropped(
        fake: FakeQad, stores: Stores) -> None:
    fake.add_receipt("PO0", 1, "P", 1, supplier="S-100")
    qad_main = poller(fake, stores)
    qad_main.poll()
    fake.add_receipt("PO1", 1, "P", 1, supplier="S-100", domain="20CAN")
    fake.add_po("PO-CAN", "S-100", 5.0, domain="20CAN")
    fake.add_invoice("INV-CAN", "S-100", "PO-CAN", 5.0, domain="20CAN")
    assert qad_main.poll() == []
    browses = fake.requests_to("GET /qad-central/api/qracore/browses")
    assert browses and all(any(f.split(",")[0].endswith(("_domain", "DomainCode")) and f.split(",")[2] == "10USA"
                               for f in request.query["filter"]) for request in browses)


def test_a_browse_that_ignores_the_key_order_stops_the_poll(fake: FakeQad, stores: Stores) -> None:
    qad_main = poller(fake, stores)
    fake.add_po("PO-B", "S-100", 1.0)
    fake.add_po("PO-A", "S-100", 1.0)
    fake.add_po("PO-C", "S-100", 1.0)
    original = fake._matching

    def unsorted(browse: Any, conditions: Any, sort: Any) -> Any:
        return iter(sorted(original(browse, conditions, None), key=lambda row: row["po_mstr.po_nbr"], reverse=True))

    fake._matching = unsorted  # type: ignore[method-assign]
    with pytest.raises(QadPagingError, match="not honoured"):
        qad_main.poll(qad.PURCHASE_ORDERS_ENTITY)


def test_an_invoice_is_not_blocked_by_a_receipt_posted_earlier(fake: FakeQad, stores: Stores) -> None:
    fake.add_receipt("PO-OLD", 2, "P", 1, supplier="S-100")  # posted long before
    qad_main = poller(fake, stores)
    qad_main.poll()
    fake.add_receipt("PO-NOW", 1, "P", 1, supplier="S-100")  # read in the same cycle, just before the invoices
    fake.add_invoice("INV-NOW", "S-100", "PO-NOW", 10.0, line=1)
    fake.add_invoice("INV-OLD", "S-100", "PO-OLD", 10.0, line=2)
    fake.add_invoice("INV-OTHER-LINE", "S-100", "PO-OLD", 10.0, line=3)
    fake.add_invoice("INV-WAITING", "S-100", "PO-NONE", 10.0)
    fake.clear_log()
    invoices = {p["fields"]["document"]: p["fields"] for p in by_entity(qad_main.poll())[qad.INVOICES_ENTITY]}
    assert {name: fields["status"] for name, fields in invoices.items()} == {
        "INV-NOW": "awaiting-match", "INV-OLD": "awaiting-match", "INV-OTHER-LINE": "awaiting-receipt",
        "INV-WAITING": "awaiting-receipt"}
    looked_up = [f for r in fake.requests_to("GET /qad-central/api/qracore/browses") for f in r.query["filter"]
                 if f.startswith("tr_hist.tr_nbr,")]
    assert sorted(looked_up) == ["tr_hist.tr_nbr,eq,PO-NONE,literal", "tr_hist.tr_nbr,eq,PO-OLD,literal",
                                 "tr_hist.tr_nbr,eq,PO-OLD,literal"]  # PO-NOW was read in this very cycle

    fake.add_receipt("PO-NONE", 1, "P", 1, supplier="S-100")
    [changed] = by_entity(qad_main.poll())[qad.INVOICES_ENTITY]  # its goods came: its state changed, once
    assert (changed["fields"]["document"], changed["fields"]["status"]) == ("INV-WAITING", "awaiting-match")


def test_suppliers_are_looked_up_once_per_supplier_per_cycle(fake: FakeQad, stores: Stores) -> None:
    fake.add_receipt("PO0", 1, "P", 1, supplier="S-100")
    qad_main = poller(fake, stores)
    qad_main.poll(qad.RECEIPTS_ENTITY)
    for n in range(6):
        fake.add_receipt(f"PO{n}", 1, "P", 1, supplier="S-100" if n % 2 else "s-200")
    fake.add_receipt("PO9", 1, "P", 1, supplier="S-404")  # not in the supplier master
    fake.clear_log()
    sent = qad_main.poll(qad.RECEIPTS_ENTITY)
    assert len(sent) == 7 and sent[-1].payload["fields"]["supplier_name"] == ""
    lookups = [r for r in fake.requests_to("GET /qad-central/api/qracore/browses")
               if r.query_value("browseId") == "urn:browse:mfg:vd_mstr_ad_mstr"]
    assert len(lookups) == 3


def test_browse_ids_can_be_renamed_per_connection(stores: Stores) -> None:
    fake = FakeQad(browse_ids={"receipts": "urn:browse:mfg:xx_receipts"}).start()
    try:
        fake.add_receipt("PO1", 1, "P", 1, supplier="S-1")
        qad_main = poller(fake, stores, browses={"receipts": "urn:browse:mfg:xx_receipts"})
        qad_main.poll(qad.RECEIPTS_ENTITY)
        assert stores.watermarks.get("qad-main", qad.RECEIPTS_ENTITY) is not None
    finally:
        fake.stop()


def test_memory_stays_flat_however_many_receipts_a_poll_reads(fake: FakeQad, stores: Stores) -> None:
    """Pages are streamed and per-cycle caches are bounded, so 5x the rows needs no more memory."""
    peaks = []
    for count in (2_000, 10_000):
        conn = connection(fake, name=f"qad-m{count}", page_size=500)
        client = QadClient(conn, EnvSecretProvider(env={"qad-it-password": DEFAULT_PASSWORD}))
        bus = CountingBus()
        fake.add_receipt("PO-X", 1, "P", 1, supplier="S-100")
        Poller(conn, stores, client).poll(qad.RECEIPTS_ENTITY, bus=bus)  # baseline
        fake.fill_receipts(count, suppliers=("S-100", "S-200"))
        source = Poller(conn, stores, client).source()
        source.client = qad.QadCycle(client, cache_limit=1_000)
        gc.collect()
        tracemalloc.start()
        try:
            poll_cycle(conn, conn.poll, source, [qad.RECEIPTS_ENTITY], stores, bus)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert bus.count == count
        client.close()
    assert peaks[1] < peaks[0] * 1.5, peaks


# --- notes ------------------------------------------------------------------------------------------


def note(entity: str, key: str, text: str = "Shipped today, tracking 1Z999") -> Note:
    return Note(entity, key, text, datetime.now(UTC) - timedelta(minutes=1), "+4*******58", "SM" + uuid.uuid4().hex)


@pytest.fixture
def notes_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("QAD_IT_PASSWORD", DEFAULT_PASSWORD)
    reset_secret_provider()
    reset_qxtend_clients()
    yield
    reset_qxtend_clients()
    reset_secret_provider()


def test_a_supplier_reply_becomes_a_comment_on_its_po_or_supplier(fake: FakeQad, notes_env: None) -> None:
    conn = connection(fake)
    reply = note("PurchaseOrder", "10USA|PO200")
    qad.write_note(conn, reply)
    qad.write_note(conn, note("SupplierInvoice", "10USA|S-200|INV-9", "Credit note follows"))
    [on_po] = fake.comments("PO200")
    assert on_po.domain == "10USA" and on_po.comment_type == "SMS" and on_po.username == DEFAULT_USER
    assert on_po.lines[1:] == [f"Message {reply.reference}", "Shipped today, tracking 1Z999"]
    [on_supplier] = fake.comments("S-200")
    assert on_supplier.lines[1].endswith(", re Invoice INV-9") and on_supplier.lines[2] == "Credit note follows"
    soap = fake.requests_to("POST /qxilive/services/QdocWebService")[0]
    assert soap.headers["SOAPAction"] == '""' and soap.content_type.startswith("text/xml")


def test_a_warning_counts_as_written_and_an_error_says_why(fake: FakeQad, notes_env: None) -> None:
    conn = connection(fake)
    fake.answer_qdoc_next("warning", "Comment already exists")
    qad.write_note(conn, note("PurchaseOrder", "10USA|PO200"))
    assert len(fake.comments("PO200")) == 1
    fake.answer_qdoc_next("error", "ERROR: Reference is not valid")
    with pytest.raises(PermanentFailure, match="Reference is not valid"):
        qad.write_note(conn, note("PurchaseOrder", "10USA|PO201"))
    fake.answer_qdoc_next("error", "Record in use by another user")
    with pytest.raises(RetryLater, match="in use"):
        qad.write_note(conn, note("PurchaseOrder", "10USA|PO201"))
    assert fake.comments("PO201") == []


def test_qxtend_credentials_of_their_own_are_used_when_given(fake: FakeQad, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_user("qxi-user", "qxi-secret-value")
    conn = connection(fake, qxtend={"url": fake.qxtend_url, "receiver": "QADERP", "username": "qxi-user",
                                    "password": {"secret": "qxi-password"}})
    client = QxtendClient(conn, EnvSecretProvider(env={"qxi-password": "qxi-secret-value"}))
    assert client.add_master_comment("PO1", ["hello"], message_id="SM1").succeeded
    assert fake.comments("PO1")[0].username == "qxi-user"
    wrong = QxtendClient(conn, EnvSecretProvider(env={"qxi-password": "nope"}))
    with pytest.raises(PermanentFailure, match="User ID or password is not valid"):
        wrong.add_master_comment("PO1", ["hello"], message_id="SM2")


def test_qxtend_failures_go_back_to_the_queue_and_calls_may_take_long(fake: FakeQad) -> None:
    conn = connection(fake)
    client = QxtendClient(conn, EnvSecretProvider(env={"qad-it-password": DEFAULT_PASSWORD}))
    assert 60 <= QXTEND_READ_TIMEOUT <= 120 and client._http.policy.read_timeout == QXTEND_READ_TIMEOUT
    fake.fail_next(status=500, body="<html>proxy error</html>", match="POST /qxilive")
    with pytest.raises(HttpFailure):  # not repeated inline: QAD may have applied it
        client.add_master_comment("PO1", ["x"], message_id="SM1")
    fault = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
             "<soapenv:Fault><faultstring>AppServer not available</faultstring></soapenv:Fault>"
             "</soapenv:Body></soapenv:Envelope>")
    fake.fail_next(status=500, body=fault, match="POST /qxilive")
    with pytest.raises(RetryLater, match="AppServer not available"):
        client.add_master_comment("PO1", ["x"], message_id="SM1")
    assert len(fake.requests_to("POST /qxilive")) == 2 and fake.comments() == []
    with pytest.raises(PermanentFailure, match="qxtend settings"):
        QxtendClient(replace(conn, qxtend=None), EnvSecretProvider(env={}))
