"""Pacing across instances: one message per second per channel, bursts spread, nothing dropped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.http import RetryLater
from shared.pipeline.pacing import wait_for_slot
from shared.settings import StorageSettings
from shared.storage.tables import Stores


@pytest.fixture
def stores(storage_connection_string: str, table_prefix: str) -> Iterator[Stores]:
    opened = Stores.open(StorageSettings(storage_connection_string, None, None, None), table_prefix)
    yield opened
    opened.close()


def test_a_burst_of_thirty_takes_distinct_slots_a_second_apart(stores: Stores) -> None:
    now = 1_800_000_000.0
    start = threading.Barrier(30)

    def reserve(_: int) -> float | None:
        start.wait()
        return stores.pacing.reserve("slack-main", "C0AP", now, 1.0, horizon=60.0)

    with ThreadPoolExecutor(max_workers=30) as pool:
        slots = sorted(s for s in pool.map(reserve, range(30)) if s is not None)
    assert len(slots) == 30
    assert slots == [now + i for i in range(30)]  # each second used once, none twice


def test_channels_are_paced_separately(stores: Stores) -> None:
    now = 1_800_000_000.0
    assert stores.pacing.reserve("slack-main", "C1", now, 1.0, 5.0) == now
    assert stores.pacing.reserve("slack-main", "C2", now, 1.0, 5.0) == now
    assert stores.pacing.reserve("slack-main", "C1", now, 1.0, 5.0) == now + 1


def test_beyond_the_horizon_nothing_is_taken_and_the_queue_waits(stores: Stores) -> None:
    now = 1_800_000_000.0
    slept: list[float] = []
    for _ in range(3):  # slots now, +1, +2
        wait_for_slot(stores.pacing, "slack-main", "C3", clock=lambda: now, sleep=slept.append, horizon=2.0)
    assert slept == [1.0, 2.0]
    with pytest.raises(RetryLater) as later:
        wait_for_slot(stores.pacing, "slack-main", "C3", clock=lambda: now, sleep=slept.append, horizon=2.0)
    assert 3.0 <= later.value.delay <= 7.0
    assert stores.pacing.next_free("slack-main", "C3") == now + 3  # the refused send took no slot
