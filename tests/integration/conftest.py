"""Fixtures of the integration tests: the app's stores and queues on the session's Azurite, under a fresh prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import Stores, get_stores, reset_stores


@pytest.fixture
def stores(storage_connection_string: str, table_prefix: str) -> Iterator[Stores]:
    opened = Stores.open(StorageSettings(storage_connection_string, None, None, None), table_prefix)
    yield opened
    opened.close()


@pytest.fixture
def app_stores(monkeypatch: pytest.MonkeyPatch, storage_connection_string: str, table_prefix: str) -> Iterator[Stores]:
    """The app's own ``get_stores()``, which handlers open from the settings, on this test's tables
    (the same ones ``stores`` opens)."""
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    monkeypatch.setenv("STORAGE_TABLE_PREFIX", table_prefix)
    reset_stores()
    yield get_stores()
    reset_stores()


@pytest.fixture
def bus(storage_connection_string: str) -> Iterator[StorageQueueBus]:
    """The storage-queue bus on the session's Azurite."""
    instance = StorageQueueBus(StorageSettings(storage_connection_string, None, None, None))
    yield instance
    instance.close()


@pytest.fixture
def queued_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routed notifications all go onto ``notifications`` (``DELIVER_INLINE`` off): for tests that take each
    one from the queue and hand it to the delivery stage themselves, under conditions they set."""
    monkeypatch.setenv("DELIVER_INLINE", "false")
