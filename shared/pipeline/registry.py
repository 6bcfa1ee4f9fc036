"""Which handler reads which envelope type on which queue.

Stage modules register their handlers with ``@handles(queue, type)`` when they are imported
(``shared.pipeline.stages`` imports them all); the queue consumer looks them up. Unknown
types and unreadable versions are dead-lettered with the reason, never dropped. A stage may
also name what its work concerns (``record_of``: the ERP record the audit files a dead letter
under) and what must be undone when its message is dead-lettered (``on_dead_letter``: release
an event's claim, mark a job as not sent), so that a resend or a redrive is processed again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.model import Envelope

Handler = Callable[[Envelope], None]
RecordOf = Callable[[Envelope], str]
DeadLetterHook = Callable[[Envelope, str], None]


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
