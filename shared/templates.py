"""Message templates: ``{field}`` placeholders filled from the ERP record, nothing evaluated.

SMS text is checked against segment limits (GSM-7: 160 characters in one segment, 153 per
segment beyond; anything else is UCS-2: 70, then 67). Voice text becomes TwiML built with
twilio's own builder, optionally with a ``<Gather>`` to acknowledge by key press. An email
is a subject line and a plain-text body; a template without them sends its SMS text.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_MAX_SEGMENTS = 4
ELLIPSIS = "..."

# GSM 03.38 basic set, and the extension set whose characters take two septets.
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


class TemplateError(ValueError):
    """A template that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Template:
    sms: str = ""
    voice: str = ""
    gather: bool = False  # ask the callee to press 1 to acknowledge
    subject: str = ""  # email subject line
    email: str = ""  # email body (plain text)


# --- Sage X3 (record fields from shared.erp.sagex3.adapter) ---------------------------------------------
SAGEX3_TEMPLATES: Mapping[str, Template] = {
    "sagex3-po-created": Template(
        sms="New purchase order {document} for {supplier_name}: {money}.",
        voice="A new purchase order, {document}, was created for {supplier_name}, total {money}.",
    ),
    "sagex3-po-approved": Template(
        sms="Purchase order {document} for {supplier_name} is approved: {money}.",
        voice="Purchase order {document} for {supplier_name} was approved, total {money}.",
    ),
    "sagex3-po-delivery-due": Template(
        sms="Purchase order {document} from {supplier_name}: delivery expected {due_date}, item {item}.",
        voice="A delivery on purchase order {document} from {supplier_name} is expected on {due_date}.",
    ),
    "sagex3-invoice-received": Template(
        sms="Supplier invoice {document} from {supplier_name}: {money}, due {due_date}.",
        voice="A supplier invoice from {supplier_name} was entered for {money}, due {due_date}.",
    ),
    "sagex3-invoice-due": Template(
        sms="Invoice {document} from {supplier_name}: {money} due {due_date} ({days_left} days). "
            "Ref {supplier_document}.",
        voice="Invoice {document} from {supplier_name}, for {money}, is due on {due_date}.",
        gather=True,
    ),
    "sagex3-payment-sent": Template(
        sms="Payment {document} to {supplier_name}: {money}, ref {reference}.",
        voice="A payment to {supplier_name} was made for {money}.",
    ),
}

BUILTIN: Mapping[str, Template] = {
    "vendor-invoice-posted": Template(
        sms="Invoice {invoice_id} from {vendor_name} posted: {money}, due {due_date}. Legal entity {legal_entity}.",
        voice="Vendor invoice {invoice_id} from {vendor_name} was posted for {money}, due {due_date}.",
    ),
    "large-invoice-call": Template(
        sms="Large invoice {invoice_id} from {vendor_name}: {money}, due {due_date}.",
        voice="Attention. A large vendor invoice was posted. Invoice {invoice_id}, from {vendor_name}, "
              "for {money}, due {due_date}.",
        gather=True,
    ),
    "purchase-order-confirmed": Template(
        sms="Purchase order {po_number} for {vendor_name} confirmed: {money}.",
        voice="Purchase order {po_number} for {vendor_name} was confirmed, total {money}.",
    ),
    "vendor-payment-posted": Template(
        sms="Payment {journal} to {vendor_name} posted: {money}.",
        voice="A payment to {vendor_name} was posted for {money}.",
    ),
    # --- Dynamics silence alarm (fields of shared.pipeline.silence) ---
    "silence-alarm": Template(
        sms="No business events from {legal_entity} ({connection}) for {business_hours} business hours, since "
            "{silent_since}. Check the business event endpoint in Dynamics.",
        voice="Attention. Dynamics legal entity {legal_entity} has sent no business events for {business_hours} "
              "business hours.",
    ),
    "workflow-approval": Template(
        sms="Approval needed: {subject} ({document}).",
        voice="An approval is waiting for you: {subject}.",
    ),
    "supplier-invoice-large": Template(
        sms="Supplier invoice {invoice_id} from {vendor_name}: {money}.",
        voice="A large supplier invoice from {vendor_name} needs attention: {money}.",
    ),
    # --- QAD (records of shared.erp.qad.adapter) ------------------------------------------------------
    "qad-receipt-posted": Template(
        sms="Goods received on PO {po_number} line {po_line}: {quantity} x {part} from {supplier_name}, "
            "receiver {receiver}.",
        voice="Goods were received on purchase order {po_number}, line {po_line}: {quantity} of {part}, "
              "from {supplier_name}.",
    ),
    "qad-invoice-awaiting-receipt": Template(
        sms="Invoice {document} from {supplier_name} ({money}, due {due_date}) is blocked: no goods receipt "
            "posted for PO {po_number}.",
        voice="Attention. Supplier invoice {document} from {supplier_name}, for {money}, is blocked in the "
              "three-way match: no goods receipt has been posted for purchase order {po_number}. "
              "It is due {due_date}.",
        gather=True,
    ),
    "qad-po-approval": Template(
        sms="PO {po_number} for {supplier_name} awaits approval: {money}, due {due_date}.",
        voice="Purchase order {po_number} for {supplier_name} is waiting for approval. Total {money}, "
              "due {due_date}.",
    ),
    **SAGEX3_TEMPLATES,
    # --- SYSPRO (record fields of shared.erp.syspro.adapter) ---
    "syspro-po-approval": Template(
        sms="PO {document} for {supplier_name} is now {status_text}: {line_count} line(s), {money}, due {due_date}. "
            "Reply to add a note to the PO.",
        voice="Purchase order {document} for {supplier_name} is now {status_text}. Order lines: {line_count}, "
              "total {money}, due {due_date}.",
    ),
    "syspro-invoice-posted": Template(
        sms="Invoice {document} from {supplier_name} posted: {money}, due {due_date} ({payment_state}).",
        voice="Supplier invoice {document} from {supplier_name} was posted for {money}, due {due_date}.",
    ),
}


def placeholders(text: str) -> list[str]:
    """The field names a template uses; refuses attribute, index and format-spec tricks."""
    names = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"unbalanced braces ({exc}); write {{{{ and }}}} for literal braces") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _PLACEHOLDER_NAME.match(name) or spec or conversion:
            raise TemplateError(f"placeholder {{{name}}} must be a plain field name such as {{invoice_id}}")
        names.append(name)
    return names


def display_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Record fields as people read them: amounts with separators, dates without time."""
    shown = {name: _display(value) for name, value in fields.items()}
    amount = fields.get("amount")
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        shown["amount"] = f"{amount:,.2f}"
    currency = str(fields.get("currency") or "").strip()
    shown["money"] = f"{shown.get('amount', '')} {currency}".strip()
    return shown


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
        except ValueError:
            return value
    return str(value)


def render(text: str, fields: Mapping[str, Any]) -> str:
    """Fill ``{field}`` placeholders; a field the record lacks renders as empty text."""
    shown = display_fields(fields)
    out = []
    for literal, name, _, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            out.append(shown.get(name, ""))
    return re.sub(r"\s+([,.])", r"\1", "".join(out)).strip()


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int


def sms_segments(text: str) -> Segments:
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        return Segments("GSM-7", units, 1 if units <= 160 else math.ceil(units / 153))
    units = len(text.encode("utf-16-le")) // 2
    return Segments("UCS-2", units, 1 if units <= 70 else math.ceil(units / 67))


def fit_sms(text: str, max_segments: int = DEFAULT_MAX_SEGMENTS) -> str:
    """The text, shortened with an ellipsis where it would take more than ``max_segments``."""
    if sms_segments(text).count <= max_segments:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix that still fits with the ellipsis
        middle = (low + high + 1) // 2
        if sms_segments(text[:middle].rstrip() + ELLIPSIS).count <= max_segments:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ELLIPSIS


SUBJECT_MAX_CHARS = 78  # RFC 5322's recommended line length


def email_message(template: Template, fields: Mapping[str, Any], fallback_subject: str) -> tuple[str, str]:
    """The subject and plain-text body of an email; the SMS text stands in for what the template lacks."""
    body = render(template.email or template.sms, fields)
    subject = (render(template.subject, fields) if template.subject else "") or _first_line(body) or fallback_subject
    subject = " ".join(subject.split())  # a header value: one line
    if len(subject) > SUBJECT_MAX_CHARS:
        subject = subject[: SUBJECT_MAX_CHARS - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return subject, body


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def voice_twiml(say: str, gather_action: str | None = None, language: str = "en-US") -> str:
    """TwiML that says the facts; with ``gather_action``, asks for 1 to acknowledge and posts it there."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    if gather_action:
        gather = response.gather(input="dtmf", num_digits=1, timeout=6, action=gather_action, method="POST")
        gather.say(say, language=language)
        gather.say("Press 1 to acknowledge.", language=language)
        response.say("No key was pressed. Goodbye.", language=language)
    else:
        response.say(say, language=language)
        response.say("Repeating. " + say, language=language)
    return str(response)
