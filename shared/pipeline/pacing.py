"""Pace sends to a provider's per-channel limit instead of provoking 429s.

Slack allows about one message per second per channel. Every send takes the next free
slot on its channel from a table shared by all instances. A slot that starts soon is
waited for here; a later one stays reserved, and the message goes back to its queue to
return at that moment with its slot (``WaitForSlot``): a burst is spread over the
channel's slots in order, each message scheduled once, and nothing is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.outcomes import WaitForSlot
from shared.storage.tables import PacingStore

# Seconds between messages to one channel: a margin over Slack's one per second, because a
# post can reach Slack later than its slot (a busy instance, a slow connection, clocks of
# instances a little apart); with 0.25 s of margin such a post rarely lands within a second
# of the next one.
SLACK_CHANNEL_INTERVAL = 1.25
INLINE_HORIZON = 2.0  # a slot within this is slept for; further out, the queue waits instead


def wait_for_slot(pacing: PacingStore, connection: str, channel: str, reserved: float | None = None, *,
                  interval: float = SLACK_CHANNEL_INTERVAL, horizon: float = INLINE_HORIZON,
                  clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return when this send may go; WaitForSlot when its slot is further off than the horizon.

    ``reserved`` is the slot an earlier attempt of this same send reserved.
    """
    now = clock()
    slot = reserved if reserved is not None else pacing.reserve(connection, channel, now, interval)
    if slot - now > horizon:
        # Back a little before the slot (queues schedule to the second at best), then sleep to it here.
        early = slot - now - horizon / 2
        raise WaitForSlot(early, slot, f"channel {channel} is paced: this send's slot is in {slot - now:.1f} s")
    if slot > now:
        sleep(slot - now)
