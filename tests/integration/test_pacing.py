"""Pacing across instances: one message per second per channel, bursts spread, nothing dropped."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.pipeline.pacing import WaitForSlot, wait_for_slot
from shared.storage.tables import Stores


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


def test_a_far_slot_is_kept_and_the_send_comes_back_for_it(stores: Stores) -> None:
    now = 1_800_000_000.0
    slept: list[float] = []
    for _ in range(2):  # slots now and now + 1.1: within the horizon, slept for
        wait_for_slot(stores.pacing, "slack-main", "C3", clock=lambda: now, sleep=slept.append, interval=1.1)
    assert slept == [pytest.approx(1.1)]
    with pytest.raises(WaitForSlot) as wait:
        wait_for_slot(stores.pacing, "slack-main", "C3", clock=lambda: now, sleep=slept.append, interval=1.1)
    assert wait.value.slot == pytest.approx(now + 2.2)
    assert wait.value.delay == pytest.approx(1.2)  # back a second early, to sleep to the slot here
    assert stores.pacing.next_free("slack-main", "C3") == pytest.approx(now + 3.3)  # the far slot is held

    later = now + 2.0  # the send returns a little early, with its slot
    wait_for_slot(stores.pacing, "slack-main", "C3", wait.value.slot, clock=lambda: later, sleep=slept.append)
    assert slept[-1] == pytest.approx(0.2)
    assert stores.pacing.next_free("slack-main", "C3") == pytest.approx(now + 3.3)  # nothing more taken
