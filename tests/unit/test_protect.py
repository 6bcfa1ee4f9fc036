"""Sealing and blind indexes: what protects phone numbers and message texts in the tables."""

from __future__ import annotations

import os

import pytest

from shared.storage.protect import SEALED_PREFIX, DataProtectionError, DataProtector


def test_sealing_is_randomised_and_reversible() -> None:
    protector = DataProtector(os.urandom(32))
    first, second = protector.seal("+14155550123"), protector.seal("+14155550123")
    assert first != second and first.startswith(SEALED_PREFIX)
    assert protector.unseal(first) == protector.unseal(second) == "+14155550123"


def test_rows_written_before_sealing_still_read() -> None:
    assert DataProtector(os.urandom(32)).unseal('{"to": "+1415"}') == '{"to": "+1415"}'


def test_a_tampered_value_is_refused() -> None:
    protector = DataProtector(os.urandom(32))
    sealed = protector.seal("hello")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(DataProtectionError):
        protector.unseal(tampered)


def test_blind_keys_are_stable_per_key_and_differ_across_keys() -> None:
    key = os.urandom(32)
    assert DataProtector(key).blind("+14155550123") == DataProtector(key).blind("+14155550123")
    assert DataProtector(key).blind("+14155550123") != DataProtector(key).blind("+14155550124")
    assert DataProtector(key).blind("+14155550123") != DataProtector(os.urandom(32)).blind("+14155550123")


@pytest.mark.parametrize("text", ["", "not base64!", "c2hvcnQ="])
def test_a_key_that_is_not_32_base64_bytes_is_refused_with_how_to_make_one(text: str) -> None:
    with pytest.raises(DataProtectionError, match="32"):
        DataProtector.from_text(text)
