"""An ERP connection's outcome_notes: which outcomes of its alerts become notes on its records."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.config.model import ConfigError


def x3_with(**extra: Any) -> Any:
    body = {"kind": "sagex3", "base_url": "https://x3.example.com", "folder": "SEED", "username": "admin",
            "password": {"secret": "x3-password"}, "soap_pool_alias": "SEED", "poll": {"entities": ["PORDER"]},
            **extra}
    return config_from_dict({"connections": {"x3": body}}).connections["x3"]


def test_outcome_notes_are_off_unless_a_connection_turns_them_on() -> None:
    assert x3_with().outcome_notes is None
    every = x3_with(outcome_notes={}).outcome_notes
    assert all(every.wants(outcome) for outcome in ("delivered", "failed", "answered", "reply"))


def test_a_connection_names_the_outcomes_it_wants_or_switches_them_off() -> None:
    some = x3_with(outcome_notes={"on": ["failed", "reply"]}).outcome_notes
    assert some.wants("failed") and some.wants("reply") and not some.wants("delivered")
    off = x3_with(outcome_notes={"enabled": False, "on": ["failed"]}).outcome_notes
    assert not off.wants("failed")


def test_an_unknown_outcome_is_refused_where_it_is_written() -> None:
    with pytest.raises(ConfigError, match=r"connections\.x3\.outcome_notes\.on\[0\]: must be one of delivered"):
        x3_with(outcome_notes={"on": ["opened"]})
