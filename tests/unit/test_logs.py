"""Log hygiene: phone numbers masked, registered secrets redacted."""

from __future__ import annotations

import io
import logging
import uuid

import pytest

from shared.logs import RedactingFilter, mask_phone, redact, register_secret


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155550123", "+1*******23"),
        ("+442071838750", "+44*******50"),
        ("+353861234567", "+353*******67"),
        ("+79123456789", "+7*******89"),
        ("+4915123456789", "+49*******89"),
        ("+1 (415) 555-0123", "+1*******23"),
        ("whatsapp:+14155550123", "whatsapp:+1*******23"),
        ("4155550123", "*******23"),
        ("+1555", "+1*******"),
        ("+1415555", "+1*******55"),
        ("12", "*******"),
        ("", ""),
        ("client:alice", "client:***"),
        ("+", "***"),
    ],
)
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def secret_value() -> str:
    return "s-" + uuid.uuid4().hex


def test_registered_values_are_redacted_longest_first() -> None:
    short, long = secret_value(), secret_value()
    register_secret(short)
    register_secret(short + long)

    assert redact(f"a={short} b={short}{long}") == "a=*** b=***"


def test_values_shorter_than_four_characters_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc abc") == "abc abc"


def test_filter_masks_args_and_stack_text() -> None:
    value = secret_value()
    register_secret(value)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    log.warning("retrying with %s after %d tries", value, 3, stack_info=True)

    text = stream.getvalue()
    assert "retrying with *** after 3 tries" in text
    assert value not in text
    assert "Stack (most recent call last)" in text
