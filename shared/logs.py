"""Logging hygiene: secret values never reach a log line, phone numbers are shown masked.

Secrets are registered as they are read (``shared.storage.secrets`` does that), and a
``RedactingFilter`` on the log handlers replaces any registered value in a record's
final text with ``***``, and in the attributes a record carries beyond the standard ones
(``extra`` fields, telemetry dimensions), where it also masks phone numbers. This is a
safety net for mistakes, not a licence to log secrets.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)

MASK = "***"
# Shorter values would mask innocent text all over the log (e.g. "id", "2024").
MIN_SECRET_LENGTH = 4


class _SecretRegistry:
    """The set of values to mask, with one compiled pattern that matches any of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            self._pattern = _alternation(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def redact(self, text: str) -> str:
        pattern = self._pattern  # one read: a concurrent add swaps in a whole new pattern
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    @property
    def active(self) -> bool:
        return self._pattern is not None


def _alternation(values: set[str]) -> re.Pattern[str]:
    # Longest first, so a secret that contains another is masked whole, not in part.
    ordered = sorted(values, key=len, reverse=True)
    return re.compile("|".join(re.escape(value) for value in ordered))


_registry = _SecretRegistry()


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it appears in a log line from now on (if it has 4+ characters)."""
    if isinstance(value, str):
        _registry.add(value)


def forget_registered_secrets() -> None:
    """Drop every registered value; for tests that need a clean registry."""
    _registry.clear()


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    return _registry.redact(text)


# An E.164-looking number (a '+', then digits with the usual separators) inside free text.
_PHONE_IN_TEXT = re.compile(r"(?<![\w+])\+\d[\d\s().\-/]{5,20}\d")
# A number written the national way. Only in the groupings people write phone numbers in, so
# ids (INV-0042, 5637144576), amounts (12,500.50) and dates (2026-11-22) stay as they are.
_NATIONAL_PHONE_IN_TEXT = re.compile(
    r"(?<![\w+])(?<!\w[./:-])(?:"
    r"\(\d{2,5}\) ?\d{3,4}[ .-]?\d{3,4}"  # (415) 555-0134, (02) 9374 4000
    r"|0\d{1,4}[ -]\d{3,4}[ -]\d{3,4}"  # a trunk 0 first: 020 7946 0018, 0412 345 678
    r"|\d{3}([ .-])\d{3}\1\d{4}"  # North America: 415-555-0134, 415.555.0134, 415 555 0134
    r")(?!\w|[./:-]\w)"
)


def scrub(text: str) -> str:
    """``text`` fit to leave the process as telemetry: secrets as ``***``, phone numbers masked."""
    text = _PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group()), _registry.redact(text))
    return _NATIONAL_PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group()), text)


# Attributes every LogRecord has; anything else on a record came from ``extra`` or a filter.
_STANDARD_ATTRIBUTES = frozenset(
    {*vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)), "message", "asctime", "taskName"}
)


def custom_attributes(record: logging.LogRecord) -> dict[str, object]:
    """The attributes of ``record`` beyond the standard ones: ``extra`` fields and dimensions."""
    return {name: value for name, value in vars(record).items() if name not in _STANDARD_ATTRIBUTES}


class RedactingFilter(logging.Filter):
    """Rewrites a record so its message, exception text and stack text carry no registered secret.

    The record is rewritten in place (message formatted, args dropped), so every handler
    and formatter after this filter sees only the masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Exporters send these attributes as they are (Application Insights: customDimensions).
        for name, value in custom_attributes(record).items():
            if isinstance(value, str):
                setattr(record, name, scrub(value))
        if not _registry.active:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's error to report
            return True
        record.msg = _registry.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the masked text is what gets written.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _registry.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _registry.redact(record.stack_info)
        return True


# The libraries' loggers: their request logging (azure-core logs every storage call's request and answer at Info).
LIBRARY_LOGGERS = ("azure", "urllib3", "msal", "twilio", "slack_sdk")
LIBRARY_LOG_LEVEL_SETTING = "LIBRARY_LOG_LEVEL"
DEFAULT_LIBRARY_LOG_LEVEL = "WARNING"


def quiet_library_loggers(env: Mapping[str, str] | None = None) -> None:
    """The libraries' loggers at ``LIBRARY_LOG_LEVEL`` (default Warning).

    The Functions Python worker sets the root logger to Debug and leaves the filtering to the host
    (``host.json``), which drops a line only after the worker has formatted it and sent it over: every
    storage call would pay for two multi-line lines nobody reads. A level the logging module does not know
    keeps the default, with a warning. Debug is not offered: at Debug the libraries write request URLs and
    bodies, which can name phone numbers and hold message texts."""
    raw = ((os.environ if env is None else env).get(LIBRARY_LOG_LEVEL_SETTING) or DEFAULT_LIBRARY_LOG_LEVEL)
    level = logging.getLevelName(raw.strip().upper())
    if not isinstance(level, int):
        log.warning("%s=%r is not a log level (INFO, WARNING, ERROR): %s is used",
                    LIBRARY_LOG_LEVEL_SETTING, raw, DEFAULT_LIBRARY_LOG_LEVEL)
        level = logging.getLevelName(DEFAULT_LIBRARY_LOG_LEVEL)
    elif level < logging.INFO:
        log.warning("%s=%r: the libraries log at INFO at most here (at DEBUG they write request URLs and bodies, "
                    "which can name phone numbers)", LIBRARY_LOG_LEVEL_SETTING, raw)
        level = logging.INFO
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one ``RedactingFilter`` on ``logger`` (default: root) and on each of its handlers.

    A filter on a logger only sees records logged on that very logger, not those that
    propagate up from child loggers (``logging.getLogger("shared.x")``); a filter on a
    handler sees every record the handler writes. Hence both. Handlers added later are
    not covered: call this again after configuring logging. Calling it twice is harmless.
    """
    target = logger if logger is not None else logging.getLogger()
    installed = _installed_filter(target) or RedactingFilter()
    _add_once(target, installed)
    for handler in target.handlers:
        _add_once(handler, installed)
    return installed


def _installed_filter(filterer: logging.Filterer) -> RedactingFilter | None:
    return next((f for f in filterer.filters if isinstance(f, RedactingFilter)), None)


def _add_once(filterer: logging.Filterer, redacting: RedactingFilter) -> None:
    if _installed_filter(filterer) is None:
        filterer.addFilter(redacting)


# Country calling codes are prefix-free: 1 and 7 are one digit, these are two, all others three.
_ONE_DIGIT_CODES = frozenset({"1", "7"})
_TWO_DIGIT_CODES = frozenset(
    {
        *("20", "27", "30", "31", "32", "33", "34", "36", "39"),
        *("40", "41", "43", "44", "45", "46", "47", "48", "49"),
        *("51", "52", "53", "54", "55", "56", "57", "58"),
        *("60", "61", "62", "63", "64", "65", "66"),
        *("81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98"),
    }
)
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]")
_PHONE_MASK = "*" * 7
# Keep the last two digits only when at least this many remain hidden.
_MIN_HIDDEN_DIGITS = 4


def mask_phone(number: str) -> str:
    """A phone number fit for logs and audit rows: ``"+14155550123"`` -> ``"+1*******23"``.

    Keeps the '+', the country calling code and the last two digits; the middle becomes a
    fixed run of seven '*', so the length of the number is not shown either. A channel
    prefix such as ``whatsapp:`` is kept. Numbers too short to hide four digits while
    showing two are masked entirely; text that is not a phone number becomes ``***``.
    """
    if not number:
        return ""
    prefix, _, rest = number.rpartition(":")
    prefix = f"{prefix}:" if prefix else ""
    compact = _PHONE_SEPARATORS.sub("", rest)
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    if not digits.isdigit():
        return prefix + MASK
    country = _country_code(digits) if plus else ""
    return prefix + ("+" if plus else "") + country + _mask_tail(digits[len(country) :])


def _country_code(digits: str) -> str:
    if digits[:1] in _ONE_DIGIT_CODES:
        return digits[:1]
    if digits[:2] in _TWO_DIGIT_CODES:
        return digits[:2]
    return digits[:3]


def _mask_tail(digits: str) -> str:
    if len(digits) - 2 < _MIN_HIDDEN_DIGITS:
        return _PHONE_MASK
    return _PHONE_MASK + digits[-2:]
