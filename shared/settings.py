"""Process settings: app settings in Azure, local.settings.json Values locally.

Read from the environment on demand, never at import: the Functions host imports
``function_app`` before it has applied every setting, and an import must not fail
for want of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

QueueBackend = Literal["servicebus", "storage"]
N = TypeVar("N", int, float)
QUEUE_BACKENDS: tuple[str, ...] = ("servicebus", "storage")

STORAGE_SETTING = "AzureWebJobsStorage"
SERVICEBUS_SETTING = "ServiceBusConnection"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


def queue_backend(env: Mapping[str, str] | None = None) -> QueueBackend:
    """Which queue backend the queue triggers are registered for.

    Service Bus in Azure (the default); Azure Storage queues for local runs on Azurite.
    """
    env = os.environ if env is None else env
    value = (env.get("QUEUE_BACKEND") or "servicebus").strip().lower()
    if value not in QUEUE_BACKENDS:
        raise SettingsError(f"QUEUE_BACKEND: must be one of {', '.join(QUEUE_BACKENDS)}, not {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class StorageSettings:
    """How to reach the storage account behind ``AzureWebJobsStorage``.

    Either a connection string (Azurite, local runs) or identity-based settings
    (``__accountName`` or explicit ``__tableServiceUri`` / ``__queueServiceUri``),
    authenticated with the managed identity (``__clientId`` picks a user-assigned one).
    """

    connection_string: str | None
    table_service_uri: str | None
    queue_service_uri: str | None
    client_id: str | None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, name: str = STORAGE_SETTING) -> StorageSettings:
        env = os.environ if env is None else env
        conn = (env.get(name) or "").strip()
        if conn:
            return cls(conn, None, None, None)
        account = (env.get(f"{name}__accountName") or "").strip()
        table_uri = (env.get(f"{name}__tableServiceUri") or "").strip()
        queue_uri = (env.get(f"{name}__queueServiceUri") or "").strip()
        if account:
            table_uri = table_uri or f"https://{account}.table.core.windows.net"
            queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
        if not table_uri:
            raise SettingsError(
                f"{name}: not set; give a connection string, or {name}__accountName "
                f"(or {name}__tableServiceUri) for an identity-based connection"
            )
        return cls(None, table_uri, queue_uri or None, (env.get(f"{name}__clientId") or "").strip() or None)


@dataclass(frozen=True)
class ServiceBusSettings:
    """``ServiceBusConnection``: a connection string, or ``__fullyQualifiedNamespace`` with identity."""

    connection_string: str | None
    namespace: str | None
    client_id: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, name: str = SERVICEBUS_SETTING) -> ServiceBusSettings:
        env = os.environ if env is None else env
        conn = (env.get(name) or "").strip()
        if conn:
            return cls(conn, None, None)
        namespace = (env.get(f"{name}__fullyQualifiedNamespace") or "").strip()
        if not namespace:
            raise SettingsError(
                f"{name}: not set; give a connection string or {name}__fullyQualifiedNamespace"
            )
        return cls(None, namespace, (env.get(f"{name}__clientId") or "").strip() or None)


def env_str(name: str, default: str = "", env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get(name) or default).strip()


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    return _env_number(name, default, float, "a number", env)


def env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    return _env_number(name, default, int, "a whole number", env)


def _env_number(name: str, default: N, parse: Callable[[str], N], what: str, env: Mapping[str, str] | None) -> N:
    raw = env_str(name, env=env)
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be {what}, not {raw!r}") from None
    if value < 0:  # type: ignore[operator]
        raise SettingsError(f"{name}: must not be negative")
    return value


def public_url(path: str, env: Mapping[str, str] | None = None) -> str | None:
    """``PUBLIC_BASE_URL`` + path: the address providers call back, as they see it.

    Behind a proxy or a custom domain the function sees another URL than the caller
    used, and Twilio signs the URL it called; so callback URLs come from this setting.
    None when it is not set (then no callbacks are asked for).
    """
    base = env_str("PUBLIC_BASE_URL", env=env).rstrip("/")
    return f"{base}/{path.lstrip('/')}" if base else None
