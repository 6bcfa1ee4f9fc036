"""The queue envelope: what every stage reads and writes."""

from __future__ import annotations

import pytest

from shared.model import Envelope, EnvelopeError
from shared.storage.bus import message_id_for, servicebus_message


def test_envelope_round_trips() -> None:
    sent = Envelope("erp.event", "contoso-fo", "contoso-fo|1", {"a": [1, "x"]}, "c1", 2)
    assert Envelope.from_json(sent.to_json()) == sent
    assert Envelope.from_json(sent.to_json().encode()) == sent


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "not JSON"),
        ('"text"', "not a JSON object"),
        ('{"type":"t","version":1,"connection":"c","key":"k"}', "missing field(s): payload"),
        ('{"type":"","version":1,"connection":"c","key":"k","payload":{}}', "type: must be a non-empty string"),
        ('{"type":"t","version":"1","connection":"c","key":"k","payload":{}}', "version: must be an integer"),
        ('{"type":"t","version":1,"connection":"c","key":"k","payload":[]}', "payload: must be a JSON object"),
        ('{"type":"t","version":1,"connection":"c","key":"k","payload":{},"attempt":-1}', "attempt"),
    ],
)
def test_bad_envelopes_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Envelope.from_json(raw)


def test_next_attempt_keeps_identity() -> None:
    first = Envelope("t", "c", "k", {}, "corr")
    second = first.next_attempt()
    assert (second.attempt, second.key, second.correlation_id) == (1, "k", "corr")


def test_servicebus_message_carries_key_as_message_id_and_schedules_delays() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    envelope = Envelope("erp.event", "contoso-fo", "contoso-fo|5637144576", {}, "corr-7")
    message = servicebus_message(envelope, 30, now=now)
    assert message.message_id == "contoso-fo|5637144576"
    assert message.correlation_id == "corr-7"
    assert message.scheduled_enqueue_time_utc == now + timedelta(seconds=30)
    assert message.application_properties["type"] == "erp.event"
    assert servicebus_message(envelope).scheduled_enqueue_time_utc is None


def test_long_keys_get_a_stable_hashed_message_id() -> None:
    key = "x" * 300
    assert message_id_for(key) == message_id_for(key)
    assert len(message_id_for(key)) <= 128
    assert message_id_for("short") == "short"


def test_numeric_settings_are_checked() -> None:
    from shared.settings import SettingsError, env_float, env_int

    assert env_int("N", 8, env={}) == 8
    assert env_int("N", 8, env={"N": " 3 "}) == 3
    assert env_float("F", 1.5, env={"F": "0.25"}) == 0.25
    with pytest.raises(SettingsError, match=r"N: must be a whole number, not '3\.5'"):
        env_int("N", 8, env={"N": "3.5"})
    with pytest.raises(SettingsError, match="F: must not be negative"):
        env_float("F", 1.0, env={"F": "-1"})


def test_retries_get_message_ids_of_their_own_so_duplicate_detection_keeps_them() -> None:
    first = Envelope("notification.send", "twilio-main", "job-1", {})
    retry = first.next_attempt()
    ids = [servicebus_message(e).message_id for e in (first, retry, retry.next_attempt())]
    assert ids == ["job-1", "job-1#attempt-1", "job-1#attempt-2"]
    assert servicebus_message(first).message_id == servicebus_message(first).message_id  # repeats still collide
