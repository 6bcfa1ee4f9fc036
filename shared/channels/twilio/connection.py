"""A Twilio connection: the account, the credentials it sends with, the sender, and Verify.

Requests authenticate with an API key (``api_key_sid`` + ``api_key_secret``) or, without one,
with the account SID and its Auth Token, as Twilio accepts both (HTTP Basic either way)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, QuietHours, SecretRef

DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
DEFAULT_TWILIO_VERIFY_BASE_URL = "https://verify.twilio.com"


@dataclass(frozen=True, kw_only=True)
class TwilioConnection(Connection):
    kind: ClassVar[str] = "twilio"
    account_sid: str
    auth_token: SecretRef  # the key Twilio signs webhooks with (X-Twilio-Signature)
    # An API key to send with; without one, requests use the account SID and its Auth Token.
    api_key_sid: str | None = None
    api_key_secret: SecretRef | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    verify_service_sid: str | None = None
    api_base_url: str = DEFAULT_TWILIO_API_BASE_URL
    verify_base_url: str = DEFAULT_TWILIO_VERIFY_BASE_URL
    default_region: str = DEFAULT_REGION
    # SMS per second from this connection's sender, paced in our queue so that a burst waits
    # there, not in Twilio's; by default 1 for a long code or a Messaging Service, 3 for a toll-free number
    sends_per_second: float | None = None
    # SMS and calls held during this daily window in the recipient's time zone, unless their rule says otherwise
    quiet_hours: QuietHours | None = None
    # Minutes after an SMS or call is sent when Twilio is asked for its status, should its callbacks have been
    # lost (fractions allowed); 0 turns it off
    reconcile_after_minutes: float = 30.0


# Messages per second a sender sends, by its kind, when the connection does not say. Our Twilio
# reference confirms none of these figures (only that Twilio queues what a sender cannot send
# yet, rather than refusing it): they are Twilio's commonly quoted ones for US senders, kept
# as assumptions that sends_per_second overrides. A short code (about 100 per second) is not
# a from_number (an E.164 number): send through its Messaging Service and set the rate there.
LONG_CODE_SENDS_PER_SECOND = 1.0
TOLL_FREE_SENDS_PER_SECOND = 3.0
# A Messaging Service sends from a pool of numbers whose size and kinds the connection does
# not know: one per second, as for a single long code, until the connection says more.
MESSAGING_SERVICE_SENDS_PER_SECOND = 1.0
# North American toll-free prefixes.
TOLL_FREE = re.compile(r"\+1(800|833|844|855|866|877|888)\d{7}")


def messaging_base_url(connection: TwilioConnection) -> str:
    """Where Messaging Services are read: Twilio's ``messaging.`` host beside its ``api.`` host
    (``https://api.twilio.com`` -> ``https://messaging.twilio.com``, regional edges alike); a
    stand-in on another host serves them at its api_base_url."""
    base = connection.api_base_url.rstrip("/")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://messaging.{rest[len('api.'):]}" if rest.startswith("api.") else base
def basic_credentials(connection: TwilioConnection) -> tuple[str, SecretRef]:
    """The Basic auth user and the secret sent as its password: the API key, else the account and its Auth Token."""
    if connection.api_key_sid and connection.api_key_secret:
        return connection.api_key_sid, connection.api_key_secret
    return connection.account_sid, connection.auth_token


def sender_of(connection: TwilioConnection) -> str:
    """What an SMS is sent from: the Messaging Service when there is one (the client sends by it), else the number."""
    return connection.messaging_service_sid or connection.from_number or ""


def sender_rate(connection: TwilioConnection) -> float:
    """SMS per second the connection's sender may send: as configured, else by the kind of sender."""
    if connection.sends_per_second is not None:
        return connection.sends_per_second
    if connection.messaging_service_sid:
        return MESSAGING_SERVICE_SENDS_PER_SECOND
    if connection.from_number and TOLL_FREE.fullmatch(connection.from_number):
        return TOLL_FREE_SENDS_PER_SECOND
    return LONG_CODE_SENDS_PER_SECOND


@f.described({"type": "number", "exclusiveMinimum": 0})
def _positive_rate(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise f.Invalid("must be a number of messages per second above 0")
    return float(value)


# A follow-up waits on a storage queue, which holds a message a week at most.
MAX_RECONCILE_MINUTES = 7 * 24 * 60


@f.described({"type": "number", "minimum": 0, "maximum": MAX_RECONCILE_MINUTES})
def _reconcile_minutes(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_RECONCILE_MINUTES:
        raise f.Invalid(f"must be a number of minutes from 0 (off) to {MAX_RECONCILE_MINUTES}")
    return float(value)


@f.described({"anyOf": [{"required": ["from_number"]}, {"required": ["messaging_service_sid"]}]})
def _sender_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    if "from_number" in raw or "messaging_service_sid" in raw:
        return []
    return [(".from_number", "is required unless messaging_service_sid is given")]


@f.described({"dependentRequired": {"api_key_sid": ["api_key_secret"], "api_key_secret": ["api_key_sid"]}})
def _api_key_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    # Half an API key would silently fall back to the Auth Token: say which half is missing.
    if "api_key_sid" in raw and "api_key_secret" not in raw:
        return [(".api_key_secret", "is required with api_key_sid (or leave both out to send with the auth_token)")]
    if "api_key_secret" in raw and "api_key_sid" not in raw:
        return [(".api_key_sid", "is required with api_key_secret (or leave both out to send with the auth_token)")]
    return []


SETTINGS = f.ConnectionSettings(
    TwilioConnection,
    {
        "account_sid": f.sid("AC"),
        "api_key_sid": f.sid("SK"),
        "api_key_secret": f.secret_ref,
        "auth_token": f.secret_ref,
        "from_number": f.matching(f.E164.pattern, f.E164_REASON),
        "messaging_service_sid": f.sid("MG"),
        "verify_service_sid": f.sid("VA"),
        "api_base_url": f.url(),
        "verify_base_url": f.url(),
        "default_region": f.region,
        "sends_per_second": _positive_rate,
        "quiet_hours": f.quiet_hours,
        "reconcile_after_minutes": _reconcile_minutes,
    },
    f.all_problems(_sender_problems, _api_key_problems),
)
