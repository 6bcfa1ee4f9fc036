"""What every end-to-end benchmark does around its measurement: say what the machine is doing,
stop everything it started whatever happens, and turn a failure into a message and an exit status."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Protocol, TypeVar


class BenchError(RuntimeError):
    """The run could not produce a figure; the message says what was missing."""


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def stopped_with(stack: ExitStack, service: S) -> S:
    """``service``, stopped when ``stack`` closes."""
    stack.callback(service.stop)
    return service


def machine() -> str:
    """The machine as a setup line gives it: cores, the load average at the start where the system
    tells it, and Python's version."""
    load = f", load average {os.getloadavg()[0]:.2f} at the start" if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} cores{load}, Python {platform.python_version()}"


def run_measured(measure: Callable[[ExitStack], int | None],
                 failures: tuple[type[Exception], ...] = (BenchError,)) -> int:
    """Run ``measure``, which registers each thing it starts on the stack it is given (stopped last
    first, however it ends); the exit status: 0, 1 for one of ``failures``, 130 when interrupted."""
    started = time.monotonic()
    try:
        with ExitStack() as started_here:
            status = measure(started_here)
    except failures as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started here is stopped", file=sys.stderr)
        return 130
    print(f"run time: {time.monotonic() - started:.1f} s")
    return status or 0
