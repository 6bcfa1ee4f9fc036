"""The fallback poll: Dynamics rows changed without a business event reach people the same way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.model import POLL_JOBS, POLL_RUN, Envelope
from tests.e2e.conftest import POLL_RECIPIENT, Stack
from tests.support.waiting import wait_for


def invoice_header(ref: str, modified: datetime, on_hold: str) -> dict:
    return {"dataAreaId": "usmf", "HeaderReference": ref, "InvoiceNumber": f"PINV-{ref}", "VendorAccount": "US-104",
            "VendorName": "Fabrikam Supplies", "Currency": "USD", "DueDate": "2026-12-15T12:00:00Z",
            "InvoiceDate": "2026-11-20T12:00:00Z", "PurchaseOrderNumber": "", "InvoiceDescription": "",
            "IsOnHold": on_hold, "ModifiedDateTime": modified.isoformat().replace("+00:00", "Z")}


def run_poll(stack: Stack) -> None:
    stack.send(POLL_JOBS, Envelope(POLL_RUN, "contoso-fo", f"test-poll|{uuid.uuid4().hex}",
                                   {"entity": "VendorInvoiceHeaders"}))


def test_a_changed_row_found_by_the_poll_becomes_one_sms(stack: Stack) -> None:
    now = datetime.now(UTC)
    held, fine = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    stack.dynamics.add_entities("VendorInvoiceHeaders", [
        invoice_header(held, now - timedelta(minutes=2), "Yes"),
        invoice_header(fine, now - timedelta(minutes=2), "No"),
    ], keys=("dataAreaId", "HeaderReference"))
    run_poll(stack)
    [message] = wait_for(lambda: [m for m in stack.twilio.messages(to=POLL_RECIPIENT) if f"PINV-{held}" in m.body],
                         what="an SMS for the held invoice")
    assert "is on hold" in message.body and "Fabrikam Supplies" in message.body
    record = f"contoso-fo|VendorInvoice|usmf|PINV-{held}"
    assert stack.steps(record)[0] == "received"
    assert "no-rule" in stack.steps(f"contoso-fo|VendorInvoice|usmf|PINV-{fine}")  # the rule's condition held back

    run_poll(stack)  # the overlap re-reads the same rows: claimed already
    wait_for(lambda: "duplicate" in stack.steps(record), what="the re-read row recognised")
    assert len([m for m in stack.twilio.messages(to=POLL_RECIPIENT) if f"PINV-{held}" in m.body]) == 1
