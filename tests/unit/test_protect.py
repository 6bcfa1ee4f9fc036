"""Sealing and blind indexes: what protects phone numbers and message texts in the tables."""

from __future__ import annotations

import base64
import os

import pytest

from shared.storage.protect import (
    SEALED_PREFIX,
    DataProtectionError,
    DataProtector,
    LazyProtector,
    NotSealedError,
    UnknownKeyError,
    sealed_key_id,
)
from shared.storage.secrets import EnvSecretProvider
from tests.support.app import TEST_DATA_PROTECTION_KEY


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


# --- key rotation ------------------------------------------------------------------------------------

# Sealed by the first format (no key id) under tests.support.app.TEST_DATA_PROTECTION_KEY, before rotation existed.
FIRST_FORMAT = ("sealed:v1:Yc94h1121ng6Mfydhx6rNLXwgwNNj/RVB1mOMWWfjnXkN7F9oxwKHtv2yIXtEws9me14TvN6zbGGQJZwRzWp9WI=")
FIRST_FORMAT_TEXT = '{"to":"+14155550123","status":"sent"}'
FIRST_FORMAT_BLIND = "b:103669811352be51d3f5ea6019a30c05834e249c"  # blind("+14155550123") under that key


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def test_a_sealed_value_names_the_key_it_was_sealed_under() -> None:
    protector = DataProtector(os.urandom(32))
    sealed = protector.seal("+14155550123")
    assert sealed_key_id(sealed) == protector.key_id
    assert protector.key_id != DataProtector(os.urandom(32)).key_id


def test_after_rotation_old_values_open_and_new_ones_use_the_new_key() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_before = DataProtector(old).seal("before")
    rotated = DataProtector(new, previous=[old])
    sealed_after = rotated.seal("after")
    assert rotated.open(sealed_before) == "before" and rotated.open(sealed_after) == "after"
    assert sealed_key_id(sealed_after) == DataProtector(new).key_id != sealed_key_id(sealed_before)
    with pytest.raises(UnknownKeyError, match=DataProtector(new).key_id):
        DataProtector(old).open(sealed_after)  # an instance that has not seen the new key yet


def test_values_of_the_first_format_open_under_the_current_key_and_after_rotation() -> None:
    assert DataProtector.from_text(TEST_DATA_PROTECTION_KEY).open(FIRST_FORMAT) == FIRST_FORMAT_TEXT
    rotated = DataProtector.from_text(b64(os.urandom(32)), previous=TEST_DATA_PROTECTION_KEY)
    assert rotated.open(FIRST_FORMAT) == FIRST_FORMAT_TEXT
    with pytest.raises(DataProtectionError, match="any key"):
        DataProtector(os.urandom(32)).open(FIRST_FORMAT)


def test_the_blind_index_keeps_matching_after_rotation() -> None:
    new = b64(os.urandom(32))
    rotated = DataProtector.from_text(new, previous=TEST_DATA_PROTECTION_KEY)
    assert rotated.blind("+14155550123") == FIRST_FORMAT_BLIND
    twice = DataProtector.from_text(b64(os.urandom(32)), previous=f"{new},{TEST_DATA_PROTECTION_KEY}")
    assert twice.blind("+14155550123") == FIRST_FORMAT_BLIND
    # Once the oldest key is retired from the ring, the blind key keeps it alive on its own.
    retired = DataProtector.from_text(b64(os.urandom(32)), previous=new, blind=TEST_DATA_PROTECTION_KEY)
    assert retired.blind("+14155550123") == FIRST_FORMAT_BLIND


def test_plain_text_where_a_sealed_value_belongs_is_refused_without_showing_it() -> None:
    protector = DataProtector(os.urandom(32))
    with pytest.raises(NotSealedError, match="plain text") as refused:
        protector.open('{"to": "+14155550123"}')
    assert "+14155550123" not in str(refused.value)


def test_a_damaged_sealed_value_gives_a_clear_error() -> None:
    with pytest.raises(DataProtectionError, match="damaged"):
        DataProtector(os.urandom(32)).open("sealed:v1:not*base64")


@pytest.mark.parametrize(("previous", "blind", "named"), [
    ("not base64!", "", "data-protection-previous-keys"),
    (f"{TEST_DATA_PROTECTION_KEY},c2hvcnQ=", "", r"DATA_PROTECTION_PREVIOUS_KEYS\) \(key 2 of 2\).*5 bytes"),
    ("", "c2hvcnQ=", "DATA_PROTECTION_BLIND_KEY"),
])
def test_a_bad_older_or_blind_key_is_refused_naming_its_setting(previous: str, blind: str, named: str) -> None:
    with pytest.raises(DataProtectionError, match=named):
        DataProtector.from_text(b64(os.urandom(32)), previous=previous, blind=blind)


def test_a_bad_current_key_is_refused_naming_its_setting() -> None:
    with pytest.raises(DataProtectionError, match=r"data-protection-key.*DATA_PROTECTION_KEY.*not base64"):
        DataProtector.from_text("replace-with-openssl-rand-base64-32")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_keyring_is_read_again_after_its_ttl() -> None:
    old, new = b64(os.urandom(32)), b64(os.urandom(32))
    env, clock = {"DATA_PROTECTION_KEY": old}, Clock()
    lazy = LazyProtector(EnvSecretProvider(env), ttl_seconds=300, clock=clock)
    sealed_before, blind_before = lazy.seal("before"), lazy.blind("+14155550123")
    env.update(DATA_PROTECTION_KEY=new, DATA_PROTECTION_PREVIOUS_KEYS=old)
    assert sealed_key_id(lazy.seal("still")) == DataProtector.from_text(old).key_id  # within the TTL
    clock.now += 301
    sealed_after = lazy.seal("after")
    assert sealed_key_id(sealed_after) == DataProtector.from_text(new).key_id
    assert lazy.open(sealed_before) == "before" and lazy.open(sealed_after) == "after"
    assert lazy.blind("+14155550123") == blind_before


def test_a_value_sealed_under_a_key_not_yet_seen_reads_the_keyring_again() -> None:
    old, new = b64(os.urandom(32)), b64(os.urandom(32))
    env = {"DATA_PROTECTION_KEY": old}
    lazy = LazyProtector(EnvSecretProvider(env), ttl_seconds=300, clock=Clock())
    lazy.seal("warm")
    env.update(DATA_PROTECTION_KEY=new, DATA_PROTECTION_PREVIOUS_KEYS=old)  # another instance rotated first
    assert lazy.open(DataProtector.from_text(new).seal("from the other instance")) == "from the other instance"


def test_a_missing_or_bad_key_names_the_setting_on_first_use() -> None:
    with pytest.raises(KeyError, match="DATA_PROTECTION_KEY"):
        LazyProtector(EnvSecretProvider({})).seal("x")
    with pytest.raises(DataProtectionError, match="DATA_PROTECTION_PREVIOUS_KEYS"):
        LazyProtector(EnvSecretProvider({"DATA_PROTECTION_KEY": b64(os.urandom(32)),
                                         "DATA_PROTECTION_PREVIOUS_KEYS": "short"})).seal("x")
