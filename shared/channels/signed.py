"""What every request verifier raises.

The verifiers (``twilio.signature``, ``slack.signature``, ``sendgrid.signature``) are pure
functions over a secret, the raw request and its headers: ``verify`` returns nothing or
raises ``SignatureRefused``; ``sign`` makes the headers the provider would send. Headers are
read whatever their case (``shared.http.header_value``).
"""

from __future__ import annotations


class SignatureRefused(Exception):
    """The request does not carry the provider's signature; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
