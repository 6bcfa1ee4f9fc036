"""Templates: placeholders from the record, SMS segment limits, voice TwiML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shared.templates import BUILTIN, TemplateError, fit_sms, placeholders, render, sms_segments, voice_twiml

RECORD = {"invoice_id": "INV-0042", "vendor_name": "Fabrikam", "amount": 12500.5, "currency": "USD",
          "due_date": "2025-12-22T00:00:00+00:00", "legal_entity": "usmf"}


def test_render_fills_fields_and_formats_money_and_dates() -> None:
    text = render(BUILTIN["vendor-invoice-posted"].sms, RECORD)
    assert text == "Invoice INV-0042 from Fabrikam posted: 12,500.50 USD, due 2025-12-22. Legal entity usmf."


def test_missing_fields_render_empty_without_stray_spaces() -> None:
    assert render("Invoice {invoice_id} from {nobody}, due {due_date}.", RECORD) == (
        "Invoice INV-0042 from, due 2025-12-22."
    )


@pytest.mark.parametrize("text", ["{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{0}", "{a"])
def test_placeholders_refuse_anything_but_plain_names(text: str) -> None:
    with pytest.raises(TemplateError):
        placeholders(text)


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 2),
        ("✓" * 70, "UCS-2", 1),
        ("✓" * 71, "UCS-2", 2),
        ("😀" * 35, "UCS-2", 1),  # a surrogate pair is two code units
    ],
)
def test_segments(text: str, encoding: str, count: int) -> None:
    segments = sms_segments(text)
    assert (segments.encoding, segments.count) == (encoding, count)


def test_fit_sms_shortens_to_the_segment_limit() -> None:
    text = "Invoice " + "x" * 1000
    fitted = fit_sms(text, 2)
    assert sms_segments(fitted).count == 2
    assert fitted.endswith("...") and fitted.startswith("Invoice ")
    assert fit_sms("short", 1) == "short"


def test_voice_twiml_says_the_facts_and_gathers_a_key() -> None:
    xml = voice_twiml("Invoice INV-0042 from Fabrikam for 12,500.50 USD.", "https://app.example.com/api/x?job=1")
    root = ET.fromstring(xml)
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "1" and gather.get("action") == "https://app.example.com/api/x?job=1"
    said = " ".join(say.text or "" for say in gather.findall("Say"))
    assert "INV-0042" in said and "Fabrikam" in said and "12,500.50 USD" in said
