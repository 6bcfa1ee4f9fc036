"""Fake SendGrid v3 Mail Send over plain HTTP, plus signed Event Webhook posts to the app.

Behaviour follows SendGrid's OpenAPI description of Mail Send (``twilio/sendgrid-oai``,
``tsg_mail_v3.json``), its rate-limit and error pages, and the Signed Event Webhook:

- Auth: ``Authorization: Bearer <API key>``; none -> 401 "authorization required", an
  unknown key -> 401 "The provided authorization grant is invalid, expired, or revoked";
  a key without the ``mail.send`` scope -> 403 "access forbidden". A sender (``from``)
  that is not a verified sender identity -> 403, as SendGrid refuses it.
- ``POST /v3/mail/send`` (JSON): a body over ``max_body_bytes`` (SendGrid: 30 MB for the
  whole message) -> 413 "content too large"; otherwise the body is checked as SendGrid
  checks it and every problem is listed as ``{"message", "field", "help"}`` under
  ``errors`` with 400: ``personalizations`` (1-1000, each with a ``to`` list of
  ``{"email"[, "name"]}``), ``from.email``, ``subject`` (here or in every personalization),
  ``content`` (``type`` and non-empty ``value``), ``custom_args`` (string values, at
  most 10,000 bytes). The messages paraphrase SendGrid's error reference.
- Accepted: 202, empty body, ``X-Message-Id`` (22 characters, like SendGrid's); mail/send
  answers carry no rate-limit headers (as SendGrid's do not). Each accepted mail is kept
  (``mails()``): message id, recipients, sender, subject, content, merged custom args.
- Rate limit (``limit_rate``): more than ``limit`` sends in a window of ``period`` seconds
  -> 429 "too many requests" with ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0`` and
  ``X-RateLimit-Reset`` (epoch seconds of the window's end). SendGrid documents no
  ``Retry-After`` (unconfirmed either way); ``send_retry_after=True`` adds one.
- Failure injection from the base: ``fail_next`` (429 answers SendGrid's body and
  rate-limit headers, not a Retry-After), ``delay_next`` (stall before handling: nothing
  sent), ``drop_next``; here also ``fail_nth`` (the n-th matching request from now fails)
  and ``stall_after_handling`` (the mail is accepted, then the answer is held back: the
  read timeout after which a client cannot know whether SendGrid has it).

- What the connection doctor reads: ``GET /v3/scopes`` (``{"scopes": [...]}``, the key's
  permissions; any valid key may read its own) and ``GET /v3/verified_senders``
  (``{"results": [{"id", "nickname", "from_email", "from_name", "reply_to", "verified",
  "locked", ...}]}``: the senders ``verify_sender`` verified, and those ``add_sender`` added
  still waiting for their confirmation mail). Which permission SendGrid wants for the
  sender list is unconfirmed; the fake asks for none beyond a valid key.

Mail Send has no list endpoint, so there is no paging to imitate.

Events to the app: the fake holds an ECDSA P-256 key pair (``public_key`` is what
SendGrid's settings page shows: base64 DER). ``event_for`` builds an event of a kept mail
as SendGrid posts it (``sg_event_id``, ``sg_message_id`` = message id + filter suffix,
``smtp-id``, unix ``timestamp``, the mail's custom args as top-level fields);
``post_events`` POSTs a JSON array signed like SendGrid: base64 DER ECDSA/SHA-256 over
the ``X-Twilio-Email-Event-Webhook-Timestamp`` value followed by the raw body.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.channels.sendgrid.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.fakes.server import (
    FakeServer,
    RecordedRequest,
    RequestFilter,
    Response,
    Route,
    _Script,
    request_filter,
    route,
)

MAIL_SEND = "/v3/mail/send"
MAIL_SEND_SCOPE = "mail.send"
SCOPES = "/v3/scopes"
VERIFIED_SENDERS = "/v3/verified_senders"
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_PERSONALIZATIONS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
ERRORS_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
UNVERIFIED_SENDER = ("The from address does not match a verified Sender Identity. Mail cannot be sent until this "
                     "error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ "
                     "to see the Sender Identity requirements")


def new_message_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def new_api_key() -> str:
    """``SG.<22>.<43>``, the shape of SendGrid API keys."""
    return f"SG.{new_message_id()}.{secrets.token_urlsafe(32)[:43]}"


@dataclass(frozen=True)
class Mail:
    """One accepted mail send (one personalization of it)."""

    message_id: str
    to: tuple[str, ...]
    from_email: str
    from_name: str | None
    subject: str
    content: Mapping[str, str]  # MIME type -> value
    custom_args: Mapping[str, str]
    body: Mapping[str, Any]  # the request as received
    accepted_at: float  # time.time()

    @property
    def text(self) -> str:
        return self.content.get("text/plain", "")


@dataclass(frozen=True)
class SentEvents:
    url: str
    body: bytes
    timestamp: str
    signature: str
    status_code: int | None
    error: str | None = None


@dataclass
class _Window:
    start: float
    count: int = 0


class SendGridError(Exception):
    def __init__(self, status: int, errors: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(errors[0]["message"] if errors else str(status))
        self.status, self.errors, self.headers = status, errors, dict(headers or {})


def _problem(message: str, field_name: str | None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field_name, "help": f"{ERRORS_HELP}#{help_anchor}" if help_anchor else None}


class FakeSendGrid(FakeServer):
    """Fake api.sendgrid.com: ``POST /v3/mail/send``."""

    service_name = "sendgrid"

    def __init__(self, *, port: int = 0, max_body_bytes: int = MAX_BODY_BYTES, send_retry_after: bool = False,
                 callback_verify: str | bool | None = None) -> None:
        super().__init__(port=port)
        self.max_body_bytes = max_body_bytes
        self.send_retry_after = send_retry_after
        self.callback_verify = callback_verify
        self._state = threading.RLock()
        self._keys: dict[str, frozenset[str]] = {}
        self._senders: set[str] = set()
        self._pending_senders: set[str] = set()  # added, their confirmation mail not yet clicked
        self._mails: list[Mail] = []
        self._sent_events: list[SentEvents] = []
        self._stalls: list[tuple[list[int], float, Callable[[RecordedRequest], bool]]] = []
        self._rate: tuple[int, float] | None = None
        self._window = _Window(0.0)
        self._private_key = ec.generate_private_key(ec.SECP256R1())

    # --- set-up ------------------------------------------------------------------------------

    def add_api_key(self, key: str | None = None, scopes: Sequence[str] = (MAIL_SEND_SCOPE,)) -> str:
        key = key or new_api_key()
        with self._state:
            self._keys[key] = frozenset(scopes)
        return key

    def verify_sender(self, email: str) -> None:
        with self._state:
            self._senders.add(email.lower())

    def add_sender(self, email: str) -> None:
        """A Single Sender whose confirmation mail was not clicked: listed unverified, refused as ``from``."""
        with self._state:
            self._pending_senders.add(email.lower())

    def limit_rate(self, limit: int, period: float = 1.0) -> None:
        """At most ``limit`` mail sends per window of ``period`` seconds; more get 429."""
        with self._state:
            self._rate = (limit, period)
            self._window = _Window(time.time())

    @property
    def public_key(self) -> str:
        """The Signed Event Webhook's verification key as SendGrid shows it: base64 DER (SPKI)."""
        der = self._private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")

    # --- failure injection -------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 429, headers: Mapping[str, str] | None = None,
                  body: bytes | str | Mapping[str, Any] | None = None, match: RequestFilter = None) -> None:
        if headers is None and status == 429:
            headers = self.rate_limit_headers(time.time() + 1)
        super().fail_next(n, status, headers, body, match)

    def fail_nth(self, n: int, status: int = 500, headers: Mapping[str, str] | None = None,
                 match: RequestFilter = f"POST {MAIL_SEND}") -> None:
        """Answer the ``n``-th matching request from now (1 = the next) with ``status``; the ones
        before it are handled normally. Counts the requests no earlier script answered."""
        if n < 1:
            raise ValueError("n must be at least 1")
        accepts, seen = request_filter(match), [0]

        def nth(request: RecordedRequest) -> bool:
            if not accepts(request):
                return False
            seen[0] += 1
            return seen[0] == n

        if headers is None and status == 429:
            headers = self.rate_limit_headers(time.time() + 1)
        response = self._scripted_response(status, dict(headers or {}), None)
        self._add_script(_Script("fail", 1, nth, response=response))

    def stall_after_handling(self, n: int = 1, seconds: float = 1.0,
                             match: RequestFilter = f"POST {MAIL_SEND}") -> None:
        """Handle the next ``n`` matching requests (the mail is accepted), then hold the answer back."""
        with self._state:
            self._stalls.append(([n], seconds, request_filter(match)))

    def _take_stall(self, request: RecordedRequest) -> float:
        with self._state:
            for stall in self._stalls:
                remaining, seconds, accepts = stall
                if accepts(request):
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        self._stalls.remove(stall)
                    return seconds
        return 0.0

    def rate_limit_headers(self, reset_at: float, limit: int = 600) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(math.ceil(reset_at))}
        if self.send_retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
        return headers

    # --- inspection --------------------------------------------------------------------------

    def mails(self, to: str | None = None) -> list[Mail]:
        with self._state:
            return [mail for mail in self._mails if to is None or to.lower() in (a.lower() for a in mail.to)]

    def events_sent(self) -> list[SentEvents]:
        with self._state:
            return list(self._sent_events)

    # --- routes ------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return [route("POST", re.escape(MAIL_SEND), self._mail_send),
                route("GET", re.escape(SCOPES), self._answering(self._scopes)),
                route("GET", re.escape(VERIFIED_SENDERS), self._answering(self._verified_senders))]

    def _answering(self, handler: Callable[[RecordedRequest], Response]) -> Callable[..., Response]:
        def answer(request: RecordedRequest, _match: re.Match[str]) -> Response:
            try:
                return handler(request)
            except SendGridError as error:
                return self._errors(error.status, error.errors, error.headers)

        return answer

    def _scopes(self, request: RecordedRequest) -> Response:
        with self._state:
            scopes = self._keys.get(self._key_of(request), frozenset())
        return Response.json(200, {"scopes": sorted(scopes)})

    def _verified_senders(self, request: RecordedRequest) -> Response:
        self._key_of(request)
        with self._state:
            senders = [(email, True) for email in sorted(self._senders)]
            senders += [(email, False) for email in sorted(self._pending_senders - self._senders)]
        return Response.json(200, {"results": [
            {"id": index + 1, "nickname": email.split("@")[0], "from_email": email, "from_name": "",
             "reply_to": email, "reply_to_name": "", "address": "1 Main St", "address2": "", "state": "CA",
             "city": "San Francisco", "country": "USA", "zip": "94105", "verified": verified, "locked": False}
            for index, (email, verified) in enumerate(senders)]})

    def _mail_send(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        try:
            response = self._accept_mail(request)
        except SendGridError as error:
            response = self._errors(error.status, error.errors, error.headers)
        stall = self._take_stall(request)
        if stall:
            self._stopping.wait(stall)  # stopping cuts the stall short
        return response

    def _accept_mail(self, request: RecordedRequest) -> Response:
        self._authenticate(request)
        if len(request.body) > self.max_body_bytes:
            raise SendGridError(413, [_problem("content too large", None)])
        self._take_rate_slot()
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            raise SendGridError(400, [_problem("Bad Request", None)]) from None
        problems = mail_problems(body)
        if problems:
            raise SendGridError(400, problems)
        self._check_sender(body)
        mail = _mail_of(body, new_message_id())
        with self._state:
            self._mails.append(mail)
        return Response(202, b"", {"X-Message-Id": mail.message_id, "Server": "nginx"})

    def _key_of(self, request: RecordedRequest) -> str:
        """The request's API key when it is a known one; 401 otherwise, as SendGrid answers."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            raise SendGridError(401, [_problem("authorization required", None)])
        with self._state:
            known = key in self._keys
        if not known:
            raise SendGridError(401, [_problem("The provided authorization grant is invalid, expired, or revoked",
                                               None)])
        return key

    def _authenticate(self, request: RecordedRequest) -> None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            raise SendGridError(401, [_problem("authorization required", None)])
        with self._state:
            scopes = self._keys.get(key)
        if scopes is None:
            raise SendGridError(401, [_problem("The provided authorization grant is invalid, expired, or revoked",
                                               None)])
        if MAIL_SEND_SCOPE not in scopes:
            raise SendGridError(403, [_problem("access forbidden", None)])

    def _take_rate_slot(self) -> None:
        with self._state:
            if self._rate is None:
                return
            limit, period = self._rate
            now = time.time()
            if now >= self._window.start + period:
                self._window = _Window(now)
            if self._window.count >= limit:
                raise SendGridError(429, [_problem("too many requests", None)],
                                    self.rate_limit_headers(self._window.start + period, limit))
            self._window.count += 1

    def _check_sender(self, body: Mapping[str, Any]) -> None:
        with self._state:
            verified = str(body["from"]["email"]).lower() in self._senders
        if not verified:
            raise SendGridError(403, [_problem(UNVERIFIED_SENDER, "from", "message.from")])

    # --- answers -----------------------------------------------------------------------------

    def _errors(self, status: int, errors: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> Response:
        return Response.json(status, {"errors": errors}, dict(headers or {}))

    def error_response(self, status: int, message: str) -> Response:
        return self._errors(status, [_problem(message, None)])

    def default_error_message(self, status: int) -> str:
        return {429: "too many requests", 500: "internal server error", 503: "service unavailable"}.get(
            status, super().default_error_message(status))

    # --- events to the app -------------------------------------------------------------------

    def event_for(self, mail: Mail, event: str, **fields: Any) -> dict[str, Any]:
        """One event about ``mail`` as SendGrid posts it; ``fields`` add to or override it."""
        base: dict[str, Any] = {
            "email": mail.to[0], "timestamp": int(time.time()), "event": event,
            "smtp-id": f"<{mail.message_id}@ismtpd0001p1iad2.sendgrid.net>",
            "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("="),
            "sg_message_id": f"{mail.message_id}.filterdrecv-5645d9c87f-{secrets.token_hex(3)}-1-"
                             f"{secrets.token_hex(4).upper()}-{secrets.randbelow(40)}.0",
            **_EVENT_EXTRAS.get(event, {}), **mail.custom_args,
        }
        return {**base, **fields}

    def sign(self, timestamp: str, payload: bytes) -> str:
        """SendGrid's signature: base64 DER ECDSA P-256 / SHA-256 over timestamp + payload."""
        return sign(self._private_key, payload, timestamp=timestamp)[SIGNATURE_HEADER]

    def post_events(self, url: str, events: Sequence[Mapping[str, Any]], *, timestamp: int | None = None,
                    signature: str | None = None, body: bytes | None = None, timeout: float = 10.0,
                    verify: str | bool | None = None) -> requests.Response:
        """POST ``events`` (or a raw ``body``) to ``url`` the way SendGrid does, signed now (or at
        ``timestamp``); ``signature`` replaces the real one."""
        raw = body if body is not None else (json.dumps(list(events), separators=(",", ":")) + "\r\n").encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signed = signature if signature is not None else self.sign(stamp, raw)
        headers = {"Content-Type": "application/json", "User-Agent": "SendGrid Event API",
                   SIGNATURE_HEADER: signed, TIMESTAMP_HEADER: stamp}
        chosen = verify if verify is not None else self.callback_verify
        options: dict[str, Any] = {} if chosen is None else {"verify": chosen}
        try:
            response = requests.post(url, data=raw, headers=headers, timeout=timeout, **options)
        except requests.RequestException as error:
            self._record(SentEvents(url, raw, stamp, signed, None, repr(error)))
            raise
        self._record(SentEvents(url, raw, stamp, signed, response.status_code))
        return response

    def _record(self, sent: SentEvents) -> None:
        with self._state:
            self._sent_events.append(sent)


# Fields SendGrid adds to each kind of event (examples from its Event Webhook reference).
_EVENT_EXTRAS: Mapping[str, Mapping[str, Any]] = {
    "processed": {"category": [], "send_at": 0},
    "delivered": {"response": "250 2.0.0 OK", "tls": 1, "ip": "167.89.0.1"},
    "deferred": {"response": "421 4.7.0 try again later", "attempt": "1", "ip": "167.89.0.1"},
    "bounce": {"reason": "550 5.1.1 The email account that you tried to reach does not exist.",
               "status": "5.1.1", "type": "bounce", "bounce_classification": "Invalid Address"},
    "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
    "open": {"useragent": "Mozilla/5.0", "ip": "203.0.113.7", "sg_machine_open": False},
    "click": {"useragent": "Mozilla/5.0", "ip": "203.0.113.7", "url": "https://contoso.example/"},
}


# --- the request body ------------------------------------------------------------------------------


def mail_problems(body: Any) -> list[dict[str, Any]]:
    """What SendGrid would refuse in a mail send body, each naming its field."""
    if not isinstance(body, dict):
        return [_problem("The request body must be a JSON object.", None)]
    problems = _personalization_problems(body.get("personalizations"))
    sender = body.get("from")
    if not isinstance(sender, dict) or not _is_email(sender.get("email")):
        problems.append(_problem("The from object must be provided for every email send. It is an object that "
                                 "requires the email parameter, but may also contain a name parameter.",
                                 "from.email", "message.from"))
    problems += _subject_problems(body)
    problems += _content_problems(body.get("content"))
    problems += _custom_args_problems(body.get("custom_args"), "custom_args")
    return problems


def _personalization_problems(personalizations: Any) -> list[dict[str, Any]]:
    if not isinstance(personalizations, list) or not personalizations:
        return [_problem("The personalizations field is required and must have at least one personalization.",
                         "personalizations", "message.personalizations")]
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return [_problem(f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations per "
                         f"API request. You have provided {len(personalizations)} personalizations.",
                         "personalizations", "message.personalizations")]
    problems = []
    for index, personalization in enumerate(personalizations):
        path = f"personalizations.{index}"
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(to, list) or not to:
            problems.append(_problem("The to array is required for all personalization objects, and must have at "
                                     "least one email object with a valid email address.", f"{path}.to",
                                     "message.personalizations.to"))
            continue
        for position, recipient in enumerate(to):
            if not isinstance(recipient, dict) or not _is_email(recipient.get("email")):
                problems.append(_problem("Does not contain a valid address.", f"{path}.to.{position}.email",
                                         "message.personalizations.to"))
        problems += _custom_args_problems(personalization.get("custom_args"), f"{path}.custom_args")
    return problems


def _subject_problems(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    personalizations = body.get("personalizations") if isinstance(body.get("personalizations"), list) else []
    every_one = bool(personalizations) and all(isinstance(p, dict) and _text(p.get("subject"))
                                               for p in personalizations)
    if _text(body.get("subject")) or every_one or body.get("template_id"):
        return []
    return [_problem("The subject is required. You can get around this requirement if you use a template with a "
                     "subject defined or if every personalization has a subject defined.", "subject",
                     "message.subject")]


def _content_problems(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        return [_problem("Unless a valid template_id is provided, the content parameter is required. There must be "
                         "at least one defined content block.", "content", "message.content")]
    problems = []
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not _text(block.get("type")):
            problems.append(_problem("The content type must be provided.", f"content.{index}.type",
                                     "message.content.type"))
        if not isinstance(block, dict) or not _text(block.get("value")):
            problems.append(_problem("The content value must be a string at least one character in length.",
                                     f"content.{index}.value", "message.content.value"))
    return problems


def _custom_args_problems(custom_args: Any, path: str) -> list[dict[str, Any]]:
    if custom_args is None:
        return []
    if not isinstance(custom_args, dict) or not all(isinstance(v, str) for v in custom_args.values()):
        return [_problem("Custom args must be an object of string values.", path, "message.custom_args")]
    if len(json.dumps(custom_args).encode("utf-8")) > MAX_CUSTOM_ARGS_BYTES:
        return [_problem(f"The custom_args may not exceed {MAX_CUSTOM_ARGS_BYTES:,} bytes.", path,
                         "message.custom_args")]
    return []


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and bool(_EMAIL.match(value))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _mail_of(body: Mapping[str, Any], message_id: str) -> Mail:
    personalization = body["personalizations"][0]
    return Mail(
        message_id=message_id,
        to=tuple(recipient["email"] for recipient in personalization["to"]),
        from_email=body["from"]["email"],
        from_name=body["from"].get("name"),
        subject=personalization.get("subject") or body.get("subject", ""),
        content={block["type"]: block["value"] for block in body.get("content", [])},
        custom_args={**(body.get("custom_args") or {}), **(personalization.get("custom_args") or {})},
        body=body,
        accepted_at=time.time(),
    )
