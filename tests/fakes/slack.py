"""Fake Slack Web API over plain HTTP, plus signed interactions (button clicks) to the app.

Pointing the real SDK at it: ``WebClient(token=fake.bot_token, base_url=fake.api_base_url)``
(``http://127.0.0.1:PORT/api/``). slack_sdk sends every method as a POST, with a JSON body
(chat.*, views.*) or a form body (users.*, conversations.*); the fake also takes GET with a
query string, as Slack does.

Behaviour follows Slack's Web API spec and the Slack reference (Part B):

- Auth: ``Authorization: Bearer xoxb-...`` (or a ``token`` argument); none ->
  ``not_authed``, an unknown token -> ``invalid_auth``. Errors are HTTP 200 with
  ``{"ok": false, "error": code}``, as Slack answers them.
- ``chat.postMessage``: ``channel`` (an ID or a name) and ``text`` or ``blocks`` (else
  ``no_text``); unknown channel -> ``channel_not_found``; blocks must be a list of objects
  with a ``type``, within Block Kit's text limits (else ``invalid_blocks``). Answers
  ``ok, channel, ts, message``; ``ts`` strings increase.
- Per-channel rate limit on ``chat.postMessage``: at most ``post_burst`` posts per channel
  within ``post_interval`` seconds (defaults 1 and 1.0); more -> HTTP 429, ``Retry-After``
  in whole seconds and ``{"ok": false, "error": "ratelimited"}``. ``post_times(channel)``
  holds every accepted post's monotonic time.
- Message metadata: a ``metadata`` argument (``event_type`` and an ``event_payload`` object,
  else ``invalid_metadata_format``) is stored with the message and shown in the post's answer.
- ``conversations.history``: a channel ID (names are not accepted: ``channel_not_found``;
  DMs included), ``oldest``/``latest`` (exclusive unless ``inclusive``; ``invalid_ts_oldest``
  / ``invalid_ts_latest``), ``limit`` (default 100, at most 999) and ``cursor`` paging with
  ``response_metadata.next_cursor`` (``invalid_cursor``); ``messages`` newest first with
  ``has_more``; a message's ``metadata`` only with ``include_all_metadata``.
- ``conversations.list``: ``types`` (comma-separated; ``public_channel`` by default;
  ``mpim`` and ``im`` are not faked), ``exclude_archived``, ``limit`` (default 100, at most
  1000) and ``cursor`` paging (``response_metadata.next_cursor``, empty on the last page;
  ``invalid_cursor``); private channels only where the app is a member (``add_channel(...,
  private=True)``; ``private=True, member=False`` is one it cannot see); Slack's conversation
  objects (``id``, ``name``, ``is_private``, ``is_archived``, ...).
- Scopes: every scope is granted unless ``revoke_scope`` took it away; then the methods that
  need it answer ``missing_scope`` with ``needed`` and ``provided``, as Slack does; every
  answer to a known token carries the granted scopes in ``x-oauth-scopes``
  (conversations.list: ``channels:read`` / ``groups:read`` per type asked for;
  conversations.history: ``channels:history``, ``groups:history`` or ``im:history`` by the
  channel's kind).
- ``chat.update`` (``message_not_found``), ``chat.postEphemeral`` (``user_not_in_channel``
  for unknown users), ``users.lookupByEmail`` (``users_not_found``), ``users.info``
  (``user_not_found``; the profile carries ``email`` and ``phone``), ``conversations.open``
  (a ``D...`` id per user), ``conversations.info`` (``is_member``; ``channel_not_found`` for
  an unknown channel or a private one the app is not in), ``views.open`` (``expired_trigger_id`` unless the trigger was
  issued by this fake within ``trigger_ttl`` seconds and not used yet), ``views.update``
  (by ``view_id`` or ``external_id``; ``not_found`` for an unknown view, and for one the
  user closed (``close_view``; Slack's answer there is unconfirmed), ``hash_conflict`` for a
  stale ``hash``), ``auth.test``. Views get Slack's documented checks, minimally: a
  ``modal`` with a ``title`` of at most 24 characters, ``submit`` whenever an ``input``
  block is present, ``private_metadata`` and ``callback_id`` within 3000 / 255 characters
  (else ``invalid_arguments``).
- Failure injection from the base: ``fail_next(status=429)`` answers ``ratelimited`` with
  ``Retry-After: 2``; 5xx carry ``{"ok": false, "error": "fatal_error"}``.

Interactions to the app: ``block_actions_payload`` builds a real-shaped ``block_actions``
payload (issuing a fresh ``trigger_id`` and a ``response_url`` on this fake);
``view_submission_payload`` the ``view_submission`` of an open view with the values typed
into its inputs (ValueError for what Slack's client would not submit: a required input left
empty, a text outside the input's ``min_length``/``max_length``);
``send_interaction`` POSTs it as ``payload=<JSON>`` signed like Slack
(``X-Slack-Request-Timestamp``, ``X-Slack-Signature``), optionally stale or marked as a
retry. JSON posted to a response URL is kept in ``response_url_posts``.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import requests

from shared.channels.slack.signature import sign
from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route

TEAM_ID = "T0FAKETEAM"
TEAM_DOMAIN = "fake-workspace"
APP_ID = "A0FAKEAPP1"
BOT_ID = "B0FAKEBOT1"
BOT_USER_ID = "U0FAKEBOT1"
DEFAULT_POST_INTERVAL = 1.0
DEFAULT_POST_BURST = 1
DEFAULT_TRIGGER_TTL = 3.0
# conversations.history page sizes: Slack's default and its maximum.
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 999
# conversations.list page sizes: Slack's default and its maximum.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# The scope each listed conversation type needs.
LIST_TYPE_SCOPES = {"public_channel": "channels:read", "private_channel": "groups:read"}
# The history scope by the kind of channel, which its ID's first letter tells.
HISTORY_SCOPES = {"C": "channels:history", "G": "groups:history", "D": "im:history"}
ALL_SCOPES = frozenset({"chat:write", "users:read", "users:read.email", "im:write", "channels:read", "groups:read",
                        *HISTORY_SCOPES.values()})
# Block Kit limits the fake enforces (Slack answers invalid_blocks beyond them).
SECTION_TEXT_LIMIT = 3000
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
MAX_BLOCKS = 50
VIEW_TITLE_LIMIT = 24
PRIVATE_METADATA_LIMIT = 3000
CALLBACK_ID_LIMIT = 255
# Arguments whose value is JSON text in a form body.
_JSON_ARGUMENTS = frozenset({"blocks", "attachments", "view", "metadata"})
_ID_ALPHABET = string.ascii_uppercase + string.digits


def new_id(prefix: str, length: int = 10) -> str:
    """A Slack-style ID: a type letter and upper-case letters/digits (``C0ABC12345``)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


class SlackApiFailure(Exception):
    """An ``{"ok": false}`` answer; ``status`` 200 unless Slack uses another one (429)."""

    def __init__(self, error: str, status: int = 200, headers: Mapping[str, str] | None = None,
                 **extra: str) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = dict(headers or {})
        self.extra = extra  # further fields of the answer (missing_scope: needed, provided)


@dataclass(frozen=True)
class SlackUser:
    id: str
    email: str
    name: str
    phone: str = ""

    def resource(self) -> dict[str, Any]:
        """A user object in the shape users.info / users.lookupByEmail answer."""
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "deleted": False,
            "real_name": self.name,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_owner": False,
            "is_bot": False,
            "is_app_user": False,
            "updated": 1700000000,
            "profile": {
                "real_name": self.name,
                "real_name_normalized": self.name,
                "display_name": self.name,
                "display_name_normalized": self.name,
                "email": self.email,
                "avatar_hash": "g0123456789a",
                "title": "",
                "phone": self.phone,
                "skype": "",
                "status_text": "",
                "status_emoji": "",
                "fields": None,
                "team": TEAM_ID,
            },
        }


@dataclass
class SlackMessage:
    """A message as the fake stores it; ``text`` and ``blocks`` follow chat.update."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    arguments: Mapping[str, Any]  # every argument of the post as received (decoded)
    at: float  # time.monotonic() when accepted

    def resource(self, *, with_metadata: bool = True) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "text": self.text,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "team": TEAM_ID,
            "ts": self.ts,
        }
        if self.blocks is not None:
            message["blocks"] = self.blocks
        if with_metadata and self.metadata is not None:
            message["metadata"] = self.metadata
        return message

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The ``metadata`` the message was posted with (event_type, event_payload), if any."""
        given = self.arguments.get("metadata")
        return dict(given) if isinstance(given, dict) else None


@dataclass(frozen=True)
class SlackUpdate:
    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class SlackEphemeral:
    channel: str
    user: str
    message_ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None


@dataclass(frozen=True)
class OpenedView:
    id: str
    trigger_id: str
    view: Mapping[str, Any]


@dataclass
class _LiveView:
    """An open modal as Slack keeps it: what it shows now and the hash of that version."""

    id: str
    view: dict[str, Any]
    hash: str
    closed: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # every version shown, oldest first


@dataclass(frozen=True)
class ResponseUrlPost:
    path: str
    body: Any  # the JSON posted (replace_original, response_type, text, blocks, ...)
    at: float


@dataclass
class _RateWindow:
    accepted: list[float] = field(default_factory=list)


class FakeSlack(FakeServer):
    """Slack's Web API methods the app uses, with per-channel posting limits."""

    service_name = "slack"

    def __init__(
        self,
        *,
        port: int = 0,
        post_interval: float = DEFAULT_POST_INTERVAL,
        post_burst: int = DEFAULT_POST_BURST,
        trigger_ttl: float = DEFAULT_TRIGGER_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(port=port)
        if post_burst < 1 or post_interval <= 0:
            raise ValueError("post_burst must be at least 1 and post_interval positive")
        self.post_interval = post_interval
        self.post_burst = post_burst
        self.trigger_ttl = trigger_ttl
        self._clock = clock
        self._state_lock = threading.Lock()
        self.bot_token = "xoxb-" + secrets.token_hex(12)
        self._tokens: set[str] = {self.bot_token}
        self._channels: dict[str, str] = {}  # id -> name
        self._private: set[str] = set()  # private channel ids
        self._archived: set[str] = set()
        self._not_member: set[str] = set()  # private channels the app was not invited to
        self._scopes: set[str] = set(ALL_SCOPES)
        self._users: dict[str, SlackUser] = {}
        self._dms: dict[str, str] = {}  # user id -> D... id
        self._messages: list[SlackMessage] = []
        self._updates: list[SlackUpdate] = []
        self._ephemerals: list[SlackEphemeral] = []
        self._views: list[OpenedView] = []
        self._live_views: dict[str, _LiveView] = {}
        self._triggers: dict[str, float] = {}  # trigger_id -> monotonic time issued
        self._response_url_posts: list[ResponseUrlPost] = []
        self._windows: dict[str, _RateWindow] = {}
        self._last_ts_micros = 0
        self._sequence = itertools.count(1)

    # --- configuration -----------------------------------------------------------------------

    @property
    def api_base_url(self) -> str:
        """What ``WebClient(base_url=...)`` and ``SlackConnection.api_base_url`` take."""
        return f"{self.base_url}/api/"

    def add_token(self, token: str) -> None:
        with self._state_lock:
            self._tokens.add(token)

    def add_channel(self, channel_id: str, name: str, *, private: bool = False, archived: bool = False,
                    member: bool = True) -> None:
        with self._state_lock:
            self._channels[channel_id] = name.lstrip("#")
            for flag, ids in ((private, self._private), (archived, self._archived), (not member, self._not_member)):
                if flag:
                    ids.add(channel_id)
                else:
                    ids.discard(channel_id)

    def revoke_scope(self, scope: str) -> None:
        """The app's token no longer has ``scope``: methods that need it answer ``missing_scope``."""
        with self._state_lock:
            self._scopes.discard(scope)

    def add_user(self, user_id: str, email: str, name: str, phone: str = "") -> SlackUser:
        user = SlackUser(user_id, email, name, phone)
        with self._state_lock:
            self._users[user_id] = user
        return user

    # --- what the app did --------------------------------------------------------------------

    def messages(self, channel: str | None = None) -> list[SlackMessage]:
        with self._state_lock:
            return [message for message in self._messages if channel is None or message.channel == channel]

    def message(self, channel: str, ts: str) -> SlackMessage:
        found = [message for message in self.messages(channel) if message.ts == ts]
        if not found:
            raise KeyError(f"no message {ts} in {channel}")
        return found[0]

    def post_times(self, channel: str) -> list[float]:
        """Monotonic times of the accepted chat.postMessage calls to ``channel``, oldest first."""
        return [message.at for message in self.messages(channel)]

    @property
    def updates(self) -> list[SlackUpdate]:
        with self._state_lock:
            return list(self._updates)

    @property
    def ephemerals(self) -> list[SlackEphemeral]:
        with self._state_lock:
            return list(self._ephemerals)

    @property
    def views_opened(self) -> list[OpenedView]:
        with self._state_lock:
            return list(self._views)

    def view(self, view_id: str) -> dict[str, Any]:
        """What the modal ``view_id`` shows now (after every views.update)."""
        with self._state_lock:
            return dict(self._live_views[view_id].view)

    def view_history(self, view_id: str) -> list[dict[str, Any]]:
        """Every version of the modal ``view_id``, as opened and then updated."""
        with self._state_lock:
            return list(self._live_views[view_id].history)

    def close_view(self, view_id: str) -> None:
        """The user dismissed the modal: later views.update calls get ``not_found``."""
        with self._state_lock:
            self._live_views[view_id].closed = True

    @property
    def response_url_posts(self) -> list[ResponseUrlPost]:
        with self._state_lock:
            return list(self._response_url_posts)

    # --- interactions to the app -------------------------------------------------------------

    def issue_trigger_id(self) -> str:
        """A trigger_id views.open accepts once, within ``trigger_ttl`` seconds from now."""
        trigger_id = f"{next(self._sequence)}{secrets.randbelow(10**9)}.{TEAM_ID[1:]}.{secrets.token_hex(16)}"
        with self._state_lock:
            self._triggers[trigger_id] = self._clock()
        return trigger_id

    def new_response_url(self) -> str:
        return f"{self.base_url}/actions/{TEAM_ID}/{next(self._sequence)}{secrets.randbelow(10**9)}/" + (
            secrets.token_urlsafe(18)
        )

    def block_actions_payload(
        self,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str,
        *,
        trigger_id: str | None = None,
        response_url: str | None = None,
    ) -> dict[str, Any]:
        """A ``block_actions`` payload for a click on a button of a message in ``channel_id``. Slack sends the
        clicked button's own ``value`` (as posted, when chat.update has since taken the buttons away): ``value``
        stands in only for a message or button this fake never held."""
        user = self._users.get(user_id)
        stored = self._find_message(channel_id, message_ts)
        value = _button_value_of(stored, action_id, value)
        message: dict[str, Any] = {"type": "message", "ts": message_ts, "text": "", "bot_id": BOT_ID}
        if stored is not None:
            message |= {"text": stored.text, "blocks": stored.blocks or []}
        return {
            "type": "block_actions",
            "user": {
                "id": user_id,
                "username": user.name if user else user_id.lower(),
                "name": user.name if user else user_id.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id or self.issue_trigger_id(),
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channels.get(channel_id, "privategroup")},
            "message": message,
            "state": {"values": {}},
            "response_url": response_url or self.new_response_url(),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": _block_id_of(stored, action_id),
                    "type": "button",
                    "value": value,
                    "text": {"type": "plain_text", "text": _button_text_of(stored, action_id), "emoji": True},
                    "action_ts": _ts_from_micros(int(time.time() * 1_000_000)),
                }
            ],
        }

    def view_submission_payload(self, user_id: str, view_id: str, values: Mapping[str, str]) -> dict[str, Any]:
        """A ``view_submission`` of the open view ``view_id``; ``values`` maps an input's
        ``action_id`` to the text typed into it."""
        with self._state_lock:
            live = self._live_views[view_id]
            view = dict(live.view)
            view_hash = live.hash
        state: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks", []):
            element = block.get("element") or {}
            if block.get("type") == "input" and element.get("action_id") in values:
                typed = values[element["action_id"]]
                _check_typed(element, typed)
                state[block.get("block_id", "")] = {element["action_id"]: {"type": element.get("type"), "value": typed}}
            elif block.get("type") == "input" and not block.get("optional"):
                raise ValueError(f"Slack does not submit a view whose required input {block.get('block_id')!r} "
                                 "is empty")
        user = self._users.get(user_id)
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "user": {"id": user_id, "username": user.name if user else user_id.lower(),
                     "name": user.name if user else user_id.lower(), "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": self.issue_trigger_id(),
            "view": {**view, "id": view_id, "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT_ID,
                     "hash": view_hash, "state": {"values": state}, "root_view_id": view_id,
                     "previous_view_id": None, "app_installed_team_id": TEAM_ID,
                     "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
                     "external_id": view.get("external_id", "")},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def send_interaction(
        self,
        url: str,
        payload: Mapping[str, Any],
        signing_secret: str,
        *,
        timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timeout: float = 10.0,
    ) -> requests.Response:
        """POST ``payload`` to the app as Slack does: ``payload=<JSON>``, signed over the raw body.

        ``timestamp`` (Unix seconds) defaults to now; pass an old one for a stale request.
        ``retry_num`` adds Slack's ``X-Slack-Retry-Num``/``X-Slack-Retry-Reason``; ``headers``
        override or add any header (a forged signature, say).
        """
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        all_headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **sign(signing_secret, body, timestamp=timestamp),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            all_headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        all_headers |= dict(headers or {})
        return requests.post(url, data=body.encode("utf-8"), headers=all_headers, timeout=timeout)

    # --- routes ------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
            "chat.postEphemeral": self._post_ephemeral,
            "users.lookupByEmail": self._lookup_by_email,
            "users.info": self._user_info,
            "conversations.open": self._open_conversation,
            "conversations.history": self._history,
            "conversations.list": self._list_conversations,
            "conversations.info": self._conversation_info,
            "views.open": self._open_view,
            "views.update": self._update_view,
            "auth.test": self._auth_test,
        }

        def api(request: RecordedRequest, match: re.Match[str]) -> Response:
            method = methods.get(match["method"])
            arguments = _arguments(request)
            try:
                self._authenticate(request, arguments)
                if method is None:
                    raise SlackApiFailure("unknown_method")
                return Response.json(200, {"ok": True, **method(arguments)}, self._scope_header())
            except SlackApiFailure as failure:
                headers = {**(self._scope_header() if failure.error not in ("not_authed", "invalid_auth") else {}),
                           **(failure.headers or {})}
                return Response.json(failure.status, {"ok": False, "error": failure.error, **failure.extra}, headers)

        return [
            route("POST", r"/api/(?P<method>[A-Za-z.]+)", api),
            route("GET", r"/api/(?P<method>[A-Za-z.]+)", api),
            route("POST", r"/actions/[^/]+/[^/]+/[^/]+", self._response_url),
        ]

    def error_response(self, status: int, message: str) -> Response:
        error = "ratelimited" if status == 429 else "fatal_error" if status >= 500 else "invalid_request"
        return Response.json(status, {"ok": False, "error": error})

    def _authenticate(self, request: RecordedRequest, arguments: dict[str, Any]) -> None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else arguments.get("token")
        arguments.pop("token", None)
        if not token:
            raise SlackApiFailure("not_authed")
        with self._state_lock:
            known = token in self._tokens
        if not known:
            raise SlackApiFailure("invalid_auth")

    def _response_url(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        if request.json is None:
            return Response(400, b"invalid_payload", {"Content-Type": "text/plain"})
        with self._state_lock:
            self._response_url_posts.append(ResponseUrlPost(request.path, request.json, request.at))
        return Response(200, b"ok", {"Content-Type": "text/html"})

    # --- methods -----------------------------------------------------------------------------

    def _post_message(self, arguments: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(arguments.get("channel"))
        text, blocks = _content(arguments)
        _check_metadata(arguments.get("metadata"))
        with self._state_lock:
            now = self._clock()
            self._take_post_slot(channel, now)
            message = SlackMessage(channel, self._next_ts(), text or "", blocks, dict(arguments), now)
            self._messages.append(message)
        return {"channel": channel, "ts": message.ts, "message": message.resource()}

    def _take_post_slot(self, channel: str, now: float) -> None:
        """Slack's "one message per second per channel", as a sliding window (lock held)."""
        window = self._windows.setdefault(channel, _RateWindow())
        window.accepted = [at for at in window.accepted if now - at < self.post_interval]
        if len(window.accepted) >= self.post_burst:
            wait = window.accepted[0] + self.post_interval - now
            raise SlackApiFailure("ratelimited", 429, {"Retry-After": str(max(1, math.ceil(wait)))})
        window.accepted.append(now)

    def _update_message(self, arguments: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(arguments.get("channel"))
        text, blocks = _content(arguments, required=False)
        ts = str(arguments.get("ts") or "")
        with self._state_lock:
            message = self._find_message_locked(channel, ts)
            if message is None:
                raise SlackApiFailure("message_not_found")
            if text is None and blocks is None:
                raise SlackApiFailure("no_text")
            if text is not None:
                message.text = text
            if blocks is not None:
                message.blocks = blocks
            self._updates.append(SlackUpdate(channel, ts, text, blocks, dict(arguments)))
            current = message.text
        # As Slack's documented answer: the message's text and author, not its blocks.
        return {"channel": channel, "ts": ts, "text": current, "message": {"text": current, "user": BOT_USER_ID}}

    def _post_ephemeral(self, arguments: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(arguments.get("channel"))
        user = str(arguments.get("user") or "")
        with self._state_lock:
            known = user in self._users
        if not known:
            raise SlackApiFailure("user_not_in_channel")
        text, blocks = _content(arguments)
        with self._state_lock:
            ephemeral = SlackEphemeral(channel, user, self._next_ts(), text, blocks)
            self._ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.message_ts}

    def _history(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A channel's messages newest first, one page at a time (cursor = the last ts shown)."""
        channel = str(arguments.get("channel") or "")
        with self._state_lock:
            if channel not in self._channels:
                raise SlackApiFailure("channel_not_found")  # an ID only: names are not looked up here
        self._require_scope(HISTORY_SCOPES.get(channel[:1], "channels:history"))
        inclusive = _flag(arguments.get("inclusive"))
        oldest = _ts_argument(arguments.get("oldest"), "invalid_ts_oldest")
        latest = _ts_argument(arguments.get("latest"), "invalid_ts_latest")
        limit = _bounded_limit(arguments.get("limit"), DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT)
        cursor = _cursor_value(arguments.get("cursor"), "before")
        before = _ts_micros(cursor) if cursor is not None else None
        with_metadata = _flag(arguments.get("include_all_metadata"))

        def within(message: SlackMessage) -> bool:
            ts = _ts_micros(message.ts)
            after_oldest = oldest is None or ts > oldest or (inclusive and ts == oldest)
            before_latest = latest is None or ts < latest or (inclusive and ts == latest)
            return after_oldest and before_latest and (before is None or ts < before)

        with self._state_lock:
            found = sorted((m for m in self._messages if m.channel == channel and within(m)),
                           key=lambda m: _ts_micros(m.ts), reverse=True)
            page = [message.resource(with_metadata=with_metadata) for message in found[:limit]]
        has_more = len(found) > limit
        answer: dict[str, Any] = {"messages": page, "has_more": has_more, "pin_count": 0,
                                  "channel_actions_ts": None, "channel_actions_count": 0}
        if has_more:
            answer["response_metadata"] = {"next_cursor": _cursor_for(page[-1]["ts"], "before")}
        return answer

    def _list_conversations(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Public and private channels by ID order, one page at a time (cursor = the last ID shown)."""
        types = [kind.strip() for kind in str(arguments.get("types") or "public_channel").split(",") if kind.strip()]
        for kind in types:
            if kind in LIST_TYPE_SCOPES:
                self._require_scope(LIST_TYPE_SCOPES[kind])
        limit = _bounded_limit(arguments.get("limit"), DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        after = _cursor_value(arguments.get("cursor"), "after")
        exclude_archived = _flag(arguments.get("exclude_archived"))
        with self._state_lock:
            listed = [channel_id for channel_id in sorted(self._channels) if channel_id[:1] in "CG"
                      and ("private_channel" if channel_id in self._private else "public_channel") in types
                      and channel_id not in self._not_member
                      and not (exclude_archived and channel_id in self._archived)
                      and (after is None or channel_id > after)]
            page = [self._conversation_resource(channel_id) for channel_id in listed[:limit]]
        more = len(listed) > limit
        return {"channels": page,
                "response_metadata": {"next_cursor": _cursor_for(page[-1]["id"], "after") if more else ""}}

    def _scope_header(self) -> dict[str, str]:
        """The scopes granted to the token, as Slack reports them on every Web API answer."""
        with self._state_lock:
            return {"x-oauth-scopes": ",".join(sorted(self._scopes))}

    def _conversation_info(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """One channel by ID: a private one the app is not in is not found, as Slack answers."""
        channel_id = str(arguments.get("channel") or "")
        with self._state_lock:
            known = channel_id in self._channels and channel_id[:1] in "CG"
            private = channel_id in self._private
            hidden = private and channel_id in self._not_member
        if not known or hidden:
            raise SlackApiFailure("channel_not_found")
        self._require_scope("groups:read" if private else "channels:read")
        with self._state_lock:
            return {"channel": self._conversation_resource(channel_id)}

    def _conversation_resource(self, channel_id: str) -> dict[str, Any]:
        """A channel as conversations.list shows it (lock held)."""
        name, private = self._channels[channel_id], channel_id in self._private
        empty = {"value": "", "creator": "", "last_set": 0}
        return {"id": channel_id, "name": name, "name_normalized": name, "created": 1700000000,
                "creator": BOT_USER_ID, "is_channel": not private, "is_group": False, "is_im": False,
                "is_mpim": False, "is_private": private, "is_archived": channel_id in self._archived,
                "is_general": False, "is_shared": False, "is_ext_shared": False, "is_org_shared": False,
                "is_pending_ext_shared": False, "is_member": channel_id not in self._not_member, "unlinked": 0,
                "topic": dict(empty), "purpose": dict(empty), "previous_names": [], "num_members": 1}

    def _require_scope(self, scope: str) -> None:
        with self._state_lock:
            granted = scope in self._scopes
            provided = ",".join(sorted(self._scopes))
        if not granted:
            raise SlackApiFailure("missing_scope", needed=scope, provided=provided)

    def _lookup_by_email(self, arguments: dict[str, Any]) -> dict[str, Any]:
        email = str(arguments.get("email") or "").strip().lower()
        if not email:
            raise SlackApiFailure("invalid_arguments")
        with self._state_lock:
            found = [user for user in self._users.values() if user.email.lower() == email]
        if not found:
            raise SlackApiFailure("users_not_found")
        return {"user": found[0].resource()}

    def _user_info(self, arguments: dict[str, Any]) -> dict[str, Any]:
        with self._state_lock:
            user = self._users.get(str(arguments.get("user") or ""))
        if user is None:
            raise SlackApiFailure("user_not_found")
        return {"user": user.resource()}

    def _open_conversation(self, arguments: dict[str, Any]) -> dict[str, Any]:
        users = [user.strip() for user in str(arguments.get("users") or "").split(",") if user.strip()]
        if not users:
            raise SlackApiFailure("users_list_not_supplied")
        if len(users) > 1:
            raise SlackApiFailure("method_not_supported_for_channel_type")  # group DMs are not faked
        with self._state_lock:
            if users[0] not in self._users:
                raise SlackApiFailure("user_not_found")
            already_open = users[0] in self._dms
            dm = self._dms.setdefault(users[0], new_id("D"))
            self._channels.setdefault(dm, users[0])
        answer: dict[str, Any] = {"channel": {"id": dm}}
        if already_open:
            answer |= {"no_op": True, "already_open": True}
        return answer

    def _open_view(self, arguments: dict[str, Any]) -> dict[str, Any]:
        trigger_id = str(arguments.get("trigger_id") or "")
        with self._state_lock:
            issued = self._triggers.pop(trigger_id, None)  # single use
            if issued is None or self._clock() - issued > self.trigger_ttl:
                raise SlackApiFailure("expired_trigger_id")
        view = _checked_view(arguments.get("view"))
        with self._state_lock:
            opened = OpenedView(new_id("V"), trigger_id, view)
            self._views.append(opened)
            live = _LiveView(opened.id, dict(view), secrets.token_hex(8), history=[dict(view)])
            self._live_views[opened.id] = live
        return {"view": self._view_resource(live)}

    def _update_view(self, arguments: dict[str, Any]) -> dict[str, Any]:
        view = _checked_view(arguments.get("view"))
        view_id, external_id = str(arguments.get("view_id") or ""), str(arguments.get("external_id") or "")
        with self._state_lock:
            live = self._live_views.get(view_id) or next(
                (v for v in self._live_views.values() if external_id and v.view.get("external_id") == external_id),
                None)
            if live is None or live.closed:
                raise SlackApiFailure("not_found")
            if arguments.get("hash") and arguments["hash"] != live.hash:
                raise SlackApiFailure("hash_conflict")
            live.view, live.hash = dict(view), secrets.token_hex(8)
            live.history.append(dict(view))
            return {"view": self._view_resource(live)}

    @staticmethod
    def _view_resource(live: _LiveView) -> dict[str, Any]:
        return {**live.view, "id": live.id, "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT_ID,
                "hash": live.hash, "state": {"values": {}}}

    def _auth_test(self, _arguments: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "Fake Workspace",
            "user": "approvals",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    # --- helpers -----------------------------------------------------------------------------

    def _channel_id(self, given: Any) -> str:
        """The channel ID for an ID or a name (``#approvals`` or ``approvals``)."""
        wanted = str(given or "").lstrip("#")
        with self._state_lock:
            if wanted in self._channels:
                return wanted
            for channel_id, name in self._channels.items():
                if name == wanted:
                    return channel_id
        raise SlackApiFailure("channel_not_found")

    def _next_ts(self) -> str:
        """Message timestamps as Slack writes them, strictly increasing (lock held)."""
        self._last_ts_micros = max(self._last_ts_micros + 1, int(time.time() * 1_000_000))
        return _ts_from_micros(self._last_ts_micros)

    def _find_message(self, channel: str, ts: str) -> SlackMessage | None:
        with self._state_lock:
            return self._find_message_locked(channel, ts)

    def _find_message_locked(self, channel: str, ts: str) -> SlackMessage | None:
        return next((m for m in self._messages if m.channel == channel and m.ts == ts), None)


def _ts_from_micros(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _ts_micros(ts: str) -> int:
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _ts_argument(value: Any, error: str) -> int | None:
    """``oldest`` / ``latest`` as microseconds; Slack takes ``1678252213.679169`` or ``1678252213``."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not re.fullmatch(r"\d+(\.\d{1,6})?", text):
        raise SlackApiFailure(error)
    return _ts_micros(text)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1") if value is not None else False


def _bounded_limit(value: Any, default: int, maximum: int) -> int:
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise SlackApiFailure("invalid_limit") from None
    return min(max(limit, 1), maximum)


def _cursor_for(position: str, kind: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()


def _cursor_value(cursor: Any, kind: str) -> str | None:
    """Where a cursor continues (a ts, a channel ID); ``invalid_cursor`` for one this fake did not hand out."""
    if cursor in (None, ""):
        return None
    try:
        found, _, position = base64.urlsafe_b64decode(str(cursor).encode()).decode().partition(":")
    except ValueError:
        raise SlackApiFailure("invalid_cursor") from None
    if found != kind or not position:
        raise SlackApiFailure("invalid_cursor")
    if kind == "before" and not re.fullmatch(r"\d+(\.\d{1,6})?", position):
        raise SlackApiFailure("invalid_cursor")
    return position


def _check_metadata(metadata: Any) -> None:
    """Slack's shape for message metadata: an ``event_type`` and an ``event_payload`` object."""
    if metadata is None:
        return
    if not (isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str) and metadata["event_type"]
            and isinstance(metadata.get("event_payload"), dict)):
        raise SlackApiFailure("invalid_metadata_format")


def _arguments(request: RecordedRequest) -> dict[str, Any]:
    """A method's arguments from the query string, a form body or a JSON body (JSON kept decoded)."""
    arguments: dict[str, Any] = {name: values[0] for name, values in request.query.items() if values}
    if request.form is not None:
        arguments |= {name: values[0] for name, values in request.form.items() if values}
    elif isinstance(request.json, dict):
        arguments |= request.json
    for name in _JSON_ARGUMENTS & arguments.keys():
        if isinstance(arguments[name], str):
            arguments[name] = _decoded_json(name, arguments[name])
    return arguments


def _decoded_json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise SlackApiFailure("invalid_blocks" if name == "blocks" else "invalid_arguments") from None


def _content(arguments: Mapping[str, Any], *, required: bool = True) -> tuple[str | None, list[dict[str, Any]] | None]:
    text = arguments.get("text")
    blocks = arguments.get("blocks")
    if blocks is not None:
        _check_blocks(blocks)
    if required and not text and not blocks:
        raise SlackApiFailure("no_text")
    return (str(text) if text is not None else None), blocks


def _check_blocks(blocks: Any) -> None:
    """Slack's own checks, minimally: a list of typed objects within the text limits."""
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        raise SlackApiFailure("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise SlackApiFailure("invalid_blocks")
        if block["type"] == "section" and len(_text_of(block.get("text"))) > SECTION_TEXT_LIMIT:
            raise SlackApiFailure("invalid_blocks")
        for element in block.get("elements", []) if block["type"] == "actions" else []:
            if element.get("type") == "button" and (
                len(_text_of(element.get("text"))) > BUTTON_TEXT_LIMIT
                or len(str(element.get("value", ""))) > BUTTON_VALUE_LIMIT
            ):
                raise SlackApiFailure("invalid_blocks")


def _checked_view(view: Any) -> dict[str, Any]:
    """Slack's own checks of a view, minimally; invalid_arguments as Slack answers them."""
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        raise SlackApiFailure("invalid_arguments")
    blocks = view.get("blocks", [])
    _check_blocks(blocks)
    if view["type"] == "modal":
        title = view.get("title")
        if not isinstance(title, dict) or title.get("type") != "plain_text" or not (
                0 < len(_text_of(title)) <= VIEW_TITLE_LIMIT):
            raise SlackApiFailure("invalid_arguments")
        if any(block.get("type") == "input" for block in blocks) and not view.get("submit"):
            raise SlackApiFailure("invalid_arguments")  # "must define submit to use an input block"
    if len(str(view.get("private_metadata", ""))) > PRIVATE_METADATA_LIMIT or len(
            str(view.get("callback_id", ""))) > CALLBACK_ID_LIMIT:
        raise SlackApiFailure("invalid_arguments")
    return view


def _check_typed(element: Mapping[str, Any], typed: str) -> None:
    """What Slack's client lets a user submit in a plain_text_input: within its min and max length,
    and not empty where the input is required (it keeps the modal open and says so otherwise)."""
    low, high = element.get("min_length"), element.get("max_length")
    if not typed or (isinstance(low, int) and len(typed) < low) or (isinstance(high, int) and len(typed) > high):
        raise ValueError(f"Slack does not submit {len(typed)} characters into input {element.get('action_id')!r}")


def _text_of(text_object: Any) -> str:
    return str(text_object.get("text", "")) if isinstance(text_object, dict) else ""


def _buttons(message: SlackMessage | None) -> list[dict[str, Any]]:
    blocks = (message.blocks or []) if message is not None else []
    return [
        {**element, "block_id": block.get("block_id", "")}
        for block in blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def _block_id_of(message: SlackMessage | None, action_id: str) -> str:
    found = [button for button in _buttons(message) if button.get("action_id") == action_id]
    return found[0]["block_id"] if found else "actions"


def _button_value_of(message: SlackMessage | None, action_id: str, otherwise: str) -> str:
    """The button's value on the message, else as posted: a click made before chat.update took the buttons away
    (one in flight, or Slack's retry of it) carries the value the button had."""
    for buttons in (_buttons(message), _buttons_as_posted(message)):
        found = [button for button in buttons if button.get("action_id") == action_id and "value" in button]
        if found:
            return str(found[0]["value"])
    return otherwise


def _buttons_as_posted(message: SlackMessage | None) -> list[dict[str, Any]]:
    blocks = message.arguments.get("blocks") if message is not None else None
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    posted = replace(message, blocks=blocks) if message is not None and isinstance(blocks, list) else None
    return _buttons(posted)


def _button_text_of(message: SlackMessage | None, action_id: str) -> str:
    found = [button for button in _buttons(message) if button.get("action_id") == action_id]
    return _text_of(found[0].get("text")) if found else action_id.title()
