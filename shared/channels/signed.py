"""What every request verifier raises, and how it reads a header, whoever sent the request.

The verifiers (``twilio.signature``, ``slack.signature``, ``sendgrid.signature``) are pure
functions over a secret, the raw request and its headers: ``verify`` returns nothing or
raises ``SignatureRefused``; ``sign`` makes the headers the provider would send.
"""

from __future__ import annotations

from collections.abc import Mapping


class SignatureRefused(Exception):
    """The request does not carry the provider's signature; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header by name, whatever its case (plain dicts, requests' and Functions' headers)."""
    if not headers:
        return None
    direct = headers.get(name)
    if direct is not None:
        return direct
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)
