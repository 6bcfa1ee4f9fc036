"""Twilio: the credentials, the sender, its webhooks, and the Verify service.

The webhooks Twilio must call are ``PUBLIC_BASE_URL`` + the app's routes
(``shared/triggers/twilio.py``): ``api/twilio/inbound/<connection>`` for replies (the
number's SmsUrl, or the Messaging Service's inbound request URL) and
``api/twilio/status/<connection>`` for status (the number's StatusCallback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.channels.twilio.connection import TwilioConnection
from shared.channels.twilio.webhooks import INBOUND_ROUTE, STATUS_ROUTE
from shared.doctor import Check, Context, attempt, failed, passed
from shared.logs import mask_phone

if TYPE_CHECKING:
    from shared.channels.twilio.client import TwilioChannel

AUTH_FAILED_CODE = 20003
NOT_FOUND_CODE = 20404
_CREDENTIALS_FIX = ("api_key_sid and the secret named by api_key_secret must be an API key of account_sid (or, "
                    "without an API key, the secret named by auth_token its Auth Token): create one under "
                    "Console > Account > API keys & tokens and store its secret")


def checks(connection: TwilioConnection, context: Context) -> list[Check]:
    from shared.channels.twilio.client import TwilioChannel
    from shared.doctor import CONNECT_SECONDS, READ_SECONDS

    channel = TwilioChannel(connection, context.secrets, timeout=(CONNECT_SECONDS, READ_SECONDS),
                            policy=context.policy())
    try:
        account = credentials(channel, connection)
        if not account.ok:
            return [account]
        found = [account, *sender(channel, connection, context)]
        if connection.verify_service_sid:
            found.append(verify_service(channel, connection))
        return found
    finally:
        channel.close()


def _refusal(error: Exception) -> tuple[int | None, int | None]:
    """Twilio's error code and HTTP status of a refusal (None, None for anything else)."""
    return getattr(error, "code", None), getattr(error, "status", None)


def credentials(channel: TwilioChannel, connection: TwilioConnection) -> Check:
    name = "Credentials"

    def run() -> Check:
        from shared.channels.twilio.client import PermanentSendError

        try:
            account = channel.fetch_account()
        except PermanentSendError as refused:
            code, status = _refusal(refused)
            if code == AUTH_FAILED_CODE or status == 401:
                return failed(name, f"Twilio refused the API key {connection.api_key_sid} for account "
                                    f"{connection.account_sid} (error {AUTH_FAILED_CODE})", _CREDENTIALS_FIX)
            raise
        if account.status != "active":
            return failed(name, f"account {connection.account_sid} is {account.status}",
                          "reactivate the account in the Twilio Console (Billing), or use another account")
        return passed(name, f"account {connection.account_sid} ({account.friendly_name}) is active")

    return attempt(name, connection.api_base_url, run, _CREDENTIALS_FIX)


def sender(channel: TwilioChannel, connection: TwilioConnection, context: Context) -> list[Check]:
    if connection.messaging_service_sid:
        return [messaging_service(channel, connection, context)]
    number = connection.from_number or ""
    name = "Sender number"
    found: list[Any] = []

    def run() -> Check:
        found.extend(channel.incoming_numbers(number))
        if not found:
            return failed(name, f"{mask_phone(number)} is not a number of account {connection.account_sid}",
                          "buy or port the number into this account (Phone Numbers > Manage), or set from_number "
                          "to one of its numbers")
        return passed(name, f"{mask_phone(number)} belongs to account {connection.account_sid}")

    owned = attempt(name, connection.api_base_url, run, "check from_number")
    if not owned.ok:
        return [owned]
    return [owned,
            webhook("Inbound SMS URL (SmsUrl)", getattr(found[0], "sms_url", None), INBOUND_ROUTE, connection,
                    context, "Phone Numbers > Manage > Active numbers > the number > Messaging: "
                             "'A message comes in'"),
            webhook("Status callback (StatusCallback)", getattr(found[0], "status_callback", None), STATUS_ROUTE,
                    connection, context, "Phone Numbers > Manage > Active numbers > the number: status callback URL")]


def messaging_service(channel: TwilioChannel, connection: TwilioConnection, context: Context) -> Check:
    name = "Messaging Service"
    sid = connection.messaging_service_sid

    def run() -> Check:
        from shared.channels.twilio.client import PermanentSendError

        try:
            service = channel.fetch_messaging_service()
        except PermanentSendError as refused:
            if _refusal(refused)[1] == 404:
                return failed(name, f"{sid} is not a Messaging Service of account {connection.account_sid}",
                              "set messaging_service_sid to a service under Messaging > Services of this account")
            raise
        inbound = webhook(name, getattr(service, "inbound_request_url", None), INBOUND_ROUTE, connection, context,
                          "Messaging > Services > the service > Integration: 'Send a webhook'")
        if not inbound.ok:
            return inbound
        return passed(name, f"{sid} belongs to account {connection.account_sid}; {inbound.detail}")

    return attempt(name, connection.api_base_url, run, "check messaging_service_sid")


def webhook(name: str, seen: str | None, route: str, connection: TwilioConnection, context: Context,
            where: str) -> Check:
    from shared.channels.twilio.webhooks import webhook_url
    from shared.settings import env_str

    base_url = env_str("PUBLIC_BASE_URL", env=context.env)
    if not base_url:
        return failed(name, "PUBLIC_BASE_URL is not set, so the app cannot say where Twilio must call",
                      "set PUBLIC_BASE_URL to the app's public address (https://<app>.azurewebsites.net)")
    wanted = webhook_url(base_url, route, connection.name)
    if (seen or "").rstrip("/") == wanted:
        return passed(name, f"points at {wanted}")
    return failed(name, f"points at {seen or 'nothing'}, not {wanted}",
                  f"set it to {wanted} in the Twilio Console ({where}), or for a number run "
                  "python -m shared.cli twilio-webhooks")


def verify_service(channel: TwilioChannel, connection: TwilioConnection) -> Check:
    name = "Verify service"
    sid = connection.verify_service_sid

    def run() -> Check:
        from shared.channels.twilio.client import PermanentSendError

        try:
            service = channel.fetch_verify_service()
        except PermanentSendError as refused:
            if _refusal(refused)[1] == 404:
                return failed(name, f"{sid} is not a Verify service of account {connection.account_sid}",
                              "create one under Verify > Services and set verify_service_sid to its SID (VA...)")
            raise
        return passed(name, f"{sid} ({service.friendly_name}) exists")

    return attempt(name, connection.verify_base_url, run, "check verify_service_sid and verify_base_url")
