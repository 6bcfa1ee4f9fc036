"""Routing: which rules fire for a record, and to whom. Conditions are data, never code.

Comparisons are forgiving the way ERP data needs: numbers written as text compare as
numbers, ISO dates as dates, and text without regard to case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.config.model import AppConfig, Condition, Rule
from shared.model import parse_utc_time


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").strip())
        except ValueError:
            return None
    return None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return parse_utc_time(value)
    except ValueError:
        return None


def _same(left: Any, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a == b
    if isinstance(left, str) and isinstance(right, str):
        return left.strip().casefold() == right.strip().casefold()
    return left == right


def _order(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both sides as comparable values (numbers, else moments), or None when they are not."""
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a, b
    m, n = _moment(left), _moment(right)
    if m is not None and n is not None:
        return m, n
    return None


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def holds(condition: Condition, fields: Mapping[str, Any]) -> bool:
    """Whether one condition holds for the record; a missing field satisfies only ``exists: false``."""
    value = fields.get(condition.field)
    if condition.op == "exists":
        return _present(value) is bool(condition.value)
    if not _present(value):
        return False
    op, expected = condition.op, condition.value
    if op == "eq":
        return _same(value, expected)
    if op == "ne":
        return not _same(value, expected)
    if op in ("in", "not_in"):
        found = any(_same(value, option) for option in expected)
        return found if op == "in" else not found
    if op == "contains":
        if isinstance(value, list | tuple):
            return any(_same(item, expected) for item in value)
        return str(expected).casefold() in str(value).casefold()
    pair = _order(value, expected)
    if pair is None:
        return False
    left, right = pair
    return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]


def matches(rule: Rule, event_type: str, fields: Mapping[str, Any], also: Sequence[str] = ()) -> bool:
    """Whether the rule fires: its event is the record's (or one of the other names it answers to, ``also``: a
    pushed event's fact found by the poll answers to the polled entity's name too) and its conditions hold."""
    if rule.event is not None and rule.event != event_type and rule.event not in also:
        return False
    return all(holds(condition, fields) for condition in rule.when)


@dataclass(frozen=True)
class Target:
    """One recipient of one rule: an address, or why there is none."""

    rule: Rule
    address: str
    problem: str = ""


def targets(config: AppConfig, source: str, event_type: str, fields: Mapping[str, Any],
            also: Sequence[str] = ()) -> list[Target]:
    """Every (rule, recipient) that fires for this record, in rule priority order."""
    found = []
    for rule in config.rules_for(source):
        if not matches(rule, event_type, fields, also):
            continue
        for recipient in rule.to:
            if recipient.field is None:
                found.append(Target(rule, recipient.value or ""))
                continue
            address = fields.get(recipient.field)
            if _present(address):
                found.append(Target(rule, str(address).strip()))
            else:
                found.append(Target(rule, "", f"the record has no value in {recipient.field!r}"))
    return found


def needs_approval_code(rule: Rule, fields: Mapping[str, Any]) -> bool:
    """Whether Approve on this rule's card needs a Verify code: its amount is above
    ``verify_above``, or missing or unreadable (nothing shows the approval is a small one)."""
    if rule.verify_above is None or rule.verify_via is None:
        return False
    amount = _number(fields.get(rule.verify_amount_field))
    return amount is None or amount > rule.verify_above
