"""Secret provider: Key Vault in Azure, environment variables (local.settings.json Values) locally.

Configuration names a secret (``{"secret": "contoso-fo-client-secret"}``); this module turns
the name into a ``Secret`` whose value shows only through ``reveal()``. Every value read is
registered with the log redactor, so a value that slips into a log line is masked there.
The Azure SDKs are imported only when a Key Vault provider is built: importing this
module stays cheap for the Functions host's cold start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol

from shared.logs import register_secret
from shared.settings import env_float, env_str

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

KEY_VAULT_URL_SETTING = "KEY_VAULT_URL"
CACHE_TTL_SETTING = "SECRET_CACHE_TTL_SECONDS"
DEFAULT_CACHE_TTL_SECONDS = 300.0
_MASKED = "***"


class Secret:
    """A secret value that does not print: ``repr``, ``str`` and f-strings show it masked."""

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value
        register_secret(value)

    @property
    def name(self) -> str:
        return self._name

    def reveal(self) -> str:
        """The value itself; pass it straight to the client that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._name!r}, {_MASKED!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __reduce__(self) -> NoReturn:
        # A pickled secret would sit in plain bytes in whatever cache or queue received it.
        raise TypeError("a Secret cannot be pickled; pass its name and read it where it is needed")


class SecretNotFoundError(KeyError):
    """No secret of that name where the provider looked; the message names both, never a value."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(name)
        self.name = name
        self.where = where

    def __str__(self) -> str:
        return f"secret {self.name!r} not found in {self.where}"


class SecretProvider(Protocol):
    def get(self, name: str) -> Secret: ...


def env_style_name(name: str) -> str:
    """``contoso-fo-client-secret`` -> ``CONTOSO_FO_CLIENT_SECRET``."""
    return name.upper().replace("-", "_")


class EnvSecretProvider:
    """Reads secrets from the environment: the name as given, then in env-var style.

    Locally, local.settings.json ``Values`` become environment variables, so a secret
    ``contoso-fo-client-secret`` can be supplied as ``CONTOSO_FO_CLIENT_SECRET``.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env

    def get(self, name: str) -> Secret:
        candidates = dict.fromkeys((name, env_style_name(name)))  # ordered, without repeats
        for candidate in candidates:
            value = self._env.get(candidate)
            if value and value.strip():  # an empty Value in local.settings.json means "not set"
                return Secret(name, value)
        looked_in = " or ".join(repr(candidate) for candidate in candidates)
        raise SecretNotFoundError(name, f"environment variables {looked_in}")


class KeyVaultSecretProvider:
    """Reads secrets from Azure Key Vault with the app's identity.

    Without an explicit credential it uses ``DefaultAzureCredential``: the managed identity
    in Azure (``AZURE_CLIENT_ID`` selects a user-assigned one), a developer login locally.
    Building it does no network I/O; the first ``get`` does.
    """

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from azure.keyvault.secrets import SecretClient

        from shared.storage.transport import client_options

        if credential is None:
            credential = _default_credential(env)
        self._vault_url = vault_url
        self._client = SecretClient(vault_url=vault_url, credential=credential, **client_options(vault_url))

    @property
    def vault_url(self) -> str:
        return self._vault_url

    def get(self, name: str) -> Secret:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            bundle = self._client.get_secret(name)
        except ResourceNotFoundError as exc:
            raise SecretNotFoundError(name, f"Key Vault {self._vault_url}") from exc
        if bundle.value is None:
            raise SecretNotFoundError(name, f"Key Vault {self._vault_url} (the secret has no value)")
        return Secret(name, bundle.value)


def _default_credential(env: Mapping[str, str] | None) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    client_id = env_str("AZURE_CLIENT_ID", env=env)
    return DefaultAzureCredential(managed_identity_client_id=client_id or None)


@dataclass(frozen=True)
class _CacheEntry:
    secret: Secret
    expires_at: float


class CachedSecretProvider:
    """Keeps each secret for ``ttl_seconds`` so a busy function does not read Key Vault per call.

    A rotated secret is picked up within the TTL; ``invalidate`` forces it sooner (e.g.
    after a 401 from the service the secret is for). Thread-safe.
    """

    def __init__(
        self,
        inner: SecretProvider,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _CacheEntry] = {}

    @property
    def inner(self) -> SecretProvider:
        return self._inner

    def get(self, name: str) -> Secret:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and self._clock() < entry.expires_at:
                return entry.secret
        # Read outside the lock: one slow vault call must not hold up every other name.
        # Two threads missing the same name at once both read it; that is harmless.
        secret = self._inner.get(name)
        with self._lock:
            self._entries[name] = _CacheEntry(secret, self._clock() + self._ttl)
        return secret

    def invalidate(self, name: str | None = None) -> None:
        """Forget one secret, or all of them when ``name`` is None."""
        with self._lock:
            if name is None:
                self._entries.clear()
            else:
                self._entries.pop(name, None)


_provider: CachedSecretProvider | None = None
_provider_lock = threading.Lock()


def get_secret_provider() -> CachedSecretProvider:
    """The process-wide provider: Key Vault when ``KEY_VAULT_URL`` is set, else the environment.

    Built on first use (settings are not all applied when the host imports the app) and
    cached for ``SECRET_CACHE_TTL_SECONDS`` (default 300) per secret.
    """
    global _provider
    with _provider_lock:
        if _provider is None:
            ttl = env_float(CACHE_TTL_SETTING, DEFAULT_CACHE_TTL_SECONDS)
            _provider = CachedSecretProvider(_base_provider(), ttl)
        return _provider


def _base_provider() -> SecretProvider:
    vault_url = env_str(KEY_VAULT_URL_SETTING)
    if vault_url:
        return KeyVaultSecretProvider(vault_url)
    return EnvSecretProvider()


def reset_secret_provider() -> None:
    """Forget the process-wide provider, so the next call reads the settings again (tests)."""
    global _provider
    with _provider_lock:
        _provider = None
