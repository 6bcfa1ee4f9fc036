"""One client per connection for the whole process: tokens, caches and pools are shared.

A connection of the same name whose configuration changed (a reloaded file) gets a new
client. A replaced client is not closed: another thread may still be working through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class _Client(Protocol):
    connection: Any

    def close(self) -> None: ...


C = TypeVar("C", bound=_Client)


class PerConnection(Generic[C]):
    def __init__(self, build: Callable[[Any], C]) -> None:
        self._build = build
        self._clients: dict[str, C] = {}
        self._lock = threading.Lock()

    def get(self, connection: Any) -> C:
        with self._lock:
            client = self._clients.get(connection.name)
            if client is None or client.connection != connection:
                client = self._clients[connection.name] = self._build(connection)
            return client

    def reset(self) -> None:
        """Close and forget every client, so the next ``get`` builds new ones (tests)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
