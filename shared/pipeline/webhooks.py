"""The inbound edge: every HTTP source is accepted here or refused with one error, ``Refused``.

Each source has one accept function, ``accept_<source>(config, connection_name, request
parts...)``, that finds the connection, bounds the body, checks the provider's signature
(``shared.channels.<kind>.signature``) and returns what is trusted; a refusal is a
``Refused`` with the HTTP status, error code and reason, which the triggers turn into the
answer in one place (``shared.triggers.edge``). Dynamics' business events
(``shared.pipeline.ingest``) and SendGrid's events (``shared.pipeline.email_flow``) refuse
with the same error.

Twilio signs the URL it requested with the account's Auth Token. Behind a proxy the
function sees another URL, so the URL checked is ``PUBLIC_BASE_URL`` + the route + the
query string exactly as received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs

from shared.channels.slack.connection import SlackConnection
from shared.channels.twilio.connection import TwilioConnection
from shared.config.model import AppConfig, Connection, SecretRef
from shared.settings import public_url

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024  # Twilio's callbacks are a few hundred bytes
MAX_INTERACTION_BYTES = 256 * 1024  # Slack's views carry their blocks and state

C = TypeVar("C", bound=Connection)


class Refused(Exception):
    """A request the edge does not take: the HTTP status, an error code and the reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def signing_secret(read: Callable[[], str], connection: str) -> str:
    """The secret a provider signs with, read through ``read``.

    Without it nothing can be checked, and nothing is lost by waiting: the provider is told to
    send again (503), and the log tells the operator which connection lacks what.
    """
    from shared.outcomes import is_transient

    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - a missing secret, an empty one, or the vault not answering
        if is_transient(exc):
            raise Refused(503, "unavailable", "the signing secret cannot be read just now; send again") from None
        log.error("connection %s cannot check signatures: %s", connection, type(exc).__name__)
        raise Refused(503, "not_configured",
                      f"connection {connection!r} cannot check signatures: its secret is missing or empty") from None


def stored_secret(ref: SecretRef) -> str:
    """A signing secret's value, read through the process's secret provider (cached per name): checking
    a signature needs no provider client built, nor the provider's SDK imported."""
    from shared.storage.secrets import get_secret_provider

    value = get_secret_provider().get(ref.name).reveal()
    if not value.strip():
        raise ValueError(f"secret {ref.name!r} is empty")
    return value


def connection_of(config: AppConfig, name: str, kind: type[C], label: str) -> C:
    """The connection ``name`` when it is of ``kind``; 404 otherwise."""
    connection = config.connections.get(name)
    if not isinstance(connection, kind):
        raise Refused(404, "unknown_connection", f"no {label} connection named {name!r}")
    return connection


def within(body: bytes, limit: int) -> None:
    """413 for a body over ``limit`` bytes."""
    if len(body) > limit:
        raise Refused(413, "too_large", f"at most {limit} bytes are accepted")


# --- Twilio ----------------------------------------------------------------------------------------


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


def accept_twilio_webhook(config: AppConfig, connection_name: str, route: str, request_url: str, body: bytes,
                          headers: Mapping[str, str]) -> Webhook:
    """The connection and parameters of a genuine Twilio webhook; Refused otherwise (403: not signed)."""
    from shared.channels.signed import SignatureRefused
    from shared.channels.twilio import signature

    connection = connection_of(config, connection_name, TwilioConnection, "Twilio")
    within(body, MAX_WEBHOOK_BYTES)
    try:
        params = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refused(400, "bad_form", "the body is not UTF-8 form data") from None
    try:
        token = signing_secret(lambda: stored_secret(connection.auth_token), connection.name)
        signature.verify(token, signed_url(route, request_url), params, headers)
    except SignatureRefused as exc:
        raise Refused(403, "forbidden", exc.reason) from None
    return Webhook(connection, params)


@dataclass(frozen=True)
class CodeCheck:
    connection: TwilioConnection
    number: str  # E.164
    code: str


def accept_code_check(config: AppConfig, connection_name: str, body: bytes) -> CodeCheck:
    """``{"to": "<phone number>", "code": "<digits>"}`` for a Twilio connection (the route's function
    key is the credential); Refused otherwise."""
    from shared.inputs import loads_json
    from shared.phones import InvalidNumber, normalize_number

    connection = connection_of(config, connection_name, TwilioConnection, "Twilio")
    try:
        request = loads_json(body)
    except ValueError:
        raise Refused(400, "malformed_json", "the body is not JSON") from None
    if not isinstance(request, dict) or not request.get("to") or not str(request.get("code", "")).isdigit():
        raise Refused(400, "missing_fields", 'send {"to": "<phone number>", "code": "<digits>"}')
    try:
        number = normalize_number(str(request["to"]), connection.default_region)
    except InvalidNumber as exc:
        raise Refused(400, "invalid_number", str(exc)) from None
    return CodeCheck(connection, number, str(request["code"]))


# --- Slack -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackRequest:
    connection: SlackConnection
    body: bytes  # raw, as signed


def accept_slack_request(config: AppConfig, connection_name: str, body: bytes,
                         headers: Mapping[str, str]) -> SlackRequest:
    """The connection and raw body of a genuine Slack request; Refused otherwise (401: forged or stale)."""
    from shared.channels.signed import SignatureRefused
    from shared.channels.slack import signature

    connection = connection_of(config, connection_name, SlackConnection, "Slack")
    within(body, MAX_INTERACTION_BYTES)
    try:
        secret = signing_secret(lambda: stored_secret(connection.signing_secret).strip(), connection.name)
        signature.verify(secret, body, headers)
    except SignatureRefused as exc:
        raise Refused(401, "bad_signature", f"X-Slack-Signature is missing, forged or too old: {exc.reason}") from None
    return SlackRequest(connection, body)
