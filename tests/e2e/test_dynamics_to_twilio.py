"""Dynamics business event -> Twilio SMS or call -> delivery status back on the record."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shared.storage.tables import CONTACTS, table_key
from tests.e2e.conftest import MASTER_KEY, Stack, text_in
from tests.fakes.twilio import twilio_signature
from tests.support.waiting import wait_for

_numbers = itertools.count(111)
_controls = itertools.count(5637150000)


def new_phone() -> str:
    return f"+1415555{next(_numbers):04d}"


def invoice_event(invoice_id: str, phone: str, amount: float = 950.0, **extra: object) -> dict:
    return {
        "BusinessEventId": "VendorInvoicePostedBusinessEvent", "BusinessEventLegalEntity": "usmf",
        "ContextRecordSubject": "", "ControlNumber": next(_controls),
        "EventId": "7D0C5A5E-1F6B-4F0E-9C1B-3C2F4B0E9A11", "EventTime": "/Date(1763802000000)/",
        "EventTimeIso8601": "2025-11-22T09:00:00.3440655Z", "InvoiceAccount": "US-104",
        "InvoiceAmountInAccountingCurrency": amount, "CurrencyCode": "USD", "InvoiceDate": "/Date(1763769600000)/",
        "InvoiceDueDate": "/Date(1766361600000)/", "InvoiceId": invoice_id, "LegalEntity": "usmf",
        "MajorVersion": 0, "MinorVersion": 0, "NotifyPhone": phone, **extra,
    }


def payment_event(journal: str, amount: float, phone: str) -> dict:
    return {"BusinessEventId": "VendorPaymentPostedBusinessEvent", "ControlNumber": next(_controls),
            "LegalEntity": "usmf", "JournalBatchNumber": journal, "VendorAccount": "US-104",
            "PaymentAmount": amount, "CurrencyCode": "USD", "NotifyPhone": phone}


def record_of(invoice_id: str) -> str:
    return f"contoso-fo|VendorInvoice|usmf|{invoice_id}"


def message_requests(stack: Stack, to: str) -> list:
    return [r for r in stack.twilio.requests_to("POST /2010-04-01/Accounts/")
            if r.path.endswith("/Messages.json") and r.form_value("To") == to and not r.scripted]


def test_an_invoice_event_becomes_one_sms_and_its_delivery_comes_back(stack: Stack) -> None:
    phone = new_phone()
    answer = stack.post_events(invoice_event("INV-E2E-1", phone.replace("+1", "(").replace("555", "555) ", 1)))
    assert answer.status_code == 202, answer.text

    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS at Twilio")
    [request] = message_requests(stack, phone)
    user, _, _ = b64decode(request.headers["Authorization"].split()[1]).decode().partition(":")
    assert user == stack.twilio_creds.api_key_sid
    assert stack.twilio_creds.account_sid in request.path
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert request.form_value("To") == phone  # normalized to E.164 from "(415) 555-..."
    assert request.form_value("StatusCallback").startswith(stack.status_url() + "?job=")
    assert "INV-E2E-1" in message.body and "Fabrikam Supplies" in message.body and "950.00 USD" in message.body

    from tests.support.openapi import require_spec, validate_form_request

    spec = require_spec("twilio/twilio_api_v2010.json")
    assert validate_form_request(spec, request.path, "post", request.form) == []

    for status in ("queued", "sent", "delivered"):
        assert stack.twilio.advance_message(message.sid, status).status_code == 204
    record = record_of("INV-E2E-1")
    wait_for(lambda: "delivered" in [c["status"] for c in stack.audit(record)["contacts"]], what="delivered")
    [contact] = stack.audit(record)["contacts"]
    assert contact["provider_id"] == message.sid and contact["status"] == "delivered"
    assert request.form_value("StatusCallback") == stack.status_url(job=contact["job_id"])
    assert contact["to"] != phone and contact["to"].endswith(phone[-2:])  # masked
    steps = stack.steps(record)
    assert steps[:2] == ["received", "enriched"] and "sent" in steps
    statuses = [e["detail"]["status"] for e in stack.audit(record)["entries"] if e["step"] == "status"]
    # "queued" was the job's status already; "sent" may lose the race to "delivered", and then changes nothing.
    assert statuses in (["sent", "delivered"], ["delivered"])


def test_the_same_event_five_times_and_a_replay_give_one_sms(stack: Stack) -> None:
    phone = new_phone()
    event = invoice_event("INV-E2E-2", phone)
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: stack.post_events(event), range(5)))
    assert [a.status_code for a in answers] == [202] * 5
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    stack.twilio.advance_message(message.sid, "delivered")
    assert stack.post_events(event).status_code == 202  # later
    record = record_of("INV-E2E-2")
    wait_for(lambda: stack.steps(record).count("duplicate") == 5, what="five duplicates recorded")
    [contact] = stack.audit(record)["contacts"]
    replay = requests.post(f"{stack.base_url}/api/ops/replay", json={"job_id": contact["job_id"]},
                           headers={"x-functions-key": MASTER_KEY}, timeout=10)
    assert replay.json()["replayed"] == 0
    assert "only jobs that did not reach their recipient are replayed" in replay.json()["jobs"][0]["reason"]
    assert len(message_requests(stack, phone)) == 1


def signed_post(stack: Stack, url: str, params: dict, *, sign_url: str | None = None,
                signed_params: dict | None = None, token: str | None = None) -> requests.Response:
    signature = twilio_signature(token or stack.twilio_creds.auth_token, sign_url or url,
                                 {k: [v] for k, v in (signed_params or params).items()})
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_forged_callbacks_are_refused_and_status_only_moves_forward(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-E2E-3", phone))
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    stack.twilio.advance_message(message.sid, "delivered")
    record = record_of("INV-E2E-3")
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "delivered", what="delivered")

    failed = stack.twilio.message_status_params(message.sid, "failed", 30008)
    url = stack.status_url()
    assert signed_post(stack, url, failed, token="not-the-auth-token").status_code == 403
    assert signed_post(stack, url, failed, sign_url=url + "-elsewhere").status_code == 403
    tampered = {**failed, "MessageStatus": "undelivered"}
    assert signed_post(stack, url, tampered, signed_params=failed).status_code == 403
    assert requests.post(url, data=failed, timeout=10).status_code == 403  # unsigned

    late_sent = stack.twilio.message_status_params(message.sid, "sent")
    assert stack.twilio.send_status_callback(url, late_sent).status_code == 204
    read = stack.twilio.message_status_params(message.sid, "read")
    assert stack.twilio.send_status_callback(url, read).status_code == 204
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "read", what="read after delivered")
    statuses = [e["detail"].get("status") for e in stack.audit(record)["entries"] if e["step"] == "status"]
    assert statuses == ["delivered", "read"]  # the late "sent" and the forged ones changed nothing


def test_callbacks_repair_a_lost_link_and_a_reply_still_lands_on_the_record(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-E2E-LINK", phone))
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    record = record_of("INV-E2E-LINK")
    wait_for(lambda: "sent" in stack.steps(record), what="the send recorded")
    [contact] = stack.audit(record)["contacts"]
    assert message.status_callback == stack.status_url(job=contact["job_id"])
    stores = stack.stores()
    try:
        # As if the app had stopped once Twilio took the message, before linking the message to the
        # job, remembering it as the number's last contact and recording the send on the job.
        stores.tables.table(CONTACTS).delete_entity(table_key("twilio-main"), f"sid-{message.sid}")
        stores.tables.table(CONTACTS).delete_entity(table_key("twilio-main"), stores.tables.protector.blind(phone))
        sent_job = stores.jobs.get(contact["job_id"])
        assert sent_job is not None
        stores.jobs.update(sent_job, {"status": "dispatching", "provider_id": None})
        assert stores.contacts.job_of_sid("twilio-main", message.sid) is None
        assert stores.contacts.last("twilio-main", phone) is None

        for status in ("sent", "delivered"):
            assert stack.twilio.advance_message(message.sid, status).status_code == 204
        wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "delivered", what="delivered")
        link = stores.contacts.job_of_sid("twilio-main", message.sid)
        assert link is not None and link.job_id == contact["job_id"]
    finally:
        stores.close()

    text_in(stack.twilio, stack.base_url,
            stack.twilio.inbound_sms_params(phone, stack.twilio_creds.phone_number, "Paid on Friday"))
    wait_for(lambda: "reply" in stack.steps(record), what="the reply on the invoice")


def test_twilio_429_then_200_delivers_once(stack: Stack) -> None:
    phone = new_phone()
    stack.twilio.fail_next(1, status=429, headers={"Retry-After": "1"}, match="POST /2010-04-01/Accounts/")
    stack.post_events(invoice_event("INV-E2E-4", phone))
    wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS after a 429")
    attempts = [r for r in stack.twilio.requests_to("POST /2010-04-01/Accounts/") if r.form_value("To") == phone
                or r.scripted]
    real = message_requests(stack, phone)
    assert len(real) == 1
    throttled = [r for r in attempts if r.scripted and r.at < real[0].at]
    assert throttled and real[0].at - throttled[-1].at >= 1.0


def test_dynamics_429_retry_after_is_honoured(stack: Stack) -> None:
    phone = new_phone()
    stack.dynamics.fail_next(1, status=429, headers={"Retry-After": "2"}, match="GET /data/VendorsV2")
    stack.post_events(invoice_event("INV-E2E-5", phone))
    wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS after a Dynamics 429")
    reads = [r for r in stack.dynamics.requests_to("GET /data/VendorsV2")]
    throttled = [r for r in reads if r.scripted]
    after = [r for r in reads if not r.scripted and r.at > throttled[-1].at]
    assert after[0].at - throttled[-1].at >= 2.0


def test_a_large_invoice_places_a_call_that_says_the_facts(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-E2E-6", phone, amount=48250.0))
    assert len(wait_for(lambda: stack.twilio.calls(to=phone), what="a call")) == 1
    [request] = [r for r in stack.twilio.requests_to("POST /2010-04-01/Accounts/") if r.path.endswith("/Calls.json")
                 and r.form_value("To") == phone]
    twiml = ET.fromstring(request.form_value("Twiml"))
    said = " ".join(say.text or "" for say in twiml.iter("Say"))
    assert "INV-E2E-6" in said and "Fabrikam Supplies" in said and "48,250.00 USD" in said
    assert twiml.find("Gather").get("action").startswith(f"{stack.base_url}/api/twilio/gather/twilio-main?job=")
    assert set(request.form["StatusCallbackEvent"]) >= {"initiated", "completed"}
    assert stack.twilio.messages(to=phone) == []

    [call] = stack.twilio.calls(to=phone)
    for status in ("ringing", "in-progress", "completed"):
        stack.twilio.advance_call(call.sid, status, duration=42)
    record = record_of("INV-E2E-6")
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "completed", what="the call completed")
    [contact] = stack.audit(record)["contacts"]
    assert contact["channel"] == "voice" and contact["provider_id"] == call.sid


def test_an_opted_out_number_is_suppressed_without_a_twilio_request(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-E2E-7A", phone))
    wait_for(lambda: stack.twilio.messages(to=phone), what="a first SMS")
    stop = stack.twilio.inbound_sms_params(phone, stack.twilio_creds.phone_number, "stop")
    answer = stack.twilio.send_status_callback(f"{stack.base_url}/api/twilio/inbound/twilio-main", stop)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml")
    assert ET.fromstring(answer.text).tag == "Response"
    wait_for(lambda: "opted-out" in stack.steps(record_of("INV-E2E-7A")), what="STOP recorded on the invoice")

    stack.post_events(invoice_event("INV-E2E-7B", phone))
    record = record_of("INV-E2E-7B")
    wait_for(lambda: "suppressed" in stack.steps(record), what="suppressed")
    assert len(message_requests(stack, phone)) == 1  # only the first
    assert stack.audit(record)["contacts"][0]["status"] == "suppressed"


def test_an_unparseable_number_fails_the_job_at_once(stack: Stack) -> None:
    stack.post_events(invoice_event("INV-E2E-8", "call me maybe"))
    record = record_of("INV-E2E-8")
    wait_for(lambda: "failed" in stack.steps(record), what="failed")
    [contact] = stack.audit(record)["contacts"]
    assert contact["status"] == "failed" and "not a phone number" in contact["reason"]
    assert stack.steps(record).count("failed") == 1  # no retries


def test_the_verify_gate_sends_only_after_an_approved_code(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(payment_event("APPAY-0042", 1200.0, phone))
    wait_for(lambda: stack.twilio.verifications(to=phone), what="a verification")
    inbound = f"{stack.base_url}/api/twilio/inbound/twilio-main"
    wrong = stack.twilio.inbound_sms_params(phone, stack.twilio_creds.phone_number, "000000")
    stack.twilio.send_status_callback(inbound, wrong)
    record = "contoso-fo|VendorPayment|usmf|APPAY-0042"
    wait_for(lambda: "verify-checked" in stack.steps(record), what="the wrong code checked")
    assert stack.twilio.messages(to=phone) == []
    right = stack.twilio.inbound_sms_params(phone, stack.twilio_creds.phone_number, stack.twilio.code_for(phone))
    stack.twilio.send_status_callback(inbound, right)
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS after approval")
    assert "APPAY-0042" in message.body
    steps = wait_for(lambda: "sent" in stack.steps(record) and stack.steps(record), what="sent audited")
    assert steps.index("verify-approved") < steps.index("sent")


def test_a_code_checked_through_the_api_releases_the_held_message(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(payment_event("APPAY-0043", 800.0, phone))
    wait_for(lambda: stack.twilio.verifications(to=phone), what="a verification")
    url = f"{stack.base_url}/api/twilio/verify/twilio-main"
    key = {"x-functions-key": "e2e-function-key"}
    wrong = requests.post(url, json={"to": phone, "code": "999999"}, headers=key, timeout=10)
    assert wrong.status_code == 200 and wrong.json()["status"] == "pending"
    assert stack.twilio.messages(to=phone) == []
    right = requests.post(url, json={"to": phone, "code": stack.twilio.code_for(phone)}, headers=key, timeout=10)
    assert right.json()["status"] == "approved"
    wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS after approval")
    nothing = requests.post(url, json={"to": new_phone(), "code": "123456"}, headers=key, timeout=10)
    assert nothing.status_code == 404 and nothing.json()["error"] == "no_verification"
    bad = requests.post(url, json={"to": "not a number", "code": "123456"}, headers=key, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_number"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "malformed_json"),
        (b'{"ControlNumber": 1}', 400, "invalid_event"),
        (b"", 400, "empty_body"),
    ],
)
def test_bad_business_events_get_clear_errors(stack: Stack, body: bytes, status: int, error: str) -> None:
    answer = requests.post(f"{stack.base_url}/api/dynamics/events/contoso-fo", data=body,
                           headers={"x-functions-key": "e2e-function-key"}, timeout=10)
    assert answer.status_code == status
    assert answer.json()["error"] == error


def test_unknown_connection_oversized_body_and_wrong_key(stack: Stack) -> None:
    event = invoice_event("INV-E2E-X", new_phone())
    unknown = requests.post(f"{stack.base_url}/api/dynamics/events/nope", json=event,
                            headers={"x-functions-key": "e2e-function-key"}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_connection"
    huge = requests.post(f"{stack.base_url}/api/dynamics/events/contoso-fo", data=b"[" + b" " * (1024 * 1024) + b"]",
                         headers={"x-functions-key": "e2e-function-key"}, timeout=10)
    assert huge.status_code == 413
    assert stack.post_events(event, key="wrong").status_code == 401


def test_the_endpoint_test_event_is_acknowledged_and_only_audited(stack: Stack) -> None:
    before = len(stack.twilio.messages())
    answer = stack.post_events({"BusinessEventId": "BusinessEventsTestEndpointContract",
                                "ControlNumber": -9223372036854775808, "EventId": "X", "MajorVersion": 0})
    assert answer.status_code == 200 and answer.json()["test_events"] == 1
    assert len(stack.twilio.messages()) == before
