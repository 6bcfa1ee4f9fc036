"""Checks every Twilio webhook passes before anything is trusted or queued.

Twilio signs the URL it requested with the account's Auth Token. Behind a proxy the
function sees another URL, so the URL checked is ``PUBLIC_BASE_URL`` + the route +
the query string exactly as received.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from shared.channels.twilio.connection import TwilioConnection
from shared.config.model import AppConfig
from shared.settings import public_url

MAX_WEBHOOK_BYTES = 64 * 1024  # Twilio's callbacks are a few hundred bytes


class WebhookError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Webhook:
    connection: TwilioConnection
    params: Mapping[str, list[str]]  # every value of every parameter, as signed

    def value(self, name: str) -> str:
        values = self.params.get(name) or [""]
        return values[0]

    def single_values(self) -> dict[str, str]:
        return {name: values[0] for name, values in self.params.items() if values}


def signed_url(route: str, request_url: str) -> str:
    # Split by hand: urlsplit refuses a URL whose host (from any Host header) is no valid name.
    base, _, query = request_url.partition("?")
    base = public_url(route) or base
    return f"{base}?{query}" if query else base


def read_webhook(config: AppConfig, connection_name: str, route: str, request_url: str, body: bytes,
                 signature: str | None) -> Webhook:
    """The connection and parameters of a genuine Twilio webhook, or a WebhookError."""
    connection = config.connections.get(connection_name)
    if not isinstance(connection, TwilioConnection):
        raise WebhookError(404, "unknown_connection", f"no Twilio connection named {connection_name!r}")
    if len(body) > MAX_WEBHOOK_BYTES:
        raise WebhookError(413, "too_large", f"at most {MAX_WEBHOOK_BYTES} bytes are accepted")
    try:
        params = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise WebhookError(400, "bad_form", "the body is not UTF-8 form data") from None
    if not signature:
        raise WebhookError(403, "forbidden", "X-Twilio-Signature is missing")
    from shared.channels.twilio.client import twilio_channel

    if not twilio_channel(connection).validate_signature(signed_url(route, request_url), params, signature):
        raise WebhookError(403, "forbidden", "X-Twilio-Signature does not match")
    return Webhook(connection, params)
