"""Which handler reads which envelope type on which queue.

Stage modules register their handlers with ``@handles(queue, type)`` when they are imported
(``shared.pipeline.stages`` imports them all); the queue consumer looks them up. Unknown
types and unreadable versions are dead-lettered with the reason, never dropped. A stage may
also name what its work concerns (``record_of``: the ERP record the audit files a dead letter
under) and what must be undone when its message is dead-lettered (``on_dead_letter``: release
an event's claim, mark a job as not sent), so that a resend or a redrive is processed again.

The consumer also registers how a stage hands work to the next one in place (``runs_in_place``), so that the
stages, which it imports, need not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.model import Envelope

if TYPE_CHECKING:
    from shared.storage.bus import MessageBus

Handler = Callable[[Envelope], None]
RecordOf = Callable[[Envelope], str]
DeadLetterHook = Callable[[Envelope, str], None]
# Runs an envelope's stage now, as if taken from the queue named, failures left where the consumer leaves them.
InPlace = Callable[[str, Envelope, "MessageBus"], object]


@dataclass(frozen=True)
class HandlerSpec:
    handler: Handler
    versions: frozenset[int]
    record_of: RecordOf | None = None
    on_dead_letter: DeadLetterHook | None = None


_handlers: dict[tuple[str, str], HandlerSpec] = {}


def handles(queue: str, message_type: str, versions: tuple[int, ...] = (1,), *, record_of: RecordOf | None = None,
            on_dead_letter: DeadLetterHook | None = None) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        key = (queue, message_type)
        if key in _handlers and _handlers[key].handler is not handler:
            raise ValueError(f"{message_type!r} on {queue!r} already has a handler")
        _handlers[key] = HandlerSpec(handler, frozenset(versions), record_of, on_dead_letter)
        return handler

    return register


def handler_for(queue: str, message_type: str) -> HandlerSpec | None:
    return _handlers.get((queue, message_type))


_in_place: list[InPlace] = []


def runs_in_place(runner: InPlace) -> InPlace:
    """Register the consumer's way of running a stage in place (``shared.pipeline.consume`` does, on import)."""
    _in_place[:] = [runner]
    return runner


def in_place_runner() -> InPlace | None:
    """How to run an envelope's stage in place; None in a process that has no queue consumer."""
    return _in_place[0] if _in_place else None
