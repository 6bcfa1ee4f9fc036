"""One HTTP session policy for every outbound call (Dynamics OData, Twilio, Slack, ERPs).

- Timeouts on every request (connect, read); no call waits forever.
- Retries: transient network errors and 408/5xx back off exponentially with full jitter;
  429/503 wait exactly what ``Retry-After`` says, never less.
- Back-pressure: a wait up to ``inline_wait_limit`` is slept inside the call; a longer one
  raises ``RetryLater`` so the queue consumer schedules the message for later instead of
  holding a function instance asleep.
- Permanent errors (most 4xx) and exhausted attempts raise ``HttpFailure`` at once.

``decide`` holds the whole retry decision as a pure function; ``HttpClient`` only sends,
asks ``decide`` and acts on the answer.

requests and urllib3 are imported lazily: ``import shared.http`` stays cheap on cold start.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from shared.network import ProxiesByOrigin, environment_ca_bundle
from shared.outcomes import RetryLater

if TYPE_CHECKING:
    import requests

__all__ = ["HttpClient", "HttpFailure", "RetryLater", "RetryPolicy", "decide"]

log = logging.getLogger(__name__)

# Inside quiet_network_failures(), a peer that cannot be reached is logged at DEBUG: the caller says it once.
_quiet_network = ContextVar("quiet_network", default=False)


@contextmanager
def quiet_network_failures() -> Iterator[None]:
    """Tries and failures of requests that got no answer are logged at DEBUG inside the block, for a caller
    that logs one line of its own per failed run (a poll of an ERP that is down)."""
    token = _quiet_network.set(True)
    try:
        yield
    finally:
        _quiet_network.reset(token)


def _level(level: int, response: object) -> int:
    return logging.DEBUG if response is None and _quiet_network.get() else level

DEFAULT_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that say the server did not act on the request, so even a POST may be resent.
NOT_PROCESSED_STATUSES = frozenset({408, 429, 503})
# Statuses whose missing Retry-After falls back to RetryPolicy.default_retry_after.
THROTTLE_STATUSES = frozenset({429, 503})
REQUEST_TIMEOUT_STATUS = 408
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Far below Dynamics' 52 concurrent requests per user, and enough for a function's threads.
DEFAULT_POOL_MAXSIZE = 16

# Exception class names (matched over the MRO, so requests need not be imported here).
_TRANSIENT_ERROR_NAMES = frozenset({"ConnectionError", "Timeout", "TimeoutError", "ChunkedEncodingError"})
# A bad certificate does not heal by retrying.
_PERMANENT_ERROR_NAMES = frozenset({"SSLError"})
_NOT_SENT_ERROR_NAMES = frozenset({"ConnectTimeout", "ConnectionRefusedError"})
# urllib3 reasons inside requests' ConnectionError that mean no connection was made.
_NOT_CONNECTED_REASON_NAMES = frozenset({"ConnectTimeoutError", "NewConnectionError"})

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_PHONE_LIKE_SEGMENT = re.compile(r"(?:\+|%2B)?\d{7,}", re.IGNORECASE)

Action = Literal["done", "retry", "requeue", "fail"]


# --- Retry-After and backoff -------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    return _seconds_until_http_date(text, now)


def _seconds_until_http_date(text: str, now: datetime | None) -> float | None:
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    reference = _as_utc(now or datetime.now(UTC))
    # A date already past means "retry now", not "never".
    return max(0.0, (_as_utc(moment) - reference).total_seconds())


def _as_utc(moment: datetime) -> datetime:
    # HTTP-dates are GMT; a naive datetime ("-0000" zone, or a naive `now`) is read as UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt)), attempt from 0."""
    ceiling = _backoff_ceiling(max(0, attempt), base, cap)
    return (rng or random).uniform(0.0, ceiling)


def _backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    try:
        grown = math.ldexp(base, attempt)  # base * 2**attempt without building a huge int
    except OverflowError:
        return max(0.0, cap)
    return max(0.0, min(cap, grown))


# --- Policy and decision -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 60.0
    # Waits up to this are slept inside the call; longer ones go back to the queue.
    inline_wait_limit: float = 5.0
    connect_timeout: float = 3.05
    read_timeout: float = 15.0
    retry_statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)
    # 429/503 without Retry-After: Microsoft's Dynamics sample waits 30 s; Twilio/Slack use ~1 s.
    default_retry_after: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.inline_wait_limit, self.default_retry_after) < 0:
            raise ValueError("delays must not be negative")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def timeout(self) -> tuple[float, float]:
        """The (connect, read) pair requests takes as ``timeout=``."""
        return (self.connect_timeout, self.read_timeout)


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str = ""


def decide(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None,
    headers: Mapping[str, str] | None,
    error: BaseException | None = None,
    idempotent: bool = True,
    rng: random.Random | None = None,
    now: datetime | None = None,
) -> Decision:
    """What to do after ``attempt`` tries (1 after the first) ended in ``status`` or ``error``.

    ``idempotent=False`` (e.g. a POST that sends an SMS) retries only outcomes where the
    server surely did not act: 408/429/503 and connection failures before anything was sent.
    """
    if status is None:
        if error is None:
            raise ValueError("decide() needs a status or an error")
        return _decide_after_error(policy, attempt, error, idempotent, rng)
    return _decide_after_status(policy, attempt, status, headers, idempotent, rng, now)


def _decide_after_status(
    policy: RetryPolicy,
    attempt: int,
    status: int,
    headers: Mapping[str, str] | None,
    idempotent: bool,
    rng: random.Random | None,
    now: datetime | None,
) -> Decision:
    reason = f"HTTP {status}"
    if status < 400:
        return Decision("done", 0.0, reason)
    if status not in policy.retry_statuses and status != REQUEST_TIMEOUT_STATUS:
        return Decision("fail", 0.0, reason)
    if not idempotent and status not in NOT_PROCESSED_STATUSES:
        return Decision("fail", 0.0, f"{reason} (not retried: the request may have been processed)")
    if attempt >= policy.max_attempts:
        return _give_up(attempt, reason)
    return _wait(policy, _delay_for_status(policy, attempt, status, headers, rng, now), reason)


def _delay_for_status(
    policy: RetryPolicy,
    attempt: int,
    status: int,
    headers: Mapping[str, str] | None,
    rng: random.Random | None,
    now: datetime | None,
) -> float:
    # The server's own Retry-After wins, exactly: retrying sooner only lengthens throttling.
    retry_after = parse_retry_after(header_value(headers, "Retry-After"), now)
    if retry_after is not None:
        return retry_after
    if status in THROTTLE_STATUSES:
        return policy.default_retry_after
    return _backoff_for(policy, attempt, rng)


def _decide_after_error(
    policy: RetryPolicy,
    attempt: int,
    error: BaseException,
    idempotent: bool,
    rng: random.Random | None,
) -> Decision:
    # Only the class name: messages can repeat the URL with its query string.
    reason = type(error).__name__
    if not is_transient_error(error):
        return Decision("fail", 0.0, reason)
    if not idempotent and not failed_before_sending(error):
        return Decision("fail", 0.0, f"{reason} (not retried: the request may have been processed)")
    if attempt >= policy.max_attempts:
        return _give_up(attempt, reason)
    return _wait(policy, _backoff_for(policy, attempt, rng), reason)


def _backoff_for(policy: RetryPolicy, attempt: int, rng: random.Random | None) -> float:
    # After the first try (attempt 1) the backoff exponent is 0: the first wait is up to base_delay.
    return backoff_delay(attempt - 1, base=policy.base_delay, cap=policy.max_delay, rng=rng)


def _give_up(attempt: int, reason: str) -> Decision:
    return Decision("fail", 0.0, f"gave up after {attempt} attempts: {reason}")


def _wait(policy: RetryPolicy, delay: float, reason: str) -> Decision:
    action: Action = "retry" if delay <= policy.inline_wait_limit else "requeue"
    return Decision(action, delay, reason)


def _class_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def is_transient_error(error: BaseException) -> bool:
    """A network failure worth another try (connection refused/reset, timeouts, cut-off body)."""
    names = _class_names(error)
    return bool(names & _TRANSIENT_ERROR_NAMES) and not names & _PERMANENT_ERROR_NAMES


def failed_before_sending(error: BaseException) -> bool:
    """True when no connection was made, so the server cannot have seen the request."""
    if _class_names(error) & _NOT_SENT_ERROR_NAMES:
        return True
    # requests wraps "connection refused" / DNS failures as ConnectionError(MaxRetryError(reason)).
    wrapped = error.args[0] if error.args else None
    reason = getattr(wrapped, "reason", None)
    return isinstance(reason, BaseException) and bool(_class_names(reason) & _NOT_CONNECTED_REASON_NAMES)


def header_value(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts as well as requests' headers."""
    if not headers:
        return None
    direct = headers.get(name)
    if direct is not None:
        return direct
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


# --- Exceptions --------------------------------------------------------------------------


class HttpFailure(Exception):
    """The call failed for good (permanent status, unsafe to repeat, or out of attempts)."""

    # Set by a caller that re-raises it without its cause (the cause's text holds a URL with secrets):
    # whether the cause heals with time, and why the peer could not be reached ("connection refused").
    transient: bool = False
    network: str | None = None

    def __init__(self, status: int | None, reason: str, response: requests.Response | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.response = response


# --- Logging -----------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL as logs may show it: no credentials, query or fragment; phone-like path parts masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = "/".join(_mask_phone_like(segment) for segment in parts.path.split("/"))
    return f"{parts.scheme}://{host}{path}"


def _mask_phone_like(segment: str) -> str:
    # E.164 numbers appear in some paths (Twilio Lookup); logs show phone numbers masked.
    return _PHONE_LIKE_SEGMENT.sub(lambda match: "***" + match.group(0)[-2:], segment)


# --- Client ------------------------------------------------------------------------------


class HttpClient:
    """A pooled requests.Session that applies RetryPolicy to every call.

    Idempotency: a request that may have reached the server is repeated only when repeating
    it is harmless. GET/HEAD/OPTIONS/PUT/DELETE are; POST/PATCH are not unless the caller says
    ``idempotent=True`` for that request (or the client was built with
    ``retry_non_idempotent=True``). A Twilio Messages POST that hit a read timeout or a 500
    may already have sent the SMS, so it fails instead of sending twice. 408/429/503 and
    connection failures before sending are retried for every method: the server did not act.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        verify: bool | str | os.PathLike[str] = True,
        retry_non_idempotent: bool = False,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.verify: bool | str = os.fspath(verify) if isinstance(verify, os.PathLike) else verify
        if self.verify is True:  # as requests would, per call, from REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE
            self.verify = environment_ca_bundle() or True
        self.retry_non_idempotent = retry_non_idempotent
        self._sleep = sleep
        self._rng = rng
        self.session = _build_session(self.verify, pool_maxsize)
        self._proxies = ProxiesByOrigin()  # HTTP(S)_PROXY and NO_PROXY per host, read the first time only

    def request(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> requests.Response:
        """Send with retries; returns a 2xx/3xx response, else raises RetryLater or HttpFailure.

        ``kwargs`` go to ``requests.Session.request``; ``timeout`` and ``verify`` default
        to the policy's and the client's.
        """
        method = method.upper()
        repeatable = self._is_repeatable(method, idempotent)
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("timeout", self.policy.timeout)
        kwargs.setdefault("proxies", self._proxies.for_url(url))
        attempt = 0
        while True:
            response, error = self._send_once(method, url, kwargs)
            attempt += 1
            decision = decide(
                self.policy,
                attempt,
                status=response.status_code if response is not None else None,
                headers=response.headers if response is not None else None,
                error=error,
                idempotent=repeatable,
                rng=self._rng,
            )
            if decision.action == "done" and response is not None:
                return response
            self._act_on(decision, method, url, attempt, response, error)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _is_repeatable(self, method: str, idempotent: bool | None) -> bool:
        if idempotent is not None:
            return idempotent
        return method in IDEMPOTENT_METHODS or self.retry_non_idempotent

    def _send_once(
        self, method: str, url: str, kwargs: dict[str, Any]
    ) -> tuple[requests.Response | None, BaseException | None]:
        import requests

        try:
            return self.session.request(method, url, **kwargs), None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
            return None, error

    def _act_on(
        self,
        decision: Decision,
        method: str,
        url: str,
        attempt: int,
        response: requests.Response | None,
        error: BaseException | None,
    ) -> None:
        status = response.status_code if response is not None else None
        if decision.action == "fail":
            # A 4xx is often an answer the caller expects (404: no such record; 401: renew the token).
            level = logging.INFO if status is not None and 400 <= status < 500 else logging.WARNING
            log.log(_level(level, response), "HTTP %s %s failed: %s", method, redact_url(url), decision.reason)
            raise HttpFailure(status, decision.reason, response) from error
        if response is not None:
            response.close()  # hand the connection back to the pool before waiting
        if decision.action == "requeue":
            log.warning(
                "HTTP %s %s: %s, attempt %d; retry in %.1fs from the queue",
                method, redact_url(url), decision.reason, attempt, decision.delay,
            )
            raise RetryLater(decision.delay, decision.reason, status) from error
        log.log(
            _level(logging.INFO, response),
            "HTTP %s %s: %s, attempt %d; retrying in %.2fs",
            method, redact_url(url), decision.reason, attempt, decision.delay,
        )
        self._sleep(decision.delay)


def _build_session(verify: bool | str, pool_maxsize: int) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Not the environment on every call (proxies, CA bundle, .netrc: a scan of every variable each
    # time); HttpClient reads it once and passes proxies and verify with each request.
    session.trust_env = False
    session.verify = verify
    # No urllib3-level retries: HttpClient.request owns every retry and its timing.
    adapter = HTTPAdapter(pool_connections=10, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
