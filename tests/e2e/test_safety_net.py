"""Business events with the poll as their safety net: a posted vendor invoice is one fact whether Dynamics pushed
it or the poll found it, so the poll fills in an event that never arrived and the two together send once."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

from shared.erp.dynamics.events import POSTED_VENDOR_INVOICES
from shared.model import POLL_JOBS, POLL_RUN, Envelope
from tests.e2e.conftest import SAFETY_NET_VENDORS, Stack
from tests.support.waiting import wait_for

_phones = itertools.count(7001)
_controls = itertools.count(5637190000)


def new_vendor(stack: Stack) -> tuple[str, str]:
    """A vendor of its own (account, phone), so each test counts only its own texts."""
    account, phone = f"{SAFETY_NET_VENDORS}{uuid.uuid4().hex[:6]}", f"+1415555{next(_phones):04d}"
    stack.dynamics.add_entities("VendorsV2", [
        {"dataAreaId": "usmf", "VendorAccountNumber": account, "VendorOrganizationName": "Northwind Traders",
         "PrimaryPhoneNumber": phone, "PrimaryEmailAddress": "ap@northwind.example", "VendorGroupId": "30"},
    ], keys=("dataAreaId", "VendorAccountNumber"))
    return account, phone


def posted_invoice_row(stack: Stack, invoice_id: str, vendor: str) -> None:
    """The posted invoice as the poll reads it from F&O."""
    modified = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    stack.dynamics.add_entities(POSTED_VENDOR_INVOICES, [
        {"dataAreaId": "usmf", "InvoiceId": invoice_id, "InvoiceAccount": vendor, "InvoiceDate": "2026-11-20T12:00:00Z",
         "DueDate": "2026-12-20T12:00:00Z", "InvoiceAmount": 420.5, "CurrencyCode": "USD", "PurchId": "",
         "ModifiedDateTime": modified},
    ], keys=("dataAreaId", "InvoiceId", "InvoiceAccount"))


def posted_invoice_event(invoice_id: str, vendor: str) -> dict:
    """The same posted invoice as Dynamics pushes it (its own ControlNumber, as a resend would not have)."""
    return {"BusinessEventId": "VendorInvoicePostedBusinessEvent", "BusinessEventLegalEntity": "usmf",
            "ControlNumber": next(_controls), "EventId": str(uuid.uuid4()).upper(),
            "EventTimeIso8601": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "InvoiceAccount": vendor,
            "InvoiceAmountInAccountingCurrency": 420.5, "CurrencyCode": "USD", "InvoiceDate": "/Date(1763596800000)/",
            "InvoiceDueDate": "/Date(1766188800000)/", "InvoiceId": invoice_id, "LegalEntity": "usmf"}


def poll_posted_invoices(stack: Stack) -> None:
    stack.send(POLL_JOBS, Envelope(POLL_RUN, "contoso-fo", f"test-poll|{uuid.uuid4().hex}",
                                   {"entity": POSTED_VENDOR_INVOICES}))


def texts(stack: Stack, phone: str, invoice_id: str) -> list:
    return [m for m in stack.twilio.messages(to=phone) if invoice_id in m.body]


def entries(stack: Stack, invoice_id: str, step: str) -> list[dict]:
    return [e for e in stack.audit(f"contoso-fo|VendorInvoice|usmf|{invoice_id}")["entries"] if e["step"] == step]


def test_a_posted_invoice_whose_event_never_came_is_found_by_the_poll_and_texted_once(stack: Stack) -> None:
    vendor, phone = new_vendor(stack)
    invoice = "INV-SN-" + uuid.uuid4().hex[:6]
    posted_invoice_row(stack, invoice, vendor)

    poll_posted_invoices(stack)
    [message] = wait_for(lambda: texts(stack, phone, invoice), what="the poll's SMS for the posted invoice")
    assert "Northwind Traders" in message.body and "420.50 USD" in message.body
    [received] = entries(stack, invoice, "received")
    assert received["detail"]["source"] == "poll"
    assert received["detail"]["event"] == "VendorInvoicePostedBusinessEvent"  # the rule on the event matched

    poll_posted_invoices(stack)  # the overlap reads the row again: the same fact, claimed already
    wait_for(lambda: entries(stack, invoice, "duplicate"), what="the second finding recognised")
    assert len(texts(stack, phone, invoice)) == 1


def test_an_event_then_the_poll_send_once(stack: Stack) -> None:
    vendor, phone = new_vendor(stack)
    invoice = "INV-SN-" + uuid.uuid4().hex[:6]
    assert stack.post_events(posted_invoice_event(invoice, vendor)).status_code == 202
    wait_for(lambda: texts(stack, phone, invoice), what="the pushed event's SMS")

    posted_invoice_row(stack, invoice, vendor)
    poll_posted_invoices(stack)
    [duplicate] = wait_for(lambda: entries(stack, invoice, "duplicate"), what="the poll's finding recognised")
    assert duplicate["detail"]["source"] == "poll"
    assert len(texts(stack, phone, invoice)) == 1


def test_the_poll_then_the_late_event_send_once(stack: Stack) -> None:
    vendor, phone = new_vendor(stack)
    invoice = "INV-SN-" + uuid.uuid4().hex[:6]
    posted_invoice_row(stack, invoice, vendor)
    poll_posted_invoices(stack)
    wait_for(lambda: texts(stack, phone, invoice), what="the poll's SMS")

    assert stack.post_events(posted_invoice_event(invoice, vendor)).status_code == 202  # the event comes late
    [duplicate] = wait_for(lambda: entries(stack, invoice, "duplicate"), what="the late event recognised")
    assert "source" not in duplicate["detail"]
    assert len(texts(stack, phone, invoice)) == 1
