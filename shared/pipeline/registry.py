"""Which handler reads which envelope type on which queue.

Stage modules register their handlers with ``@handles(queue, type)``; the queue
consumer looks them up. Unknown types and unreadable versions are dead-lettered
with the reason, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.model import Envelope

Handler = Callable[[Envelope], None]


@dataclass(frozen=True)
class HandlerSpec:
    handler: Handler
    versions: frozenset[int]


_handlers: dict[tuple[str, str], HandlerSpec] = {}


def handles(queue: str, message_type: str, versions: tuple[int, ...] = (1,)) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        key = (queue, message_type)
        if key in _handlers and _handlers[key].handler is not handler:
            raise ValueError(f"{message_type!r} on {queue!r} already has a handler")
        _handlers[key] = HandlerSpec(handler, frozenset(versions))
        return handler

    return register


def handler_for(queue: str, message_type: str) -> HandlerSpec | None:
    return _handlers.get((queue, message_type))


def load_stages() -> None:
    """Import the stage modules so that their handlers are registered.

    Done on the first message rather than at import of function_app, which must stay fast.
    """
    from shared.pipeline import (  # noqa: F401
        callbacks,
        deliver,
        diagnostics,
        email_flow,
        notes,
        poll,
        process,
        slack_codes,
        slack_flow,
    )
