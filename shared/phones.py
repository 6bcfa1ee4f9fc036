"""Phone numbers as every part of the app reads them: E.164, national forms read in a region.

ERP masters, rule recipients, Verify requests and channels all parse numbers here, so that a
number written ``(415) 555-0134`` in SYSPRO and ``+14155550134`` in a rule are one recipient.
phonenumbers is imported on first use: importing this module stays cheap at cold start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber


class InvalidNumber(ValueError):
    """Text that cannot be used as a phone number; the message says why in plain words."""


def normalize_number(raw: str, default_region: str) -> str:
    """``raw`` as E.164 (``+14155550100``); national forms are read in ``default_region``."""
    import phonenumbers

    text = (raw or "").strip()
    number = _parse_number(text, default_region)
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse_number(text: str, default_region: str) -> PhoneNumber:
    import phonenumbers

    candidates = [text]
    # "00" starts international numbers in most countries but not in all (the US dials 011),
    # so "00 44 20 ..." is also read as "+44 20 ..." when the region's own reading is invalid.
    if text.startswith("00"):
        candidates.append("+" + text[2:])
    first: PhoneNumber | None = None
    problem = ""
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, default_region)
        except phonenumbers.NumberParseException as error:
            problem = problem or _parse_problem(text, error)
            continue
        if phonenumbers.is_valid_number(number):
            return number
        first = first or number
    if first is None:
        raise InvalidNumber(problem)
    return first


def _parse_problem(text: str, error: Any) -> str:
    from phonenumbers import NumberParseException

    reasons = {
        NumberParseException.INVALID_COUNTRY_CODE: "has no known country code (write it as +<country code> <number>)",
        NumberParseException.TOO_SHORT_NSN: "is too short to be a phone number",
        NumberParseException.TOO_SHORT_AFTER_IDD: "is too short to be a phone number",
        NumberParseException.TOO_LONG: "is too long to be a phone number",
    }
    return f"{text!r} {reasons.get(error.error_type, 'is not a phone number')}"
