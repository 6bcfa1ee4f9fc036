"""Where Twilio should call the app for a connection's number: the one place these addresses are made.

The routes are the app's own (``shared/triggers/twilio.py``); the address in front of them is
``PUBLIC_BASE_URL``, the one Twilio signs its requests for. Setting a number's webhooks
(``python -m shared.cli twilio-webhooks``) and checking them read the expected values here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

INBOUND_ROUTE = "api/twilio/inbound/{connection}"
STATUS_ROUTE = "api/twilio/status/{connection}"
VOICE_ROUTE = "api/twilio/voice/{connection}"  # a call to the number: answered with a recorded message
TRANSCRIPTION_ROUTE = "api/twilio/transcription/{connection}"  # the message's transcription
WEBHOOK_METHOD = "POST"


@dataclass(frozen=True)
class NumberWebhooks:
    """A phone number's webhooks as Twilio's IncomingPhoneNumber resource holds them."""

    sms_url: str
    sms_method: str
    status_callback: str

    def form(self) -> dict[str, str]:
        """The IncomingPhoneNumber update's form parameters that set them."""
        return {"SmsUrl": self.sms_url, "SmsMethod": self.sms_method, "StatusCallback": self.status_callback}

    @classmethod
    def of_resource(cls, resource: Mapping[str, object]) -> NumberWebhooks:
        """The webhooks an IncomingPhoneNumber resource (snake_case JSON) names."""
        return cls(str(resource.get("sms_url") or ""), str(resource.get("sms_method") or "").upper(),
                   str(resource.get("status_callback") or ""))


def webhook_url(base_url: str, route: str, connection: str) -> str:
    return f"{base_url.rstrip('/')}/{route.format(connection=connection)}"


def expected_webhooks(connection: str, base_url: str) -> NumberWebhooks:
    """What the number of Twilio connection ``connection`` should call, the app being at ``base_url``:
    incoming SMS at the inbound route (POST), status callbacks at the status route."""
    return NumberWebhooks(webhook_url(base_url, INBOUND_ROUTE, connection), WEBHOOK_METHOD,
                          webhook_url(base_url, STATUS_ROUTE, connection))
