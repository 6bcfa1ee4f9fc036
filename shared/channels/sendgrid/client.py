"""SendGrid channel: one email per job through the v3 Mail Send API (Event Webhook signatures: signature.py).

The delivery stage sees outcomes, not HTTP:

- ``MailResult`` when SendGrid answered ``202 Accepted``; its ``X-Message-Id`` is the
  provider id (each event's ``sg_message_id`` starts with it);
- ``MailRejected`` when trying again cannot help: a 4xx other than 408/429 (bad request,
  bad or unauthorised key, unverified sender, payload too large) or an unusable address;
- ``RetryLater`` (from ``shared.http``) when SendGrid asked us to slow down for longer than
  is worth sleeping through, or the short inline retries ran out on something that heals;
- ``MailOutcomeUnknown`` when the request may have reached SendGrid but no answer came back
  (read timeout, dropped connection, 500/502/504). SendGrid has no lookup by our id, so
  the caller must not simply send again.

The job id travels in ``custom_args`` (``CUSTOM_ARG``): SendGrid copies custom args onto
every event it posts, so events find their job even when the answer to the send was lost.

Retries follow ``shared.http`` (``decide``): a POST that may have been processed is never
repeated. SendGrid's 429 says when its rate-limit window resets (``X-RateLimit-Reset``,
epoch seconds) rather than how long to wait; a missing ``Retry-After`` is derived from it.
requests is imported on first use, for the Functions host's cold start.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.clients import PerConnection
from shared.http import (
    NOT_PROCESSED_STATUSES,
    HttpClient,
    HttpFailure,
    RetryLater,
    RetryPolicy,
    failed_before_sending,
    header_value,
    is_transient_error,
    parse_retry_after,
)

if TYPE_CHECKING:
    import requests

    from shared.channels.sendgrid.connection import SendGridConnection
    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

MAIL_SEND_PATH = "/v3/mail/send"
SCOPES_PATH = "/v3/scopes"
VERIFIED_SENDERS_PATH = "/v3/verified_senders"
CUSTOM_ARG = "mlc_job_id"  # our custom arg; events carry it as a top-level field
# SendGrid's mail send limits reset within seconds: wait 1 s without a hint, sleep up to 2 s inline.
SENDGRID_RETRY_POLICY = RetryPolicy(default_retry_after=1.0, inline_wait_limit=2.0, max_attempts=4)
# The floor of a wait derived from X-RateLimit-Reset: a reset already past by our clock is skew.
MIN_RESET_WAIT = 1.0


class InvalidAddress(ValueError):
    """Text that cannot be used as an email address."""


@dataclass(frozen=True)
class MailResult:
    message_id: str  # X-Message-Id; "" in the unlikely case SendGrid left it out
    status: str = "accepted"


class MailRejected(Exception):
    """SendGrid refused the mail (or it cannot be made); retrying the same request cannot help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(f"SendGrid (HTTP {status}): {message}" if status else message)
        self.status = status
        self.message = message


class MailOutcomeUnknown(Exception):
    """The request may have been carried out; SendGrid offers no way to ask which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"SendGrid may have accepted the mail, the outcome is unknown: {reason}")
        self.reason = reason


# --- addresses and keys ------------------------------------------------------------------------


def normalize_email(raw: str) -> str:
    """One plain address, trimmed; a ``Name <address>`` form gives its address."""
    from shared.channels.sendgrid.connection import EMAIL_ADDRESS

    text = (raw or "").strip()
    if text.endswith(">") and "<" in text:
        text = text[text.rindex("<") + 1 : -1].strip()
    if not EMAIL_ADDRESS.fullmatch(text):
        raise InvalidAddress(f"{raw!r} is not a valid email address")
    return text


def message_id_of(sg_message_id: str) -> str:
    """The X-Message-Id inside an event's ``sg_message_id`` (``<X-Message-Id>.<filter and queue ids>``)."""
    return sg_message_id.split(".", 1)[0]


# --- the channel -----------------------------------------------------------------------------------


def _reset_as_retry_after(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """A 429 without Retry-After gets one from X-RateLimit-Reset, so the one retry policy honours it."""
    if response.status_code == 429 and header_value(response.headers, "Retry-After") is None:
        reset = header_value(response.headers, "X-RateLimit-Reset")
        if reset is not None and reset.strip().isdigit():
            wait = max(int(reset) - time.time(), MIN_RESET_WAIT)
            response.headers["Retry-After"] = str(math.ceil(wait))
    return response


def _error_message(response: requests.Response | None) -> str:
    """SendGrid's ``errors[].message`` (with its ``field``), joined; the status line when there are none."""
    if response is None:
        return ""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    if not isinstance(errors, list) or not errors:
        return response.reason or f"HTTP {response.status_code}"
    parts = []
    for error in errors:
        if isinstance(error, dict):
            field = error.get("field")
            message = str(error.get("message") or "").strip()
            parts.append(f"{field}: {message}" if field not in (None, "", "null") else message)
    return "; ".join(part for part in parts if part) or f"HTTP {response.status_code}"


class SendGridChannel:
    """Mail Send for one SendGrid connection; safe to share between threads."""

    def __init__(
        self,
        connection: SendGridConnection,
        secrets: SecretProvider,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.connection = connection
        self._secrets = secrets
        self._policy = policy or SENDGRID_RETRY_POLICY
        self._http = HttpClient(self._policy, verify=connection.ca_bundle or True, sleep=sleep, rng=rng)
        self._http.session.hooks["response"].append(_reset_as_retry_after)

    def close(self) -> None:
        self._http.close()

    def send_mail(self, to: str, subject: str, text: str, job_id: str) -> MailResult:
        """Send one plain-text mail to ``to``, carrying ``job_id`` in its custom args."""
        body = self.mail_body(normalize_or_reject(to), subject, text, job_id)
        headers = {"Authorization": f"Bearer {self._api_key()}", "Content-Type": "application/json"}
        url = self.connection.api_base_url.rstrip("/") + MAIL_SEND_PATH
        try:
            response = self._http.post(url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                       idempotent=False, allow_redirects=False)
        except HttpFailure as failure:
            raise self._classify(failure) from None
        if response.status_code != 202:
            # Another 2xx/3xx is not SendGrid's answer to a mail send: a proxy or a wrong base URL.
            raise MailRejected(f"unexpected answer to a mail send: HTTP {response.status_code}",
                               response.status_code)
        return MailResult(response.headers.get("X-Message-Id", ""))

    def scopes(self) -> list[str]:
        """The API key's permissions (``GET /v3/scopes``); HttpFailure when SendGrid refuses the key."""
        body = self._read(SCOPES_PATH)
        return [str(scope) for scope in body.get("scopes") or []]

    def verified_senders(self) -> list[dict[str, Any]]:
        """The account's Single Sender identities (``GET /v3/verified_senders``): ``from_email``, ``verified``."""
        body = self._read(VERIFIED_SENDERS_PATH)
        return [sender for sender in body.get("results") or [] if isinstance(sender, dict)]

    def _read(self, path: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key()}", "Accept": "application/json"}
        response = self._http.get(self.connection.api_base_url.rstrip("/") + path, headers=headers,
                                  allow_redirects=False)
        body = response.json()
        return body if isinstance(body, dict) else {}

    def mail_body(self, to: str, subject: str, text: str, job_id: str) -> dict[str, Any]:
        sender: dict[str, str] = {"email": self.connection.from_email}
        if self.connection.from_name:
            sender["name"] = self.connection.from_name
        return {
            "personalizations": [{"to": [{"email": to}], "custom_args": {CUSTOM_ARG: job_id}}],
            "from": sender,
            "subject": subject,
            "content": [{"type": "text/plain", "value": text}],
        }

    def _classify(self, failure: HttpFailure) -> Exception:
        status, cause = failure.status, failure.__cause__
        if status is not None and status < 500 and status not in NOT_PROCESSED_STATUSES:
            return MailRejected(_error_message(failure.response), status)
        if status in NOT_PROCESSED_STATUSES:
            # Out of inline attempts on a throttle or a pause: the queue tries later, no sooner
            # than SendGrid asked.
            headers = failure.response.headers if failure.response is not None else None
            delay = parse_retry_after(header_value(headers, "Retry-After")) or self._policy.default_retry_after
            return RetryLater(delay, f"SendGrid: mail send: {failure.reason}", status)
        if status is not None:
            return MailOutcomeUnknown(f"HTTP {status}")
        if cause is not None and is_transient_error(cause) and failed_before_sending(cause):
            return RetryLater(self._policy.default_retry_after, f"SendGrid: mail send: {failure.reason}")
        if cause is not None and is_transient_error(cause):
            return MailOutcomeUnknown(type(cause).__name__)
        return MailRejected(f"cannot reach SendGrid: {failure.reason}")

    def _api_key(self) -> str:
        """Read on every send (the provider caches it for minutes): a rotated key takes effect unrebuilt.
        Nothing has been sent yet, so each failure here maps to an outcome the caller knows."""
        from shared.storage.secrets import SecretNotFoundError

        name = self.connection.api_key.name
        try:
            value = self._secrets.get(name).reveal()
        except SecretNotFoundError as exc:
            raise MailRejected(f"SendGrid connection {self.connection.name!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Key Vault out of reach: nothing sent, try later
            raise RetryLater(5.0, f"cannot read secret {name!r}: {type(exc).__name__}") from None
        if not value:
            raise MailRejected(f"secret {name!r} of SendGrid connection {self.connection.name!r} is empty")
        return value


def normalize_or_reject(to: str) -> str:
    try:
        return normalize_email(to)
    except InvalidAddress as exc:
        raise MailRejected(str(exc)) from None


# --- process-wide channels ---------------------------------------------------------------------------


def _new_sendgrid_channel(connection: SendGridConnection) -> SendGridChannel:
    from shared.storage.secrets import get_secret_provider

    return SendGridChannel(connection, get_secret_provider())


_channels: PerConnection[SendGridChannel] = PerConnection(_new_sendgrid_channel)


def sendgrid_channel(connection: SendGridConnection) -> SendGridChannel:
    """The process's channel for this connection name, rebuilt when its configuration changed."""
    return _channels.get(connection)


def reset_sendgrid_channels() -> None:
    _channels.reset()
