"""Twilio's request signature (``X-Twilio-Signature``): checked on every webhook, made by tests.

Twilio signs the full URL it requested and every form parameter with the account's Auth
Token (HMAC-SHA1, base64). The check is the SDK's own ``RequestValidator``, which also tries
the URL with and without the default port, as Twilio signs either way. twilio is imported
on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from shared.channels.signed import SignatureRefused
from shared.http import header_value

SIGNATURE_HEADER = "X-Twilio-Signature"

Params = Mapping[str, str | Sequence[str]]


class _MultiValueParams:
    """Form parameters with ``getlist``: RequestValidator reads repeated names through it."""

    def __init__(self, params: Params) -> None:
        self._params = {
            name: [value] if isinstance(value, str) else [str(v) for v in value] for name, value in params.items()
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def getlist(self, name: str) -> list[str]:
        return self._params[name]


def verify(auth_token: str, url: str, params: Params, headers: Mapping[str, str] | None) -> None:
    """Nothing when ``headers`` carry Twilio's signature of ``url`` (the public URL Twilio called,
    query string included) and ``params`` (every form parameter, repeated names as lists);
    SignatureRefused otherwise."""
    from twilio.request_validator import RequestValidator

    signature = header_value(headers, SIGNATURE_HEADER)
    if not signature:
        raise SignatureRefused(f"{SIGNATURE_HEADER} is missing")
    if not RequestValidator(auth_token).validate(url, _MultiValueParams(params), signature):
        raise SignatureRefused(f"{SIGNATURE_HEADER} does not match")


def sign(auth_token: str, url: str, params: Params) -> dict[str, str]:
    """The signature header Twilio sends with a form POST of ``params`` to ``url``."""
    from twilio.request_validator import RequestValidator

    return {SIGNATURE_HEADER: RequestValidator(auth_token).compute_signature(url, _MultiValueParams(params))}
