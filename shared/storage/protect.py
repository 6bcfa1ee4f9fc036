"""Phone numbers and message texts are encrypted before they reach our tables.

Storage encrypts at rest already; this keeps the contents unreadable to anyone who can
read the tables (a leaked SAS, an export, an operator browsing Storage Explorer) without
the key in Key Vault.

- ``seal``/``open``: AES-256-GCM with a random nonce, for values that are read back
  (job fields, audit detail, Verify gates). A sealed value names the key it was sealed
  under: ``sealed:v2:<key id>:<base64 nonce + ciphertext>``. Values of the first format,
  ``sealed:v1:<base64>``, carry no key id and are tried under every key of the keyring.
  ``open`` refuses text that is not sealed; ``unseal`` passes it through, for columns
  known to hold plain text too.
- ``blind``: an HMAC-SHA256 of a value, for row keys that must be found again by the
  value itself (a phone number's opt-out, last contact, open gate) without storing it.

The keyring: the newest key (secret named by ``DATA_PROTECTION_KEY_SECRET``, default
``data-protection-key``) seals; older keys (secret ``data-protection-previous-keys``,
comma-separated, newest first) still open what they sealed. The blind index cannot be
re-keyed without rewriting every row found by it, so its key never rotates: it comes
from the secret ``data-protection-blind-key`` when set, else from the oldest key listed
(the last previous key, or the only key). The keyring is read again after
``SECRET_CACHE_TTL_SECONDS``, so a rotated key takes effect without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.settings import env_float, env_str

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

KEY_SECRET_SETTING = "DATA_PROTECTION_KEY_SECRET"
DEFAULT_KEY_SECRET = "data-protection-key"
PREVIOUS_KEYS_SECRET = "data-protection-previous-keys"
BLIND_KEY_SECRET = "data-protection-blind-key"
SEALED_PREFIX = "sealed:v2:"
LEGACY_PREFIX = "sealed:v1:"  # no key id: tried under every key of the keyring
_NONCE_BYTES = 12
_KEY_ID_CHARS = 8
_FORCED_RELOAD_SECONDS = 30.0  # an unknown key id re-reads the keyring at most this often


class DataProtectionError(RuntimeError):
    """The data protection key is missing or unusable, or a sealed value cannot be opened."""


class NotSealedError(DataProtectionError):
    """Plain text where a sealed value belongs: the row was not written by this app's stores."""


class UnknownKeyError(DataProtectionError):
    """A value sealed under a key the keyring does not hold."""

    def __init__(self, key_id: str, known: Sequence[str]) -> None:
        super().__init__(f"a value sealed under key id {key_id} does not open: the keyring holds "
                         f"{', '.join(known)}; add the key it was sealed with to {PREVIOUS_KEYS_SECRET}")
        self.key_id = key_id


def is_sealed(value: str) -> bool:
    return value.startswith((SEALED_PREFIX, LEGACY_PREFIX))


def sealed_key_id(value: str) -> str | None:
    """The id of the key a value was sealed under; None for plain text and the first format."""
    if not value.startswith(SEALED_PREFIX):
        return None
    return value[len(SEALED_PREFIX):].partition(":")[0]


def parse_key(text: str, where: str) -> bytes:
    """32 bytes from their base64 text (``openssl rand -base64 32``); the error names ``where``."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DataProtectionError(f"{where}: the data protection key must be 32 random bytes in base64 "
                                  "(openssl rand -base64 32); this one is not base64") from None
    if len(key) != 32:
        raise DataProtectionError(f"{where}: the data protection key must be 32 random bytes in base64 "
                                  f"(openssl rand -base64 32); this one is {len(key)} bytes")
    return key


def parse_keys(text: str, where: str) -> list[bytes]:
    """Comma-separated keys, newest first; each error names its position."""
    items = [item for item in text.split(",") if item.strip()]
    return [parse_key(item, f"{where} (key {position} of {len(items)})") for position, item in enumerate(items, 1)]


@dataclass
class _SealKey:
    id: str
    cipher_key: bytes
    aead: AESGCM | None = field(default=None, repr=False)

    @classmethod
    def of(cls, key: bytes) -> _SealKey:
        # The id is derived like the keys themselves, so it tells nothing about the key.
        return cls(_derive(key, b"ml-connector key id v1").hex()[:_KEY_ID_CHARS], _derive(key, b"ml-connector seal v1"))

    def cipher(self) -> AESGCM:
        if self.aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self.aead = AESGCM(self.cipher_key)
        return self.aead


class DataProtector:
    """A keyring: seals under ``key``, opens under it or any of ``previous`` (newest first)."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = (), blind_key: bytes | None = None) -> None:
        for candidate in (key, *previous, *([blind_key] if blind_key is not None else [])):
            if len(candidate) != 32:
                raise DataProtectionError(f"the data protection key must be 32 bytes, not {len(candidate)}")
        ring = [_SealKey.of(each) for each in (key, *previous)]
        self._newest = ring[0]
        self._keys: dict[str, _SealKey] = {}  # newest first; the newest wins a (freak) id clash
        for each in ring:
            self._keys.setdefault(each.id, each)
        # The blind index must find rows written before any rotation: its key stays the oldest one.
        stable = blind_key if blind_key is not None else (previous[-1] if previous else key)
        self._index_key = _derive(stable, b"ml-connector blind index v1")

    @classmethod
    def from_text(cls, text: str, previous: str = "", blind: str = "",
                  key_name: str = DEFAULT_KEY_SECRET) -> DataProtector:
        """From the secrets' texts: each key 32 bytes in base64, previous keys comma-separated."""
        return cls(parse_key(text, _where(key_name)),
                   parse_keys(previous, _where(PREVIOUS_KEYS_SECRET)),
                   parse_key(blind, _where(BLIND_KEY_SECRET)) if blind.strip() else None)

    @property
    def key_id(self) -> str:
        """The id of the key new values are sealed under."""
        return self._newest.id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        header = f"{SEALED_PREFIX}{self._newest.id}:"
        sealed = self._newest.cipher().encrypt(nonce, text.encode("utf-8"), header.encode("ascii"))
        return header + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, value: str) -> str:
        """The text a sealed value holds; ``NotSealedError`` for anything else."""
        if value.startswith(SEALED_PREFIX):
            key_id, _, body = value[len(SEALED_PREFIX):].partition(":")
            key = self._keys.get(key_id)
            if key is None:
                raise UnknownKeyError(key_id, self.key_ids)
            return _decrypt([key], _raw(body), f"{SEALED_PREFIX}{key_id}:".encode("ascii"))
        if value.startswith(LEGACY_PREFIX):
            return _decrypt(list(self._keys.values()), _raw(value[len(LEGACY_PREFIX):]), None)
        raise NotSealedError(f"expected a sealed value, found {len(value)} characters of plain text; "
                             "the stores seal every value of this column when they write it")

    def unseal(self, value: str) -> str:
        """Like ``open``, but plain text is returned as it is: for columns known to hold either."""
        return self.open(value) if is_sealed(value) else value

    def blind(self, value: str) -> str:
        return "b:" + hmac.new(self._index_key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:40]


def _where(secret: str) -> str:
    """How an operator finds a secret: its Key Vault name and its local setting."""
    from shared.storage.secrets import env_style_name

    return f"secret {secret!r} (locally {env_style_name(secret)})"


def _raw(body: str) -> bytes:
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise DataProtectionError("a sealed value is damaged: its body is not base64") from None
    if len(raw) <= _NONCE_BYTES:
        raise DataProtectionError("a sealed value is damaged: it is too short")
    return raw


def _decrypt(keys: Sequence[_SealKey], raw: bytes, header: bytes | None) -> str:
    from cryptography.exceptions import InvalidTag

    for key in keys:
        try:
            return key.cipher().decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], header).decode("utf-8")
        except InvalidTag:
            continue
    raise DataProtectionError("a sealed value does not open with any key of the keyring (was the key changed, "
                              "or the value altered?)")


def _derive(key: bytes, purpose: bytes) -> bytes:
    # HKDF (RFC 5869) with one output block: extract with a fixed salt, expand with the purpose.
    prk = hmac.new(b"ml-connector", key, hashlib.sha256).digest()
    return hmac.new(prk, purpose + b"\x01", hashlib.sha256).digest()


class LazyProtector:
    """A ``DataProtector`` whose keyring is read from the secret provider when needed, and again after its TTL."""

    def __init__(self, provider: SecretProvider | None = None, ttl_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._provider = provider
        self._ttl = env_float("SECRET_CACHE_TTL_SECONDS", 300.0) if ttl_seconds is None else ttl_seconds
        self._clock = clock
        self._protector: DataProtector | None = None
        self._texts: tuple[str, str, str] | None = None
        self._expires_at = 0.0
        self._forced_at: float | None = None
        self._lock = threading.Lock()

    def _get(self) -> DataProtector:
        protector = self._protector
        if protector is None or self._clock() >= self._expires_at:
            with self._lock:
                if self._protector is None or self._clock() >= self._expires_at:
                    self._reload()
            protector = self._protector
        assert protector is not None
        return protector

    def _reload(self) -> None:
        try:
            texts = self._read_texts()
            if texts != self._texts:
                self._protector = DataProtector.from_text(*texts, key_name=self._key_name())
                self._texts = texts
                log.info("data protection keyring loaded: sealing under key id %s, %d key(s) in all",
                         self._protector.key_id, len(self._protector.key_ids))
        except Exception as error:
            if self._protector is None:
                raise
            # Keep working with the keyring we have; the next reload tries again.
            log.warning("data protection keyring not reloaded, keeping key id %s: %s", self._protector.key_id, error)
        self._expires_at = self._clock() + self._ttl

    def _read_texts(self) -> tuple[str, str, str]:
        from shared.storage.secrets import CachedSecretProvider, get_secret_provider

        provider = self._provider or get_secret_provider()
        names = (self._key_name(), PREVIOUS_KEYS_SECRET, BLIND_KEY_SECRET)
        if isinstance(provider, CachedSecretProvider):
            for name in names:  # our own TTL decides when the keyring is read again
                provider.invalidate(name)
        return provider.get(names[0]).reveal(), _optional(provider, names[1]), _optional(provider, names[2])

    @staticmethod
    def _key_name() -> str:
        return env_str(KEY_SECRET_SETTING, DEFAULT_KEY_SECRET)

    def _reload_for(self, error: UnknownKeyError) -> DataProtector:
        """After a value sealed under an unknown key: another instance may have rotated first; read again."""
        with self._lock:
            now = self._clock()
            if self._forced_at is not None and now - self._forced_at < _FORCED_RELOAD_SECONDS:
                raise error
            self._forced_at = now
            self._reload()
        assert self._protector is not None
        return self._protector

    def seal(self, text: str) -> str:
        return self._get().seal(text)

    def open(self, value: str) -> str:
        protector = self._get()
        try:
            return protector.open(value)
        except UnknownKeyError as error:
            return self._reload_for(error).open(value)

    def unseal(self, value: str) -> str:
        return self.open(value) if is_sealed(value) else value

    def blind(self, value: str) -> str:
        return self._get().blind(value)

    @property
    def key_id(self) -> str:
        return self._get().key_id


def _optional(provider: SecretProvider, name: str) -> str:
    from shared.storage.secrets import SecretNotFoundError

    try:
        return provider.get(name).reveal()
    except SecretNotFoundError:
        return ""


Protector = DataProtector | LazyProtector
