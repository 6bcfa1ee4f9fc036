"""Pace sends to a provider's rate instead of provoking 429s or filling the provider's own queue.

Slack allows about one message per second per channel; a Twilio sender sends a few messages
per second at most and queues the rest. Every send takes the next free slot on its channel
or sender from a table shared by all instances (``PacingStore``), so a burst is spread over
the slots in order, each message scheduled once, and nothing is dropped.

- A slot within ``INLINE_HORIZON`` is waited for in the same invocation: a queue cannot time
  a return to the second (its delays are whole seconds and polling adds up to its maximum
  interval), so a send that went back for a slot seconds away would miss it.
- A slot further out stays reserved, and the message goes back to its queue (``WaitForSlot``)
  to return with ``RETURN_SPARE`` seconds less than the horizon still to go, and wait the rest here.
- A message that returns after its slot has passed takes a fresh one: the stale slot's
  moment is gone, and sending at once could land next to the send of the slot after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.channels.twilio.connection import TwilioConnection, sender_of, sender_rate
from shared.outcomes import WaitForSlot
from shared.storage.tables import PacingStore

# Seconds between messages to one Slack channel. Slack's limit is about one per second; what
# counts is when each post reaches Slack, which is its slot plus a few milliseconds of waking
# and sending. 1.05 s leaves 50 ms for one post to arrive later than the next (the fake Slack
# refuses a post less than 1.0 s after the previous one accepted on its channel, by its own
# clock at arrival: stricter than Slack, which allows short bursts), and still uses 95 % of it.
SLACK_CHANNEL_INTERVAL = 1.05
# The longest wait for a slot inside one invocation. It must stay well under what lets an
# invocation run on (functionTimeout, 10 min in host.json) and keeps its message hidden (the
# Functions host holds a storage queue message 10 min and renews it, devhost 5 min; Service Bus
# locks for 5 min and renews), and cover one batch of the queue (batchSize 16) at one send a
# second, so that a burst read in one batch goes out without a queue round trip. A waiting
# invocation holds one of the queue's concurrent messages meanwhile.
INLINE_HORIZON = 20.0
# A fresh slot starts at least this far ahead: taking it is a read and a conditional write of a
# row other sends contend for, and a slot that had already begun by the time it was taken would
# send this one late, close to the one after it. On a busy channel the next free slot is further.
RESERVE_LEAD = 0.25
# Queue delays are rounded up to whole seconds: a send that goes back returns this much before
# its slot enters the horizon at the latest, so it is never early for it.
RETURN_SPARE = 1.0


def take_slot(pacing: PacingStore, connection: str, key: str, reserved: float | None = None, *,
              interval: float, horizon: float | None = None, lead: float = RESERVE_LEAD,
              clock: Callable[[], float] = time.time) -> float:
    """This send's slot (epoch seconds), within ``horizon`` of now; WaitForSlot when it is further.

    ``reserved`` is the slot an earlier attempt of this same send reserved: kept while it is
    still ahead, replaced by a fresh one (``lead`` ahead at the earliest) once it has passed.
    """
    horizon = INLINE_HORIZON if horizon is None else horizon
    now = clock()
    if reserved is not None and reserved >= now:
        slot = reserved
    else:
        slot = pacing.reserve(connection, key, now + lead, interval)
    if slot - now > horizon:
        raise WaitForSlot(return_delay(slot, now, horizon), slot,
                          f"{key} is paced: this send's slot is in {slot - now:.1f} s")
    return slot


def return_delay(slot: float, now: float, horizon: float | None = None) -> float:
    """How long a send whose slot is ``slot`` stays on its queue: back while the slot is still
    ahead, with ``RETURN_SPARE`` less than ``horizon`` to wait here, whatever the queue adds."""
    horizon = INLINE_HORIZON if horizon is None else horizon
    return max(slot - now - (horizon - RETURN_SPARE), 0.0)


def sleep_until(slot: float, *, clock: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep) -> None:
    wait = slot - clock()
    if wait > 0:
        sleep(wait)


def wait_for_slot(pacing: PacingStore, connection: str, key: str, reserved: float | None = None, *,
                  interval: float, horizon: float | None = None, lead: float = RESERVE_LEAD,
                  clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return when this send may go (``take_slot``, then the wait for it)."""
    slot = take_slot(pacing, connection, key, reserved, interval=interval, horizon=horizon, lead=lead, clock=clock)
    sleep_until(slot, clock=clock, sleep=sleep)


def pace_sms(pacing: PacingStore, connection: TwilioConnection, payload: dict[str, Any]) -> None:
    """Return when the connection's sender may send this SMS (at its ``sends_per_second``);
    WaitForSlot when its slot is beyond the horizon. Calls are not paced here."""
    if payload.get("channel") != "sms":
        return
    wait_for_slot(pacing, connection.name, f"sms|{sender_of(connection)}", payload.get("paced_slot"),
                  interval=1.0 / sender_rate(connection))
