"""The built-in SYSPRO templates fit one SMS segment with typical records and have a voice text."""

from __future__ import annotations

import pytest

from shared.templates import BUILTIN, placeholders, render, sms_segments

ORDER = {"document": "000000000012345", "supplier_name": "Bolt & Nut Manufacturing Ltd", "status_text": "printed",
         "line_count": 12, "amount": 18250.5, "currency": "USD", "due_date": "2026-12-01"}
INVOICE = {"document": "INV-2026-004411", "supplier_name": "Bolt & Nut Manufacturing Ltd", "amount": 4180.0,
           "currency": "USD", "due_date": "2026-12-20", "payment_state": "unpaid"}
SYSPRO_FIELDS = {"document", "supplier", "supplier_name", "supplier_phone", "amount", "currency", "due_date", "status",
                 "status_text", "line_count", "cancelled", "completed_date", "balance", "payment_state",
                 "invoice_date", "journal", "money"}


@pytest.mark.parametrize(("name", "record"), [("syspro-po-approval", ORDER), ("syspro-invoice-posted", INVOICE)])
def test_one_segment_and_a_voice_text(name: str, record: dict) -> None:
    template = BUILTIN[name]
    text, spoken = render(template.sms, record), render(template.voice, record)
    assert sms_segments(text).count == 1, text
    assert record["document"] in spoken and record["supplier_name"] in spoken and " USD" in spoken
    assert set(placeholders(template.sms)) | set(placeholders(template.voice)) <= SYSPRO_FIELDS


def test_the_order_text_reads_well() -> None:
    assert render(BUILTIN["syspro-po-approval"].sms, ORDER) == (
        "PO 000000000012345 for Bolt & Nut Manufacturing Ltd is now printed: 12 line(s), 18,250.50 USD, due 2026-12-01."
        " Reply to add a note to the PO.")
