"""Every HTTP trigger answers within seconds, whatever storage or a provider does.

Callers give up early: Dynamics after 10 s, Slack after 3 s, Twilio after 15 s. A trigger whose
storage hangs would otherwise hold its caller until the SDKs' own timeouts run out, and its
answer would come too late to tell the caller to send again. ``answers_in_time`` runs the
trigger on one of a few warm worker threads and answers ``503`` with ``Retry-After`` when it
has not finished within ``ANSWER_SECONDS`` (a run still waiting for a thread then never starts),
or when it failed on something transient (storage, a network error). The caller then sends
again; the work the slow run finishes later is keyed like any other (event keys, MessageSids,
click keys), so its repeat changes nothing.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import azure.functions as func

from shared.outcomes import describe, is_transient
from shared.triggers.responses import error_response

log = logging.getLogger(__name__)

# Under Dynamics' 10 s and Twilio's 15 s with room to spare; Slack's 3 s is the endpoint's own concern.
ANSWER_SECONDS = 4.5
RETRY_AFTER_SECONDS = 5
# Runs at once across the instance, on threads kept warm between requests. A run that overstays keeps
# its thread until the SDK gives up, so they are bounded: when storage hangs, later requests wait their
# budget out and get 503. Few enough that a burst does not have dozens of threads taking the GIL from
# each other (the work is mostly CPU in the storage SDK), enough to overlap storage's round trips.
MAX_RUNNING = 16

Trigger = Callable[[func.HttpRequest], func.HttpResponse]


@dataclass
class _Run:
    """One trigger run handed to a worker, and how it ended."""

    trigger: Trigger
    request: func.HttpRequest
    context: contextvars.Context
    done: threading.Event = field(default_factory=threading.Event)
    response: func.HttpResponse | None = None
    error: Exception | None = None
    _claim: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the one side that gets to decide this run: the worker starting it, or the waiter
        giving up on it before it started."""
        return self._claim.acquire(blocking=False)

    def run(self) -> None:
        try:
            self.response = self.context.run(self.trigger, self.request)
        except Exception as error:  # noqa: BLE001 - handed to the waiting request, which decides
            self.error = error
        finally:
            self.done.set()


class _Workers:
    """Daemon threads kept between requests (one that overstays never holds the process up at exit),
    started as requests need them, up to ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._runs: queue.SimpleQueue[_Run] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, run: _Run) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes this run: the next submit looks for another
            elif self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._work, name=f"http-worker-{self._threads}", daemon=True).start()
        self._runs.put(run)

    def _work(self) -> None:
        while True:
            run = self._runs.get()
            if run.claim():  # not given up on while it waited for a thread
                run.run()
            with self._lock:
                self._idle += 1


_workers = _Workers(MAX_RUNNING)


def try_again_later(message: str) -> func.HttpResponse:
    response = error_response(503, "unavailable", message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def answers_in_time(trigger: Trigger) -> Trigger:
    """``trigger`` answered within ``ANSWER_SECONDS``: its own answer, or 503 with ``Retry-After``."""

    @functools.wraps(trigger)
    def run(req: func.HttpRequest) -> func.HttpResponse:
        # The invocation's log dimensions live in context variables: the worker runs in a copy of them.
        started = _Run(trigger, req, contextvars.copy_context())
        _workers.submit(started)
        if not started.done.wait(ANSWER_SECONDS):
            if started.claim():  # still waiting for a thread: it will never run
                return _overrun(trigger, "every worker was busy")
            if not started.done.wait(0):
                return _overrun(trigger, "it did not finish")
        if started.response is not None:
            return started.response
        if started.error is None or not is_transient(started.error):
            raise started.error or RuntimeError(f"{trigger.__name__} gave no answer")
        log.warning("%s failed on something transient (%s); answered 503", trigger.__name__,
                    describe(started.error))
        return try_again_later("the connector's storage or a provider is unavailable; send the request again")

    run.answers_in_time = True  # type: ignore[attr-defined]  # copied onto outer wrappers by functools.wraps
    return run


def _overrun(trigger: Trigger, why: str) -> func.HttpResponse:
    log.warning("%s did not answer within %.1f s (%s); answered 503 so that the caller sends again",
                trigger.__name__, ANSWER_SECONDS, why)
    return try_again_later("the connector could not answer in time; send the request again")
