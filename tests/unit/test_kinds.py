"""The kinds list: each kind's folder agrees with what the list and its settings say of it."""

from __future__ import annotations

import importlib

import pytest

from shared import kinds
from shared.erp.polling import adapter, decision_writer, note_writer
from shared.erp.sagex3 import connection as sagex3_connection
from shared.erp.sagex3.client import NOTE_TARGETS, REST_DEFAULTS


@pytest.mark.parametrize("kind", sorted(kinds.ERPS))
def test_each_erp_adapter_polls_exactly_the_entities_its_settings_accept(kind: str) -> None:
    assert tuple(adapter(kind).ENTITIES) == kinds.ERPS[kind].entities


@pytest.mark.parametrize("kind", sorted(kinds.ERPS))
def test_an_erp_listed_as_taking_notes_has_an_adapter_that_writes_them(kind: str) -> None:
    module = importlib.import_module(kinds.ERPS[kind].adapter)
    assert callable(getattr(module, "write_note", None)) == kinds.ERPS[kind].notes
    assert (note_writer(kind) is not None) == kinds.ERPS[kind].notes


@pytest.mark.parametrize("kind", sorted(kinds.ERPS))
def test_an_erp_listed_as_taking_decisions_has_an_adapter_that_writes_them(kind: str) -> None:
    module = importlib.import_module(kinds.ERPS[kind].adapter)
    takes = kinds.ERPS[kind].decisions
    assert callable(getattr(module, "write_decision", None)) == takes
    assert callable(getattr(module, "decision_open", None)) == takes
    assert (decision_writer(kind) is not None) == takes


def test_sage_x3_settings_name_the_rest_classes_and_note_records_the_client_knows() -> None:
    assert tuple(REST_DEFAULTS) == sagex3_connection.REST_SOURCES
    assert tuple(NOTE_TARGETS) == sagex3_connection.NOTE_ENTITIES


@pytest.mark.parametrize("kind", sorted(kinds.CHANNELS))
def test_each_channel_flow_delivers_and_renders(kind: str) -> None:
    flow = kinds.load(kinds.CHANNELS[kind].flow)
    assert callable(flow.deliver) and callable(flow.render)


def test_every_rule_channel_has_exactly_one_carrier() -> None:
    channels = kinds.rule_channels()
    assert sorted(channels) == ["email", "slack", "sms", "voice"]
    assert len(set(channels)) == len(channels)
    assert {channel: kinds.carrier_of(channel).name for channel in channels} == {  # type: ignore[union-attr]
        "sms": "twilio", "voice": "twilio", "slack": "slack", "email": "sendgrid"}


def test_a_kind_that_is_not_listed_cannot_be_polled() -> None:
    with pytest.raises(ValueError, match="cannot be polled"):
        adapter("twilio")


def test_phone_addresses_are_shown_masked_and_others_as_they_are() -> None:
    assert kinds.shown_address("sms", "+14155550123") == kinds.shown_address("voice", "+14155550123")
    assert "5550123" not in kinds.shown_address("sms", "+14155550123")
    assert kinds.shown_address("email", "ap@contoso.com") == "ap@contoso.com"
    assert kinds.shown_address("slack", "#ap-approvals") == "#ap-approvals"
    assert "5550123" not in kinds.shown_address("no-such-channel", "+14155550123")  # unknown: masked to be safe
