"""Domain types shared by every stage, starting with the queue envelope."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

ENVELOPE_VERSION = 1

# The queues between stages (DESIGN.md, "The flow").
POLL_JOBS = "poll-jobs"
ERP_EVENTS = "erp-events"
NOTIFICATIONS = "notifications"
CALLBACKS = "callbacks"
QUEUES: tuple[str, ...] = (POLL_JOBS, ERP_EVENTS, NOTIFICATIONS, CALLBACKS)


class EnvelopeError(ValueError):
    """A queue message that cannot be read; the reason goes with it to the dead-letter queue."""


@dataclass(frozen=True)
class Envelope:
    """One queue message: what it is, whose it is, and how to recognise it again.

    ``key`` is the idempotency key (the Service Bus MessageId); ``correlation_id``
    follows one ERP change through every stage and log line; ``attempt`` counts
    the re-enqueues this work has had after transient failures.
    """

    type: str
    connection: str
    key: str
    payload: dict[str, Any]
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempt: int = 0
    version: int = ENVELOPE_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {
                "type": self.type,
                "version": self.version,
                "connection": self.connection,
                "correlation_id": self.correlation_id,
                "key": self.key,
                "attempt": self.attempt,
                "payload": self.payload,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def next_attempt(self) -> Envelope:
        return replace(self, attempt=self.attempt + 1)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EnvelopeError("not a JSON object")
        missing = [name for name in ("type", "version", "connection", "key", "payload") if name not in data]
        if missing:
            raise EnvelopeError(f"missing field(s): {', '.join(missing)}")
        for name in ("type", "connection", "key"):
            if not isinstance(data[name], str) or not data[name]:
                raise EnvelopeError(f"{name}: must be a non-empty string")
        if not isinstance(data["payload"], dict):
            raise EnvelopeError("payload: must be a JSON object")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise EnvelopeError("version: must be an integer")
        attempt = data.get("attempt", 0)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise EnvelopeError("attempt: must be a non-negative integer")
        correlation_id = data.get("correlation_id") or uuid.uuid4().hex
        if not isinstance(correlation_id, str):
            raise EnvelopeError("correlation_id: must be a string")
        return cls(
            type=data["type"],
            connection=data["connection"],
            key=data["key"],
            payload=data["payload"],
            correlation_id=correlation_id,
            attempt=attempt,
            version=version,
        )
