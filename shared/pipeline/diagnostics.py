"""A ping that crosses every queue, so an operator can prove the pipeline is wired.

``POST /api/admin/ping`` puts one ``diagnostic.ping`` envelope on each queue; each
queue's consumer records an audit step ``ping-received`` under the ping's correlation id.
"""

from __future__ import annotations

import uuid

from shared.model import QUEUES, Envelope
from shared.pipeline.registry import handles
from shared.storage.bus import MessageBus
from shared.storage.tables import get_stores

PING = "diagnostic.ping"
PING_CONNECTION = "diagnostics"


def send_pings(bus: MessageBus) -> str:
    correlation_id = uuid.uuid4().hex
    for queue in QUEUES:
        bus.send(queue, Envelope(PING, PING_CONNECTION, f"ping|{correlation_id}|{queue}",
                                 {"queue": queue}, correlation_id))
    return correlation_id


def _record_ping(envelope: Envelope) -> None:
    get_stores().audit.append(envelope.correlation_id, "ping-received", connection=envelope.connection,
                              queue=envelope.payload.get("queue", ""))


for _queue in QUEUES:
    handles(_queue, PING)(_record_ping)
