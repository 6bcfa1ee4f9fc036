"""Status callbacks that arrive before their send is recorded are kept, not dropped."""

from __future__ import annotations

import base64
import json
import time
import uuid

from shared.model import TWILIO_STATUS, Envelope
from shared.pipeline import registry
from shared.pipeline.callbacks import record_status
from shared.pipeline.consume import Delivery, consume
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import Stores


def test_a_callback_for_a_sid_not_linked_yet_is_tried_again_then_applied(
    app_stores: Stores, bus: StorageQueueBus
) -> None:
    queue = "cb-" + uuid.uuid4().hex[:10]
    registry.handles(queue, TWILIO_STATUS)(record_status)
    sid = "SM" + uuid.uuid4().hex
    callback = Envelope(TWILIO_STATUS, "twilio-main", f"{sid}|delivered",
                        {"params": {"MessageSid": sid, "MessageStatus": "delivered"}})
    assert consume(Delivery(queue, callback.to_json().encode(), "m1", 1), bus) == "requeued"
    deadline = time.monotonic() + 10
    received: list = []
    while not received and time.monotonic() < deadline:  # invisible for the 2 s it asked to wait
        received = list(bus._queue(queue).receive_messages(max_messages=1, visibility_timeout=30))
        time.sleep(0.1)
    [message] = received
    again = Envelope.from_json(base64.b64decode(message.content))
    assert again.attempt == 1

    stores = app_stores
    job = stores.jobs.create("job-early", {"status": "queued", "record": "fo|VendorInvoice|usmf|X"})
    assert job is not None
    stores.providers.link(sid, "job-early", "twilio-main")
    assert consume(Delivery(queue, json.dumps(json.loads(again.to_json())).encode(), "m2", 1), bus) == "handled"
    stored = stores.jobs.get("job-early")
    assert stored is not None and stored.status == "delivered"
