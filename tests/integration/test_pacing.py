"""Pacing across instances: one message per second per channel, bursts spread, nothing dropped,
and a send that comes back after its slot never goes out next to another."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.pipeline.pacing import RESERVE_LEAD, SLACK_CHANNEL_INTERVAL, WaitForSlot, wait_for_slot
from shared.settings import StorageSettings
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


def test_instances_that_each_remember_the_row_still_take_distinct_slots(
    stores: Stores, storage_connection_string: str, table_prefix: str
) -> None:
    # Each instance writes from the row as it last saw it; one that is behind is refused and reads again.
    now = 1_800_000_000.0
    other = Stores.open(StorageSettings(storage_connection_string, None, None, None), table_prefix)
    try:
        instances = [stores, other, other, stores, stores, other]
        taken = [instance.pacing.reserve("twilio-main", "sms|+15017122661", now, 1.0) for instance in instances]
        start = threading.Barrier(20)

        def reserve(index: int) -> float:
            start.wait()
            return instances[index % 2].pacing.reserve("twilio-main", "sms|+15017122661", now, 1.0)

        with ThreadPoolExecutor(max_workers=20) as pool:
            taken += pool.map(reserve, range(20))
    finally:
        other.close()
    assert sorted(taken) == [now + i for i in range(26)]  # each second used once, none twice
    assert stores.pacing.next_free("twilio-main", "sms|+15017122661") == now + 26


def test_channels_are_paced_separately(stores: Stores) -> None:
    now = 1_800_000_000.0
    assert stores.pacing.reserve("slack-main", "C1", now, 1.0, 5.0) == now
    assert stores.pacing.reserve("slack-main", "C2", now, 1.0, 5.0) == now
    assert stores.pacing.reserve("slack-main", "C1", now, 1.0, 5.0) == now + 1


def test_a_far_slot_is_kept_and_the_send_comes_back_for_it(stores: Stores) -> None:
    now, first = 1_800_000_000.0, 1_800_000_000.0 + RESERVE_LEAD  # a fresh slot starts a little ahead
    slept: list[float] = []
    for _ in range(2):  # slots first and first + 1.1: within the horizon, slept for
        wait_for_slot(stores.pacing, "slack-main", "C3", clock=lambda: now, sleep=slept.append, interval=1.1,
                      horizon=2.0)
    assert slept == [pytest.approx(RESERVE_LEAD), pytest.approx(RESERVE_LEAD + 1.1)]
    with pytest.raises(WaitForSlot) as wait:
        wait_for_slot(stores.pacing, "slack-main", "C3", clock=lambda: now, sleep=slept.append, interval=1.1,
                      horizon=2.0)
    assert wait.value.slot == pytest.approx(first + 2.2)
    # Back with a second less than the horizon to go (queue delays round up), to wait the rest here.
    assert wait.value.delay == pytest.approx(first + 2.2 - now - 1.0)
    assert stores.pacing.next_free("slack-main", "C3") == pytest.approx(first + 3.3)  # the far slot is held

    later = now + 2.0  # the send returns a little early, with its slot
    wait_for_slot(stores.pacing, "slack-main", "C3", wait.value.slot, clock=lambda: later, sleep=slept.append,
                  interval=1.1, horizon=2.0)
    assert slept[-1] == pytest.approx(first + 2.2 - later)
    assert stores.pacing.next_free("slack-main", "C3") == pytest.approx(first + 3.3)  # nothing more taken


def test_a_send_back_after_its_slot_passed_takes_a_fresh_one_an_interval_after_the_others(stores: Stores) -> None:
    now, interval = 1_800_000_000.0, SLACK_CHANNEL_INTERVAL
    sent: list[float] = []  # the moment each send goes out

    def send(at: float, reserved: float | None = None) -> None:
        slept: list[float] = []
        wait_for_slot(stores.pacing, "slack-main", "C5", reserved, interval=interval, horizon=2.0,
                      clock=lambda: at, sleep=slept.append)
        sent.append(at + sum(slept))

    send(now)
    send(now)  # one interval on: slept for
    with pytest.raises(WaitForSlot) as back:  # two intervals on, past the horizon: back to the queue with it
        send(now)
    stale = back.value.slot
    send(stale - 0.5)  # another send meanwhile: the slot after the held one
    send(stale + 0.5, reserved=stale)  # the first comes back after its slot: late, so not sent at once

    assert len(sent) == 4
    assert sent[-1] == pytest.approx(stale + 2 * interval)  # a fresh slot, after the one taken meanwhile
    ordered = sorted(sent)
    assert all(later - earlier >= interval - 1e-6 for earlier, later in itertools.pairwise(ordered))
    assert stores.pacing.next_free("slack-main", "C5") == pytest.approx(stale + 3 * interval)
