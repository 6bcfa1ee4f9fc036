"""Log hygiene: phone numbers masked, registered secrets redacted."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest

from shared.logs import RedactingFilter, mask_phone, redact, register_secret, scrub


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


@pytest.mark.parametrize(("text", "scrubbed"), [
    ("reply from (415) 555-0134 received", "reply from *******34 received"),
    ("reply from 020 7946 0018", "reply from *******18"),
    ("mobile 0412 345 678.", "mobile *******78."),
    ("call 415-555-0134, or 415.555.0134", "call *******34, or *******34"),
    ("sent to +44 20 7946 0018", "sent to +44*******18"),
])
def test_scrub_masks_numbers_written_the_national_way(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed


@pytest.mark.parametrize("text", [
    "invoice INV-0042 of 12,500.50 USD due 2026-11-22",
    "control number 5637145001 at 2026-11-22T08:00:00.3440655Z",
    "vendor US-104, journal BRMF-000018-2, order 000018",
    "event 7D0C5A5E-1F6B-4F0E-9C1B-3C2F4B0E9A11 on 22/11/2026 at 08:00:00",
    "1 234 567.89 EUR from 127.0.0.1 by v1.2.3, message SM0123456789abcdef",
    "ids 2026-1122-0001 and 415-555-01345",
])
def test_scrub_leaves_ids_amounts_and_dates_alone(text: str) -> None:
    assert scrub(text) == text


@pytest.fixture
def library_levels() -> Iterator[None]:
    """The libraries' and the root logger's levels as they were, after the test."""
    from shared.logs import LIBRARY_LOGGERS

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in LIBRARY_LOGGERS)]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def test_the_sdks_request_logging_is_off_under_the_workers_debug_root_unless_asked_for(
        library_levels: None, caplog: pytest.LogCaptureFixture) -> None:
    from shared.logs import quiet_library_loggers

    logging.getLogger().setLevel(logging.DEBUG)  # as the Functions Python worker sets it
    storage_requests = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")

    quiet_library_loggers({})
    assert not storage_requests.isEnabledFor(logging.INFO)
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("azure.storage").isEnabledFor(logging.WARNING)  # their warnings still show
    assert logging.getLogger("shared.pipeline").isEnabledFor(logging.DEBUG)  # the app's own are left alone

    quiet_library_loggers({"LIBRARY_LOG_LEVEL": "info"})  # to see every storage request while troubleshooting
    assert storage_requests.isEnabledFor(logging.INFO)
    with caplog.at_level(logging.WARNING, logger="shared.logs"):
        quiet_library_loggers({"LIBRARY_LOG_LEVEL": "DEBUG"})  # URLs and bodies: never
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
    assert storage_requests.isEnabledFor(logging.INFO) and "at INFO at most" in caplog.text

    with caplog.at_level(logging.WARNING, logger="shared.logs"):
        quiet_library_loggers({"LIBRARY_LOG_LEVEL": "loud"})
    assert not storage_requests.isEnabledFor(logging.INFO)
    assert "LIBRARY_LOG_LEVEL='loud' is not a log level" in caplog.text
