"""Loaded at start-up by the app process that ``bench/profile_app.py`` starts (this folder first on PYTHONPATH).

Each thread is profiled on its own CPU clock (``time.thread_time``: a process clock would charge
every thread with the others' CPU), and at exit the profiles are merged per kind of thread and
written next to ``APP_PROFILE_OUT``. SIGUSR1 drops what the short-lived threads (requests,
messages) gathered so far, so a warm-up is left out.
"""

from __future__ import annotations

import atexit
import cProfile
import marshal
import os
import re
import signal
import threading
import time
from typing import Any

_OUT = os.environ.get("APP_PROFILE_OUT", "")
_SHORT_LIVED = ("request", "message", "app thread")
_lock = threading.Lock()
_stats: dict[str, dict[Any, Any]] = {}
_thread_cpu: dict[str, list[float]] = {}


def thread_kind(name: str) -> str:
    """devhost's threads by role; any other thread is one the app started."""
    if name.startswith("devhost-message-"):
        return "message"
    if name.startswith("devhost-queue-"):
        return "poller"
    if name.startswith("devhost-timer-"):
        return "timer"
    if name == "devhost-http":
        return "http-accept"
    if re.fullmatch(r"Thread-\d+ \(process_request_thread\)", name):
        return "request"
    return "app thread"


def _merge(kind: str, stats: dict[Any, Any]) -> None:
    into = _stats.setdefault(kind, {})
    for function, (cc, nc, tt, ct, callers) in stats.items():
        if function not in into:
            into[function] = (cc, nc, tt, ct, dict(callers))
            continue
        old = into[function]
        merged = dict(old[4])
        for caller, edge in callers.items():
            known = merged.get(caller)
            merged[caller] = edge if known is None else tuple(a + b for a, b in zip(known, edge, strict=True))
        into[function] = (old[0] + cc, old[1] + nc, old[2] + tt, old[3] + ct, merged)


# Threads still running at exit (the app's worker threads never end): read from the exiting thread.
_running: dict[int, tuple[threading.Thread, cProfile.Profile]] = {}


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile(time.thread_time)
    started = time.thread_time()
    with _lock:
        _running[id(self)] = (self, profile)
    profile.enable()
    try:
        _thread_run(self)
    finally:
        profile.disable()
        used = time.thread_time() - started
        with _lock:
            _running.pop(id(self), None)
            _record(thread_kind(self.name), profile, used)


def _record(kind: str, profile: cProfile.Profile, used: float | None) -> None:
    profile.snapshot_stats()
    _merge(kind, profile.stats)  # type: ignore[attr-defined]  # set by snapshot_stats
    count, seconds = _thread_cpu.get(kind, [0, 0.0])
    # A thread still running tells no CPU total: its profile counts, its clock is its own.
    _thread_cpu[kind] = [count + 1, seconds + (used or 0.0)]


def _forget_short_lived(signum: int, frame: object) -> None:
    with _lock:
        for kind in _SHORT_LIVED:
            _stats.pop(kind, None)
            _thread_cpu.pop(kind, None)


def _write() -> None:
    _main.disable()
    _main.snapshot_stats()
    with _lock:
        _merge("main", _main.stats)  # type: ignore[attr-defined]
        for thread, profile in list(_running.values()):
            _record(thread_kind(thread.name), profile, None)
        for kind, stats in _stats.items():
            with open(f"{_OUT}.{kind.replace(' ', '-')}.prof", "wb") as out:
                marshal.dump(stats, out)
        with open(f"{_OUT}.threads", "w", encoding="utf-8") as out:
            for kind, (count, seconds) in sorted(_thread_cpu.items()):
                out.write(f"{kind}\t{count:.0f}\t{seconds:.6f}\n")


if _OUT:
    _thread_run = threading.Thread.run
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _forget_short_lived)
    _main = cProfile.Profile(time.thread_time)
    atexit.register(_write)
    _main.enable()
