"""notifications: one job per message to one recipient, handed to its channel's flow.

A job row (id = the stable job id) carries the send through its states (``jobs.py``):
pending -> dispatching -> the provider's statuses; or suppressed (opted out), failed
(a permanent error), verifying (waiting for a one-time passcode). However often a
notification is delivered, its job is sent once: each flow claims it before sending and,
before any resend, asks its provider whether the first try landed.

- Each channel kind names its flow in ``shared.kinds`` (SMS and calls: ``twilio_flow``; Slack
  cards: ``slack_flow``; email: ``email_flow``); a flow meets ``shared.pipeline.flows.ChannelFlow``.
"""

from __future__ import annotations

from shared import kinds
from shared.config.loading import get_config
from shared.model import NOTIFICATION, NOTIFICATIONS, Envelope
from shared.outcomes import PermanentFailure
from shared.pipeline.jobs import DISPATCH_LEASE_SECONDS, mark_not_sent, open_job
from shared.pipeline.registry import handles
from shared.pipeline.twilio_flow import Delivery
from shared.storage.tables import get_stores

# What the tests take from here: the stage's entry and the Twilio attempt it runs.
__all__ = ["DISPATCH_LEASE_SECONDS", "Delivery", "deliver_notification", "open_job"]


@handles(NOTIFICATIONS, NOTIFICATION, on_dead_letter=mark_not_sent)
def deliver_notification(envelope: Envelope) -> None:
    payload = envelope.payload
    config, stores = get_config(), get_stores()
    connection = config.connections.get(payload.get("via", ""))
    kind = kinds.CHANNELS.get(connection.kind) if connection is not None else None
    if connection is None or kind is None:
        raise PermanentFailure(f"no channel connection named {payload.get('via')!r} in the configuration "
                               f"(channel kinds: {', '.join(kinds.CHANNELS)})")
    kinds.load(kind.flow).deliver(stores, connection, envelope, open_job(stores, envelope))
