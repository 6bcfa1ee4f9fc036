"""Phone numbers and message texts are encrypted before they reach our tables.

Storage encrypts at rest already; this keeps the contents unreadable to anyone who can
read the tables (a leaked SAS, an export, an operator browsing Storage Explorer) without
the key in Key Vault.

- ``seal``/``unseal``: AES-256-GCM with a random nonce, for values that are read back
  (job fields, audit detail, Verify gates). Sealed text starts with ``SEALED_PREFIX``;
  anything else is returned as it is, so rows written before sealing stay readable.
- ``blind``: an HMAC-SHA256 of a value, for row keys that must be found again by the
  value itself (a phone number's opt-out, last contact, open gate) without storing it.

Both keys are derived (HKDF) from one 32-byte secret named by ``DATA_PROTECTION_KEY_SECRET``
(default ``data-protection-key``), read through the secret provider on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from typing import TYPE_CHECKING

from shared.settings import env_str

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SECRET_SETTING = "DATA_PROTECTION_KEY_SECRET"
DEFAULT_KEY_SECRET = "data-protection-key"
SEALED_PREFIX = "sealed:v1:"
_NONCE_BYTES = 12


class DataProtectionError(RuntimeError):
    """The data protection key is missing or unusable, or a sealed value cannot be opened."""


class DataProtector:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise DataProtectionError(f"the data protection key must be 32 bytes, not {len(key)}")
        self._cipher_key = _derive(key, b"ml-connector seal v1")
        self._index_key = _derive(key, b"ml-connector blind index v1")
        self._aead: AESGCM | None = None

    @classmethod
    def from_text(cls, text: str) -> DataProtector:
        """From the secret's text: 32 bytes in base64 (``openssl rand -base64 32``)."""
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except (binascii.Error, ValueError) as error:
            raise DataProtectionError("the data protection key must be 32 random bytes in base64") from error

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._cipher().encrypt(nonce, text.encode("utf-8"), None)
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, value: str) -> str:
        if not value.startswith(SEALED_PREFIX):
            return value
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(value[len(SEALED_PREFIX):])
        try:
            return self._cipher().decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None).decode("utf-8")
        except InvalidTag:
            raise DataProtectionError("a sealed value does not open with this key (was the key changed?)") from None

    def blind(self, value: str) -> str:
        return "b:" + hmac.new(self._index_key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:40]

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(self._cipher_key)
        return self._aead


def _derive(key: bytes, purpose: bytes) -> bytes:
    # HKDF (RFC 5869) with one output block: extract with a fixed salt, expand with the purpose.
    prk = hmac.new(b"ml-connector", key, hashlib.sha256).digest()
    return hmac.new(prk, purpose + b"\x01", hashlib.sha256).digest()


class LazyProtector:
    """A ``DataProtector`` whose key is read from the secret provider when first needed."""

    def __init__(self) -> None:
        self._protector: DataProtector | None = None
        self._lock = threading.Lock()

    def _get(self) -> DataProtector:
        if self._protector is None:
            with self._lock:
                if self._protector is None:
                    from shared.storage.secrets import get_secret_provider

                    name = env_str(KEY_SECRET_SETTING, DEFAULT_KEY_SECRET)
                    self._protector = DataProtector.from_text(get_secret_provider().get(name).reveal())
        return self._protector

    def seal(self, text: str) -> str:
        return self._get().seal(text)

    def unseal(self, value: str) -> str:
        return self._get().unseal(value)

    def blind(self, value: str) -> str:
        return self._get().blind(value)


Protector = DataProtector | LazyProtector
