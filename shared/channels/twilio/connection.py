"""A Twilio connection: the account, the API key it sends with, the sender, and Verify."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, SecretRef

DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
DEFAULT_TWILIO_VERIFY_BASE_URL = "https://verify.twilio.com"


@dataclass(frozen=True, kw_only=True)
class TwilioConnection(Connection):
    kind: ClassVar[str] = "twilio"
    account_sid: str
    api_key_sid: str
    api_key_secret: SecretRef
    auth_token: SecretRef  # the key Twilio signs webhooks with (X-Twilio-Signature)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    verify_service_sid: str | None = None
    api_base_url: str = DEFAULT_TWILIO_API_BASE_URL
    verify_base_url: str = DEFAULT_TWILIO_VERIFY_BASE_URL
    default_region: str = DEFAULT_REGION


@f.described({"anyOf": [{"required": ["from_number"]}, {"required": ["messaging_service_sid"]}]})
def _sender_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    if "from_number" in raw or "messaging_service_sid" in raw:
        return []
    return [(".from_number", "is required unless messaging_service_sid is given")]


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
    },
    _sender_problems,
)
