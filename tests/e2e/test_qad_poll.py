"""QAD polled by the real app: receipts, blocked invoices and POs awaiting approval reach people once.

The app runs under the local host with a QAD connection to the fake tenant and a Twilio
connection to the fake Twilio; polls are started by putting ``poll.run`` on poll-jobs, as the
scheduler does. This module starts an Azurite of its own: queue names are fixed, and the
session's shared app (the ``stack`` fixture) would otherwise take this app's messages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import Azurite, start_azurite
from shared.erp.qad.adapter import INVOICES_ENTITY, PURCHASE_ORDERS_ENTITY, RECEIPTS_ENTITY
from shared.model import POLL_JOBS, POLL_RUN, Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import Stores
from tests.e2e.conftest import FAST_HOST_JSON, app_values, audit_of
from tests.fakes.qad import DEFAULT_PASSWORD, DEFAULT_USER, FakeQad
from tests.fakes.twilio import FakeTwilio, Message, TwilioCredentials
from tests.support.app import local_app
from tests.support.waiting import wait_for

ALL = [RECEIPTS_ENTITY, INVOICES_ENTITY, PURCHASE_ORDERS_ENTITY]
STOREKEEPER = "+14155559801"  # told about goods received
AP_CLERK = "+14155559802"  # told about invoices blocked in the three-way match; called when they are large
SUPPLIER_PHONE, SUPPLIER_E164 = "(415) 555-0142", "+14155550142"
CANADA_DESK = "+14155559803"


@dataclass
class QadStack:
    base_url: str
    qad: FakeQad
    twilio: FakeTwilio
    creds: TwilioCredentials
    azurite: Azurite
    stores: Stores

    def poll(self, connection: str = "qad-main", entities: list[str] = ALL) -> None:
        bus = StorageQueueBus(StorageSettings(self.azurite.connection_string, None, None, None))
        try:
            bus.send(POLL_JOBS, Envelope(POLL_RUN, connection, f"test-poll|{uuid.uuid4().hex}",
                                         {"entities": entities}))
        finally:
            bus.close()

    def polled(self, connection: str = "qad-main") -> Callable[[], bool]:
        """Waits for the next poll of ``connection`` to finish: its last entity's read moves on."""
        before = self.stores.watermarks.get(connection, PURCHASE_ORDERS_ENTITY)
        return lambda: self.stores.watermarks.get(connection, PURCHASE_ORDERS_ENTITY) not in (None, before)

    def poll_and_wait(self, connection: str = "qad-main") -> None:
        done = self.polled(connection)
        self.poll(connection)
        wait_for(done, what=f"a poll of {connection}")

    def sms(self, to: str, containing: str = "") -> list[Message]:
        return [message for message in self.twilio.messages(to=to) if containing in message.body]

    def audit(self, record: str) -> dict:
        return audit_of(self.base_url, record, reveal_texts=True)


def qad_connection(fake: FakeQad, domain: str) -> dict[str, Any]:
    return {"kind": "qad", "base_url": fake.tenant_url, "domain": domain, "username": DEFAULT_USER,
            "password": {"secret": "qad-e2e-password"}, "page_size": 2,
            "poll": {"entities": ALL, "interval_minutes": 1440},  # the test starts polls itself
            "qxtend": {"url": fake.qxtend_url, "receiver": "QADERP"}}


def app_config(fake: FakeQad, twilio: FakeTwilio, creds: TwilioCredentials) -> dict:
    def rule(rule_id: str, source: str, event: str, to: list, template: str, channel: str = "sms",
             when: tuple = ()) -> dict:
        return {"id": rule_id, "source": source, "event": event, "channel": channel, "via": "twilio-main",
                "to": to, "template": template, "when": list(when)}

    blocked = {"field": "status", "op": "eq", "value": "awaiting-receipt"}
    return {
        "connections": {
            "qad-main": qad_connection(fake, "10USA"),
            "qad-canada": qad_connection(fake, "20CAN"),
            "twilio-main": {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
                            "api_key_secret": {"secret": "twilio-api-key-secret"},
                            "auth_token": {"secret": "twilio-auth-token"}, "from_number": creds.phone_number,
                            "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url},
        },
        "rules": [
            rule("receipt-sms", "qad-main", RECEIPTS_ENTITY, [STOREKEEPER], "qad-receipt-posted"),
            rule("blocked-invoice-sms", "qad-main", INVOICES_ENTITY, [AP_CLERK], "qad-invoice-awaiting-receipt",
                 when=(blocked,)),
            rule("blocked-invoice-call", "qad-main", INVOICES_ENTITY, [AP_CLERK], "qad-invoice-awaiting-receipt",
                 channel="voice", when=(blocked, {"field": "amount", "op": "gt", "value": 10000})),
            rule("po-approval-sms", "qad-main", PURCHASE_ORDERS_ENTITY, [{"field": "supplier_phone"}],
                 "qad-po-approval"),
            rule("canada-receipt-sms", "qad-canada", RECEIPTS_ENTITY, [CANADA_DESK], "qad-receipt-posted"),
        ],
    }


@pytest.fixture(scope="module")
def qad_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QadStack]:
    azurite = start_azurite()
    fake = FakeQad().start()
    twilio = FakeTwilio().start()
    stores: Stores | None = None
    try:
        fake.add_domain("20CAN")
        for domain in ("10USA", "20CAN"):
            fake.add_supplier("S-300", "Acme Steel", SUPPLIER_PHONE, domain=domain)
            fake.add_receipt("PO-OLD", 1, "BOLT", 1, supplier="S-300", domain=domain)  # history, before connecting
        creds = twilio.add_test_account()
        prefix = "q" + uuid.uuid4().hex[:10]
        values = {**app_values(azurite.connection_string, prefix, creds), "QAD_E2E_PASSWORD": DEFAULT_PASSWORD}
        stores = Stores.open(StorageSettings(azurite.connection_string, None, None, None), prefix)
        folder: Path = tmp_path_factory.mktemp("qad-e2e")
        with local_app(folder, config=app_config(fake, twilio, creds), values=values,
                       host_json=FAST_HOST_JSON) as app:
            stack = QadStack(app.base_url, fake, twilio, creds, azurite, stores)
            stack.poll_and_wait("qad-main")  # the first polls learn where things stand; nothing is sent
            stack.poll_and_wait("qad-canada")
            yield stack
    finally:
        if stores is not None:
            stores.close()
        for server in (twilio, fake):
            server.stop()
        azurite.stop()


def test_changed_records_reach_people_once_and_again_only_when_changed_again(qad_stack: QadStack) -> None:
    stack, fake = qad_stack, qad_stack.qad
    assert stack.twilio.messages() == [] and stack.twilio.calls() == []  # the first poll sent nothing
    fake.add_receipt("PO300", 1, "BOLT-M12", 250, supplier="S-300")
    fake.add_po("PO301", "S-300", 1234.5)
    fake.add_invoice("INV-800", "S-300", "PO302", 800.0)
    fake.add_invoice("INV-48K", "S-300", "PO303", 48250.0)
    stack.poll()

    [receipt] = wait_for(lambda: stack.sms(STOREKEEPER, "PO300"), what="the receipt SMS")
    assert "250 x BOLT-M12 from Acme Steel" in receipt.body
    [po] = wait_for(lambda: stack.sms(SUPPLIER_E164, "PO301"), what="the PO approval SMS to the supplier")
    assert "awaits approval: 1,234.50 USD" in po.body
    wait_for(lambda: len(stack.sms(AP_CLERK, "is blocked")) == 2, what="two blocked-invoice SMS")
    [call] = wait_for(lambda: stack.twilio.calls(to=AP_CLERK), what="a call for the large blocked invoice")
    [request] = [r for r in stack.twilio.requests_to("POST /2010-04-01/Accounts/") if r.path.endswith("/Calls.json")]
    assert "INV-48K" in request.form_value("Twiml") and "48,250.00 USD" in request.form_value("Twiml")
    assert call.to == AP_CLERK

    stack.poll_and_wait()  # nothing new
    time.sleep(1.0)  # anything the poll had queued would be at Twilio by now
    assert len(stack.twilio.messages()) == 4 and len(stack.twilio.calls()) == 1

    fake.change_po("PO301", total=1500.0)
    stack.poll()
    wait_for(lambda: stack.sms(SUPPLIER_E164, "1,500.00 USD"), what="a new SMS for the changed PO")
    time.sleep(0.5)
    assert len(stack.sms(SUPPLIER_E164, "PO301")) == 2 and len(stack.twilio.messages()) == 5


def test_statuses_and_replies_are_recorded_against_the_qad_record(qad_stack: QadStack) -> None:
    stack, fake = qad_stack, qad_stack.qad
    fake.add_po("PO310", "S-300", 99.0)
    stack.poll()
    [message] = wait_for(lambda: stack.sms(SUPPLIER_E164, "PO310"), what="the PO SMS")
    record = "qad-main|PurchaseOrder|10USA|PO310"
    for status in ("sent", "delivered"):
        stack.twilio.advance_message(message.sid, status)
    wait_for(lambda: [c["status"] for c in stack.audit(record)["contacts"]] == ["delivered"], what="delivered")
    reply = stack.twilio.inbound_sms_params(SUPPLIER_E164, stack.creds.phone_number, "Approved by phone, ship it")
    answer = stack.twilio.send_status_callback(f"{stack.base_url}/api/twilio/inbound/twilio-main", reply)
    assert answer.status_code == 200
    wait_for(lambda: "reply" in [e["step"] for e in stack.audit(record)["entries"]], what="the reply on the PO")
    [entry] = [e for e in stack.audit(record)["entries"] if e["step"] == "reply"]
    assert entry["detail"]["text"] == "Approved by phone, ship it"
    # ... and written back to QAD as a master comment on the PO, once.
    wait_for(lambda: "note-written" in [e["step"] for e in stack.audit(record)["entries"]], what="the note")
    [comment] = fake.comments("PO310", domain="10USA")
    assert "Approved by phone, ship it" in " ".join(comment.lines)
    stack.twilio.send_status_callback(f"{stack.base_url}/api/twilio/inbound/twilio-main", reply)  # Twilio's retry
    wait_for(lambda: "duplicate" in [e["step"] for e in stack.audit(record)["entries"]], what="the retry seen")
    assert len(fake.comments("PO310", domain="10USA")) == 1
    assert [e["step"] for e in stack.audit(record)["entries"]].count("note-written") == 1


def test_a_poll_failing_on_page_three_resumes_while_another_connection_goes_on(qad_stack: QadStack) -> None:
    stack, fake = qad_stack, qad_stack.qad
    ours = [fake.add_receipt(f"PO4{n}", 1, "NUT", n, supplier="S-300") for n in range(5)]  # pages of 2: 3 pages
    for n in range(3):
        fake.add_receipt(f"PO9{n}", 1, "NUT", n, supplier="S-300", domain="20CAN")
    fake.fail_page(3, browse="receipts", domain="10USA")  # until cleared
    stack.poll("qad-main", [RECEIPTS_ENTITY])
    stack.poll("qad-canada", [RECEIPTS_ENTITY])

    wait_for(lambda: len(stack.sms(CANADA_DESK)) == 3, what="Canada's receipts, while 10USA's page 3 fails")
    wait_for(lambda: page_three_tries(fake, ours[3]) >= 1, what="10USA's page 3 tried")
    assert stack.sms(STOREKEEPER, "PO44 ") == []  # the only receipt on page 3: not read yet
    fake.clear_failures()  # the poll's next try of page 3 (inline, or the queue's retry of the poll) gets it

    wait_for(lambda: all(stack.sms(STOREKEEPER, f"PO4{n} ") for n in range(5)), timeout=60,
             what="every receipt of the failed poll")
    time.sleep(1.0)
    # Pages 1 and 2 may have been read twice (a retried poll): their receipts still went out once.
    assert [len(stack.sms(STOREKEEPER, f"PO4{n} ")) for n in range(5)] == [1, 1, 1, 1, 1]
    assert len(stack.sms(CANADA_DESK)) == 3


def page_three_tries(fake: FakeQad, after: int) -> int:
    """Requests for 10USA's receipts after ``after``: page 3 of that read."""
    return sum(1 for r in fake.requests_to("GET /qad-central/api/qracore/browses")
               if "tr_hist.tr_domain,eq,10USA,literal" in r.query.get("filter", ())
               and f"tr_hist.tr_trnbr,gt,{after},literal" in r.query.get("filter", ()))
