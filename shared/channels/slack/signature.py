"""Slack's request signature (``X-Slack-Signature``, v0): checked on every request, made by tests.

Slack signs ``v0:<timestamp>:<raw body>`` with the app's signing secret (HMAC-SHA256) and
refuses itself to be believed after five minutes. The check is that HMAC, computed with the
standard library as slack_sdk's ``SignatureVerifier`` computes it: importing slack_sdk takes
about 40 ms, which a cold instance's first Slack request should not wait for. ``sign`` is the
SDK's own, so tests and fakes sign as the real peer does.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from shared.channels.signed import SignatureRefused
from shared.http import header_value

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_WINDOW_SECONDS = 300  # Slack's replay window, as in slack_sdk's SignatureVerifier


def verify(signing_secret: str, body: bytes, headers: Mapping[str, str] | None, *, now: float | None = None) -> None:
    """Nothing when the raw ``body`` carries the app's Slack signature, signed within five minutes
    of ``now`` (Unix seconds; default the wall clock); SignatureRefused otherwise."""
    from shared.inputs import ascii_int

    timestamp, signature = header_value(headers, TIMESTAMP_HEADER), header_value(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise SignatureRefused(f"{TIMESTAMP_HEADER} or {SIGNATURE_HEADER} is missing")
    # Refused before the HMAC: what no Slack request carries, a timestamp of more than 12 digits,
    # a signature that is not ASCII (hmac.compare_digest refuses such text).
    signed_at = ascii_int(timestamp, 12)
    if signed_at is None or not signature.isascii():
        raise SignatureRefused(f"{TIMESTAMP_HEADER} or {SIGNATURE_HEADER} is not what Slack sends")
    moment = time.time() if now is None else now
    if abs(moment - signed_at) > SIGNATURE_WINDOW_SECONDS:
        raise SignatureRefused(f"signed more than {SIGNATURE_WINDOW_SECONDS} s away from now")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureRefused("the body is not UTF-8, as every Slack request is") from None
    if not hmac.compare_digest(_signature(signing_secret, timestamp, body), signature):
        raise SignatureRefused(f"{SIGNATURE_HEADER} does not match")


def _signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    signed = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(signing_secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(signing_secret: str, body: bytes | str, *, timestamp: int | str | None = None) -> dict[str, str]:
    """The two headers Slack sends with ``body``, signed at ``timestamp`` (Unix seconds; default now)."""
    from slack_sdk.signature import SignatureVerifier

    sent_at = str(int(time.time())) if timestamp is None else str(timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=sent_at, body=body)
    return {TIMESTAMP_HEADER: sent_at, SIGNATURE_HEADER: signature or ""}
