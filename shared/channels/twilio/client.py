"""Twilio channel: SMS, voice calls and Verify codes through one SDK client.

The delivery stage sees outcomes, not Twilio:

- ``SendResult`` when Twilio accepted the request;
- ``PermanentSendError`` when trying again cannot help (a rejected number, an opted-out
  recipient, bad credentials or configuration): ``opted_out`` and ``invalid_number`` say
  which recipient problems they were;
- ``RetryLater`` (from ``shared.http``) when Twilio asked us to slow down for longer than is
  worth sleeping through, or the short inline retries ran out: the queue takes over;
- ``AmbiguousSendError`` when a create may have reached Twilio but no answer came back
  (read timeout, dropped connection, 500/502/504): sending again could text the person
  twice, so the caller first asks ``find_sent_message`` (or ``find_placed_call``) whether
  the message or call exists.

Retries follow ``shared.http.decide`` (the one retry policy of the app); the HTTP client
under the SDK never retries on its own. twilio, phonenumbers and requests are imported on
first use, so importing this module stays cheap for the Functions host's cold start.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from shared.channels.twilio.connection import basic_credentials, messaging_base_url
from shared.channels.twilio.webhooks import NumberWebhooks
from shared.clients import PerConnection
from shared.http import (
    DEFAULT_POOL_MAXSIZE,
    NOT_PROCESSED_STATUSES,
    RetryLater,
    RetryPolicy,
    decide,
    failed_before_sending,
    is_transient_error,
    redact_url,
)
from shared.phones import InvalidNumber, normalize_number

if TYPE_CHECKING:
    from twilio.rest import Client

    from shared.channels.twilio.connection import TwilioConnection
    from shared.config.model import SecretRef
    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 15.0)
# Twilio's 429 is a concurrency limit that clears within about a second, and its Retry-After
# is not guaranteed: wait 1 s when it is missing, sleep up to 2 s inline, then hand back.
TWILIO_RETRY_POLICY = RetryPolicy(default_retry_after=1.0, inline_wait_limit=2.0, max_attempts=4)
# Inside a request Slack abandons after 3 s (checking a code typed into a modal): one attempt.
INTERACTIVE_TIMEOUT: tuple[float, float] = (1.0, 1.5)
INTERACTIVE_POLICY = RetryPolicy(default_retry_after=1.0, inline_wait_limit=0.0, max_attempts=1,
                                 connect_timeout=INTERACTIVE_TIMEOUT[0], read_timeout=INTERACTIVE_TIMEOUT[1])

OPTED_OUT_CODE = 21610
# 'To' invalid, not a mobile number, or a landline: the number itself is the problem.
INVALID_NUMBER_CODES = frozenset({21211, 21217, 21401, 21407, 21614, 21635})
NOT_FOUND_CODE = 20404
MAX_CHECK_ATTEMPTS_CODE = 60202
MAX_SEND_ATTEMPTS_CODE = 60203
# Verify's attempt limits arrive as HTTP 429 but are no throttling: no wait of seconds lifts them.
VERIFY_LIMIT_CODES = frozenset({MAX_CHECK_ATTEMPTS_CODE, MAX_SEND_ATTEMPTS_CODE})
# 408 and 429 say "not processed, try again"; every other 4xx is Twilio refusing the request.
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})

DEFAULT_CALL_EVENTS: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")
# ValidityPeriod: how long Twilio may keep a message in its queue, in whole seconds.
MIN_VALIDITY_PERIOD = 1
MAX_VALIDITY_PERIOD = 36_000
# find_sent_message reads at most this many messages to one number before answering "not found".
FIND_PAGE_SIZE = 50
FIND_LIMIT = 200


# --- results and errors ----------------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    """What Twilio created: its SID (SM..., CA..., VE...) and the status it reported."""

    sid: str
    status: str


@dataclass(frozen=True)
class ProviderStatus:
    """A message's or call's status as Twilio reports it now, with its error code when it failed."""

    sid: str
    status: str
    error_code: str = ""


@dataclass(frozen=True)
class PhoneNumber:
    """One of the account's phone numbers (an IncomingPhoneNumber) and the webhooks it calls."""

    sid: str
    phone_number: str
    webhooks: NumberWebhooks


class TwilioSendError(Exception):
    """Sending through Twilio failed; the subclass says whether trying again can help."""


class PermanentSendError(TwilioSendError):
    """Twilio refused the request (or it cannot be made): retrying the same request cannot help."""

    def __init__(self, code: int | None, message: str, status: int | None, *, invalid_number: bool = False) -> None:
        super().__init__(_describe_rejection(code, message, status))
        self.code = code
        self.message = message
        self.status = status
        self.opted_out = code == OPTED_OUT_CODE
        self.invalid_number = invalid_number or code in INVALID_NUMBER_CODES


class TwilioConfigurationError(PermanentSendError):
    """The connection lacks what the request needs (a sender, a Verify service, a secret)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message, None)


class AmbiguousSendError(TwilioSendError):
    """The request may have been carried out: check ``find_sent_message`` before sending again."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"Twilio may have acted on the request, the outcome is unknown: {reason}")
        self.reason = reason
        self.status = status


def _describe_rejection(code: int | None, message: str, status: int | None) -> str:
    if code is None and status is None:
        return message
    parts = [f"Twilio error {code}" if code is not None else "Twilio error"]
    if status is not None:
        parts.append(f"(HTTP {status})")
    return f"{' '.join(parts)}: {message}"


# --- HTTP under the SDK --------------------------------------------------------------------------


@dataclass(frozen=True)
class _LastResponse:
    status: int
    headers: Mapping[str, str]
    text: str


@functools.cache
def _http_client_class() -> type[Any]:
    """The TwilioHttpClient subclass, built on first use so twilio/requests load only then."""
    from requests import Request
    from requests.adapters import HTTPAdapter
    from twilio.http.http_client import TwilioHttpClient
    from twilio.http.response import Response

    from shared.network import ProxiesByOrigin

    class ChannelHttpClient(TwilioHttpClient):
        """Sends each request once, with our timeout and CA choice, and remembers the answer.

        The SDK raises on an error status without exposing headers, so the last response of
        each thread is kept for Retry-After and Twilio's error code.
        """

        def __init__(self, timeout: tuple[float, float], verify: bool | str) -> None:
            super().__init__(pool_connections=True)
            for prefix in ("https://", "http://"):
                # No urllib3 retries: a resent POST could send an SMS twice; the channel decides.
                self.session.mount(prefix, HTTPAdapter(max_retries=0, pool_maxsize=DEFAULT_POOL_MAXSIZE))
            # Not the environment on every call (a scan of every variable each time): proxies are read
            # once per host below; the CA choice is ours.
            self.session.trust_env = False
            self.request_timeout = timeout
            self.verify = verify
            self._local = threading.local()
            self._proxies = ProxiesByOrigin()

        @property
        def last_response(self) -> _LastResponse | None:
            return getattr(self._local, "response", None)

        def forget_last_response(self) -> None:
            self._local.response = None

        def request(
            self,
            method: str,
            url: str,
            params: dict[str, Any] | None = None,
            data: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None,
            auth: tuple[str, str] | None = None,
            timeout: float | None = None,
            allow_redirects: bool = False,
        ) -> Response:
            self.forget_last_response()
            content_type = (headers or {}).get("Content-Type", "")
            body: dict[str, Any] = {"json": data} if content_type.endswith("json") else {"data": data}
            request = Request(
                method=method.upper(),
                url=url,
                params=params,
                headers=headers,
                auth=auth,
                hooks=self.request_hooks,
                **body,
            )
            prepared = self.session.prepare_request(request)
            settings = self.session.merge_environment_settings(prepared.url, self.proxy or self._proxies.for_url(url),
                                                               None, None, None)
            settings["verify"] = self.verify
            # Our own log line: the SDK's would print phone numbers from query strings.
            log.debug("Twilio %s %s", prepared.method, redact_url(prepared.url or url))
            response = self.session.send(
                prepared, allow_redirects=allow_redirects, timeout=self.request_timeout, **settings
            )
            self._local.response = _LastResponse(response.status_code, response.headers, response.text)
            return Response(int(response.status_code), response.text, response.headers)

    return ChannelHttpClient


# --- failures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: an HTTP error answer, or a network error with no answer."""

    status: int | None = None
    headers: Mapping[str, str] | None = None
    code: int | None = None
    message: str = ""
    error: BaseException | None = None

    @property
    def is_rejection(self) -> bool:
        """Twilio answered and refused: 4xx other than 408/429 (and any stray 3xx)."""
        return self.status is not None and self.status < 500 and self.status not in _RETRYABLE_CLIENT_STATUSES

    @property
    def may_have_been_processed(self) -> bool:
        if self.status is not None:
            return self.status >= 500 and self.status not in NOT_PROCESSED_STATUSES
        return self.error is not None and is_transient_error(self.error) and not failed_before_sending(self.error)

    def describe(self) -> str:
        if self.status is None:
            return type(self.error).__name__
        code = f", Twilio error {self.code}" if self.code is not None else ""
        return f"HTTP {self.status}{code}"

    def rejection(self) -> PermanentSendError:
        return PermanentSendError(self.code, self.message or f"HTTP {self.status}", self.status)


def _failure_from_answer(last: _LastResponse) -> _Failure:
    code, message = _error_details(last.text)
    return _Failure(status=last.status, headers=last.headers, code=code, message=message)


def _error_details(text: str) -> tuple[int | None, str]:
    """Twilio's error ``code`` and ``message`` (or RFC 9457 ``detail``/``title``) from a body."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None, ""
    if not isinstance(payload, dict):
        return None, ""
    code = payload.get("code")
    message = payload.get("message") or payload.get("detail") or payload.get("title") or ""
    return (code if isinstance(code, int) else None), str(message)


# --- the channel ----------------------------------------------------------------------------------


class TwilioChannel:
    """SMS, calls and Verify for one Twilio connection; safe to share between threads."""

    def __init__(
        self,
        connection: TwilioConnection,
        secrets: SecretProvider,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.connection = connection
        self._secrets = secrets
        connect_timeout, read_timeout = timeout
        self._policy = policy or replace(
            TWILIO_RETRY_POLICY, connect_timeout=connect_timeout, read_timeout=read_timeout
        )
        self._sleep = sleep
        self._rng = rng
        self._http = _http_client_class()(timeout, connection.ca_bundle or True)
        self._client = self._build_client()

    def _build_client(self) -> Client:
        from twilio.rest import Client

        connection = self.connection
        username, password = basic_credentials(connection)
        client = Client(
            username=username,
            password=self._secret(password),
            account_sid=connection.account_sid,
            http_client=self._http,
        )
        # The constructor reads TWILIO_REGION / TWILIO_EDGE from the environment, and either
        # makes the SDK rewrite every host (base_url included): the connection's URLs must win.
        client.region = None
        client.edge = None
        client.api.base_url = connection.api_base_url.rstrip("/")
        client.verify.base_url = connection.verify_base_url.rstrip("/")
        client.messaging.base_url = messaging_base_url(connection)
        return client

    def close(self) -> None:
        """Close pooled connections (tests, or a channel replaced by new configuration)."""
        self._http.session.close()

    # --- messages and calls ---------------------------------------------------------------------

    def send_sms(self, to: str, body: str, status_callback: str | None = None,
                 valid_until: datetime | None = None) -> SendResult:
        """Create an outbound SMS; Twilio POSTs its delivery status to ``status_callback``.

        With ``valid_until``, Twilio is told to drop the message rather than send it after then
        (``ValidityPeriod``: the whole seconds left at each try, within Twilio's 1 to 36,000)."""
        options: dict[str, Any] = {"to": self._recipient(to), "body": body, **self._sms_sender()}
        if status_callback:
            options["status_callback"] = status_callback

        def create() -> Any:
            timing = {} if valid_until is None else {"validity_period": validity_period(valid_until)}
            return self._client.messages.create(**options, **timing)

        message = self._call(create, idempotent=False, action="send an SMS")
        return SendResult(message.sid, str(message.status))

    def _sms_sender(self) -> dict[str, str]:
        connection = self.connection
        # With both set, the Messaging Service wins: it picks the right sender from its pool
        # (per country, sticky sender) and applies its compliance handling; a fixed From skips that.
        if connection.messaging_service_sid:
            return {"messaging_service_sid": connection.messaging_service_sid}
        if connection.from_number:
            return {"from_": connection.from_number}
        raise TwilioConfigurationError(
            f"Twilio connection {connection.name!r} has neither from_number nor messaging_service_sid: "
            "SMS needs one of them"
        )

    def place_call(
        self,
        to: str,
        twiml: str,
        status_callback: str | None = None,
        events: Sequence[str] = DEFAULT_CALL_EVENTS,
    ) -> SendResult:
        """Start an outbound call that plays ``twiml``; progress ``events`` go to ``status_callback``."""
        connection = self.connection
        if not connection.from_number:
            raise TwilioConfigurationError(
                f"Twilio connection {connection.name!r} has no from_number: a call needs a Twilio number "
                "to call from (a Messaging Service only sends messages)"
            )
        options: dict[str, Any] = {"to": self._recipient(to), "from_": connection.from_number, "twiml": twiml}
        if status_callback:
            options |= {
                "status_callback": status_callback,
                "status_callback_event": list(events),  # sent as repeated StatusCallbackEvent
                "status_callback_method": "POST",
            }
        call = self._call(lambda: self._client.calls.create(**options), idempotent=False, action="place a call")
        return SendResult(call.sid, str(call.status))

    def find_sent_message(
        self, to: str, body: str, since: datetime, skip: Callable[[str], bool] | None = None
    ) -> SendResult | None:
        """The newest outbound message to ``to`` with this ``body`` created at or after ``since``.

        For the moment after an ``AmbiguousSendError`` or a crash: found means Twilio has it, do
        not send again. The list is read by ``To`` (and ``From`` for a fixed sender) with no date
        filter: Twilio filters only on the sent date, which a message still ``queued`` or
        ``accepted`` does not have yet. ``skip(sid)`` leaves out messages known to be another's.
        """
        recipient = self._recipient(to)
        start = _whole_seconds_utc(since)
        # A Messaging Service picks the sender later: filter on From only when it is fixed.
        sender = {} if self.connection.messaging_service_sid or not self.connection.from_number \
            else {"from_": self.connection.from_number}

        def lookup() -> SendResult | None:
            records = self._client.messages.stream(to=recipient, page_size=FIND_PAGE_SIZE, limit=FIND_LIMIT, **sender)
            return _newest_match(records, start, lambda message: message.body == body, skip, stop_at_older=True)

        return self._call(lookup, idempotent=True, action="look up sent messages")

    def find_placed_call(
        self, to: str, since: datetime, skip: Callable[[str], bool] | None = None
    ) -> SendResult | None:
        """The newest outbound call from our number to ``to`` created at or after ``since``.

        Listed by ``To`` and ``From`` with no date filter: a queued call has no start time for
        ``StartTime>`` to match. The Calls list's order is not documented, so older calls are
        passed over rather than taken as the end of the list.
        """
        recipient = self._recipient(to)
        start = _whole_seconds_utc(since)
        sender = self.connection.from_number
        if not sender:
            return None  # place_call refuses to call without one: nothing can have been placed

        def lookup() -> SendResult | None:
            records = self._client.calls.stream(to=recipient, from_=sender, page_size=FIND_PAGE_SIZE, limit=FIND_LIMIT)
            return _newest_match(records, start, lambda call: True, skip, stop_at_older=False)

        return self._call(lookup, idempotent=True, action="look up placed calls")

    def fetch_status(self, sid: str, voice: bool = False) -> ProviderStatus:
        """What Twilio says of one message (``SM``/``MM``) or call (``CA``) now: one GET by its SID.
        For when its status callbacks may have been lost."""

        def fetch() -> ProviderStatus:
            found = self._client.calls(sid).fetch() if voice else self._client.messages(sid).fetch()
            error = getattr(found, "error_code", None)
            return ProviderStatus(found.sid, str(found.status), "" if error in (None, "", 0) else str(error))

        return self._call(fetch, idempotent=True, action="read a call's status" if voice else "read a message's status")

    # --- the account's phone numbers -----------------------------------------------------------

    def find_number(self, phone_number: str) -> PhoneNumber | None:
        """The account's number ``phone_number`` (E.164) with its webhooks; None when the account has no such number."""
        def lookup() -> PhoneNumber | None:
            for found in self._client.incoming_phone_numbers.stream(phone_number=phone_number, page_size=20, limit=20):
                if found.phone_number == phone_number:  # Twilio's filter also matches partial numbers
                    return _phone_number(found)
            return None

        return self._call(lookup, idempotent=True, action="look up the phone number")

    def set_number_webhooks(self, sid: str, webhooks: NumberWebhooks) -> PhoneNumber:
        """Point number ``sid``'s incoming SMS and status callbacks at ``webhooks``; the number as Twilio then shows it.

        Setting the same values again changes nothing, so a lost answer is simply retried."""
        def update() -> PhoneNumber:
            return _phone_number(self._client.incoming_phone_numbers(sid).update(
                sms_url=webhooks.sms_url, sms_method=webhooks.sms_method, status_callback=webhooks.status_callback))

        return self._call(update, idempotent=True, action="set the phone number's webhooks")

    # --- Verify ----------------------------------------------------------------------------------

    def start_verification(self, to: str, channel: str = "sms") -> SendResult:
        """Send a Verify code to ``to`` (a phone number, or an address for ``channel="email"``)."""
        recipient = to.strip() if channel == "email" else self._recipient(to)
        service = self._verify_service()
        verification = self._call(
            lambda: service.verifications.create(to=recipient, channel=channel),
            idempotent=False,
            action="start a verification",
        )
        return SendResult(verification.sid, str(verification.status))

    def check_verification(self, to: str, code: str) -> str:
        """Twilio's verdict on ``code``: "approved", "pending" (wrong code), "expired", ...

        Twilio answers 404 once a verification is approved, expired or unknown ("expired"
        here) and 429 code 60202 after too many wrong codes ("max_attempts_reached").
        """
        recipient = self._recipient(to)
        service = self._verify_service()
        try:
            check = self._call(
                lambda: service.verification_checks.create(to=recipient, code=code),
                idempotent=False,
                action="check a verification code",
            )
        except PermanentSendError as error:
            if error.status == 404 or error.code == NOT_FOUND_CODE:
                return "expired"
            if error.code == MAX_CHECK_ATTEMPTS_CODE:
                return "max_attempts_reached"
            raise
        return str(check.status)

    def _verify_service(self) -> Any:
        sid = self.connection.verify_service_sid
        if not sid:
            raise TwilioConfigurationError(
                f"Twilio connection {self.connection.name!r} has no verify_service_sid: Verify needs its service"
            )
        return self._client.verify.v2.services(sid)

    # --- the account's set-up (the connection doctor reads it) --------------------------------------

    def fetch_account(self) -> Any:
        """The connection's account (``GET /2010-04-01/Accounts/{Sid}.json``): proves the credentials."""
        sid = self.connection.account_sid
        return self._call(lambda: self._client.api.v2010.accounts(sid).fetch(), idempotent=True,
                          action="fetch the account")

    def incoming_numbers(self, number: str) -> list[Any]:
        """The account's phone numbers equal to ``number`` (IncomingPhoneNumbers filtered by PhoneNumber)."""
        sid = self.connection.account_sid
        return self._call(
            lambda: self._client.api.v2010.accounts(sid).incoming_phone_numbers.list(phone_number=number, limit=20),
            idempotent=True, action="list the account's numbers")

    def fetch_messaging_service(self) -> Any:
        """The connection's Messaging Service (Messaging v1 ``Services/{Sid}``)."""
        sid = self.connection.messaging_service_sid or ""
        return self._call(lambda: self._client.messaging.v1.services(sid).fetch(), idempotent=True,
                          action="fetch the Messaging Service")

    def fetch_verify_service(self) -> Any:
        """The connection's Verify service (Verify v2 ``Services/{Sid}``)."""
        service = self._verify_service()
        return self._call(service.fetch, idempotent=True, action="fetch the Verify service")

    # --- webhooks --------------------------------------------------------------------------------

    def auth_token(self) -> str:
        """The Auth Token Twilio signs its webhooks with (``shared.channels.twilio.signature``)."""
        return self._secret(self.connection.auth_token)

    # --- plumbing --------------------------------------------------------------------------------

    def _recipient(self, to: str) -> str:
        try:
            return normalize_number(to, self.connection.default_region)
        except InvalidNumber as error:
            raise PermanentSendError(None, str(error), None, invalid_number=True) from None

    def _secret(self, ref: SecretRef) -> str:
        value = self._secrets.get(ref.name).reveal()
        if not value:
            # The SDK would fall back to TWILIO_AUTH_TOKEN from the environment for an empty one.
            raise TwilioConfigurationError(
                f"secret {ref.name!r} of Twilio connection {self.connection.name!r} is empty"
            )
        return value

    def _refresh_credentials(self) -> None:
        # The provider caches secrets for minutes: a rotated API key secret (or Auth Token) takes effect
        # without a rebuild.
        secret = self._secret(basic_credentials(self.connection)[1])
        if secret != self._client.password:
            self._client.password = secret
            self._client.auth = (self._client.username, secret)

    def _call(self, operation: Callable[[], T], *, idempotent: bool, action: str) -> T:
        """Run one SDK call under the retry policy; raise what the delivery stage acts on."""
        from requests import RequestException
        from twilio.base.exceptions import TwilioException

        self._refresh_credentials()
        attempt = 0
        while True:
            attempt += 1
            self._http.forget_last_response()
            try:
                return operation()
            except RequestException as error:
                failure = _Failure(error=error)
            except TwilioException:
                last = self._http.last_response
                if last is None or last.status < 300:
                    raise  # not an HTTP failure (the SDK could not read a good answer)
                failure = _failure_from_answer(last)
            self._after_failure(failure, attempt, idempotent=idempotent, action=action)

    def _after_failure(self, failure: _Failure, attempt: int, *, idempotent: bool, action: str) -> None:
        """Return after sleeping when another inline attempt is due; otherwise raise."""
        if failure.code in VERIFY_LIMIT_CODES:
            raise failure.rejection()
        decision = decide(
            self._policy,
            attempt,
            status=failure.status,
            headers=failure.headers,
            error=failure.error,
            idempotent=idempotent,
            rng=self._rng,
        )
        if decision.action == "retry":
            log.warning(
                "Twilio: %s failed (%s); attempt %d, retrying in %.2fs",
                action,
                failure.describe(),
                attempt,
                decision.delay,
            )
            self._sleep(decision.delay)
            return
        if decision.action == "requeue":
            raise RetryLater(decision.delay, f"Twilio: {action}: {failure.describe()}", failure.status)
        raise self._final_error(failure, attempt, idempotent=idempotent, action=action)

    def _final_error(self, failure: _Failure, attempt: int, *, idempotent: bool, action: str) -> Exception:
        if failure.is_rejection:
            return failure.rejection()
        if not idempotent and failure.may_have_been_processed:
            return AmbiguousSendError(f"{action}: {failure.describe()}", failure.status)
        if failure.error is not None and not is_transient_error(failure.error):
            return PermanentSendError(None, f"cannot reach Twilio to {action}: {failure.describe()}", None)
        # Out of inline attempts on something that heals with time: the queue tries later,
        # after the wait decide() would have chosen for one more attempt.
        later = decide(
            replace(self._policy, max_attempts=attempt + 1),
            attempt,
            status=failure.status,
            headers=failure.headers,
            error=failure.error,
            idempotent=idempotent,
            rng=self._rng,
        )
        reason = f"Twilio: {action}: {failure.describe()} after {attempt} attempts"
        return RetryLater(later.delay, reason, failure.status)


def _phone_number(found: Any) -> PhoneNumber:
    webhooks = NumberWebhooks(found.sms_url or "", (found.sms_method or "").upper(), found.status_callback or "")
    return PhoneNumber(found.sid, found.phone_number, webhooks)


def validity_period(valid_until: datetime, now: datetime | None = None) -> int:
    """Twilio's ValidityPeriod for a message that must not go out after ``valid_until``: the whole
    seconds left (never more), at least 1 (Twilio's minimum) and at most 36,000 (its maximum, and
    its default: a longer deadline needs no limit of Twilio's)."""
    left = (valid_until - (now or datetime.now(UTC))).total_seconds()
    return max(MIN_VALIDITY_PERIOD, min(MAX_VALIDITY_PERIOD, math.floor(left)))


def _whole_seconds_utc(moment: datetime) -> datetime:
    # Twilio's timestamps have whole seconds; a naive moment is taken as UTC.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0)


def _newest_match(
    records: Iterator[Any], start: datetime, matches: Callable[[Any], bool], skip: Callable[[str], bool] | None,
    *, stop_at_older: bool
) -> SendResult | None:
    """The first outbound record created at or after ``start`` that ``matches`` and is not skipped."""
    for record in records:
        created = record.date_created
        if created is not None and created < start:
            if stop_at_older:
                return None  # the list runs newest first: the rest is older still
            continue
        if not str(record.direction or "").startswith("outbound") or not matches(record):
            continue
        if skip is None or not skip(record.sid):
            return SendResult(record.sid, str(record.status))
    return None


# --- process-wide channels ------------------------------------------------------------------------

def _new_twilio_channel(connection: TwilioConnection) -> TwilioChannel:
    from shared.storage.secrets import get_secret_provider

    return TwilioChannel(connection, get_secret_provider())


def _new_interactive_channel(connection: TwilioConnection) -> TwilioChannel:
    from shared.storage.secrets import get_secret_provider

    return TwilioChannel(connection, get_secret_provider(), timeout=INTERACTIVE_TIMEOUT, policy=INTERACTIVE_POLICY)


_channels: PerConnection[TwilioChannel] = PerConnection(_new_twilio_channel)
_interactive: PerConnection[TwilioChannel] = PerConnection(_new_interactive_channel)


def twilio_channel(connection: TwilioConnection) -> TwilioChannel:
    """The process's channel for this connection name, rebuilt when its configuration changed."""
    return _channels.get(connection)


def interactive_twilio_channel(connection: TwilioConnection) -> TwilioChannel:
    """A channel for calls made while someone waits for the answer: short timeouts, one attempt."""
    return _interactive.get(connection)


def reset_twilio_channels() -> None:
    _channels.reset()
    _interactive.reset()
