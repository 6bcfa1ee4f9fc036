"""Every HTTP trigger answers within seconds, whatever storage or a provider does.

Callers give up early: Dynamics after 10 s, Slack after 3 s, Twilio after 15 s. A trigger whose
storage hangs would otherwise hold its caller until the SDKs' own timeouts run out, and its
answer would come too late to tell the caller to send again. ``answers_in_time`` runs the
trigger on a worker thread and answers ``503`` with ``Retry-After`` when it has not finished
within ``ANSWER_SECONDS``, or when it failed on something transient (storage, a network
error). The caller then sends again; the work the slow run finishes later is keyed like any
other (event keys, MessageSids, click keys), so its repeat changes nothing.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import azure.functions as func

from shared.outcomes import describe, is_transient
from shared.triggers.responses import error_response

log = logging.getLogger(__name__)

# Under Dynamics' 10 s and Twilio's 15 s with room to spare; Slack's 3 s is the endpoint's own concern.
ANSWER_SECONDS = 4.5
RETRY_AFTER_SECONDS = 5
# Runs at once across the instance. A run that overstays keeps its thread until the SDK gives up,
# so they are bounded: when storage hangs, later requests wait their budget out and get 503.
MAX_RUNNING = 32

Trigger = Callable[[func.HttpRequest], func.HttpResponse]

_running = threading.BoundedSemaphore(MAX_RUNNING)


@dataclass
class _Run:
    """One trigger run on its own thread, and how it ended."""

    done: threading.Event = field(default_factory=threading.Event)
    response: func.HttpResponse | None = None
    error: Exception | None = None


def try_again_later(message: str) -> func.HttpResponse:
    response = error_response(503, "unavailable", message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def answers_in_time(trigger: Trigger) -> Trigger:
    """``trigger`` answered within ``ANSWER_SECONDS``: its own answer, or 503 with ``Retry-After``."""

    @functools.wraps(trigger)
    def run(req: func.HttpRequest) -> func.HttpResponse:
        deadline = time.monotonic() + ANSWER_SECONDS
        if not _running.acquire(timeout=ANSWER_SECONDS):
            return _overrun(trigger)
        started = _start(trigger, req)
        if not started.done.wait(max(deadline - time.monotonic(), 0.0)):
            return _overrun(trigger)
        if started.response is not None:
            return started.response
        if started.error is None or not is_transient(started.error):
            raise started.error or RuntimeError(f"{trigger.__name__} gave no answer")
        log.warning("%s failed on something transient (%s); answered 503", trigger.__name__,
                    describe(started.error))
        return try_again_later("the connector's storage or a provider is unavailable; send the request again")

    run.answers_in_time = True  # type: ignore[attr-defined]  # copied onto outer wrappers by functools.wraps
    return run


def _start(trigger: Trigger, req: func.HttpRequest) -> _Run:
    """Run ``trigger`` on a daemon thread (one that overstays never holds the process up at exit),
    with the invocation's log dimensions, which live in context variables."""
    started, context = _Run(), contextvars.copy_context()

    def work() -> None:
        try:
            started.response = context.run(trigger, req)
        except Exception as error:  # noqa: BLE001 - handed to the waiting request, which decides
            started.error = error
        finally:
            _running.release()
            started.done.set()

    threading.Thread(target=work, name=f"http-{trigger.__name__}", daemon=True).start()
    return started


def _overrun(trigger: Trigger) -> func.HttpResponse:
    log.warning("%s did not answer within %.1f s; answered 503 so that the caller sends again",
                trigger.__name__, ANSWER_SECONDS)
    return try_again_later("the connector could not answer in time; send the request again")
