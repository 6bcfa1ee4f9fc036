"""Slack channel: approval cards, their updates and user lookups.

The delivery stage sees outcomes, not Slack:

- ``PostedMessage`` (channel + ts) when Slack accepted a card: keep both, ``update_card``
  needs them to replace the buttons with the decision later;
- ``SlackPermanentError`` when trying again cannot help (unknown channel, bad token,
  missing scope, invalid blocks, unknown user, expired trigger): ``error`` holds Slack's code;
- ``RetryLater`` (from ``shared.outcomes``) when Slack asked us to wait longer than is worth
  sleeping through, or answered 5xx / kept failing after one short inline retry;
- ``PostOutcomeUnknown`` (a RetryLater) when a post may have landed although no answer said
  so (a reset or timeout after sending, a 5xx): ``find_card`` tells, by the job id every card
  carries in its message metadata, before anything is posted again (``HistoryTooLong`` when
  the channel holds too many messages since the dispatch to read them all).

Channel names in rules (``#ap-approvals``) become IDs through ``conversation_id``
(conversations.list, cached per connection), so that a card is posted to, recorded with and
looked up by its channel's ID: history can only be read by ID.

Retry decisions are ours alone: the WebClient gets no SDK retry handlers (the SDK's
connection-error handler would post a card again after a reset, its rate-limit handler
would sleep through any Retry-After). Reads and updates are tried again inline under the
policy; a post never is. slack_sdk is imported on first use, so importing this module stays
cheap for the Functions host's cold start.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.clients import PerConnection
from shared.http import RetryPolicy, backoff_delay, decide, header_value, parse_retry_after
from shared.outcomes import RetryLater

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web import SlackResponse

    from shared.channels.slack.connection import SlackConnection
    from shared.config.model import SecretRef
    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

# Read timeout for one Web API call; the SDK takes a single number.
DEFAULT_TIMEOUT_SECONDS = 15
# chat.postMessage allows about one message per second per channel: a Retry-After of 1 s is
# slept through once; anything longer goes back to the queue.
SLACK_RETRY_POLICY = RetryPolicy(max_attempts=2, inline_wait_limit=1.0, default_retry_after=1.0, base_delay=0.5)
# Inside a request Slack abandons after 3 s (opening a modal for a click): one attempt, no waits.
INTERACTIVE_TIMEOUT_SECONDS = 2
INTERACTIVE_POLICY = RetryPolicy(max_attempts=1, inline_wait_limit=0.0, default_retry_after=1.0)
USER_CACHE_TTL_SECONDS = 3600.0
# Every card carries its job id in message metadata of this type, so a lost answer can be looked up.
CARD_EVENT_TYPE = "ml_connector_alert"
# Looking a card up: every page back to the dispatch start (less a margin: Slack's clock and ours
# may differ a little) is read, so a card not found surely is not there; past this many pages
# the channel is too busy to read through, and the lookup gives up rather than guess.
HISTORY_MAX_PAGES = 25
HISTORY_PAGE_SIZE = 200
HISTORY_CLOCK_MARGIN_SECONDS = 120.0
# Channel names -> IDs (conversations.list, Tier 2): names rarely change, so an ID is kept an hour.
CHANNEL_CACHE_TTL_SECONDS = 3600.0
CHANNEL_LIST_PAGE_SIZE = 200
CHANNEL_LIST_TYPES = "public_channel,private_channel"
# The bot scopes each Web API method called here needs (Slack's method reference; the Web API
# spec lists them per method), narrowed to the conversations the app uses: cards go to public and
# private channels and to DMs with approvers. docs/slack-app-manifest.yaml grants them all, and the
# connection doctor compares a token's grant with them.
METHOD_SCOPES: Mapping[str, tuple[str, ...]] = {
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "conversations.history": ("channels:history", "groups:history", "im:history"),
    "conversations.list": ("channels:read", "groups:read"),  # CHANNEL_LIST_TYPES
    "conversations.info": ("channels:read", "groups:read"),
    "conversations.open": ("im:write",),
    "views.open": (),
    "views.update": (),
    "users.lookupByEmail": ("users:read.email",),
    "users.info": ("users:read",),
    "auth.test": (),
}
NEEDED_SCOPES: tuple[str, ...] = tuple(dict.fromkeys(scope for scopes in METHOD_SCOPES.values() for scope in scopes))
# ok:false codes after which a post may or may not have happened.
UNCERTAIN_ERRORS = frozenset({"fatal_error", "internal_error", "request_timeout", "service_unavailable"})

# Block Kit limits (characters).
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
BLOCK_ID_LIMIT = 255
CONTEXT_TEXT_LIMIT = 3000
FALLBACK_TEXT_LIMIT = 3000  # Slack truncates at 40,000; a notification shows far less
APPROVE_ACTION_ID = "approve"
REJECT_ACTION_ID = "reject"
# The modal that asks for a one-time code before a high-value approval.
CODE_CALLBACK_ID = "approval-code"
CODE_BLOCK_ID = "approval-code"
CODE_ACTION_ID = "code"
CODE_VIEW_TITLE = "Approve with a code"  # a modal title holds at most 24 characters
CODE_VALUE_SUFFIX = "|code"  # on the Approve button of a card whose approval needs a code
# Reject asks for a reason in a modal; the reason goes to Dynamics as the work item's comment.
REASON_CALLBACK_ID = "reject-reason"
REASON_BLOCK_ID = "reject-reason"
REASON_ACTION_ID = "reason"
REASON_VIEW_TITLE = "Reject with a reason"  # at most 24 characters
REASON_MAX_CHARS = 1000
REASON_VALUE_SUFFIX = "|reason"  # on the Reject button of a card whose rejection asks for a reason

# ok:false codes that a later attempt of the same call may get past.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "fatal_error", "internal_error", "request_timeout", "service_unavailable"}
)
# The codes the app expects to meet; every other non-transient code is treated alike.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "users_not_found",
        "user_not_found",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "message_not_found",
        "cant_update_message",
        "expired_trigger_id",
        "not_found",  # views.update of a view the user closed
        "hash_conflict",
        "invalid_arguments",
    }
)


# --- results and errors ----------------------------------------------------------------------


@dataclass(frozen=True)
class PostedMessage:
    """Where a card landed: the channel ID Slack resolved and the message ``ts`` (keep as text)."""

    channel: str
    ts: str


@dataclass(frozen=True)
class SlackProfile:
    """What a user's profile says about reaching them; None where hidden or empty."""

    email: str | None
    phone: str | None


class SlackPermanentError(Exception):
    """Slack refused the call with ``error``; sending the same request again cannot help."""

    def __init__(self, error: str, method: str, message: str | None = None) -> None:
        super().__init__(message or f"Slack {method} failed: {error}")
        self.error = error
        self.method = method


class PostOutcomeUnknown(RetryLater):
    """A post may have landed although no answer said so: look it up before posting again."""


class HistoryTooLong(Exception):
    """The channel holds more messages since the dispatch began than a lookup reads: whether the
    card is among them cannot be told."""


class SlackConfigurationError(SlackPermanentError):
    """The connection lacks what the call needs (an empty secret)."""

    def __init__(self, message: str) -> None:
        super().__init__("configuration", "", message)


# --- card metadata ---------------------------------------------------------------------------


def card_metadata(job_id: str) -> dict[str, Any]:
    """The message metadata that names a card's job (chat.postMessage ``metadata``)."""
    return {"event_type": CARD_EVENT_TYPE, "event_payload": {"job_id": job_id}}


def carries_job(message: Mapping[str, Any], job_id: str) -> bool:
    """Whether a message from conversations.history is the card of ``job_id``."""
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return metadata.get("event_type") == CARD_EVENT_TYPE and payload.get("job_id") == job_id


def channel_name_key(name: str) -> str:
    """A channel name as conversations.list spells it: no ``#``, lower case."""
    return name.strip().lstrip("#").lower()


def is_conversation_id(target: str) -> bool:
    """Channel, private channel and DM IDs (C..., G..., D...), which history takes; channel
    names are lower case, so an upper-case word is an ID."""
    return len(target) > 1 and target[0] in "CGD" and target.isalnum() and target == target.upper()


# --- Block Kit cards -------------------------------------------------------------------------


def approval_card(
    title: str,
    facts: Sequence[tuple[str, str]],
    link: str | None,
    approve_value: str,
    reject_value: str,
    block_suffix: str,
) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of a card with Approve/Reject buttons carrying the job's values.

    ``block_suffix`` makes the block_ids unique per card (Slack keys button state by them).
    """
    from slack_sdk.models.blocks import ActionsBlock, ButtonElement, PlainTextObject

    approve = ButtonElement(
        text=PlainTextObject(text=_cap("Approve", BUTTON_TEXT_LIMIT)),
        action_id=APPROVE_ACTION_ID,
        value=_checked_value(approve_value),
        style="primary",
    )
    reject = ButtonElement(
        text=PlainTextObject(text=_cap("Reject", BUTTON_TEXT_LIMIT)),
        action_id=REJECT_ACTION_ID,
        value=_checked_value(reject_value),
        style="danger",  # no confirm dialog: the reason modal it opens has its own Cancel
    )
    blocks = [
        *_summary_blocks(title, facts, link, block_suffix),
        ActionsBlock(block_id=_block_id("actions", block_suffix), elements=[approve, reject]),
    ]
    return _fallback_text("Approval requested", title, facts), [block.to_dict() for block in blocks]


def decided_card(
    title: str,
    facts: Sequence[tuple[str, str]],
    decision: str,
    who: str,
    when: datetime,
    link: str | None = None,
    reason: str = "",
) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of a decided card: no buttons, "Rejected by <@U123> at ... UTC: <reason>",
    the record's link kept.

    Slack assigns new block_ids (a reused one could keep the old buttons' state on clients).
    """
    from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject

    moment = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    line = f"{decision.strip().capitalize()} by <@{who}> at {moment:%Y-%m-%d %H:%M} UTC"
    if reason.strip():
        line += f": {escape_mrkdwn(reason.strip())}"
    blocks = [
        *_summary_blocks(title, facts, link, None),
        ContextBlock(elements=[MarkdownTextObject(text=_cap(line, CONTEXT_TEXT_LIMIT))]),
    ]
    return _cap(f"{escape_mrkdwn(title)}: {line}", FALLBACK_TEXT_LIMIT), [block.to_dict() for block in blocks]


def code_modal(job_id: str, message: str, about: str = "") -> dict[str, Any]:
    """A modal asking for the one-time code; ``private_metadata`` names the job it is for
    (what comes back with the submission is checked against the job's stored state)."""
    import json

    from slack_sdk.models.blocks import ContextBlock, InputBlock, MarkdownTextObject, PlainTextInputElement
    from slack_sdk.models.views import View

    blocks: list[Any] = [_message_block(message)]
    if about:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_cap(about, CONTEXT_TEXT_LIMIT))]))
    blocks.append(InputBlock(
        block_id=CODE_BLOCK_ID, label="Code from the text message",
        element=PlainTextInputElement(action_id=CODE_ACTION_ID, min_length=4, max_length=10, placeholder="123456"),
    ))
    return View(type="modal", callback_id=CODE_CALLBACK_ID, title=CODE_VIEW_TITLE, submit="Approve",
                close="Cancel", private_metadata=json.dumps({"job": job_id}), blocks=blocks).to_dict()


def notice_modal(message: str, *, title: str = CODE_VIEW_TITLE, callback_id: str = CODE_CALLBACK_ID) -> dict[str, Any]:
    """A modal once there is nothing more to type: a message and a Close button."""
    from slack_sdk.models.views import View

    return View(type="modal", callback_id=callback_id, title=title, close="Close",
                blocks=[_message_block(message)]).to_dict()


def reason_modal(job_id: str, about: str = "") -> dict[str, Any]:
    """The modal a Reject click opens: why, in a few words; ``private_metadata`` names the job."""
    import json

    from slack_sdk.models.blocks import ContextBlock, InputBlock, MarkdownTextObject, PlainTextInputElement
    from slack_sdk.models.views import View

    blocks: list[Any] = [_message_block("The reason goes to Dynamics 365 with the rejection.")]
    if about:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_cap(about, CONTEXT_TEXT_LIMIT))]))
    blocks.append(InputBlock(
        block_id=REASON_BLOCK_ID, label="Reason",
        element=PlainTextInputElement(action_id=REASON_ACTION_ID, multiline=True, min_length=1,
                                      max_length=REASON_MAX_CHARS),
    ))
    return View(type="modal", callback_id=REASON_CALLBACK_ID, title=REASON_VIEW_TITLE, submit="Reject",
                close="Cancel", private_metadata=json.dumps({"job": job_id}), blocks=blocks).to_dict()


def _message_block(message: str) -> Any:
    from slack_sdk.models.blocks import PlainTextObject, SectionBlock

    # Plain text: a masked number's asterisks are not mrkdwn emphasis.
    return SectionBlock(block_id="message", text=PlainTextObject(text=_cap(message, SECTION_TEXT_LIMIT)))


def _summary_blocks(
    title: str, facts: Sequence[tuple[str, str]], link: str | None, block_suffix: str | None
) -> list[Any]:
    from slack_sdk.models.blocks import MarkdownTextObject, SectionBlock

    heading = f"*{escape_mrkdwn(title)}*"
    if link:
        heading += f"\n<{link}|Open in Dynamics 365>"
    summary = SectionBlock(
        block_id=_block_id("summary", block_suffix),
        text=MarkdownTextObject(text=_cap(heading, SECTION_TEXT_LIMIT)),
    )
    blocks: list[Any] = [summary]
    fields = [
        MarkdownTextObject(text=_cap(f"*{escape_mrkdwn(label)}*\n{escape_mrkdwn(value)}", FIELD_TEXT_LIMIT))
        for label, value in facts
    ]
    # A section holds at most 10 fields: further facts go into further sections.
    for start in range(0, len(fields), MAX_FIELDS):
        part = start // MAX_FIELDS
        blocks.append(
            SectionBlock(block_id=_block_id(f"facts{part}", block_suffix), fields=fields[start : start + MAX_FIELDS])
        )
    return blocks


def _fallback_text(prefix: str, title: str, facts: Sequence[tuple[str, str]]) -> str:
    # Mobile notifications and screen readers show only this: the document, then its first
    # facts (the amount leads them); Slack reads &, < and > in it as markup too.
    shown = [(escape_mrkdwn(label), escape_mrkdwn(value)) for label, value in facts[:3]]
    parts = [f"{prefix}: {escape_mrkdwn(title)}", *(f"{label}: {value}" for label, value in shown)]
    return _cap(" · ".join(parts), FALLBACK_TEXT_LIMIT)


def _block_id(name: str, suffix: str | None) -> str | None:
    if suffix is None:
        return None
    return f"{name}-{suffix}"[:BLOCK_ID_LIMIT]


def _checked_value(value: str) -> str:
    # A cut value would carry a wrong job id: refuse instead of truncating.
    if len(value) > BUTTON_VALUE_LIMIT:
        raise ValueError(f"a button value holds at most {BUTTON_VALUE_LIMIT} characters, got {len(value)}")
    return value


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters escaped, so ERP text cannot form links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the channel ------------------------------------------------------------------------------


class _ExpiringIds:
    """Slack IDs by a key (an email, a channel name), each kept for ``ttl`` seconds. Thread-safe."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl, self._clock = ttl, clock
        self._ids: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._ids.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[1]:
                del self._ids[key]
                return None
            return entry[0]

    def put(self, ids: Mapping[str, str]) -> None:
        expires_at = self._clock() + self._ttl
        with self._lock:
            self._ids.update({key: (value, expires_at) for key, value in ids.items()})


def _dicts(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Blocks as the plain dicts slack_sdk takes (it serialises them as they are)."""
    return [dict(block) for block in blocks]


class SlackChannel:
    """Cards, DMs, modals and lookups for one Slack connection; safe to share between threads."""

    def __init__(
        self,
        connection: SlackConnection,
        secrets: SecretProvider,
        *,
        timeout: int = DEFAULT_TIMEOUT_SECONDS,
        policy: RetryPolicy = SLACK_RETRY_POLICY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        user_cache_ttl: float = USER_CACHE_TTL_SECONDS,
        channel_cache_ttl: float = CHANNEL_CACHE_TTL_SECONDS,
    ) -> None:
        self.connection = connection
        self._secrets = secrets
        self._policy = policy
        self._sleep = sleep
        self._user_ids = _ExpiringIds(user_cache_ttl, clock)
        self._channel_ids = _ExpiringIds(channel_cache_ttl, clock)
        self._client = self._build_client(timeout)

    def _build_client(self, timeout: int) -> WebClient:
        import ssl

        from slack_sdk import WebClient

        context = ssl.create_default_context(cafile=self.connection.ca_bundle) if self.connection.ca_bundle else None
        return WebClient(
            token=self._secret(self.connection.bot_token),
            base_url=self.connection.api_base_url,
            timeout=timeout,
            ssl=context,
            # None: every retry is decided in _call, which never sends a post twice.
            retry_handlers=[],
        )

    # --- messages ------------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: slack_sdk's WebClient opens a connection per call."""

    def post_card(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]], *,
                  metadata: Mapping[str, Any] | None = None, wait_when_throttled: bool = True) -> PostedMessage:
        """Post a card; ``text`` is the notification / screen-reader fallback (always send it).

        ``metadata`` (``card_metadata``) lets ``find_card`` recognise the card later.
        ``wait_when_throttled=False`` hands a 429 straight back as RetryLater: a paced sender
        takes a new slot instead of retrying into the next send's. PostOutcomeUnknown when
        the post may have landed without an answer saying so.
        """
        extra: dict[str, Any] = {"metadata": dict(metadata)} if metadata else {}
        response = self._call(
            "chat.postMessage",
            lambda client: client.chat_postMessage(channel=channel, text=text, blocks=_dicts(blocks), **extra),
            idempotent=False,
            wait_when_throttled=wait_when_throttled,
        )
        return PostedMessage(str(response["channel"]), str(response["ts"]))

    def find_card(self, channel: str, job_id: str, since: float) -> PostedMessage | None:
        """The card of ``job_id`` in ``channel`` (an ID) posted after ``since`` (epoch seconds),
        from its message metadata. Every page back to ``since`` (less the clock margin) is read,
        and none before it: None means the card is surely not there. HistoryTooLong when more
        than ``HISTORY_MAX_PAGES`` pages lie between now and then."""
        oldest = f"{max(since - HISTORY_CLOCK_MARGIN_SECONDS, 0.0):.6f}"
        cursor: str | None = None
        for _ in range(HISTORY_MAX_PAGES):
            page = self._history_page(channel, oldest, cursor)
            found = next((m for m in page.get("messages") or [] if carries_job(m, job_id)), None)
            if found is not None:
                return PostedMessage(channel, str(found["ts"]))
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not page.get("has_more") or cursor is None:
                return None  # back at the dispatch start: the card is not there
        raise HistoryTooLong(f"more than {HISTORY_MAX_PAGES * HISTORY_PAGE_SIZE} messages in {channel} since the "
                             "dispatch began; the card may be among the older ones")

    def _history_page(self, channel: str, oldest: str, cursor: str | None) -> SlackResponse:
        paging: dict[str, Any] = {"cursor": cursor} if cursor else {}
        return self._call(
            "conversations.history",
            lambda client: client.conversations_history(channel=channel, oldest=oldest, limit=HISTORY_PAGE_SIZE,
                                                        include_all_metadata=True, **paging),
        )

    def conversation_id(self, name: str) -> str | None:
        """The ID of the channel called ``name`` (``#ap-approvals`` or ``ap-approvals``) among the
        public and private channels the app can see, archived ones left out; None when none is
        called so. IDs are cached for ``channel_cache_ttl``; a name not cached reads the list again,
        stopping at the page that holds it. SlackPermanentError when Slack refuses the list
        (``missing_scope``: channels:read, groups:read)."""
        key = channel_name_key(name)
        cached = self._channel_ids.get(key)
        if cached is not None:
            return cached
        cursor: str | None = None
        while True:
            page = self._channel_page(cursor)
            seen = self._remember_channels(page.get("channels") or [])
            if key in seen:
                return seen[key]
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None

    def _channel_page(self, cursor: str | None) -> SlackResponse:
        paging = {"cursor": cursor} if cursor else {}
        return self._call(
            "conversations.list",
            lambda client: client.conversations_list(types=CHANNEL_LIST_TYPES, exclude_archived=True,
                                                     limit=CHANNEL_LIST_PAGE_SIZE, **paging),
        )

    def _remember_channels(self, channels: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        seen = {channel_name_key(str(c["name"])): str(c["id"]) for c in channels if c.get("name") and c.get("id")}
        self._channel_ids.put(seen)
        return seen

    def update_card(self, channel: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> None:
        """Replace the card at ``channel``/``ts`` (e.g. with ``decided_card``: the buttons go)."""
        self._call(
            "chat.update",
            lambda client: client.chat_update(channel=channel, ts=ts, text=text, blocks=_dicts(blocks)),
            idempotent=True,
        )

    def post_ephemeral(self, channel: str, user: str, text: str) -> str:
        """A message only ``user`` sees in ``channel``; returns its ``message_ts``."""
        response = self._call(
            "chat.postEphemeral",
            lambda client: client.chat_postEphemeral(channel=channel, user=user, text=text),
            idempotent=False,
        )
        return str(response["message_ts"])

    def open_dm(self, user_id: str) -> str:
        """The ID (``D...``) of the app's direct-message channel with ``user_id``."""
        response = self._call("conversations.open", lambda client: client.conversations_open(users=user_id))
        return str(response["channel"]["id"])

    def open_view(self, trigger_id: str, view: Mapping[str, Any]) -> str:
        """Open a modal for a click's ``trigger_id`` (valid 3 s, once); returns the view ID."""
        response = self._call("views.open", lambda client: client.views_open(trigger_id=trigger_id, view=dict(view)))
        return str(response["view"]["id"])

    def update_view(self, view_id: str, view: Mapping[str, Any]) -> None:
        """Replace what an open modal shows (``not_found`` once the user has closed it)."""
        self._call("views.update", lambda client: client.views_update(view_id=view_id, view=dict(view)))

    # --- users ---------------------------------------------------------------------------------

    def user_id_for_email(self, email: str) -> str:
        """The Slack user ID for an ERP approver's email; cached for an hour per process."""
        key = email.strip().lower()
        cached = self._user_ids.get(key)
        if cached is not None:
            return cached
        response = self._call("users.lookupByEmail", lambda client: client.users_lookupByEmail(email=email.strip()))
        user_id = str(response["user"]["id"])
        self._user_ids.put({key: user_id})
        return user_id

    def email_for_user(self, user_id: str) -> str | None:
        """The email on a user's profile (who clicked, for the ERP's audit); None if hidden."""
        return self.profile_for_user(user_id).email

    def profile_for_user(self, user_id: str) -> SlackProfile:
        """Email (scope users:read.email) and phone (users:read) from one users.info call."""
        response = self._call("users.info", lambda client: client.users_info(user=user_id))
        profile = response["user"].get("profile") or {}
        email, phone = profile.get("email"), profile.get("phone")
        return SlackProfile(str(email) if email else None, str(phone).strip() if phone else None)

    # --- the app's set-up (the connection doctor reads it) -----------------------------------------

    def auth_test(self) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``auth.test``: who the token is, and the scopes it was granted (its ``x-oauth-scopes`` header)."""
        response = self._call("auth.test", lambda client: client.auth_test())
        granted = header_value(response.headers or {}, "x-oauth-scopes") or ""
        return dict(response.data) if isinstance(response.data, dict) else {}, tuple(
            scope.strip() for scope in granted.split(",") if scope.strip())

    def conversation_info(self, channel_id: str) -> dict[str, Any]:
        """``conversations.info``: the channel's name, whether it is archived, and whether the bot is in it."""
        response = self._call("conversations.info", lambda client: client.conversations_info(channel=channel_id))
        found = response.get("channel")
        return dict(found) if isinstance(found, dict) else {}

    # --- requests from Slack -------------------------------------------------------------------

    def signing_secret(self) -> str:
        """The secret Slack signs its requests with (``shared.channels.slack.signature``)."""
        return self._secret(self.connection.signing_secret)

    # --- plumbing ------------------------------------------------------------------------------

    def _secret(self, ref: SecretRef) -> str:
        value = self._secrets.get(ref.name).reveal().strip()
        if not value:
            raise SlackConfigurationError(f"secret {ref.name!r} of Slack connection {self.connection.name!r} is empty")
        return value

    def _call(
        self, method: str, operation: Callable[[WebClient], SlackResponse], *, idempotent: bool = True,
        wait_when_throttled: bool = True,
    ) -> SlackResponse:
        """Run one Web API call under the retry policy; raise what the delivery stage acts on."""
        from slack_sdk.errors import SlackApiError

        # The provider caches secrets for minutes: a rotated token takes effect without a rebuild.
        self._client.token = self._secret(self.connection.bot_token)
        attempt = 0
        while True:
            attempt += 1
            try:
                return operation(self._client)
            except SlackApiError as error:
                if not wait_when_throttled and error.response.status_code == 429:
                    retry_after = parse_retry_after(header_value(error.response.headers or {}, "Retry-After"))
                    raise RetryLater(retry_after or self._policy.default_retry_after,
                                     f"Slack {method}: HTTP 429", 429) from error
                self._after_api_error(error, method, attempt, idempotent)
            except OSError as error:  # URLError, resets and timeouts: no answer at all
                self._after_network_error(error, method, attempt, idempotent)

    def _after_network_error(self, error: OSError, method: str, attempt: int, idempotent: bool) -> None:
        """Return after sleeping when one more inline attempt is due; otherwise raise."""
        reason = f"Slack {method}: {type(error).__name__}"
        if not idempotent:
            if _surely_unsent(error):
                raise RetryLater(self._policy.default_retry_after, reason) from error
            raise PostOutcomeUnknown(self._policy.default_retry_after, reason) from error
        if attempt >= self._policy.max_attempts:
            raise RetryLater(self._policy.default_retry_after, reason) from error
        delay = backoff_delay(attempt - 1, base=self._policy.base_delay, cap=self._policy.max_delay)
        log.warning("%s; attempt %d, retrying in %.2fs", reason, attempt, delay)
        self._sleep(delay)

    def _after_api_error(self, error: SlackApiError, method: str, attempt: int, idempotent: bool) -> None:
        """Return after sleeping when one more inline attempt is due; otherwise raise."""
        status = int(error.response.status_code)
        headers = error.response.headers or {}
        code = _error_code(error.response)
        if status == 200 and code not in TRANSIENT_ERRORS:
            if code not in PERMANENT_ERRORS:
                log.warning("Slack %s: unexpected error %r, not retried", method, code)
            raise SlackPermanentError(code, method) from error
        # Slack answers ok:false with 200 for its own transient errors; read them as a 503.
        effective = status if status != 200 else 503
        reason = f"Slack {method}: HTTP {status} {code}".rstrip()
        if not idempotent and (status >= 500 or code in UNCERTAIN_ERRORS):
            # Slack may have acted before it failed: never sent again blindly.
            raise PostOutcomeUnknown(self._later_delay(effective, headers, 0.0), reason, status) from error
        decision = decide(self._policy, attempt, status=effective, headers=headers, idempotent=idempotent)
        if decision.action == "retry":
            log.warning("%s; attempt %d, retrying in %.2fs", reason, attempt, decision.delay)
            self._sleep(decision.delay)
            return
        if decision.action == "requeue" or effective == 429 or effective >= 500:
            raise RetryLater(self._later_delay(effective, headers, decision.delay), reason, status) from error
        raise SlackPermanentError(code or f"http_{status}", method) from error

    def _later_delay(self, status: int, headers: Mapping[str, str], decided: float) -> float:
        retry_after = parse_retry_after(header_value(headers, "Retry-After"))
        if retry_after is not None:
            return retry_after
        return decided or self._policy.default_retry_after


def _surely_unsent(error: OSError) -> bool:
    """No connection was made (refused, no such host), so Slack cannot have seen the request."""
    from urllib.error import URLError

    reason = error.reason if isinstance(error, URLError) else error
    return isinstance(reason, ConnectionRefusedError | socket.gaierror)


def _error_code(response: SlackResponse) -> str:
    data = response.data
    return str(data.get("error", "")) if isinstance(data, dict) else ""


# --- process-wide channels ----------------------------------------------------------------------

def _new_slack_channel(connection: SlackConnection) -> SlackChannel:
    from shared.storage.secrets import get_secret_provider

    return SlackChannel(connection, get_secret_provider())


def _new_interactive_channel(connection: SlackConnection) -> SlackChannel:
    from shared.storage.secrets import get_secret_provider

    return SlackChannel(connection, get_secret_provider(), timeout=INTERACTIVE_TIMEOUT_SECONDS,
                        policy=INTERACTIVE_POLICY)


_channels: PerConnection[SlackChannel] = PerConnection(_new_slack_channel)
_interactive: PerConnection[SlackChannel] = PerConnection(_new_interactive_channel)


def slack_channel(connection: SlackConnection) -> SlackChannel:
    """The process's channel for this connection name, rebuilt when its configuration changed."""
    return _channels.get(connection)


def interactive_slack_channel(connection: SlackConnection) -> SlackChannel:
    """A channel for calls made while Slack waits for our answer: short timeout, one attempt."""
    return _interactive.get(connection)


def reset_slack_channels() -> None:
    _channels.reset()
    _interactive.reset()
