"""Sage X3 polled by the real app under the local host: changed records reach suppliers by SMS, once each;
a supplier's reply is written to the record as a note, and a STOP stops further texts to that phone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from devhost.azurite import Azurite, start_azurite
from shared.model import POLL_JOBS, POLL_RUN, Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from tests.e2e.conftest import FAST_HOST_JSON, app_values, audit_of, text_in
from tests.fakes.sagex3 import FakeSageX3
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.support.app import LocalApp, local_app
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

CONNECTION = "x3-e2e"
SUPPLIER_MOBILE = "+14155559902"
AP_CLERK = "+14155559903"


@dataclass
class X3Stack:
    app: LocalApp
    x3: FakeSageX3
    twilio: FakeTwilio
    creds: TwilioCredentials
    azurite: Azurite

    def poll(self, *entities: str) -> None:
        bus = StorageQueueBus(StorageSettings(self.azurite.connection_string, None, None, None))
        try:
            bus.send(POLL_JOBS, Envelope(POLL_RUN, CONNECTION, f"test-poll|{uuid.uuid4().hex}",
                                         {"entities": list(entities)}))
        finally:
            bus.close()

    def texts(self, to: str, containing: str) -> list[str]:
        return [message.body for message in self.twilio.messages(to=to) if containing in message.body]

    def audit(self, record: str) -> list[dict]:
        """The audit entries of ``record``, oldest first."""
        return audit_of(self.app.base_url, record, reveal_texts=True)["entries"]

    def steps(self, record: str) -> list[str]:
        return [entry["step"] for entry in self.audit(record)]

    def text_in(self, params: dict[str, str]) -> None:
        text_in(self.twilio, self.app.base_url, params)

    def polls_logged(self, entity: str) -> int:
        return self.app.log().count(f"polled {CONNECTION}/{entity}")


def config(x3: FakeSageX3, twilio: FakeTwilio, creds: object) -> dict:
    return {
        "connections": {
            CONNECTION: {"kind": "sagex3", "base_url": x3.base_url, "folder": x3.folder, "username": x3.user,
                         "password": {"secret": "x3-e2e-password"}, "due_window_days": 3,
                         "soap_pool_alias": x3.pool_alias,  # replies are written back as notes through SOAP
                         # A daily slot: the test drives polls itself instead of waiting for the timer.
                         "poll": {"entities": ["PORDER", "PINVOICE-due"], "interval_minutes": 1440}},
            "twilio-main": {"kind": "twilio", "account_sid": creds.account_sid,  # type: ignore[attr-defined]
                            "api_key_sid": creds.api_key_sid,  # type: ignore[attr-defined]
                            "api_key_secret": {"secret": "twilio-api-key-secret"},
                            "auth_token": {"secret": "twilio-auth-token"},
                            "from_number": creds.phone_number,  # type: ignore[attr-defined]
                            "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url},
        },
        "rules": [
            {"id": "po-changed-to-supplier", "source": CONNECTION, "event": "PORDER", "channel": "sms",
             "via": "twilio-main", "to": [{"field": "supplier_phone"}], "template": "po-changed"},
            {"id": "invoice-due-to-clerk", "source": CONNECTION, "event": "PINVOICE-due", "channel": "sms",
             "via": "twilio-main", "to": [AP_CLERK], "template": "sagex3-invoice-due"},
        ],
        "templates": {"po-changed": {"sms": "PO {document} for {supplier_name}: {approval}, {money}."}},
    }


def own_azurite() -> Azurite:
    """An Azurite of its own: queue names are fixed, and the session's other app would take these messages."""
    try:
        return start_azurite()
    except (RuntimeError, TimeoutError):
        # A free port can be taken by another process before Azurite binds it: one more try, on new ports.
        return start_azurite()


@pytest.fixture(scope="module")
def x3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[X3Stack]:
    azurite = own_azurite()
    x3 = FakeSageX3().start()
    twilio = FakeTwilio().start()
    x3.add_supplier("S001", "Acme Parts", mobile=SUPPLIER_MOBILE)
    creds = twilio.add_test_account()
    values = {**app_values(azurite.connection_string, "x" + uuid.uuid4().hex[:10], creds),
              "X3_E2E_PASSWORD": x3.password}
    folder: Path = tmp_path_factory.mktemp("sagex3-e2e")
    try:
        with local_app(folder, config=config(x3, twilio, creds), values=values, host_json=FAST_HOST_JSON) as app:
            yield X3Stack(app, x3, twilio, creds, azurite)
    finally:
        twilio.stop()
        x3.stop()
        azurite.stop()


def test_changed_orders_become_one_sms_each_and_a_later_change_another(x3_stack: X3Stack) -> None:
    x3, now = x3_stack.x3, datetime.now(UTC)
    numbers = [f"PO-{uuid.uuid4().hex[:6].upper()}" for _ in range(3)]
    for number in numbers:
        x3.add_order(number, updated=now - timedelta(minutes=2), signed=3)
    x3_stack.poll("PORDER")
    for number in numbers:
        [text] = wait_for(lambda number=number: x3_stack.texts(SUPPLIER_MOBILE, number), what=f"an SMS for {number}")
        assert text == f"PO {number} for Acme Parts: signed, 1,080.00 USD."
    assert x3_stack.steps(f"{CONNECTION}|PORDER|{numbers[0]}")[0] == "received"

    x3_stack.poll("PORDER")  # nothing new: the overlap re-reads the same versions
    wait_for(lambda: "duplicate" in x3_stack.steps(f"{CONNECTION}|PORDER|{numbers[-1]}"), what="the re-read seen")
    assert [len(x3_stack.texts(SUPPLIER_MOBILE, number)) for number in numbers] == [1, 1, 1]

    x3.change("PORDER", numbers[1], APPFLG=1)  # changed again later
    x3_stack.poll("PORDER")
    texts = wait_for(lambda: [text for text in x3_stack.texts(SUPPLIER_MOBILE, numbers[1]) if "not signed" in text],
                     what="an SMS for the new change")
    assert len(texts) == 1
    wait_for(lambda: x3_stack.steps(f"{CONNECTION}|PORDER|{numbers[0]}").count("duplicate") >= 2,
             what="the third poll's re-read seen")
    assert [len(x3_stack.texts(SUPPLIER_MOBILE, number)) for number in numbers] == [1, 2, 1]


def test_invoices_due_soon_alert_once(x3_stack: X3Stack) -> None:
    x3, today = x3_stack.x3, date.today()
    due, paid = f"INV-{uuid.uuid4().hex[:6].upper()}", f"INV-{uuid.uuid4().hex[:6].upper()}"
    x3.add_invoice(due, updated=datetime.now(UTC), due=today + timedelta(days=2), amount=1500)
    x3.add_invoice(paid, updated=datetime.now(UTC), due=today + timedelta(days=1), amount=90, paid=90)
    polls = x3_stack.polls_logged("PINVOICE-due")
    x3_stack.poll("PINVOICE-due")
    [text] = wait_for(lambda: x3_stack.texts(AP_CLERK, due), what="an SMS for the invoice due")
    assert "Acme Parts: 1,500.00 USD due" in text
    x3_stack.poll("PINVOICE-due")  # the same window again: nothing new
    wait_for(lambda: x3_stack.polls_logged("PINVOICE-due") >= polls + 2, what="the second poll")
    assert len(x3_stack.texts(AP_CLERK, due)) == 1 and x3_stack.texts(AP_CLERK, paid) == []


def new_number(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6].upper()}"


def order_notes(x3: FakeSageX3, order: str) -> str:
    """What the order's notes field (YNOTES, where replies go) holds in X3."""
    row = x3.record("PORDER", order)
    assert row is not None, f"no order {order} in X3"
    return row["YNOTES"]


def test_a_supplier_reply_becomes_one_note_on_the_order(x3_stack: X3Stack) -> None:
    x3, phone = x3_stack.x3, "+14155559911"
    supplier, order = new_number("SR"), new_number("PO")
    x3.add_supplier(supplier, "Reply Parts", mobile=phone)
    x3.add_order(order, supplier=supplier, updated=datetime.now(UTC), signed=3)
    x3_stack.poll("PORDER")
    [text] = wait_for(lambda: x3_stack.texts(phone, order), what=f"an SMS for {order}")
    assert text.startswith(f"PO {order} for Reply Parts")

    reply = x3_stack.twilio.inbound_sms_params(phone, x3_stack.creds.phone_number, "Confirmed, ships Friday")
    x3_stack.text_in(reply)
    record = f"{CONNECTION}|PORDER|{order}"
    wait_for(lambda: "note-written" in x3_stack.steps(record), what="the reply written to X3")
    steps = x3_stack.steps(record)
    assert steps.index("reply") < steps.index("note-written")
    [entry] = [entry for entry in x3_stack.audit(record) if entry["step"] == "reply"]
    assert entry["detail"]["text"] == "Confirmed, ships Friday"
    # One line in the order's notes field, with the text and the SMS's id.
    notes = order_notes(x3, order)
    [line] = notes.splitlines()
    assert line.endswith(f": Confirmed, ships Friday [{reply['MessageSid']}]") and " SMS from " in line

    x3_stack.text_in(reply)  # Twilio posts the same SMS again
    wait_for(lambda: [entry for entry in x3_stack.audit(record) if entry["step"] == "duplicate"
                      and entry["detail"].get("message_sid") == reply["MessageSid"]], what="the repeat seen")
    assert order_notes(x3, order) == notes
    assert x3_stack.steps(record).count("note-written") == 1


def test_after_stop_a_supplier_gets_no_more_texts_and_others_still_do(x3_stack: X3Stack) -> None:
    x3, stopping, other = x3_stack.x3, "+14155559921", "+14155559922"
    stopper, goer = new_number("SS"), new_number("SG")
    first, held, sent = new_number("PO"), new_number("PO"), new_number("PO")
    x3.add_supplier(stopper, "Stop Parts", mobile=stopping)
    x3.add_supplier(goer, "Go-On Parts", mobile=other)
    x3.add_order(first, supplier=stopper, updated=datetime.now(UTC), signed=3)
    x3_stack.poll("PORDER")
    wait_for(lambda: x3_stack.texts(stopping, first), what=f"an SMS for {first}")

    x3_stack.text_in(x3_stack.twilio.inbound_sms_params(stopping, x3_stack.creds.phone_number, "STOP"))
    wait_for(lambda: "opted-out" in x3_stack.steps(f"{CONNECTION}|PORDER|{first}"), what="the STOP recorded")

    # The fake Twilio is not told about the STOP: only the app's own opt-out list can hold the text back.
    x3.add_order(held, supplier=stopper, updated=datetime.now(UTC), signed=3)
    x3.add_order(sent, supplier=goer, updated=datetime.now(UTC), signed=3)
    x3_stack.poll("PORDER")
    [text] = wait_for(lambda: x3_stack.texts(other, sent), what=f"an SMS for {sent} to the other supplier")
    assert text.startswith(f"PO {sent} for Go-On Parts")
    [entry] = wait_for(lambda: [entry for entry in x3_stack.audit(f"{CONNECTION}|PORDER|{held}")
                                if entry["step"] == "suppressed"], what=f"the SMS for {held} held back")
    assert entry["detail"]["status"] == "suppressed" and entry["detail"]["reason"] == "the recipient replied STOP"
    assert "sent" not in x3_stack.steps(f"{CONNECTION}|PORDER|{held}")
    assert x3_stack.texts(stopping, held) == []
    assert len(x3_stack.twilio.messages(to=stopping)) == 1  # only the first order's, from before the STOP
