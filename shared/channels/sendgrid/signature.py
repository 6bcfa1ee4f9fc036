"""SendGrid's Signed Event Webhook: the public key it shows, and the check of each post's signature.

Pure functions over the key, the raw body and two headers (ECDSA P-256 over the timestamp and
the body, SHA-256, base64 DER), so the configuration can check a key and the webhook endpoint
can check a post without the mail-sending channel. cryptography is imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from typing import Any

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid documents no window; five minutes, as for Slack, bounds a replayed capture.
SIGNATURE_TOLERANCE_SECONDS = 300.0


class InvalidPublicKey(ValueError):
    """Text that is not an ECDSA P-256 public key; the message says why."""


def public_key_text(value: Any) -> str:
    """The base64 DER of an ECDSA P-256 public key, from itself or from PEM; InvalidPublicKey otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidPublicKey("must be the base64 public key SendGrid shows for the Signed Event Webhook")
    lines = [line.strip() for line in value.strip().splitlines() if not line.startswith("-----")]
    text = "".join(lines)
    _load_public_key(text)
    return text


@functools.lru_cache(maxsize=32)
def _load_public_key(text: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidPublicKey("is not a base64-encoded DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidPublicKey("must be an ECDSA P-256 (prime256v1) public key")
    return key


def verify_event_signature(public_key: str, payload: bytes, signature: str | None, timestamp: str | None,
                           *, now: float | None = None,
                           tolerance: float = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """Whether SendGrid signed ``timestamp`` + the raw ``payload`` with the key's private half,
    at a ``timestamp`` within ``tolerance`` seconds of now (ECDSA P-256, SHA-256, base64 DER)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from shared.inputs import ascii_int

    signed_at = ascii_int(timestamp.strip(), 12) if timestamp else None  # Unix seconds, well past 2100
    if not signature or not timestamp or signed_at is None:
        return False
    moment = time.time() if now is None else now
    if abs(moment - signed_at) > tolerance:
        return False
    try:
        der = base64.b64decode(signature, validate=True)
        _load_public_key(public_key).verify(der, timestamp.encode("ascii") + payload, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature, InvalidPublicKey):
        return False
    return True
