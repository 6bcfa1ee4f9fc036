"""What a channel's flow offers the pipeline: it renders its own payload and delivers its own jobs.

Each channel kind in ``shared.kinds`` names its flow module (``twilio_flow``, ``slack_flow``,
``email_flow``). ``process`` asks the flow to render what the message says while the ERP
record is at hand; ``deliver`` hands it the job to send once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared.config.model import Connection, Rule
from shared.model import Envelope
from shared.storage.tables import JobRow, Stores
from shared.templates import Template


class ChannelFlow(Protocol):
    def render(self, rule: Rule, template: Template, fields: Mapping[str, Any], event_type: str) -> dict[str, Any]:
        """The payload fields this channel needs, beyond the job's own (id, rule, recipient, record)."""
        ...

    def deliver(self, stores: Stores, connection: Connection, envelope: Envelope, job: JobRow) -> None:
        """Send the job once: claim it, ask the provider before any resend, record the outcome."""
        ...
