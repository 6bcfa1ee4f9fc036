"""Quiet hours: when a window ends, in whose time zone, and what the configuration accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.config.model import ConfigError
from shared.pipeline.quiet import release_time, window_for

NIGHT = {"start": "22:00", "end": "07:00", "time_zone": "America/Chicago"}
DAY = {"start": "12:00", "end": "13:30", "time_zone": "UTC"}


@pytest.mark.parametrize(("window", "now", "release"), [
    (NIGHT, datetime(2026, 12, 7, 4, 0, tzinfo=UTC), datetime(2026, 12, 7, 13, 0, tzinfo=UTC)),  # 22:00 Chicago
    (NIGHT, datetime(2026, 12, 7, 11, 59, tzinfo=UTC), datetime(2026, 12, 7, 13, 0, tzinfo=UTC)),  # 05:59 Chicago
    (NIGHT, datetime(2026, 12, 7, 13, 0, tzinfo=UTC), None),  # 07:00: the end is outside the window
    (NIGHT, datetime(2026, 12, 7, 3, 59, tzinfo=UTC), None),  # 21:59
    (NIGHT, datetime(2026, 7, 7, 3, 30, tzinfo=UTC), datetime(2026, 7, 7, 12, 0, tzinfo=UTC)),  # summer time
    (DAY, datetime(2026, 12, 7, 12, 0, tzinfo=UTC), datetime(2026, 12, 7, 13, 30, tzinfo=UTC)),
    (DAY, datetime(2026, 12, 7, 13, 30, tzinfo=UTC), None),
    (DAY, datetime(2026, 12, 7, 11, 59, tzinfo=UTC), None),
])
def test_a_window_holds_until_its_end_in_its_zone(window: dict[str, str], now: datetime,
                                                  release: datetime | None) -> None:
    assert release_time(window, now) == release


def config(rule: dict[str, Any], twilio: dict[str, Any] | None = None) -> Any:
    return config_from_dict({
        "connections": {
            "fo": {"kind": "dynamics", "environment_url": "https://fo.example.com", "tenant_id": "t",
                   "client_id": "c", "client_secret": {"secret": "s"}},
            "tw": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                   "api_key_secret": {"secret": "k"}, "auth_token": {"secret": "a"}, "from_number": "+15005550006",
                   **(twilio or {})},
        },
        "rules": [{"id": "r", "source": "fo", "channel": "sms", "via": "tw", "to": ["+14155550100"],
                   "template": "vendor-invoice-posted", **rule}],
    })


def test_the_recipients_zone_comes_from_the_record_then_the_rule_then_the_connection() -> None:
    connection_night = {"quiet_hours": {"start": "21:00", "end": "08:00", "time_zone": "Europe/London"}}
    loaded = config({}, connection_night)
    rule, via = loaded.rules[0], loaded.connections["tw"]
    assert window_for(rule, via, {}) == {"start": "21:00", "end": "08:00", "time_zone": "Europe/London"}
    assert window_for(rule, via, {"recipient_time_zone": "Asia/Tokyo"})["time_zone"] == "Asia/Tokyo"
    assert window_for(rule, via, {"recipient_time_zone": "Mars/Olympus"})["time_zone"] == "Europe/London"

    loaded = config({"quiet_hours": {"start": "22:00", "end": "07:00"}, "time_zone_field": "tz"}, connection_night)
    rule = loaded.rules[0]
    assert window_for(rule, via, {}) == {"start": "22:00", "end": "07:00", "time_zone": "Europe/London"}
    assert window_for(rule, via, {"tz": "America/Denver"})["time_zone"] == "America/Denver"
    assert window_for(config({}).rules[0], config({}).connections["tw"], {}) is None


def test_rules_default_to_the_operational_category_and_take_critical() -> None:
    rule = config({"critical": True, "category": "payments", "quiet_hours": NIGHT}).rules[0]
    assert (rule.category, rule.critical, rule.quiet_hours.time_zone) == ("payments", True, "America/Chicago")
    assert config({}).rules[0].category == "operational"


@pytest.mark.parametrize(("quiet", "expected"), [
    ({"start": "22:00", "end": "22:00"}, "rules[0].quiet_hours.end: must differ from start"),
    ({"start": "9pm", "end": "07:00"}, "rules[0].quiet_hours.start: must be a time of day as HH:MM"),
    ({"start": "22:00", "end": "07:00", "time_zone": "Moon/Base"}, "rules[0].quiet_hours.time_zone: unknown"),
    ({"end": "07:00"}, "rules[0].quiet_hours.start: is required"),
])
def test_a_quiet_window_that_makes_no_sense_is_refused(quiet: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config({"quiet_hours": quiet})
    assert any(error.startswith(expected) for error in raised.value.errors), raised.value.errors
