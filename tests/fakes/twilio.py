"""Fake Twilio REST API (Messages, Calls) and Verify v2, over plain HTTP, plus status callbacks to the app.

Pointing the real SDK (twilio 9.x) at it: every domain object has a ``base_url`` the SDK
joins with the resource path, so after ``client = twilio.rest.Client(key_sid, key_secret,
account_sid)``::

    client.api.base_url = fake.base_url     # {base}/2010-04-01/Accounts/{AC}/Messages.json
    client.verify.base_url = fake.base_url  # {base}/v2/Services/{VA}/Verifications

(checked with twilio 9.13; leave ``region``/``edge`` and ``TWILIO_REGION``/``TWILIO_EDGE``
unset, or the SDK rewrites the host). ``fake.point(client)`` does both.

Behaviour follows Twilio's OpenAPI specs and the Twilio reference (Part A):

- HTTP Basic auth with an API key (``SK...`` + secret, the key's account in the path) or
  the account SID + auth token; anything else -> 401 code 20003.
- Form-encoded requests only; other bodies carry no parameters, so they fail the
  required-parameter checks with 400. Unknown parameters are accepted and kept (Twilio
  ignores them); ``tests.support.openapi.validate_form_request`` is what flags them.
- Messages: 21604/21603/21602 for missing To / sender / content, 21211 invalid To,
  21212 invalid From, 21610 opted-out recipient (``add_opted_out``), 21614 landline
  (``add_landline``), 21617 body over 1,600 characters, 21624 a ``ValidityPeriod`` that is not
  a whole number of seconds from 1 to 36,000. Created as ``queued`` (``accepted``
  with a Messaging Service, whose ``from`` stays null and ``num_segments`` "0").
- Messages list (``GET .../Messages.json``): filters ``To``, ``From``, ``DateSent``,
  ``DateSent>`` (sent on or after that day), ``DateSent<`` (on or before), newest first,
  ``PageSize`` (default 50, 1-1000) and Twilio's paging body (``messages``,
  ``first_page_uri``, ``next_page_uri`` with a ``PageToken``, ``previous_page_uri``, ``page``,
  ``page_size``, ``uri``, ``start``, ``end``; URIs relative, as Twilio sends them). Dates are
  accepted only in the documented ``YYYY-MM-DD`` form (else 400 code 20001): Twilio's docs
  name no other and its support asks for that one. A message not sent yet (``date_sent``
  null: still ``queued``/``accepted``) matches no ``DateSent`` filter (unconfirmed for
  Twilio; the cautious reading).
- Calls: 21201/21213/21205 for missing To / From / TwiML source, 21211 invalid To. Created
  ``queued`` with no ``start_time`` until ``advance_call(sid, "in-progress")``.
- Calls list (``GET .../Calls.json``): filters ``To``, ``From``, ``ParentCallSid``, ``Status``,
  ``StartTime``/``StartTime<``/``StartTime>`` and the same for ``EndTime`` (``YYYY-MM-DD``; a
  call that has not started or ended matches no filter on that date), newest first, paged
  like Messages with the calls under ``calls``.
- Verify: 6-digit codes (``code_for(to)`` reads "the SMS"), a repeated start for a
  pending verification re-sends the same one (60203 after 5 sends), checks answer 200
  ``pending``/``approved``, 429 code 60202 once 5 wrong codes were tried, 404 code 20404
  for an approved, canceled or expired verification (TTL ``verification_ttl``, default
  600 s; ``expire_verifications()``), 60200 for a bad ``To``/``Channel``/``Code``.
- The account's set-up, as the connection doctor reads it: ``GET .../Accounts/{Sid}.json``
  (the account; ``set_account_status`` makes it ``suspended`` or ``closed``), Messaging v1
  ``GET /v1/Services/{Sid}`` (``add_messaging_service``) and Verify v2 ``GET /v2/Services/{Sid}``;
  another account's or an unknown resource is 404 code 20404, as Twilio answers.
- IncomingPhoneNumbers: ``GET .../IncomingPhoneNumbers.json`` (filter ``PhoneNumber``, E.164
  or its digits, under ``incoming_phone_numbers`` with Twilio's paging body),
  ``GET``/``POST .../IncomingPhoneNumbers/{PN...}.json`` (``SmsUrl``, ``SmsMethod`` GET/POST,
  ``StatusCallback``, ``StatusCallbackMethod``, ``VoiceUrl``, ``VoiceMethod``, ``FriendlyName``; a
  method other than GET/POST is 400 code 20001). ``add_test_account`` owns its
  ``phone_number`` as one; ``add_number``/``add_incoming_number`` add more, ``set_number_webhooks``
  points one elsewhere (as in the Console), ``number_updates`` records every update through the API.
- Failure injection from the base: ``fail_next(status=429)`` answers Twilio's 20429 body
  with ``Retry-After: 2``; 500 and 503 carry 20500 / 20503. The base's ``delay_next`` stalls
  *before* handling (nothing is created); ``stall_after_handling`` handles the request first
  (the message or call exists) and then stalls the answer: the read timeout after which a
  client cannot know whether Twilio acted.

Callbacks to the app: ``send_status_callback`` POSTs form parameters signed with the
account auth token (``X-Twilio-Signature``, made by ``shared.channels.twilio.signature.sign`` with the
SDK's ``RequestValidator``) and an ``I-Twilio-Idempotency-Token``. ``message_status_params``,
``call_status_params`` and ``inbound_sms_params`` build real parameter sets;
``advance_message`` / ``advance_call`` change a stored resource and send its callback.
With ``auto_callbacks=True`` a created message with a ``StatusCallback`` walks through
``auto_callback_statuses`` (default queued, sent, delivered) in a background thread; as
on Twilio, no callback is sent for the status the message was created with.
``auto_callback_lost`` names statuses the message still reaches but whose callback never
arrives (a lost callback): only a fetch of the message shows them.
"""

from __future__ import annotations

import base64
import email.utils
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from shared.channels.twilio.signature import SIGNATURE_HEADER, sign
from tests.fakes.server import (
    FakeServer,
    Handler,
    RecordedRequest,
    RequestFilter,
    Response,
    Route,
    request_filter,
    route,
)

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_CHANNEL_ADDRESS = re.compile(r"^(?P<channel>[a-z]+):(?P<address>.+)$")
_SHORT_CODE = re.compile(r"^\d{3,6}$")
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 +\-_&.]{1,11}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_VERIFY_CHANNELS = frozenset({"sms", "call", "email", "whatsapp", "sna"})
_CALL_EVENT_FOR_STATUS = {
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    "completed": "completed",
    "busy": "completed",
    "failed": "completed",
    "no-answer": "completed",
    "canceled": "completed",
}
# Asynchronous delivery failures as the message resource describes them.
DELIVERY_ERRORS = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}
MAX_BODY_CHARACTERS = 1600
MIN_VALIDITY_PERIOD, MAX_VALIDITY_PERIOD = 1, 36_000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Query parameters of the Messages and Calls lists in the order Twilio writes them into page URIs.
_LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")
_CALL_LIST_FILTERS = ("To", "From", "ParentCallSid", "Status", "StartTime", "StartTime<", "StartTime>",
                      "EndTime", "EndTime<", "EndTime>")
_DATE_FILTERS = ("DateSent", "StartTime", "EndTime")
MAX_VERIFY_CHECKS = 5
MAX_VERIFY_SENDS = 5

# GSM 03.38: the basic set costs one septet, the extension set two.
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = set("^{}\\[~]|€\f")


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two letters and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    """Twilio's REST date format, e.g. ``Wed, 08 Oct 2025 13:54:12 +0000``."""
    return email.utils.format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def iso8601(moment: datetime) -> str:
    """Verify's date format, e.g. ``2015-07-30T20:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def count_segments(body: str) -> int:
    """SMS segments: GSM-7 160/153 septets, otherwise UCS-2 70/67 code units."""
    if not body:
        return 1
    if all(char in _GSM_BASIC or char in _GSM_EXTENSION for char in body):
        septets = len(body) + sum(1 for char in body if char in _GSM_EXTENSION)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def phone_address(value: str) -> str:
    """The phone number inside a channel address (``whatsapp:+1555...``), or the value itself."""
    found = _CHANNEL_ADDRESS.match(value)
    return found["address"] if found else value


def is_valid_sender(value: str) -> bool:
    address = phone_address(value)
    return bool(E164.match(address) or _SHORT_CODE.match(address) or _ALPHANUMERIC_SENDER.match(address))


def _formatted(number: str) -> str:
    # The call resource shows North American numbers as "(415) 867-5309".
    if re.fullmatch(r"\+1\d{10}", number):
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


def _country(number: str) -> str:
    prefixes = {"+1": "US", "+44": "GB", "+49": "DE", "+33": "FR", "+31": "NL", "+61": "AU", "+91": "IN"}
    for prefix, country in sorted(prefixes.items(), key=lambda item: -len(item[0])):
        if phone_address(number).startswith(prefix):
            return country
    return ""


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class TwilioCredentials:
    """Everything a test needs to configure the app against the fake."""

    account_sid: str
    auth_token: str
    api_key_sid: str
    api_key_secret: str
    messaging_service_sid: str
    verify_service_sid: str
    phone_number: str


@dataclass
class Message:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: tuple[str, ...]
    status: str
    status_callback: str | None
    sender: str  # the number callbacks report as From (the pool's pick with a Messaging Service)
    params: Mapping[str, tuple[str, ...]]  # every form parameter as received
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        segments = 0 if self.messaging_service_sid and self.status == "accepted" else count_segments(self.body)
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent) if self.date_sent else None,
            "date_updated": rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": self.to,
            "uri": uri,
        }


@dataclass
class IncomingNumber:
    """A phone number of an account, with the webhooks Twilio calls for it."""

    sid: str
    account_sid: str
    phone_number: str
    friendly_name: str
    sms_url: str = ""
    sms_method: str = "POST"
    status_callback: str = ""
    status_callback_method: str = "POST"
    voice_url: str = ""
    voice_method: str = "POST"
    date_created: datetime = field(default_factory=lambda: _now())
    date_updated: datetime = field(default_factory=lambda: _now())

    def resource(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid, "address_requirements": "none", "address_sid": None,
            "api_version": API_VERSION, "beta": False,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": rfc2822(self.date_created), "date_updated": rfc2822(self.date_updated),
            "friendly_name": self.friendly_name, "identity_sid": None, "phone_number": self.phone_number,
            "origin": "twilio", "sid": self.sid, "sms_application_sid": None, "sms_fallback_method": "POST",
            "sms_fallback_url": None, "sms_method": self.sms_method, "sms_url": self.sms_url or None,
            "status_callback": self.status_callback or None, "status_callback_method": self.status_callback_method,
            "trunk_sid": None,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json",
            "voice_receive_mode": "voice", "voice_application_sid": None, "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST", "voice_fallback_url": None, "voice_method": self.voice_method,
            "voice_url": self.voice_url or None, "emergency_status": "Inactive", "emergency_address_sid": None,
            "emergency_address_status": "unregistered", "bundle_sid": None, "status": "in-use", "type": "local",
        }


# IncomingPhoneNumber fields an update may set: the form name, the attribute, whether it is an HTTP method.
NUMBER_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("SmsUrl", "sms_url", False), ("SmsMethod", "sms_method", True), ("StatusCallback", "status_callback", False),
    ("StatusCallbackMethod", "status_callback_method", True), ("VoiceUrl", "voice_url", False),
    ("VoiceMethod", "voice_method", True), ("FriendlyName", "friendly_name", False),
)


@dataclass
class Call:
    sid: str
    account_sid: str
    to: str
    from_: str
    status: str
    twiml: str | None
    url: str | None
    method: str
    application_sid: str | None
    status_callback: str | None
    status_callback_events: tuple[str, ...]
    status_callback_method: str
    params: Mapping[str, tuple[str, ...]]
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    callback_sequence: int = 0

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"
        base = uri.removesuffix(".json")
        subresources = ("notifications", "recordings", "payments", "events", "siprec", "streams", "transcriptions")
        names = {"notifications": "Notifications", "recordings": "Recordings", "payments": "Payments"}
        names |= {"events": "Events", "siprec": "Siprec", "streams": "Streams", "transcriptions": "Transcriptions"}
        return {
            "account_sid": self.account_sid,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated),
            "direction": "outbound-api",
            "duration": None if self.duration is None else str(self.duration),
            "end_time": rfc2822(self.end_time) if self.end_time else None,
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": _formatted(self.from_),
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": rfc2822(self.start_time) if self.start_time else None,
            "status": self.status,
            "subresource_uris": {name: f"{base}/{names[name]}.json" for name in subresources},
            "to": self.to,
            "to_formatted": _formatted(self.to),
            "trunk_sid": None,
            "uri": uri,
        }


@dataclass
class Verification:
    sid: str
    service_sid: str
    account_sid: str
    to: str
    channel: str
    code: str
    expires_at: float  # time.monotonic() deadline
    status: str = "pending"
    failed_checks: int = 0
    send_attempts: list[dict[str, str]] = field(default_factory=list)
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)

    @property
    def valid(self) -> bool:
        return self.status == "approved"

    def resource(self, base_url: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "service_sid": self.service_sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "channel": self.channel,
            "status": self.status,
            "valid": self.valid,
            "date_created": iso8601(self.date_created),
            "date_updated": iso8601(self.date_updated),
            "lookup": {},
            "amount": None,
            "payee": None,
            "send_code_attempts": list(self.send_attempts),
            "sna": None,
            "url": f"{base_url}/v2/Services/{self.service_sid}/Verifications/{self.sid}",
        }

    def check_resource(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "service_sid": self.service_sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "channel": self.channel,
            "status": self.status,
            "valid": self.valid,
            "amount": None,
            "payee": None,
            "date_created": iso8601(self.date_created),
            "date_updated": iso8601(self.date_updated),
            "sna_attempts_error_codes": [],
        }


@dataclass(frozen=True)
class SentCallback:
    url: str
    params: Mapping[str, tuple[str, ...]]
    signature: str
    idempotency_token: str
    status_code: int | None  # None when the app could not be reached
    error: str | None = None


@dataclass
class _Stall:
    remaining: int
    seconds: float
    accepts: Callable[[RecordedRequest], bool]


@dataclass(frozen=True)
class _ListQuery:
    """The filters and paging of one Messages or Calls list request."""

    filters: dict[str, str]
    page_size: int
    page: int
    token: str | None


def _multi(params: Mapping[str, str | Sequence[str]]) -> dict[str, tuple[str, ...]]:
    return {name: (value,) if isinstance(value, str) else tuple(value) for name, value in params.items()}


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str | Sequence[str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a form POST of ``params`` to ``url``."""
    return sign(auth_token, url, params)[SIGNATURE_HEADER]


class FakeTwilio(FakeServer):
    """Fake api.twilio.com (Messages, Calls) and verify.twilio.com (Verifications) on one port."""

    service_name = "twilio"

    def __init__(
        self,
        *,
        port: int = 0,
        verification_ttl: float = 600.0,
        code_length: int = 6,
        auto_callbacks: bool = False,
        auto_callback_statuses: Sequence[str] = ("queued", "sent", "delivered"),
        auto_callback_interval: float = 0.05,
        auto_callback_lost: Sequence[str] = (),
        callback_verify: str | bool | None = None,
    ) -> None:
        super().__init__(port=port)
        self.verification_ttl = verification_ttl
        self.code_length = code_length
        self.auto_callbacks = auto_callbacks
        self.auto_callback_statuses = tuple(auto_callback_statuses)
        self.auto_callback_interval = auto_callback_interval
        self.auto_callback_lost = frozenset(auto_callback_lost)
        self.callback_verify = callback_verify  # requests' verify= for HTTPS callback URLs
        self.default_sender = "+15005550006"  # what a Messaging Service "picks" from its pool
        self._state = threading.RLock()
        self._accounts: dict[str, str] = {}
        self._api_keys: dict[str, tuple[str, str]] = {}
        self._verify_services: dict[str, str] = {}
        self._account_status: dict[str, str] = {}
        self._numbers: dict[str, IncomingNumber] = {}  # by PN sid
        self.number_updates: list[tuple[str, dict[str, str]]] = []  # (PN sid, the fields set), oldest first
        self._messaging_services: dict[str, dict[str, Any]] = {}  # by sid: account_sid, inbound_request_url
        self._opted_out: set[str] = set()
        self._landlines: set[str] = set()
        self._messages: dict[str, Message] = {}
        self._calls: dict[str, Call] = {}
        self._verifications: dict[str, Verification] = {}
        self._callbacks: list[SentCallback] = []
        self._workers: list[threading.Thread] = []
        self._stalls: list[_Stall] = []

    # --- set-up ------------------------------------------------------------------------------

    def add_account(self, account_sid: str, auth_token: str) -> None:
        with self._state:
            self._accounts[account_sid] = auth_token

    def add_api_key(self, account_sid: str, key_sid: str, key_secret: str) -> None:
        with self._state:
            if account_sid not in self._accounts:
                raise ValueError(f"add_account({account_sid!r}, ...) first")
            self._api_keys[key_sid] = (account_sid, key_secret)

    def add_verify_service(self, service_sid: str, account_sid: str) -> None:
        with self._state:
            self._verify_services[service_sid] = account_sid

    def set_account_status(self, account_sid: str, status: str) -> None:
        """``active`` (the default), ``suspended`` or ``closed``, as the account resource shows it."""
        with self._state:
            self._account_status[account_sid] = status

    def add_incoming_number(self, account_sid: str, number: str, *, sms_url: str = "",
                            status_callback: str = "") -> None:
        self.add_number(account_sid, number, sms_url=sms_url, status_callback=status_callback)

    def set_number_webhooks(self, number: str, *, sms_url: str | None = None,
                            status_callback: str | None = None) -> None:
        """Point a number's SmsUrl or StatusCallback somewhere (the Console's Messaging configuration)."""
        with self._state:
            found = self.number(number)
            if found is None:
                raise KeyError(number)
            found.sms_url = found.sms_url if sms_url is None else sms_url
            found.status_callback = found.status_callback if status_callback is None else status_callback

    def add_messaging_service(self, service_sid: str, account_sid: str, *, inbound_request_url: str = "") -> None:
        with self._state:
            self._messaging_services[service_sid] = {"account_sid": account_sid,
                                                     "inbound_request_url": inbound_request_url}

    def add_opted_out(self, number: str) -> None:
        """The recipient replied STOP: sends to it fail with 21610."""
        with self._state:
            self._opted_out.add(number)

    def add_landline(self, number: str) -> None:
        """Not SMS-capable: messages fail with 21614, Verify SMS with 60205."""
        with self._state:
            self._landlines.add(number)

    def add_test_account(self) -> TwilioCredentials:
        """A fresh account with an API key, a Verify service and made-up sender SIDs."""
        credentials = TwilioCredentials(
            account_sid=new_sid("AC"),
            auth_token=secrets.token_hex(16),
            api_key_sid=new_sid("SK"),
            api_key_secret=secrets.token_urlsafe(24),
            messaging_service_sid=new_sid("MG"),
            verify_service_sid=new_sid("VA"),
            phone_number="+15017122661",
        )
        self.add_account(credentials.account_sid, credentials.auth_token)
        self.add_api_key(credentials.account_sid, credentials.api_key_sid, credentials.api_key_secret)
        self.add_verify_service(credentials.verify_service_sid, credentials.account_sid)
        self.add_number(credentials.account_sid, credentials.phone_number)
        self.add_messaging_service(credentials.messaging_service_sid, credentials.account_sid)
        return credentials

    def add_number(self, account_sid: str, phone_number: str, **fields: str) -> IncomingNumber:
        """A phone number the account owns (an IncomingPhoneNumber), with its webhooks as ``fields``."""
        number = IncomingNumber(new_sid("PN"), account_sid, phone_number, _formatted(phone_number), **fields)
        with self._state:
            self._numbers[number.sid] = number
        return number

    def number(self, phone_number: str) -> IncomingNumber | None:
        with self._state:
            return next((found for found in self._numbers.values() if found.phone_number == phone_number), None)

    def stall_after_handling(self, n: int = 1, seconds: float = 1.0, match: RequestFilter = None) -> None:
        """Handle the next ``n`` matching requests normally (creating what they create), then
        hold the answer back for ``seconds``: a client read timeout that leaves the resource made."""
        if n < 1:
            raise ValueError("n must be at least 1")
        with self._state:
            self._stalls.append(_Stall(n, seconds, request_filter(match)))

    def _take_stall(self, request: RecordedRequest) -> float:
        with self._state:
            for stall in self._stalls:
                if stall.accepts(request):
                    stall.remaining -= 1
                    if stall.remaining == 0:
                        self._stalls.remove(stall)
                    return stall.seconds
        return 0.0

    def point(self, client: Any) -> Any:
        """Aim a ``twilio.rest.Client`` at this fake (REST API and Verify); returns the client."""
        client.api.base_url = self.base_url
        client.verify.base_url = self.base_url
        return client

    # --- inspection --------------------------------------------------------------------------

    def message(self, sid: str) -> Message:
        with self._state:
            return self._messages[sid]

    def messages(self, to: str | None = None) -> list[Message]:
        with self._state:
            return [message for message in self._messages.values() if to is None or message.to == to]

    def call(self, sid: str) -> Call:
        with self._state:
            return self._calls[sid]

    def calls(self, to: str | None = None) -> list[Call]:
        with self._state:
            return [call for call in self._calls.values() if to is None or call.to == to]

    def verifications(self, to: str | None = None) -> list[Verification]:
        with self._state:
            return [item for item in self._verifications.values() if to is None or item.to == to]

    def code_for(self, to: str, service_sid: str | None = None) -> str:
        """The code in the latest pending verification sent to ``to`` (the SMS the user read)."""
        with self._state:
            for verification in reversed(list(self._verifications.values())):
                matches_service = service_sid is None or verification.service_sid == service_sid
                if verification.to == to and matches_service and verification.status == "pending":
                    return verification.code
        raise LookupError(f"no pending verification for {to}")

    def expire_verifications(self) -> None:
        """Every pending verification is past its TTL from now on."""
        with self._state:
            for verification in self._verifications.values():
                verification.expires_at = min(verification.expires_at, time.monotonic())

    @property
    def callbacks_sent(self) -> list[SentCallback]:
        with self._state:
            return list(self._callbacks)

    # --- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        super().stop()  # sets the stop flag the callback workers wait on
        with self._state:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join(timeout=5)

    # --- routes ------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        account = rf"/{API_VERSION}/Accounts/(?P<account>[^/]+)"
        service = r"/v2/Services/(?P<service>[^/]+)"
        return [
            route("GET", rf"{account}\.json", self._answering(self._fetch_account)),
            route("GET", r"/v1/Services/(?P<service>[^/]+)", self._answering(self._fetch_messaging_service)),
            route("GET", r"/v2/Services/(?P<service>[^/]+)", self._answering(self._fetch_verify_service)),
            route("POST", rf"{account}/Messages\.json", self._answering(self._create_message)),
            route("GET", rf"{account}/Messages\.json", self._answering(self._list_messages)),
            route("GET", rf"{account}/Messages/(?P<sid>[^/]+)\.json", self._answering(self._fetch_message)),
            route("POST", rf"{account}/Calls\.json", self._answering(self._create_call)),
            route("GET", rf"{account}/IncomingPhoneNumbers\.json", self._answering(self._list_numbers)),
            route("GET", rf"{account}/IncomingPhoneNumbers/(?P<sid>[^/]+)\.json", self._answering(self._fetch_number)),
            route("POST", rf"{account}/IncomingPhoneNumbers/(?P<sid>[^/]+)\.json",
                  self._answering(self._update_number)),
            route("GET", rf"{account}/Calls\.json", self._answering(self._list_calls)),
            route("GET", rf"{account}/Calls/(?P<sid>[^/]+)\.json", self._answering(self._fetch_call)),
            route("POST", rf"{service}/Verifications", self._answering(self._start_verification)),
            route("GET", rf"{service}/Verifications/(?P<sid>[^/]+)", self._answering(self._fetch_verification)),
            route("POST", rf"{service}/Verifications/(?P<sid>[^/]+)", self._answering(self._update_verification)),
            route("POST", rf"{service}/VerificationCheck", self._answering(self._check_verification)),
        ]

    def _answering(self, handler: Handler) -> Handler:
        def answer(request: RecordedRequest, match: re.Match[str]) -> Response:
            try:
                response = handler(request, match)
            except TwilioError as error:
                return self._error(error.status, error.code, error.message, error.headers)
            stall = self._take_stall(request)
            if stall:
                self._stopping.wait(stall)  # stopping cuts the stall short
            return response

        return answer

    # --- auth --------------------------------------------------------------------------------

    def _authenticated_account(self, request: RecordedRequest) -> str:
        """The account the Basic credentials belong to (API key or auth token), else 401."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise _unauthenticated()
        try:
            username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise _unauthenticated() from None
        with self._state:
            key = self._api_keys.get(username)
            token = self._accounts.get(username)
        if key is not None and secrets.compare_digest(key[1], password):
            return key[0]
        if token is not None and secrets.compare_digest(token, password):
            return username
        raise _unauthenticated()

    def _account_for_path(self, request: RecordedRequest, match: re.Match[str]) -> str:
        account_sid = self._authenticated_account(request)
        if match["account"] != account_sid:
            raise _unauthenticated()
        return account_sid

    def _service_account(self, request: RecordedRequest, match: re.Match[str]) -> str:
        account_sid = self._authenticated_account(request)
        with self._state:
            owner = self._verify_services.get(match["service"])
        if owner != account_sid:
            raise _not_found(request.path)
        return account_sid

    # --- the account's set-up ------------------------------------------------------------------

    def _fetch_account(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        with self._state:
            status = self._account_status.get(account_sid, "active")
            token = self._accounts[account_sid]
        created = rfc2822(_now())
        return self._json(200, {
            "auth_token": token, "date_created": created, "date_updated": created, "friendly_name": "Fake account",
            "owner_account_sid": account_sid, "sid": account_sid, "status": status,
            "subresource_uris": {"messages": f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"},
            "type": "Full", "uri": f"/{API_VERSION}/Accounts/{account_sid}.json",
        })

    def _fetch_messaging_service(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._authenticated_account(request)
        sid = match["service"]
        with self._state:
            service = self._messaging_services.get(sid)
        if service is None or service["account_sid"] != account_sid:
            raise _not_found(request.path)
        created = iso8601(_now())
        return self._json(200, {
            "account_sid": account_sid, "sid": sid, "friendly_name": "Fake service", "date_created": created,
            "date_updated": created, "inbound_request_url": service["inbound_request_url"] or None,
            "inbound_method": "POST", "fallback_url": None, "fallback_method": "POST", "status_callback": None,
            "sticky_sender": True, "mms_converter": True, "smart_encoding": True, "scan_message_content": "inherit",
            "fallback_to_long_code": False, "area_code_geomatch": True, "validity_period": 36000,
            "synchronous_validation": True, "usecase": "undeclared", "us_app_to_person_registered": False,
            "use_inbound_webhook_on_number": False, "url": f"{self.base_url}/v1/Services/{sid}",
            "links": {"phone_numbers": f"{self.base_url}/v1/Services/{sid}/PhoneNumbers"},
        })

    def _fetch_verify_service(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._service_account(request, match)
        sid = match["service"]
        created = iso8601(_now())
        return self._json(200, {
            "sid": sid, "account_sid": account_sid, "friendly_name": "Fake Verify", "code_length": self.code_length,
            "lookup_enabled": False, "psd2_enabled": False, "skip_sms_to_landlines": False,
            "dtmf_input_required": True, "tts_name": None, "do_not_share_warning_enabled": False,
            "custom_code_enabled": False, "push": {}, "totp": {}, "default_template_sid": None, "whatsapp": {},
            "passkeys": {}, "verify_event_subscription_enabled": False, "date_created": created,
            "date_updated": created, "url": f"{self.base_url}/v2/Services/{sid}", "links": {},
        })

    # --- Messages ----------------------------------------------------------------------------

    def _create_message(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        params = request.form or {}
        to = _first(params, "To")
        sender = _first(params, "From")
        service_sid = _first(params, "MessagingServiceSid")
        body = _first(params, "Body") or ""
        media = tuple(value for value in params.get("MediaUrl", ()) if value)
        callback = _first(params, "StatusCallback")
        self._check_message(to, sender, service_sid, body, media, _first(params, "ContentSid"), callback)
        _check_validity_period(_first(params, "ValidityPeriod"))
        message = Message(
            sid=new_sid("SM" if not media else "MM"),
            account_sid=account_sid,
            to=to or "",
            from_=sender,
            messaging_service_sid=service_sid,
            body=body,
            media_urls=media,
            status="accepted" if service_sid else "queued",
            status_callback=callback,
            sender=sender or self.default_sender,
            params=params,
        )
        with self._state:
            self._messages[message.sid] = message
        if self.auto_callbacks and callback:
            self._start_worker(message.sid)
        return self._json(201, message.resource())

    def _check_message(
        self,
        to: str | None,
        sender: str | None,
        service_sid: str | None,
        body: str,
        media: tuple[str, ...],
        content_sid: str | None,
        callback: str | None,
    ) -> None:
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not sender and not service_sid:
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        if not body and not media and not content_sid:
            raise TwilioError(400, 21602, "Message body is required.")
        if not E164.match(phone_address(to)):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if sender and not is_valid_sender(sender):
            raise TwilioError(
                400,
                21212,
                f"The 'From' number {sender} is not a valid phone number, shortcode, or alphanumeric sender ID.",
            )
        if service_sid and not re.fullmatch(r"MG[0-9a-fA-F]{32}", service_sid):
            raise TwilioError(400, 21701, f"The Messaging Service Sid {service_sid} is invalid.")
        if callback and not _is_callback_url(callback):
            raise TwilioError(400, 21609, f"The StatusCallback URL {callback} is not a valid URL.")
        if len(body) > MAX_BODY_CHARACTERS:
            raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        with self._state:
            opted_out = to in self._opted_out
            landline = phone_address(to) in self._landlines
        if opted_out:
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
        if landline:
            raise TwilioError(400, 21614, f"'To' number {to} is not a valid mobile number")

    def _fetch_message(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        with self._state:
            message = self._messages.get(match["sid"])
        if message is None or message.account_sid != account_sid:
            raise _not_found(request.path)
        return self._json(200, message.resource())

    def _list_messages(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        query = _list_query(request, _LIST_FILTERS)
        with self._state:
            found = [
                message
                for message in self._messages.values()
                if message.account_sid == account_sid and _matches_filters(message, query.filters)
            ]
        return self._json(200, _list_page(request.path, query, found, "messages"))

    # --- Calls -------------------------------------------------------------------------------

    def _create_call(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        params = request.form or {}
        to, sender = _first(params, "To"), _first(params, "From")
        twiml, url, application_sid = _first(params, "Twiml"), _first(params, "Url"), _first(params, "ApplicationSid")
        if not to:
            raise TwilioError(400, 21201, "No 'To' number is specified")
        if not sender:
            raise TwilioError(400, 21213, "No 'From' number is specified")
        if not (twiml or url or application_sid):
            raise TwilioError(400, 21205, "Either a Url, Twiml or ApplicationSid parameter is required.")
        if not E164.match(phone_address(to)) and not to.startswith(("client:", "sip:")):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if url and not _is_callback_url(url):
            raise TwilioError(400, 21205, f"Url is not a valid URL: {url}")
        call = Call(
            sid=new_sid("CA"),
            account_sid=account_sid,
            to=to,
            from_=sender,
            status="queued",
            twiml=twiml,
            url=url,
            method=_first(params, "Method") or "POST",
            application_sid=application_sid,
            status_callback=_first(params, "StatusCallback"),
            status_callback_events=tuple(params.get("StatusCallbackEvent", ())) or ("completed",),
            status_callback_method=_first(params, "StatusCallbackMethod") or "POST",
            params=params,
        )
        with self._state:
            self._calls[call.sid] = call
        return self._json(201, call.resource())

    def _list_calls(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        query = _list_query(request, _CALL_LIST_FILTERS)
        with self._state:
            found = [
                call
                for call in self._calls.values()
                if call.account_sid == account_sid and _call_matches_filters(call, query.filters)
            ]
        return self._json(200, _list_page(request.path, query, found, "calls"))

    def _fetch_call(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        with self._state:
            call = self._calls.get(match["sid"])
        if call is None or call.account_sid != account_sid:
            raise _not_found(request.path)
        return self._json(200, call.resource())

    # --- IncomingPhoneNumbers ------------------------------------------------------------------

    def _list_numbers(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._account_for_path(request, match)
        wanted = request.query_value("PhoneNumber")
        page_size = _bounded_int(request.query_value("PageSize"), "PageSize", 50, 1, 1000)
        digits = re.sub(r"\D", "", wanted or "")
        with self._state:
            found = [number for number in self._numbers.values() if number.account_sid == account_sid
                     and (not digits or digits in re.sub(r"\D", "", number.phone_number))]
        path = request.path
        query = urlencode([*([("PhoneNumber", wanted)] if wanted else []), ("PageSize", str(page_size)), ("Page", "0")])
        return self._json(200, {
            "incoming_phone_numbers": [number.resource() for number in found[:page_size]],
            "first_page_uri": f"{path}?{query}", "next_page_uri": None, "previous_page_uri": None,
            "page": 0, "page_size": page_size, "uri": f"{path}?{query}", "start": 0,
            "end": max(min(len(found), page_size) - 1, 0),
        })

    def _owned_number(self, request: RecordedRequest, match: re.Match[str]) -> IncomingNumber:
        account_sid = self._account_for_path(request, match)
        with self._state:
            number = self._numbers.get(match["sid"])
        if number is None or number.account_sid != account_sid:
            raise _not_found(request.path)
        return number

    def _fetch_number(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        return self._json(200, self._owned_number(request, match).resource())

    def _update_number(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        number = self._owned_number(request, match)
        params = request.form or {}
        changes = {name: value for name, _attribute, _method in NUMBER_FIELDS
                   if (value := _first(params, name)) is not None}
        for name, _attribute, is_method in NUMBER_FIELDS:
            if is_method and name in changes and changes[name].upper() not in ("GET", "POST"):
                raise TwilioError(400, 20001, f"{name} must be GET or POST")
        with self._state:
            for name, attribute, is_method in NUMBER_FIELDS:
                if name in changes:
                    setattr(number, attribute, changes[name].upper() if is_method else changes[name])
            number.date_updated = _now()
            self.number_updates.append((number.sid, changes))
            return self._json(200, number.resource())

    # --- Verify ------------------------------------------------------------------------------

    def _start_verification(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        account_sid = self._service_account(request, match)
        params = request.form or {}
        to, channel = _first(params, "To") or "", _first(params, "Channel") or ""
        if channel not in _VERIFY_CHANNELS:
            raise TwilioError(400, 60200, f"Invalid parameter `Channel`: {channel}")
        valid_to = _EMAIL.match(to) if channel == "email" else E164.match(to)
        if not valid_to:
            raise TwilioError(400, 60200, f"Invalid parameter `To`: {to}")
        with self._state:
            landline = to in self._landlines
        if landline and channel in ("sms", "whatsapp"):
            raise TwilioError(400, 60205, "SMS is not supported by landline phone number")
        verification = self._pending_verification(match["service"], to) or self._new_verification(
            match["service"], account_sid, to, channel, _first(params, "CustomCode")
        )
        with self._state:
            if len(verification.send_attempts) >= MAX_VERIFY_SENDS:
                raise TwilioError(429, 60203, "Max send attempts reached")
            verification.channel = channel
            verification.send_attempts.append(
                {"time": iso8601(_now()), "channel": _attempt_channel(channel), "attempt_sid": new_sid("VL")}
            )
            verification.date_updated = _now()
        return self._json(201, verification.resource(self.base_url))

    def _new_verification(
        self, service_sid: str, account_sid: str, to: str, channel: str, custom_code: str | None
    ) -> Verification:
        code = custom_code or "".join(str(secrets.randbelow(10)) for _ in range(self.code_length))
        verification = Verification(
            sid=new_sid("VE"),
            service_sid=service_sid,
            account_sid=account_sid,
            to=to,
            channel=channel,
            code=code,
            expires_at=time.monotonic() + self.verification_ttl,
        )
        with self._state:
            self._verifications[verification.sid] = verification
        return verification

    def _pending_verification(self, service_sid: str, to: str) -> Verification | None:
        with self._state:
            for verification in reversed(list(self._verifications.values())):
                if verification.service_sid == service_sid and verification.to == to:
                    self._expire_if_due(verification)
                    return verification if verification.status == "pending" else None
        return None

    def _expire_if_due(self, verification: Verification) -> None:
        if verification.status == "pending" and time.monotonic() >= verification.expires_at:
            verification.status = "expired"
            verification.date_updated = _now()

    def _check_verification(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        self._service_account(request, match)
        params = request.form or {}
        code = _first(params, "Code") or ""
        to, verification_sid = _first(params, "To"), _first(params, "VerificationSid")
        if not re.fullmatch(r"[0-9A-Za-z]{4,10}", code):
            raise TwilioError(400, 60200, f"Invalid parameter `Code`: {code}")
        if not to and not verification_sid:
            raise TwilioError(400, 60200, "Either a 'To' or a 'VerificationSid' parameter must be specified")
        with self._state:
            verification = self._find_verification(match["service"], to, verification_sid)
            if verification is not None:
                self._expire_if_due(verification)
            if verification is None or verification.status != "pending":
                raise _not_found(request.path)
            if verification.failed_checks >= MAX_VERIFY_CHECKS:
                raise TwilioError(429, 60202, "Max check attempts reached")
            if secrets.compare_digest(code, verification.code):
                verification.status = "approved"
            else:
                verification.failed_checks += 1
            verification.date_updated = _now()
            return self._json(200, verification.check_resource())

    def _find_verification(self, service_sid: str, to: str | None, sid: str | None) -> Verification | None:
        for verification in reversed(list(self._verifications.values())):
            if verification.service_sid != service_sid:
                continue
            if (sid and verification.sid == sid) or (not sid and verification.to == to):
                return verification
        return None

    def _fetch_verification(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        self._service_account(request, match)
        with self._state:
            verification = self._find_verification(match["service"], None, match["sid"])
            if verification is None:
                raise _not_found(request.path)
            self._expire_if_due(verification)
            return self._json(200, verification.resource(self.base_url))

    def _update_verification(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        self._service_account(request, match)
        status = request.form_value("Status")
        if status not in ("canceled", "approved"):
            raise TwilioError(400, 60200, f"Invalid parameter `Status`: {status}")
        with self._state:
            verification = self._find_verification(match["service"], None, match["sid"])
            if verification is not None:
                self._expire_if_due(verification)
            if verification is None or verification.status != "pending":
                raise _not_found(request.path)
            verification.status = status
            verification.date_updated = _now()
            return self._json(200, verification.resource(self.base_url))

    # --- callbacks to the app ------------------------------------------------------------------

    def send_status_callback(
        self,
        url: str,
        params: Mapping[str, str | Sequence[str]],
        auth_token: str | None = None,
        *,
        idempotency_token: str | None = None,
        timeout: float = 10.0,
        verify: str | bool | None = None,
    ) -> requests.Response:
        """POST ``params`` form-encoded to ``url`` the way Twilio does, signed with the auth token.

        ``auth_token`` defaults to the token of the account named by ``params["AccountSid"]``.
        Reuse ``idempotency_token`` to imitate Twilio retrying the same webhook.
        """
        token = auth_token or self._auth_token_for(params)
        multi = _multi(params)
        signature = twilio_signature(token, url, multi)
        idempotency = idempotency_token or f"{uuid.uuid4()}-{secrets.token_hex(4)}"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": idempotency,
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
        }
        body = urlencode([(name, value) for name, values in multi.items() for value in values])
        # verify= per request: an environment CA bundle would override Session.verify.
        chosen_verify = verify if verify is not None else self.callback_verify
        options: dict[str, Any] = {} if chosen_verify is None else {"verify": chosen_verify}
        try:
            response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False, **options)
        except requests.RequestException as error:
            self._record_callback(SentCallback(url, multi, signature, idempotency, None, repr(error)))
            raise
        self._record_callback(SentCallback(url, multi, signature, idempotency, response.status_code))
        return response

    def _record_callback(self, callback: SentCallback) -> None:
        with self._state:
            self._callbacks.append(callback)

    def _auth_token_for(self, params: Mapping[str, str | Sequence[str]]) -> str:
        account = params.get("AccountSid")
        account_sid = account if isinstance(account, str) else (account[0] if account else None)
        with self._state:
            if account_sid in self._accounts:
                return self._accounts[account_sid]
            if len(self._accounts) == 1:
                return next(iter(self._accounts.values()))
        raise ValueError("pass auth_token: the callback's AccountSid is not a known account")

    def message_status_params(
        self, message_sid: str, status: str, error_code: int | str | None = None
    ) -> dict[str, str]:
        """The parameters of a real message status callback for a stored message."""
        message = self.message(message_sid)
        params = {
            "MessageSid": message.sid,
            "MessageStatus": status,
            "SmsSid": message.sid,
            "SmsStatus": status,
            "AccountSid": message.account_sid,
            "From": message.sender,
            "To": message.to,
            "ApiVersion": API_VERSION,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    def call_status_params(
        self, call_sid: str, status: str, sequence_number: int, duration: int | None = None
    ) -> dict[str, str]:
        """The parameters of a real call progress callback; durations only once completed."""
        call = self.call(call_sid)
        params = {
            "CallSid": call.sid,
            "CallStatus": status,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
            "Timestamp": rfc2822(_now()),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(sequence_number),
            "FromCountry": _country(call.from_),
            "ToCountry": _country(call.to),
        }
        if status == "completed":
            seconds = duration if duration is not None else (call.duration or 0)
            params["CallDuration"] = str(seconds)
            params["Duration"] = str(math.ceil(seconds / 60))
        return params

    def inbound_sms_params(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        account_sid: str | None = None,
        messaging_service_sid: str | None = None,
    ) -> dict[str, str]:
        """The parameters Twilio posts to the number's webhook when someone texts it."""
        sid = new_sid("SM")
        with self._state:
            account = account_sid or next(iter(self._accounts), new_sid("AC"))
        params = {
            "ToCountry": _country(to),
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": body,
            "FromCountry": _country(from_),
            "To": to,
            "ToZip": "",
            "NumSegments": str(count_segments(body)),
            "MessageSid": sid,
            "AccountSid": account,
            "From": from_,
            "ApiVersion": API_VERSION,
        }
        if messaging_service_sid:
            params["MessagingServiceSid"] = messaging_service_sid
        return params

    def transcription_params(self, from_: str, to: str, text: str, *, status: str = "completed",
                             account_sid: str | None = None) -> dict[str, str]:
        """What Twilio posts to a ``<Record transcribeCallback>`` once it transcribed a caller's message."""
        call_sid, recording_sid, transcription_sid = new_sid("CA"), new_sid("RE"), new_sid("TR")
        with self._state:
            account = account_sid or next(iter(self._accounts), new_sid("AC"))
        recordings = f"{self.base_url}/{API_VERSION}/Accounts/{account}"
        return {
            "AccountSid": account, "CallSid": call_sid, "From": from_, "To": to, "CallStatus": "completed",
            "ApiVersion": API_VERSION, "Direction": "inbound", "ForwardedFrom": "",
            "RecordingSid": recording_sid, "RecordingUrl": f"{recordings}/Recordings/{recording_sid}",
            "TranscriptionSid": transcription_sid, "TranscriptionStatus": status,
            "TranscriptionText": text if status == "completed" else "",
            "TranscriptionType": "fast",
            "TranscriptionUrl": f"{recordings}/Recordings/{recording_sid}/Transcriptions/{transcription_sid}",
        }

    def advance_message(
        self, message_sid: str, status: str, error_code: int | None = None, *, send: bool = True
    ) -> requests.Response | None:
        """Move a stored message to ``status`` and, when it has a StatusCallback, tell the app."""
        with self._state:
            message = self._messages[message_sid]
            message.status = status
            message.date_updated = _now()
            if status in ("sent", "delivered", "undelivered", "read") and message.date_sent is None:
                message.date_sent = message.date_updated
            if error_code is not None:
                message.error_code = error_code
                message.error_message = DELIVERY_ERRORS.get(error_code, f"Error {error_code}")
        if not send or not message.status_callback:
            return None
        return self.send_status_callback(
            message.status_callback, self.message_status_params(message_sid, status, error_code)
        )

    def advance_call(
        self, call_sid: str, status: str, *, duration: int | None = None, send: bool = True
    ) -> requests.Response | None:
        """Move a stored call to ``status``; call back when its StatusCallbackEvent asks for it."""
        with self._state:
            call = self._calls[call_sid]
            if status != "initiated":
                call.status = status
            call.date_updated = _now()
            if status == "in-progress":
                call.start_time = call.date_updated
            if _CALL_EVENT_FOR_STATUS.get(status) == "completed":
                call.end_time = call.date_updated
                call.duration = duration if duration is not None else 0
            wanted = _CALL_EVENT_FOR_STATUS.get(status) in call.status_callback_events
            sequence = call.callback_sequence
            if wanted and call.status_callback:
                call.callback_sequence += 1
        if not send or not wanted or not call.status_callback:
            return None
        return self.send_status_callback(call.status_callback, self.call_status_params(call_sid, status, sequence))

    def _start_worker(self, message_sid: str) -> None:
        worker = threading.Thread(target=self._walk_statuses, args=(message_sid,), daemon=True)
        with self._state:
            self._workers.append(worker)
        worker.start()

    def _walk_statuses(self, message_sid: str) -> None:
        initial = self.message(message_sid).status
        statuses = list(self.auto_callback_statuses)
        if initial in statuses:
            statuses = statuses[statuses.index(initial) + 1 :]
        for status in statuses:
            if self._stopping.wait(self.auto_callback_interval):
                return
            try:
                self.advance_message(message_sid, status, send=status not in self.auto_callback_lost)
            except requests.RequestException:
                return  # recorded in callbacks_sent; Twilio would log error 11200

    # --- answers -----------------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> Response:
        return Response.json(status, payload, {"Twilio-Request-Id": new_sid("RQ")})

    def _error(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return Response.json(status, body, {"Twilio-Request-Id": new_sid("RQ"), **(headers or {})})

    def error_response(self, status: int, message: str) -> Response:
        codes = {400: 20001, 401: 20003, 404: 20404, 405: 20004, 429: 20429, 500: 20500, 503: 20503}
        return self._error(status, codes.get(status, status), message)

    def not_found(self, request: RecordedRequest) -> Response:
        error = _not_found(request.path)
        return self._error(error.status, error.code, error.message)

    def default_error_message(self, status: int) -> str:
        if status == 429:
            return "Too many requests"
        return super().default_error_message(status)


def _newest_first(item: tuple[int, Message | Call]) -> tuple[float, int]:
    index, resource = item
    return (-resource.date_created.timestamp(), -index)


def _list_page(path: str, query: _ListQuery, found: Sequence[Message | Call], key: str) -> dict[str, Any]:
    # Newest first, as Twilio lists them; equal timestamps keep the later-created first.
    ordered = [resource for _index, resource in sorted(enumerate(found), key=_newest_first)]
    start = _page_start(ordered, query)
    return _list_body(path, query, ordered, start, ordered[start : start + query.page_size], key)


def _list_query(request: RecordedRequest, names: Sequence[str]) -> _ListQuery:
    filters = {name: value for name in names if (value := request.query_value(name)) is not None}
    for name, value in filters.items():
        if name.rstrip("<>") in _DATE_FILTERS:
            _parse_date(value)
    return _ListQuery(
        filters=filters,
        page_size=_bounded_int(request.query_value("PageSize"), "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        page=_bounded_int(request.query_value("Page"), "Page", 0, 0, None),
        token=request.query_value("PageToken"),
    )


def _parse_date(value: str) -> datetime:
    try:
        if not _DATE_ONLY.fullmatch(value):
            raise ValueError(value)
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise TwilioError(400, 20001, f"Invalid date value: {value}") from None


def _bounded_int(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None:
        return default
    if not re.fullmatch(r"\d+", raw) or int(raw) < low or (high is not None and int(raw) > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise TwilioError(400, 20001, f"Invalid {name}: {raw} (must be an integer {limit})")
    return int(raw)


def _matches_filters(message: Message, filters: Mapping[str, str]) -> bool:
    if "To" in filters and message.to != filters["To"]:
        return False
    if "From" in filters and message.sender != filters["From"]:
        return False
    sent_day = message.date_sent.astimezone(UTC).date() if message.date_sent else None
    day_filters = {name: _parse_date(value).date() for name, value in filters.items() if name.startswith("DateSent")}
    if day_filters and sent_day is None:
        return False  # not sent yet: no sent date to compare
    checks = {
        "DateSent": lambda day: sent_day == day,
        "DateSent>": lambda day: sent_day >= day,
        "DateSent<": lambda day: sent_day <= day,
    }
    return all(checks[name](day) for name, day in day_filters.items())


def _call_matches_filters(call: Call, filters: Mapping[str, str]) -> bool:
    plain = {"To": call.to, "From": call.from_, "ParentCallSid": None, "Status": call.status}
    if any(name in filters and filters[name] != value for name, value in plain.items()):
        return False
    days = {"StartTime": call.start_time, "EndTime": call.end_time}
    for name, value in filters.items():
        base = name.rstrip("<>")
        if base not in days:
            continue
        moment = days[base]
        if moment is None:
            return False  # a queued or ringing call has not started (or ended): no date to compare
        day, wanted = moment.astimezone(UTC).date(), _parse_date(value).date()
        # StartTime< is "before that day", StartTime> "on or after" (Twilio's parameter descriptions).
        if (name == base and day != wanted) or (name.endswith("<") and day >= wanted) or \
                (name.endswith(">") and day < wanted):
            return False
    return True


def _page_start(ordered: Sequence[Message | Call], query: _ListQuery) -> int:
    """Where the requested page begins: after ("PA") or before ("PB") the message its token names."""
    if query.token is None:
        return query.page * query.page_size
    direction, sid = query.token[:2], query.token[2:]
    index = next((i for i, message in enumerate(ordered) if message.sid == sid), None)
    if direction not in ("PA", "PB") or index is None:
        raise TwilioError(400, 20001, f"Invalid PageToken: {query.token}")
    return index + 1 if direction == "PA" else max(0, index - query.page_size)


def _list_body(
    path: str, query: _ListQuery, ordered: Sequence[Message | Call], start: int, page: Sequence[Message | Call],
    key: str,
) -> dict[str, Any]:
    def page_uri(page_number: int, token: str | None = None) -> str:
        params = [*query.filters.items(), ("PageSize", str(query.page_size)), ("Page", str(page_number))]
        if token is not None:
            params.append(("PageToken", token))
        return f"{path}?{urlencode(params)}"

    has_next = bool(page) and start + len(page) < len(ordered)
    return {
        key: [resource.resource() for resource in page],
        "first_page_uri": page_uri(0),
        "next_page_uri": page_uri(query.page + 1, "PA" + page[-1].sid) if has_next else None,
        "previous_page_uri": page_uri(query.page - 1, "PB" + page[0].sid) if page and start > 0 else None,
        "page": query.page,
        "page_size": query.page_size,
        "uri": page_uri(query.page, query.token),
        "start": start,
        "end": start + max(len(page) - 1, 0),
    }


def _attempt_channel(channel: str) -> str:
    # As in the spec's examples: "SMS" and "EMAIL" upper-case, other channels as given.
    return channel.upper() if channel in ("sms", "email", "call") else channel


def _first(params: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _check_validity_period(raw: str | None) -> None:
    """``ValidityPeriod``: whole seconds a message may wait in Twilio's queue, 1 to 36,000 (default 36,000)."""
    if raw is not None and not (re.fullmatch(r"\d+", raw) and MIN_VALIDITY_PERIOD <= int(raw) <= MAX_VALIDITY_PERIOD):
        raise TwilioError(400, 21624, "Invalid validity period value: it can only be set to integers between "
                                      f"{MIN_VALIDITY_PERIOD} and {MAX_VALIDITY_PERIOD} seconds")


def _is_callback_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in (parts.hostname or "")


def _unauthenticated() -> TwilioError:
    return TwilioError(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})


def _not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")
