"""Fixtures of the integration tests: the app's stores on the session's Azurite, under a fresh prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.settings import StorageSettings
from shared.storage.tables import Stores


@pytest.fixture
def stores(storage_connection_string: str, table_prefix: str) -> Iterator[Stores]:
    opened = Stores.open(StorageSettings(storage_connection_string, None, None, None), table_prefix)
    yield opened
    opened.close()
