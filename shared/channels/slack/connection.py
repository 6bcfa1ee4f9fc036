"""A Slack connection: the bot token, the signing secret, and the channel cards go to by default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from shared.config import fields as f
from shared.config.model import Connection, SecretRef

DEFAULT_SLACK_API_BASE_URL = "https://slack.com/api/"  # slack_sdk joins method names onto ".../api/"

# Channel id (C…, G…, D…) or user id for a DM, or a channel name with or without '#'.
SLACK_TARGET = re.compile(r"#?\w[\w.-]{0,79}")
SLACK_TARGET_REASON = "must be a Slack channel id or name such as C0123ABCD or #ap-approvals"


@dataclass(frozen=True, kw_only=True)
class SlackConnection(Connection):
    kind: ClassVar[str] = "slack"
    bot_token: SecretRef
    signing_secret: SecretRef
    api_base_url: str = DEFAULT_SLACK_API_BASE_URL
    default_channel: str | None = None


SETTINGS = f.ConnectionSettings(
    SlackConnection,
    {
        "bot_token": f.secret_ref,
        "signing_secret": f.secret_ref,
        "api_base_url": f.url(trailing_slash=True),
        "default_channel": f.matching(SLACK_TARGET.pattern, SLACK_TARGET_REASON),
    },
)
