"""Slack's request signature (``X-Slack-Signature``, v0): checked on every request, made by tests.

Slack signs ``v0:<timestamp>:<raw body>`` with the app's signing secret (HMAC-SHA256) and
refuses itself to be believed after five minutes. The check is the SDK's own
``SignatureVerifier``, and so is ``sign``; slack_sdk is imported on first use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from shared.channels.signed import SignatureRefused
from shared.http import header_value

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_WINDOW_SECONDS = 300  # Slack's replay window, fixed in SignatureVerifier


class _FixedClock:
    """SignatureVerifier's clock at the moment the window was checked against."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def verify(signing_secret: str, body: bytes, headers: Mapping[str, str] | None, *, now: float | None = None) -> None:
    """Nothing when the raw ``body`` carries the app's Slack signature, signed within five minutes
    of ``now`` (Unix seconds; default the wall clock); SignatureRefused otherwise."""
    from slack_sdk.signature import SignatureVerifier

    from shared.inputs import ascii_int

    timestamp, signature = header_value(headers, TIMESTAMP_HEADER), header_value(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise SignatureRefused(f"{TIMESTAMP_HEADER} or {SIGNATURE_HEADER} is missing")
    # The verifier fails on what no Slack request carries: a timestamp too big for a float,
    # a signature that is not ASCII (hmac.compare_digest refuses such text).
    signed_at = ascii_int(timestamp, 12)
    if signed_at is None or not signature.isascii():
        raise SignatureRefused(f"{TIMESTAMP_HEADER} or {SIGNATURE_HEADER} is not what Slack sends")
    moment = time.time() if now is None else now
    if abs(moment - signed_at) > SIGNATURE_WINDOW_SECONDS:
        raise SignatureRefused(f"signed more than {SIGNATURE_WINDOW_SECONDS} s away from now")
    # slack_sdk types the clock as its own Clock class; it only ever calls now().
    verifier = SignatureVerifier(signing_secret, clock=_FixedClock(moment))  # type: ignore[arg-type]
    try:
        valid = verifier.is_valid(body, timestamp, signature)
    except (ValueError, UnicodeDecodeError):
        valid = False  # a body that is no UTF-8: not Slack's
    if not valid:
        raise SignatureRefused(f"{SIGNATURE_HEADER} does not match")


def sign(signing_secret: str, body: bytes | str, *, timestamp: int | str | None = None) -> dict[str, str]:
    """The two headers Slack sends with ``body``, signed at ``timestamp`` (Unix seconds; default now)."""
    from slack_sdk.signature import SignatureVerifier

    sent_at = str(int(time.time())) if timestamp is None else str(timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=sent_at, body=body)
    return {TIMESTAMP_HEADER: sent_at, SIGNATURE_HEADER: signature or ""}
