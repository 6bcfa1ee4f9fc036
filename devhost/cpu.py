"""The CPU devhost spends as the stand-in for the Functions host, measured in its own threads.

In Azure the host (its HTTP server, queue polling, message settling) runs in a process of its
own; here it shares the app's. Each devhost thread measures its CPU time (``time.thread_time``)
and leaves out what the app's functions spend in it, so a reader can tell the app's CPU from
the hosting's. Threads the app starts itself are the app's and are not measured here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class HostingCpu:
    """CPU seconds of devhost's own work, summed over its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = 0.0
        self._local = threading.local()

    def seconds(self) -> float:
        """What the threads have reported so far (each reports at least once per message, request or poll)."""
        with self._lock:
            return self._seconds

    def start_thread(self) -> None:
        """From now on this thread's CPU is devhost's, until it runs a function."""
        self._local.mark = time.thread_time()

    def flush(self) -> None:
        """Add this thread's CPU since the last report to the total."""
        mark = getattr(self._local, "mark", None)
        if mark is None:
            return
        now = time.thread_time()
        self._local.mark = now
        with self._lock:
            self._seconds += now - mark

    @contextmanager
    def in_function(self) -> Iterator[None]:
        """The app's function runs in this block: its CPU is the app's, not devhost's."""
        self.flush()
        try:
            yield
        finally:
            if getattr(self._local, "mark", None) is not None:
                self._local.mark = time.thread_time()

    @contextmanager
    def thread(self) -> Iterator[None]:
        """A devhost thread's whole run (a request, a message) is measured."""
        self.start_thread()
        try:
            yield
        finally:
            self.flush()
            self._local.mark = None


# One per process, as there is one host per process.
hosting_cpu = HostingCpu()
