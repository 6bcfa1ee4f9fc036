"""Capturing what the app logs, with its telemetry dimensions on each record."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from shared import telemetry


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[ListHandler]:
    """Records logged on ``shared.*`` loggers, through a handler with the dimensions filter."""
    handler = ListHandler()
    telemetry.install_dimensions(handler)
    logger = logging.getLogger("shared")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
