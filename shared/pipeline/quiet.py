"""Quiet hours: an alert due inside its recipient's quiet window is held to the window's end, not dropped.

The window is the rule's ``quiet_hours``, else its via connection's. Its time zone is the recipient's
own where the record names one (the rule's ``time_zone_field``, ``recipient_time_zone`` by default),
else the rule's window's, else the connection's, else UTC. Both are fixed when the event is routed,
while the record is at hand, and travel on the notification (``quiet_hours``); the delivery stage
holds it by sending it again to its queue with a delay until the window ends (``release_time``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from shared.config.model import Connection, QuietHours, Rule


def window_for(rule: Rule, connection: Connection | None, fields: Mapping[str, Any]) -> dict[str, str] | None:
    """The quiet window a notification of ``rule`` to this record's recipient keeps, as the payload carries
    it (start, end, time_zone), or None when neither the rule nor its connection has quiet hours."""
    on_connection: QuietHours | None = getattr(connection, "quiet_hours", None)
    window = rule.quiet_hours or on_connection
    if window is None:
        return None
    zone = (recipient_zone(fields.get(rule.time_zone_field)) or (rule.quiet_hours and rule.quiet_hours.time_zone)
            or (on_connection and on_connection.time_zone) or "UTC")
    return {"start": window.start, "end": window.end, "time_zone": zone}


def recipient_zone(value: Any) -> str | None:
    """The record's time zone field as an IANA zone, or None when it is missing or names no zone we know."""
    if not isinstance(value, str) or not value.strip():
        return None
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(value.strip())
    except (KeyError, ValueError, OSError):
        return None  # the ERP's text is no zone: the rule's or connection's zone applies
    return value.strip()


def release_time(window: Mapping[str, str], now: datetime) -> datetime | None:
    """When the quiet window that ``now`` falls in ends (UTC), or None when ``now`` is outside it.

    A window whose end is earlier than its start runs past midnight (21:00-07:00). The start is
    inside the window, the end is not: an alert due at the end goes at once."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(window.get("time_zone") or "UTC")
    local = now.astimezone(zone)
    start, end, moment = _clock(window["start"]), _clock(window["end"]), local.time().replace(tzinfo=None)
    if start < end:
        inside, ends_on = start <= moment < end, local.date()
    elif moment >= start:
        inside, ends_on = True, local.date() + timedelta(days=1)
    else:
        inside, ends_on = moment < end, local.date()
    if not inside:
        return None
    return datetime.combine(ends_on, end, tzinfo=zone).astimezone(UTC)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
