"""Shared fixtures: a real Azurite for the whole test session, isolated names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import Azurite, start_azurite
from tests.support.app import TEST_DATA_PROTECTION_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fixtures shared by unit and integration tests: ``captured`` log records.
pytest_plugins = ["tests.support.logs"]

# The key that seals phone numbers and messages in the tables of the stores tests open.
os.environ.setdefault("DATA_PROTECTION_KEY", TEST_DATA_PROTECTION_KEY)


def shared_dir() -> Path:
    """The ``shared`` folder beside the repository (official API specs, references)."""
    return Path(os.environ.get("ML_CONNECTOR_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite on free ports for the test session; stopped at the end."""
    instance = start_azurite()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def storage_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def table_prefix() -> str:
    """A unique table-name prefix, so tests never see each other's rows."""
    return "t" + uuid.uuid4().hex[:10]
