"""How the app's Azure SDK clients reach their service: the import that leaves aiohttp out, and
the transport options that read the environment once, when a client is built.

- ``azure.storage.queue`` imports azure-core's aiohttp transport at import time, only to tell
  whether a request runs on it (its async clients); aiohttp takes about 110 ms to import, most
  of a cold instance's first enqueue. The app's clients are synchronous, so the queue SDK is
  imported as if aiohttp (and yarl, which its signing uses only with aiohttp) were missing, which
  its signing code expects and handles.
- azure-core's requests transport trusts the environment by default: requests then looks up
  HTTP(S)_PROXY, NO_PROXY and REQUESTS_CA_BUNDLE on every call, scanning every variable each
  time. The clients are built with ``use_env_settings=False`` and given what the environment
  says for their endpoint at build time instead, so a proxy still applies.
- The table and queue clients send on the app's kept-alive ``http.client`` transport
  (``shared.storage.keepalive``): a third less CPU per call than requests and urllib3.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any, Literal

from shared.network import environment_ca_bundle, environment_proxies
from shared.settings import StorageSettings

log = logging.getLogger(__name__)

# What the queue SDK imports only for its async clients: azure-core's aiohttp transport, and yarl, which
# its request signing uses only on that transport (about 5 ms of a cold instance's first enqueue).
_ASYNC_ONLY = ("azure.core.pipeline.transport._aiohttp", "yarl")
_import_lock = threading.Lock()
DEVELOPMENT_PORTS = {"table": 10002, "queue": 10001}
DEVELOPMENT_ACCOUNT = "devstoreaccount1"


@contextlib.contextmanager
def without_async_transport() -> Iterator[None]:
    """Imports inside this block see azure-core's aiohttp transport (and yarl) as not installed.

    Only while nothing has imported the transport yet; the placeholders are removed afterwards, so
    code that does need the async transport later still imports it. For the queue SDK: with the
    transport missing, its signing never reaches for yarl.
    """
    with _import_lock:
        if _ASYNC_ONLY[0] in sys.modules:
            yield
            return
        hidden = [name for name in _ASYNC_ONLY if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # import machinery: "not available"
        try:
            yield
        finally:
            for name in hidden:
                if sys.modules.get(name, ...) is None:
                    del sys.modules[name]


def client_options(endpoint: str) -> dict[str, Any]:
    """Keyword arguments for an azure-core client of ``endpoint``: the environment read now, not per call."""
    options: dict[str, Any] = {"use_env_settings": False}
    proxies = environment_proxies(endpoint)
    if proxies:
        options["proxies"] = proxies
    bundle = environment_ca_bundle()
    if bundle:
        options["connection_verify"] = bundle
    return options


# What azure-core's transports read of a client's keyword arguments.
_CONNECTION_SETTINGS = ("connection_timeout", "read_timeout", "connection_verify", "connection_cert",
                        "connection_data_block_size")


def storage_client_options(endpoint: str, **settings: Any) -> dict[str, Any]:
    """``client_options`` for a table or queue client of ``endpoint`` with ``settings`` (timeouts, retries),
    on the kept-alive ``http.client`` transport, which takes the client's connection settings."""
    options = {**settings, **client_options(endpoint)}
    if "proxies" in options:  # through a proxy, azure-core's requests transport (it speaks to proxies)
        return options
    try:
        from shared.storage.keepalive import KeepAliveTransport
    except ImportError as error:  # an azure-core release without what it builds on: its own transport then
        log.warning("storage clients use azure-core's requests transport: %s", error)
        return options
    options["transport"] = KeepAliveTransport(
        **{name: value for name, value in options.items() if name in _CONNECTION_SETTINGS})
    return options


def storage_endpoint(settings: StorageSettings, service: Literal["table", "queue"]) -> str:
    """The URL of the account's ``service`` endpoint, as the storage SDKs read it from the settings."""
    if not settings.connection_string:
        uri = settings.table_service_uri if service == "table" else settings.queue_service_uri
        return uri or ""
    fields = {name.strip().lower(): value.strip() for name, _, value in
              (part.partition("=") for part in settings.connection_string.split(";")) if value}
    if fields.get(f"{service}endpoint"):
        return fields[f"{service}endpoint"]
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return f"http://127.0.0.1:{DEVELOPMENT_PORTS[service]}/{DEVELOPMENT_ACCOUNT}"
    protocol = fields.get("defaultendpointsprotocol", "https")
    suffix = fields.get("endpointsuffix", "core.windows.net")
    return f"{protocol}://{fields.get('accountname', '')}.{service}.{suffix}"
