"""Domain types shared by every stage, starting with the queue envelope."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

ENVELOPE_VERSION = 1


def parse_utc_time(value: str) -> datetime:
    """ISO 8601 as ERPs, providers and operators write it (``Z``, up to 7 fractional digits
    as F&O writes them, or no offset at all, read as UTC); the moment in UTC."""
    text = value.strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # Python reads at most microseconds
    moment = datetime.fromisoformat(text)
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00: in UTC it falls before year 1
        raise ValueError(f"{value!r} is outside the years a time can have in UTC") from None


def now_iso() -> str:
    """This moment in UTC as ISO 8601 text, as job rows record times."""
    return datetime.now(UTC).isoformat()

# The queues between stages (DESIGN.md, "The flow").
POLL_JOBS = "poll-jobs"
ERP_EVENTS = "erp-events"
NOTIFICATIONS = "notifications"
CALLBACKS = "callbacks"
QUEUES: tuple[str, ...] = (POLL_JOBS, ERP_EVENTS, NOTIFICATIONS, CALLBACKS)


class EnvelopeError(ValueError):
    """A queue message that cannot be read; the reason goes with it to the dead-letter queue."""


# Payload fields that travel in clear on the queues: what routes the work and what the logs'
# dimensions name, never a recipient or a text. Everything else goes sealed (``SEALED_FIELD``),
# so phone numbers, message texts and provider parameters are unreadable in queues and dead letters.
CLEAR_PAYLOAD_FIELDS = frozenset({
    "job_id", "rule", "channel", "via", "source", "record", "entity", "record_entity", "record_key", "stamp",
    "received_at", "paced_slot", "view_id", "entities",
})
SEALED_FIELD = "sealed"


def seal_payload(payload: Mapping[str, Any], seal: Callable[[str], str]) -> dict[str, Any]:
    """The payload as it travels: routing fields in clear, the rest sealed in one field."""
    clear = {name: value for name, value in payload.items() if _travels_clear(name, value)}
    rest = {name: value for name, value in payload.items() if name not in clear}
    if rest:
        clear[SEALED_FIELD] = seal(json.dumps(rest, separators=(",", ":"), ensure_ascii=False))
    return clear


def open_payload(payload: Mapping[str, Any], unseal: Callable[[str], str]) -> dict[str, Any]:
    """The payload as the stage reads it: the sealed field opened and merged back."""
    sealed = payload.get(SEALED_FIELD)
    if not isinstance(sealed, str):
        return dict(payload)
    try:
        rest = json.loads(unseal(sealed))
    except ValueError as exc:
        raise EnvelopeError(f"the sealed payload does not open: {exc}") from None
    if not isinstance(rest, dict):
        raise EnvelopeError("the sealed payload is not a JSON object")
    return {**{name: value for name, value in payload.items() if name != SEALED_FIELD}, **rest}


def _travels_clear(name: str, value: Any) -> bool:
    # "event" is an event type (clear) on notifications but a whole ERP payload on business events.
    return name in CLEAR_PAYLOAD_FIELDS or (name == "event" and isinstance(value, str))


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
    deferrals: int = 0  # returns to the queue to wait for a send slot: waiting, not failing
    since: str = ""  # when this stage first failed on the work (ISO time): retries are bounded by age
    redrives: int = 0  # times an operator sent this work again from the dead letters

    def to_json(self, seal: Callable[[str], str] | None = None) -> str:
        """The message text; with ``seal``, every payload field but the routing ones is sealed."""
        data: dict[str, Any] = {
            "type": self.type,
            "version": self.version,
            "connection": self.connection,
            "correlation_id": self.correlation_id,
            "key": self.key,
            "attempt": self.attempt,
            "deferrals": self.deferrals,
            "payload": seal_payload(self.payload, seal) if seal else self.payload,
        }
        if self.since:
            data["since"] = self.since
        if self.redrives:
            data["redrives"] = self.redrives
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def next_attempt(self) -> Envelope:
        return replace(self, attempt=self.attempt + 1)

    @classmethod
    def from_json(cls, raw: str | bytes, unseal: Callable[[str], str] | None = None) -> Envelope:
        """Read a message; with ``unseal``, a sealed payload is opened (EnvelopeError if it cannot be)."""
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
        deferrals = data.get("deferrals", 0)
        if not isinstance(deferrals, int) or isinstance(deferrals, bool) or deferrals < 0:
            raise EnvelopeError("deferrals: must be a non-negative integer")
        correlation_id = data.get("correlation_id") or uuid.uuid4().hex
        if not isinstance(correlation_id, str):
            raise EnvelopeError("correlation_id: must be a string")
        since = data.get("since", "")
        if not isinstance(since, str):
            raise EnvelopeError("since: must be a string")
        redrives = data.get("redrives", 0)
        if not isinstance(redrives, int) or isinstance(redrives, bool) or redrives < 0:
            raise EnvelopeError("redrives: must be a non-negative integer")
        payload = open_payload(data["payload"], unseal) if unseal else data["payload"]
        return cls(
            type=data["type"],
            connection=data["connection"],
            key=data["key"],
            payload=payload,
            correlation_id=correlation_id,
            attempt=attempt,
            version=version,
            deferrals=deferrals,
            since=since,
            redrives=redrives,
        )


# --- envelope types ---------------------------------------------------------------------------

BUSINESS_EVENT = "dynamics.business_event"  # erp-events: one Dynamics business event as received
NOTIFICATION = "notification.send"  # notifications: one message to one recipient (a job)
TWILIO_STATUS = "twilio.status"  # callbacks: a message or call status callback
TWILIO_INBOUND = "twilio.inbound"  # callbacks: an inbound SMS
TWILIO_GATHER = "twilio.gather"  # callbacks: a key pressed during a voice alert
TWILIO_VOICE_MESSAGE = "twilio.voice_message"  # callbacks: a recorded voice message and its transcription
SLACK_INTERACTION = "slack.interaction"  # callbacks: a button click on a Slack card
SLACK_EVENT = "slack.event"  # callbacks: an Events API callback
SENDGRID_EVENT = "sendgrid.event"  # callbacks: one event of a SendGrid Event Webhook post
SLACK_CODE_APPROVED = "slack.code_approved"  # callbacks: Verify approved the code of a Slack approval
SLACK_REJECT_REASON = "slack.reject_reason"  # callbacks: a Reject with its reason, submitted in Slack's modal
POLL_RUN = "poll.run"  # poll-jobs: read the due entities of one connection for changes
ERP_CHANGE = "erp.change"  # erp-events: one changed record found by a poll
ERP_NOTE = "erp.note"  # callbacks: a reply to write back as a note on its ERP record
JOB_FOLLOWUP = "job.followup"  # notifications: a scheduled check of a job (reconciliation, an escalation step)


@dataclass(frozen=True)
class Change:
    """One changed ERP record found by a poll, keyed by its change stamp."""

    entity: str
    key: str  # the record's key in its ERP (key fields joined by "|")
    stamp: Any  # a timezone-aware datetime or an integer change counter
    record_entity: str
    record_key: str
    fields: dict[str, Any]


# --- delivery status ---------------------------------------------------------------------------

# Status only moves forward: a late "sent" never overwrites "delivered". Our own states
# before the provider has the message come first; messages and calls share one scale;
# final states share a rank, and "read" may still follow "delivered". "unknown": a send whose
# answer was lost, with no way to ask the provider; never sent again unless replayed. "expired":
# not sent by the deadline of its rule's validity period; never sent.
_STATUS_RANK: dict[str, int] = {
    "pending": 0, "held": 0, "verifying": 1, "dead-lettered": 1, "dispatching": 2,
    "scheduled": 3, "accepted": 3, "unknown": 3, "queued": 4, "initiated": 4, "sending": 5, "ringing": 5,
    "sent": 6, "in-progress": 6,
    "delivered": 7, "undelivered": 7, "failed": 7, "completed": 7, "busy": 7, "no-answer": 7,
    "canceled": 7, "suppressed": 7, "expired": 7,
    "read": 8,
}
FINAL_STATUSES = frozenset(s for s, rank in _STATUS_RANK.items() if rank >= 7)
# Jobs an operator may send again: the recipient did not get the message.
# "dead-lettered": its notification ran out of retries before it reached the provider.
REPLAYABLE_STATUSES = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled", "unknown", "dead-lettered"})
# Jobs that may be stuck when they have not changed for a while (their message dead-lettered by
# the host, say): replayed too, through the same lookup-before-resend as any redelivery.
IN_FLIGHT_STATUSES = frozenset({"pending", "dispatching"})


def status_rank(status: str) -> int:
    return _STATUS_RANK.get(status, -1)


def moves_forward(current: str, new: str) -> bool:
    """Whether a job at ``current`` may take ``new``; unknown statuses never overwrite known ones."""
    return status_rank(new) > status_rank(current)


def job_id_for(event_key: str, rule_id: str, channel: str, recipient: str) -> str:
    """The stable id of one send: the same ERP change never produces two sends to one recipient."""
    import hashlib

    material = "\x1f".join((event_key, rule_id, channel, recipient))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]
