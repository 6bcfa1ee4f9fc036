"""Timers: the poll scheduler, every minute (each connection's own interval decides what runs, and the
silence alarms are checked), and the collector of dead letters."""

from __future__ import annotations

import azure.functions as func

from shared.telemetry import traced

bp = func.Blueprint()


@bp.function_name("poll_scheduler")
@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False)
@traced
def poll_scheduler(timer: func.TimerRequest) -> None:
    from datetime import UTC, datetime

    from shared.config.loading import get_config
    from shared.pipeline.poll import schedule_polls
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    schedule_polls(get_config(), get_stores(), get_bus(), datetime.now(UTC))
    check_silence_alarms()


def check_silence_alarms() -> None:
    """On the scheduler's minute: raise or clear the silence alarm of each watched Dynamics legal entity."""
    from datetime import UTC, datetime

    from shared.config.loading import get_config
    from shared.pipeline.silence import check_silence
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    check_silence(get_config(), get_stores(), get_bus(), datetime.now(UTC))


@bp.function_name("deadletters_collector")
@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
@traced
def deadletters_collector(timer: func.TimerRequest) -> None:
    """Every five minutes: the dead-letter queues into the dead-letters table, each audited once."""
    from shared.pipeline.deadletters import SETTLED_AFTER, collect
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    collect(get_stores(), get_bus(), older_than=SETTLED_AFTER)
