"""Slack: the bot token (``auth.test``), its scopes against those the app's calls need, and the
default channel with the bot in it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.channels.slack.connection import SlackConnection
from shared.doctor import Check, Context, attempt, failed, passed

if TYPE_CHECKING:
    from shared.channels.slack.client import SlackChannel

_TOKEN_FIX = ("store the app's Bot User OAuth Token (xoxb-..., OAuth & Permissions) as the secret named by "
              "bot_token; reinstall the app to the workspace if it was revoked")


def checks(connection: SlackConnection, context: Context) -> list[Check]:
    from shared.channels.slack.client import SlackChannel
    from shared.doctor import READ_SECONDS

    channel = SlackChannel(connection, context.secrets, timeout=int(READ_SECONDS), policy=context.policy())
    granted: list[str] = []
    token = auth_test(channel, connection, granted)
    if not token.ok:
        return [token]
    found = [token, scopes(granted)]
    if connection.default_channel:
        found.append(default_channel(channel, connection))
    return found


def auth_test(channel: SlackChannel, connection: SlackConnection, granted: list[str]) -> Check:
    name = "auth.test"

    def run() -> Check:
        from shared.channels.slack.client import SlackPermanentError

        try:
            who, scopes_seen = channel.auth_test()
        except SlackPermanentError as refused:
            return failed(name, f"Slack refused the token: {refused.error}", _TOKEN_FIX)
        granted.extend(scopes_seen)
        return passed(name, f"bot {who.get('user', '?')} ({who.get('user_id', '?')}) in workspace "
                            f"{who.get('team', '?')} ({who.get('team_id', '?')})")

    return attempt(name, connection.api_base_url, run, _TOKEN_FIX)


def scopes(granted: list[str]) -> Check:
    from shared.channels.slack.client import NEEDED_SCOPES

    name = "Scopes"
    missing = [scope for scope in NEEDED_SCOPES if scope not in granted]
    if missing:
        return failed(name, f"missing {', '.join(missing)} (granted: {', '.join(granted) or 'none'})",
                      f"add the bot scopes {', '.join(missing)} under OAuth & Permissions (or from "
                      "docs/slack-app-manifest.yaml), then reinstall the app to the workspace")
    return passed(name, f"all {len(NEEDED_SCOPES)} needed scopes granted")


def default_channel(channel: SlackChannel, connection: SlackConnection) -> Check:
    target = connection.default_channel or ""
    name = f"Channel {target}"

    def run() -> Check:
        from shared.channels.slack.client import SlackPermanentError, is_conversation_id

        try:
            channel_id = target if is_conversation_id(target) else channel.conversation_id(target)
            if channel_id is None:
                return failed(name, f"no channel called {target} that the app can see",
                              "check default_channel's spelling; a private channel must have the app invited "
                              "(/invite @<app>) before it can be seen")
            info = channel.conversation_info(channel_id)
        except SlackPermanentError as refused:
            if refused.error == "channel_not_found":
                return failed(name, f"{target}: channel_not_found",
                              "check the channel id; a private channel must have the app invited (/invite @<app>)")
            return failed(name, f"Slack refused {refused.method}: {refused.error}",
                          "add the scopes the Scopes check names, then reinstall the app")
        shown_name = f"#{info.get('name', '?')} ({channel_id})"
        if info.get("is_archived"):
            return failed(name, f"{shown_name} is archived", "unarchive it, or set default_channel to another one")
        if not info.get("is_member"):
            return failed(name, f"the bot is not a member of {shown_name}",
                          f"invite the app to the channel: /invite @<app> in #{info.get('name', target)}")
        return passed(name, f"{shown_name} exists and the bot is in it")

    return attempt(name, connection.api_base_url, run, "check default_channel")
