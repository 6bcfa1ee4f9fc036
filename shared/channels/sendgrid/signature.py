"""SendGrid's Signed Event Webhook: the public key it shows, and the check of each post's signature.

Pure functions over the key, the raw body and two headers (ECDSA P-256 over the timestamp and
the body, SHA-256, base64 DER), so the configuration can check a key and the webhook endpoint
can check a post without the mail-sending channel; ``sign`` makes a post as SendGrid would,
for tests and fakes. cryptography is imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import Mapping
from typing import Any

from shared.channels.signed import SignatureRefused
from shared.http import header_value

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


def verify(public_key: str, body: bytes, headers: Mapping[str, str] | None, *, now: float | None = None,
           tolerance: float = SIGNATURE_TOLERANCE_SECONDS) -> None:
    """Nothing when SendGrid signed the timestamp header + the raw ``body`` with the key's private
    half, at a timestamp within ``tolerance`` seconds of now; SignatureRefused otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from shared.inputs import ascii_int

    signature, timestamp = header_value(headers, SIGNATURE_HEADER), header_value(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise SignatureRefused(f"{SIGNATURE_HEADER} or {TIMESTAMP_HEADER} is missing")
    signed_at = ascii_int(timestamp.strip(), 12)  # Unix seconds, well past 2100
    if signed_at is None:
        raise SignatureRefused(f"{TIMESTAMP_HEADER} is no Unix time")
    moment = time.time() if now is None else now
    if abs(moment - signed_at) > tolerance:
        raise SignatureRefused(f"signed more than {tolerance:.0f} s away from now")
    try:
        der = base64.b64decode(signature, validate=True)
        _load_public_key(public_key).verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature, InvalidPublicKey):
        raise SignatureRefused(f"{SIGNATURE_HEADER} does not match") from None


def sign(private_key: Any, body: bytes, *, timestamp: int | str | None = None) -> dict[str, str]:
    """The two headers SendGrid sends with ``body``, signed with ``private_key`` (an ECDSA P-256
    private key of cryptography) at ``timestamp`` (Unix seconds; default now)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    stamp = str(int(time.time())) if timestamp is None else str(timestamp)
    der = private_key.sign(stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(der).decode("ascii"), TIMESTAMP_HEADER: stamp}
