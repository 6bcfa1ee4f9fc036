"""SYSPRO polls end to end: records changed in the fake SYSPRO become one SMS each at the fake Twilio,
and what suppliers text back is written to SYSPRO as a note, or stops further texts.

The app runs under the local host with its own Azurite: queue names are fixed, and the
session's shared app would otherwise take this module's poll jobs for a connection it
does not know.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devhost.azurite import Azurite, start_azurite
from shared.model import POLL_JOBS, POLL_RUN, Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from tests.e2e.conftest import FAST_HOST_JSON, app_values, audit_of, text_in
from tests.fakes.syspro import FakeSyspro
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.support.app import LocalApp, local_app
from tests.support.waiting import wait_for

CONNECTION = "syspro-e2e"
OPERATOR, PASSWORD = "MLCONNECT", "e2e-syspro-operator-password"
SUPPLIER_PHONES = {"S1": "+14155550142", "S2": "+14155550143"}
AP_PHONE = "+14155550199"


@dataclass
class SysproStack:
    app: LocalApp
    erp: FakeSyspro
    twilio: FakeTwilio
    creds: TwilioCredentials
    azurite: Azurite

    def poll(self, *entities: str) -> None:
        """Run one poll of the connection and wait until the app has read every entity."""
        before = {entity: self.polls_of(entity) for entity in entities}
        bus = StorageQueueBus(StorageSettings(self.azurite.connection_string, None, None, None))
        try:
            bus.send(POLL_JOBS, Envelope(POLL_RUN, CONNECTION, f"test-poll|{uuid.uuid4().hex}",
                                         {"entities": list(entities)}))
        finally:
            bus.close()
        for entity in entities:
            wait_for(lambda entity=entity: len(self.polls_of(entity)) > len(before[entity]),  # type: ignore[misc]
                     what=f"a poll of {entity}")

    def polls_of(self, entity: str) -> list[int]:
        """The number of changes each finished poll of ``entity`` found, oldest first."""
        pattern = re.compile(rf"polled {CONNECTION}/{re.escape(entity)}\b.*?: (\d+) change\(s\)")
        return [int(found) for found in pattern.findall(self.app.log())]

    def texts_to(self, phone: str) -> list[str]:
        return [message.body for message in self.twilio.messages(to=phone)]

    def past_baseline(self) -> None:
        """Make sure the first poll (which only finds where SYSPRO stands) is done: orders added now are news."""
        if not self.polls_of("PorMasterHdr"):
            self.poll("PorMasterHdr")

    def text_in(self, params: dict[str, str]) -> None:
        text_in(self.twilio, self.app.base_url, params)

    def audit(self, record: str) -> list[dict]:
        """The audit entries of ``record``, oldest first."""
        return audit_of(self.app.base_url, record, reveal_texts=True)["entries"]

    def steps(self, record: str) -> list[str]:
        return [entry["step"] for entry in self.audit(record)]


def order_record(order: str) -> str:
    return f"{CONNECTION}|PorMasterHdr|{order}"


@pytest.fixture(scope="module")
def syspro_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SysproStack]:
    azurite = start_azurite()
    erp = FakeSyspro().start()
    twilio = FakeTwilio().start()
    erp.add_operator(OPERATOR, PASSWORD)
    erp.add_company("EDU1")
    for supplier, phone in SUPPLIER_PHONES.items():
        erp.add_supplier(supplier, f"Supplier {supplier}", phone)
    erp.add_purchase_order("HIST-1", "S1")  # history the first poll finds and does not announce
    erp.add_invoice("S1", "HIST-1", "1.00")
    creds = twilio.add_test_account()
    config = {
        "connections": {
            CONNECTION: {"kind": "syspro", "base_url": erp.rest_url, "operator": OPERATOR,
                         "password": {"secret": "syspro-e2e-operator-password"}, "company_id": "EDU1",
                         # A daily slot: the test runs polls itself instead of waiting for the timer.
                         "poll": {"entities": ["PorMasterHdr", "ApInvoice"], "interval_minutes": 1440,
                                  "time_zone": "America/Chicago"}},
            "twilio-main": {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
                            "api_key_secret": {"secret": "twilio-api-key-secret"},
                            "auth_token": {"secret": "twilio-auth-token"}, "from_number": creds.phone_number,
                            "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url},
        },
        "rules": [
            {"id": "po-to-supplier", "source": CONNECTION, "event": "PorMasterHdr", "channel": "sms",
             "via": "twilio-main", "to": [{"field": "supplier_phone"}], "template": "syspro-po-approval"},
            {"id": "invoice-to-ap", "source": CONNECTION, "event": "ApInvoice", "channel": "sms",
             "via": "twilio-main", "to": [AP_PHONE], "template": "syspro-invoice-posted"},
        ],
    }
    values = {**app_values(azurite.connection_string, "s" + uuid.uuid4().hex[:10], creds),
              "SYSPRO_E2E_OPERATOR_PASSWORD": PASSWORD}
    folder: Path = tmp_path_factory.mktemp("syspro-e2e")
    try:
        with local_app(folder, config=config, values=values, host_json=FAST_HOST_JSON) as app:
            yield SysproStack(app, erp, twilio, creds, azurite)
    finally:
        twilio.stop()
        erp.stop()
        azurite.stop()


def test_changed_records_become_one_sms_each_and_only_once(syspro_stack: SysproStack) -> None:
    stack, erp = syspro_stack, syspro_stack.erp
    stack.poll("PorMasterHdr", "ApInvoice")
    assert stack.polls_of("PorMasterHdr")[-1] == 0  # the first poll only finds where SYSPRO stands

    erp.add_purchase_order("PO-1001", "S1", [(4, "12.50")], status="4")
    erp.add_purchase_order("PO-1002", "S2", [(1, "99.00"), (2, "1.00")], status="4")
    erp.add_invoice("S2", "INV-77", "4180.00")
    stack.poll("PorMasterHdr", "ApInvoice")
    [to_s1] = wait_for(lambda: stack.texts_to(SUPPLIER_PHONES["S1"]), what="an SMS for PO-1001")
    [to_s2] = wait_for(lambda: stack.texts_to(SUPPLIER_PHONES["S2"]), what="an SMS for PO-1002")
    [to_ap] = wait_for(lambda: stack.texts_to(AP_PHONE), what="an SMS for INV-77")
    assert to_s1.startswith("PO PO-1001 for Supplier S1 is now printed: 1 line(s), 50.00 USD")
    assert "PO PO-1002" in to_s2 and "2 line(s), 101.00 USD" in to_s2
    assert to_ap.startswith("Invoice INV-77 from Supplier S2 posted: 4,180.00 USD")

    stack.poll("PorMasterHdr", "ApInvoice")  # nothing new
    assert stack.polls_of("PorMasterHdr")[-1] == 0 and stack.polls_of("ApInvoice")[-1] == 0
    assert len(stack.texts_to(SUPPLIER_PHONES["S1"])) == len(stack.texts_to(SUPPLIER_PHONES["S2"])) == 1

    erp.update_row("PorMasterHdr", "PO-1001", OrderStatus="9")
    erp.on_query(1, table="PorMasterHdr", action="expire")  # and the session ends on the way
    stack.poll("PorMasterHdr")
    texts = wait_for(lambda: [t for t in stack.texts_to(SUPPLIER_PHONES["S1"]) if "is now complete" in t],
                     what="a second SMS for PO-1001")
    assert len(texts) == 1 and len(stack.texts_to(SUPPLIER_PHONES["S1"])) == 2
    assert len(stack.texts_to(SUPPLIER_PHONES["S2"])) == 1 and len(stack.texts_to(AP_PHONE)) == 1
    assert len(erp.active_sessions()) == 1  # one session kept across the polls (renewed once when it ended)
    log = stack.app.log()
    assert PASSWORD not in log and "Traceback" not in log, log[-3000:]


def test_a_supplier_reply_becomes_one_comment_on_the_po(syspro_stack: SysproStack) -> None:
    stack, erp = syspro_stack, syspro_stack.erp
    phone = "+14155550161"
    erp.add_supplier("S-REPLY", "Reply Supplies", phone)
    stack.past_baseline()
    erp.add_purchase_order("PO-3001", "S-REPLY", [(2, "10.00")], status="4")
    stack.poll("PorMasterHdr")
    [text] = wait_for(lambda: stack.texts_to(phone), what="an SMS for PO-3001")
    assert "PO PO-3001" in text

    reply = stack.twilio.inbound_sms_params(phone, stack.creds.phone_number, "Confirmed, ships Friday")
    stack.text_in(reply)
    record = order_record("PO-3001")
    wait_for(lambda: "note-written" in stack.steps(record), what="the reply written to SYSPRO")
    steps = stack.steps(record)
    assert steps.index("reply") < steps.index("note-written")
    [entry] = [entry for entry in stack.audit(record) if entry["step"] == "reply"]
    assert entry["detail"]["text"] == "Confirmed, ships Friday"
    # One PORTOI comment on that order: a heading naming the SMS, then the text.
    [heading, body] = erp.comments("PO-3001")
    assert heading.startswith("SMS ") and heading.endswith(f"ref {reply['MessageSid']}")
    assert body == "Confirmed, ships Friday"

    stack.text_in(reply)  # Twilio posts the same SMS again
    wait_for(lambda: [entry for entry in stack.audit(record) if entry["step"] == "duplicate"
                      and entry["detail"].get("message_sid") == reply["MessageSid"]], what="the repeat seen")
    assert erp.comments("PO-3001") == [heading, body]
    assert stack.steps(record).count("note-written") == 1


def test_after_stop_a_supplier_gets_no_more_texts_and_others_still_do(syspro_stack: SysproStack) -> None:
    stack, erp = syspro_stack, syspro_stack.erp
    stopping, other = "+14155550171", "+14155550172"
    erp.add_supplier("S-STOP", "Stop Supplies", stopping)
    erp.add_supplier("S-GOON", "Go-On Supplies", other)
    stack.past_baseline()
    erp.add_purchase_order("PO-4001", "S-STOP", status="4")
    stack.poll("PorMasterHdr")
    wait_for(lambda: stack.texts_to(stopping), what="an SMS for PO-4001")

    stack.text_in(stack.twilio.inbound_sms_params(stopping, stack.creds.phone_number, "STOP"))
    wait_for(lambda: "opted-out" in stack.steps(order_record("PO-4001")), what="the STOP recorded")

    # The fake Twilio is not told about the STOP: only the app's own opt-out list can hold the text back.
    erp.add_purchase_order("PO-4002", "S-STOP", status="4")
    erp.add_purchase_order("PO-4003", "S-GOON", status="4")
    stack.poll("PorMasterHdr")
    [text] = wait_for(lambda: stack.texts_to(other), what="an SMS for PO-4003 to the other supplier")
    assert "PO PO-4003" in text
    [held] = wait_for(lambda: [entry for entry in stack.audit(order_record("PO-4002"))
                               if entry["step"] == "suppressed"], what="the SMS for PO-4002 held back")
    assert held["detail"]["status"] == "suppressed" and held["detail"]["reason"] == "the recipient replied STOP"
    assert "sent" not in stack.steps(order_record("PO-4002"))
    assert len(stack.texts_to(stopping)) == 1  # only PO-4001's, from before the STOP
