"""Running the doctor: every connection's checks at once (threads), the secrets, one answer.

The answer (``GET /api/ops/doctor``, ``python -m shared.cli doctor --json``)::

    {"ok": bool, "checked_at": "<ISO Z>", "connections": [
        {"connection": "contoso-fo", "kind": "dynamics", "ok": bool,
         "checks": [{"name": "Entra token", "ok": true, "detail": "...", "fix": null}]}]}

The secrets come first as ``{"connection": "secrets", "kind": "keyvault", ...}``. A
connection whose checks have not finished by the deadline reports that instead of holding
the answer back (the HTTP route has 4.5 s in all).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared import kinds
from shared.config.model import AppConfig, Connection
from shared.doctor import MISSING_SECRET_FIX, Check, Context, failed

SECRETS_ENTRY = "secrets"
KEYVAULT_KIND = "keyvault"
KEYVAULT_MODULE = "shared.doctor.keyvault"


class UnknownConnection(KeyError):
    """The doctor was asked about a connection the configuration does not have."""


def doctor_module(kind: str) -> str | None:
    """The doctor module of a kind: as ``shared.kinds`` lists it, or the secrets' own."""
    if kind == KEYVAULT_KIND:
        return KEYVAULT_MODULE
    found = kinds.ERPS.get(kind) or kinds.CHANNELS.get(kind)
    return found.doctor if found is not None and found.doctor else None


def connection_checks(connection: Connection, context: Context) -> list[Check]:
    module = doctor_module(connection.kind)
    if module is None:
        return [failed("Checks", f"no checks are written for {connection.kind} connections",
                       "check this connection by hand, or add shared/doctor/<kind>.py and name it in shared.kinds")]
    from shared.storage.secrets import SecretNotFoundError

    try:
        return list(kinds.load(module).checks(connection, context))
    except SecretNotFoundError as missing:
        # Its client cannot even be built: the secrets entry says which secret, and where to put it.
        return [failed("Secrets", str(missing), MISSING_SECRET_FIX)]


def secret_checks(connection: Connection | None, context: Context) -> list[Check]:
    return list(kinds.load(KEYVAULT_MODULE).checks(connection, context))


def examine(config: AppConfig, *, connection: str | None = None, context: Context | None = None,
            deadline_seconds: float = 60.0) -> dict[str, Any]:
    """The doctor's answer for the whole configuration, or for one connection (UnknownConnection if none)."""
    if connection is not None and connection not in config.connections:
        raise UnknownConnection(connection)
    context = context or default_context(config)
    chosen = [config.connections[connection]] if connection else list(config.connections.values())
    jobs: list[tuple[str, str, Callable[[], list[Check]]]] = [
        (SECRETS_ENTRY, KEYVAULT_KIND,
         lambda: secret_checks(config.connections[connection] if connection else None, context)),
        *((found.name, found.kind, _bound(connection_checks, found, context)) for found in chosen),
    ]
    entries = _run_all(jobs, deadline_seconds)
    return {"ok": all(entry["ok"] for entry in entries),
            "checked_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "connections": entries}


def default_context(config: AppConfig) -> Context:
    """The app's own secret store, read afresh (not the cache), and its settings."""
    from shared.storage.secrets import get_secret_provider

    return Context(config, get_secret_provider().inner, dict(os.environ))


def _bound(run: Callable[[Connection, Context], list[Check]], connection: Connection,
           context: Context) -> Callable[[], list[Check]]:
    return lambda: run(connection, context)


class _Job(threading.Thread):
    def __init__(self, run: Callable[[], list[Check]]) -> None:
        super().__init__(daemon=True)  # one that outlives the deadline must not hold the process
        self._run = run
        self.checks: list[Check] | None = None

    def run(self) -> None:
        try:
            self.checks = self._run()
        except Exception as error:  # noqa: BLE001 - a check module's own bug still becomes a line of the report
            self.checks = [failed("Checks", f"the checks stopped: {type(error).__name__}: {error}",
                                  "report this; the other connections' checks are unaffected")]


def _run_all(jobs: list[tuple[str, str, Callable[[], list[Check]]]], deadline_seconds: float) -> list[dict[str, Any]]:
    import time

    threads = [_Job(run) for _, _, run in jobs]
    for thread in threads:
        thread.start()
    ends_at = time.monotonic() + deadline_seconds
    for thread in threads:
        thread.join(max(0.0, ends_at - time.monotonic()))
    return [_entry(name, kind, thread.checks, deadline_seconds)
            for (name, kind, _), thread in zip(jobs, threads, strict=True)]


def _entry(name: str, kind: str, checks: list[Check] | None, deadline_seconds: float) -> dict[str, Any]:
    if checks is None:
        checks = [failed("Checks", f"no answer within {deadline_seconds:g} s",
                         "run python -m shared.cli doctor --connection " + name + " for the checks without a "
                         "time limit; a service that answers this slowly is worth looking at")]
    return {"connection": name, "kind": kind, "ok": all(check.ok for check in checks),
            "checks": [check.as_json() for check in checks]}
