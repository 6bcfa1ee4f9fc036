"""One row of a polled entity, read as its poll reads it: the first page, one row long."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from shared.erp.polling import NUMBER, TIME, PageRequest, PolledEntity

# A lower bound before any ERP's data: the oldest row is the one read.
EARLIEST = datetime(2000, 1, 1)


def lower_bound(entity: PolledEntity) -> datetime | date | int | None:
    if entity.cursor == TIME:
        return EARLIEST.date() if entity.date_only else EARLIEST
    if entity.cursor == NUMBER:
        return 0
    return None


def rows_read(client: Any, entity: PolledEntity) -> int:
    """How many rows the first one-row page of ``entity`` held (0 or 1)."""
    page = entity.read(client, entity, PageRequest(lower_bound(entity), None, 1))
    return len(page.rows)
