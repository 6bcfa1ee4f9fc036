"""SendGrid: the API key's permissions (``mail.send``) and the verified sender of ``from_email``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.channels.sendgrid.connection import SendGridConnection
from shared.doctor import Check, Context, attempt, failed, passed

if TYPE_CHECKING:
    from shared.channels.sendgrid.client import SendGridChannel

MAIL_SEND_SCOPE = "mail.send"
_KEY_FIX = ("create an API key with Mail Send under Settings > API Keys and store it as the secret named by "
            "api_key")


def checks(connection: SendGridConnection, context: Context) -> list[Check]:
    from shared.channels.sendgrid.client import SendGridChannel

    channel = SendGridChannel(connection, context.secrets, policy=context.policy())
    try:
        key = key_scopes(channel, connection)
        if not key.ok:
            return [key]
        return [key, verified_sender(channel, connection)]
    finally:
        channel.close()


def key_scopes(channel: SendGridChannel, connection: SendGridConnection) -> Check:
    name = "API key scopes"

    def run() -> Check:
        from shared.http import HttpFailure

        try:
            scopes = channel.scopes()
        except HttpFailure as refused:
            if refused.status in (401, 403):
                return failed(name, f"SendGrid refused the key (HTTP {refused.status})", _KEY_FIX)
            raise
        if MAIL_SEND_SCOPE not in scopes:
            return failed(name, f"the key lacks {MAIL_SEND_SCOPE} ({len(scopes)} scopes granted)",
                          "edit the key under Settings > API Keys: give it Mail Send (Full Access), or create one")
        return passed(name, f"{MAIL_SEND_SCOPE} granted")

    return attempt(name, connection.api_base_url, run, _KEY_FIX)


def verified_sender(channel: SendGridChannel, connection: SendGridConnection) -> Check:
    name = "Verified sender"
    address = connection.from_email
    fix = (f"verify {address} under Settings > Sender Authentication (Single Sender: click the link SendGrid "
           "mails), or authenticate its domain there")

    def run() -> Check:
        from shared.http import HttpFailure

        try:
            senders = channel.verified_senders()
        except HttpFailure as refused:
            if refused.status == 403:
                return failed(name, "the key may not read the sender identities (HTTP 403), so "
                                    f"{address} could not be checked",
                              f"check {address} under Settings > Sender Authentication, or give the key read "
                              "access to sender verification")
            raise
        found = [sender for sender in senders if str(sender.get("from_email", "")).lower() == address.lower()]
        if not found:
            return failed(name, f"{address} is not a Single Sender of this account", fix)
        if not any(sender.get("verified") for sender in found):
            return failed(name, f"{address} is added but not verified yet", fix)
        return passed(name, f"{address} is a verified sender")

    return attempt(name, connection.api_base_url, run, fix)
