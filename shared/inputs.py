"""Reading what arrives over HTTP within bounds: JSON, decimal numbers, declared lengths.

Anyone can post anything to a webhook. Python's own readers fail in ways that are not
``ValueError`` on hostile input (``RecursionError`` on deeply nested JSON, ``OverflowError``
on huge numbers), and an error that escapes a trigger becomes a 500. These readers turn
every such input into a ``ValueError`` that names the problem, so a trigger answers 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Webhook payloads (Slack views, SendGrid events, business events) nest a handful of levels.
MAX_JSON_DEPTH = 32
_ASCII_DIGITS = re.compile(r"[0-9]+")


def loads_json(raw: str | bytes) -> Any:
    """``json.loads`` whose every refusal is a ValueError: not JSON, nested deeper than
    ``MAX_JSON_DEPTH``, or a number too long to read. ``json.JSONDecodeError`` (with its
    line and column) is kept for text that is not JSON at all."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0); without recursion.

    Level by level, with no bookkeeping per value: every webhook body is measured here."""
    deepest = 0
    level = [value]
    while deepest <= MAX_JSON_DEPTH:
        below: list[Any] = []
        containers = 0
        for item in level:
            if isinstance(item, dict):
                below.extend(item.values())
            elif isinstance(item, list):
                below.extend(item)
            else:
                continue
            containers += 1
        if not containers:
            break
        deepest += 1
        level = below
    return deepest


def ascii_int(text: str, max_digits: int) -> int | None:
    """``text`` as a non-negative integer when it is 1 to ``max_digits`` ASCII digits; else None.

    ``str.isdigit`` also takes ``²`` and other scripts' digits, and ``int`` reads up to
    thousands of digits: neither suits a header or a timestamp.
    """
    if not isinstance(text, str) or len(text) > max_digits or not _ASCII_DIGITS.fullmatch(text):
        return None
    return int(text)


def declared_over(content_length: str | None, limit: int) -> bool:
    """Whether a Content-Length header declares more than ``limit`` bytes (junk declares nothing)."""
    value = (content_length or "").strip()
    if not _ASCII_DIGITS.fullmatch(value):
        return False
    significant = value.lstrip("0") or "0"
    return len(significant) > len(str(limit)) or int(significant) > limit
