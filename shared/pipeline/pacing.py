"""Pace sends to a provider's per-channel limit instead of provoking 429s.

Slack allows about one message per second per channel. Every send first takes a slot on
its channel from a table shared by all instances; a slot that starts soon is waited for
here, a later one is not taken: the message goes back to its queue until then. A burst
is spread out over the channel's slots and nothing is dropped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from shared.http import RetryLater
from shared.storage.tables import PacingStore

SLACK_CHANNEL_INTERVAL = 1.0  # seconds between messages to one channel
INLINE_HORIZON = 2.0  # a slot within this is slept for; further out, the queue waits instead


def wait_for_slot(pacing: PacingStore, connection: str, channel: str, *, interval: float = SLACK_CHANNEL_INTERVAL,
                  horizon: float = INLINE_HORIZON, clock: Callable[[], float] = time.time,
                  sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
    """Return when this send may go; RetryLater when the channel is booked beyond the horizon."""
    now = clock()
    slot = pacing.reserve(connection, channel, now, interval, horizon)
    if slot is None:
        booked_until = pacing.next_free(connection, channel) or now
        # Jitter spreads the waiting messages over the coming slots instead of all returning at once.
        delay = max(interval, booked_until - now) + (rng or random).uniform(0, interval * 4)
        raise RetryLater(delay, f"channel {channel} is paced: next free slot in {booked_until - now:.1f} s")
    if slot > now:
        sleep(slot - now)
