"""The connection doctor: real round trips to each configured system, a pass or a failure per check.

Each kind has a ``doctor`` module in its own folder (``shared/erp/<kind>/doctor.py``,
``shared/channels/<kind>/doctor.py``, named in ``shared.kinds`` as ``doctor=``) with
``checks(connection, context) -> list[Check]``, built with the kit here; ``keyvault`` checks the
secrets the whole configuration names. ``shared.doctor.run`` runs them, connections in
parallel, and shapes the answer ``GET /api/ops/doctor`` and ``python -m shared.cli doctor`` give.

A failed check says what was seen and the fix to try. No detail holds a secret's value or a
full phone number: texts from providers pass ``shared.logs.scrub`` first.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.logs import scrub

if TYPE_CHECKING:
    from shared.config.model import AppConfig
    from shared.http import HttpClient, RetryPolicy
    from shared.storage.secrets import SecretProvider

# Each call of a check: connect and read timeouts, one attempt (a doctor reports, it does not insist).
CONNECT_SECONDS = 2.0
READ_SECONDS = 3.0
# What a probe of an unanswering host may take before it is called unreachable.
PROBE_SECONDS = 1.5
_DETAIL_LIMIT = 300
MISSING_SECRET_FIX = "add the secret where the secrets entry of this report says, then run the doctor again"


@dataclass(frozen=True)
class Check:
    """One check's outcome: what it is, whether it passed, what was seen, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> Check:
    return Check(name, True, shown(detail))


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, shown(detail), fix)


def shown(text: str) -> str:
    """A provider's text as a detail may hold it: secrets and phone numbers masked, one line, bounded."""
    one_line = " ".join(str(text).split())
    return scrub(one_line)[:_DETAIL_LIMIT]


@dataclass(frozen=True)
class Context:
    """What every check runs with: the configuration, the secret store, and the app's settings."""

    config: AppConfig
    secrets: SecretProvider
    env: dict[str, str] = field(default_factory=dict)

    def policy(self) -> RetryPolicy:
        from shared.http import RetryPolicy

        return RetryPolicy(max_attempts=1, inline_wait_limit=0.0, connect_timeout=CONNECT_SECONDS,
                           read_timeout=READ_SECONDS, default_retry_after=1.0)

    def http(self, ca_bundle: str | None = None) -> HttpClient:
        """A client of its own for one connection's checks (closed by the caller)."""
        from shared.http import HttpClient

        return HttpClient(self.policy(), verify=ca_bundle or True)


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or url


def reachable(url: str) -> str | None:
    """None when a TCP connection to the URL's host opens; else why not (refused, no such host, timed out)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_SECONDS):
            return None
    except socket.gaierror:
        return "no such host"
    except TimeoutError:
        return f"no answer within {PROBE_SECONDS:g} s"
    except OSError as error:
        return error.strerror or type(error).__name__


def attempt(name: str, url: str, check: Callable[[], Check], fix: str) -> Check:
    """``check()``, or what went wrong: "unreachable" with the host when the host does not answer,
    else the error's own words with ``fix``. Never a traceback."""
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - a doctor reports every failure as a check, whatever its kind
        return unanswered(name, url, error, fix)


def unanswered(name: str, url: str, error: BaseException, fix: str) -> Check:
    from shared.storage.secrets import SecretNotFoundError

    if isinstance(error, SecretNotFoundError):
        return failed(name, str(error), MISSING_SECRET_FIX)
    why = reachable(url)
    if why is not None:
        return failed(name, f"unreachable: {host_of(url)} ({why})",
                      f"check the URL {host_of(url)} in the configuration, DNS, the firewall and any proxy "
                      "between the app and the service")
    return failed(name, f"{type(error).__name__}: {error}", fix)
