"""After whole flows, no phone number, message text or secret is readable outside sealed storage:
not in the app's log, not in queue messages in flight or dead-lettered, not in ops answers."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable

import requests
from azure.storage.queue import QueueServiceClient

from shared.model import NOTIFICATION, NOTIFICATIONS, QUEUES, Envelope
from tests.e2e.conftest import CLIENT_SECRET, FUNCTION_KEY, MASTER_KEY, SLACK_SIGNING_SECRET, Stack, text_in
from tests.e2e.test_dynamics_to_twilio import invoice_event, new_phone, record_of
from tests.support.app import TEST_DATA_PROTECTION_KEY
from tests.support.waiting import wait_for

REPLY = "Please call me back about the remittance, SCAN-REPLY"


def written_forms(number: str) -> list[str]:
    """The ways a US number in E.164 is commonly written."""
    digits = number.removeprefix("+1")
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    return [number, digits, f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area} {exchange} {line}",
            f"{area}.{exchange}.{line}"]


def queue_texts(stack: Stack) -> list[str]:
    """Every message waiting in every queue and every dead-letter queue, decoded."""
    service = QueueServiceClient.from_connection_string(stack.azurite.connection_string)
    texts = []
    for name in [*QUEUES, *(f"{queue}-poison" for queue in QUEUES)]:
        client = service.get_queue_client(name)
        try:
            messages = client.peek_messages(max_messages=32)
        except Exception:  # a queue not created yet holds nothing
            continue
        texts += [base64.b64decode(message.content).decode("utf-8", errors="replace") for message in messages]
    return texts


def ops_answers(stack: Stack, records: Iterable[str]) -> list[str]:
    headers = {"x-functions-key": MASTER_KEY}
    answers = [requests.get(f"{stack.base_url}/api/ops/audit", params={"record": record}, headers=headers,
                            timeout=10).text for record in records]
    answers.append(requests.get(f"{stack.base_url}/api/ops/deadletters", params={"state": "all"},
                                headers=headers, timeout=30).text)
    return answers


def test_no_number_text_or_secret_is_readable_after_whole_flows(stack: Stack) -> None:
    sms_phone, call_phone, stop_phone, dead_phone = (new_phone() for _ in range(4))
    invoice = f"INV-PRIV-{uuid.uuid4().hex[:6]}"
    # An SMS to a number written the national way, its status callbacks, and a reply to it.
    national = written_forms(sms_phone)[2]
    assert stack.post_events(invoice_event(invoice, national)).status_code == 202
    [message] = wait_for(lambda: stack.twilio.messages(to=sms_phone), what="the SMS")
    for status in ("sent", "delivered"):
        stack.twilio.advance_message(message.sid, status)
    text_in(stack.twilio, stack.base_url, stack.twilio.inbound_sms_params(sms_phone, stack.twilio_creds.phone_number,
                                                                           REPLY))
    # A call, and a STOP from another number.
    call_invoice = f"INV-PRIV-CALL-{uuid.uuid4().hex[:6]}"
    assert stack.post_events(invoice_event(call_invoice, call_phone, amount=25000.0)).status_code == 202
    wait_for(lambda: stack.twilio.calls(to=call_phone), what="the call")
    text_in(stack.twilio, stack.base_url, stack.twilio.inbound_sms_params(stop_phone, stack.twilio_creds.phone_number,
                                                                           "STOP"))
    # A notification that cannot be delivered is dead-lettered with its recipient and text on board.
    doomed = Envelope(NOTIFICATION, "no-such-channel", uuid.uuid4().hex, {
        "job_id": uuid.uuid4().hex, "channel": "sms", "via": "no-such-channel", "to": dead_phone,
        "text": "Doomed text SCAN-DEAD", "record": record_of("INV-PRIV-DEAD")})
    stack.send(NOTIFICATIONS, doomed)
    wait_for(lambda: "dead-lettered" in stack.steps(record_of("INV-PRIV-DEAD")), what="the dead letter")
    # A request that names its function key in the URL, as Dynamics' endpoint does.
    requests.get(f"{stack.base_url}/api/health", params={"code": FUNCTION_KEY}, timeout=10)
    record = record_of(invoice)
    wait_for(lambda: "reply" in stack.steps(record), what="the reply recorded")

    readable = {
        "the app's log": [stack.log()],
        "queue messages": queue_texts(stack),
        "ops answers": ops_answers(stack, [record, record_of(call_invoice), record_of("INV-PRIV-DEAD")]),
    }
    numbers = [form for phone in (sms_phone, call_phone, stop_phone, dead_phone) for form in written_forms(phone)]
    texts = [REPLY, "SCAN-DEAD", message.body]
    secrets = [CLIENT_SECRET, stack.twilio_creds.api_key_secret, stack.twilio_creds.auth_token, stack.slack.bot_token,
               SLACK_SIGNING_SECRET, TEST_DATA_PROTECTION_KEY, FUNCTION_KEY, MASTER_KEY]
    # The scan saw the dead letter itself (listing dead letters collects them, so queues were read first).
    assert any(doomed.payload["job_id"] in text for text in readable["queue messages"])
    found = [(where, secret_or_pii) for where, blobs in readable.items() for blob in blobs
             for secret_or_pii in (*numbers, *texts, *secrets) if secret_or_pii in blob]
    assert found == []
    # The operator can still see what happened, masked.
    entries = requests.get(f"{stack.base_url}/api/ops/audit", params={"record": record},
                           headers={"x-functions-key": MASTER_KEY}, timeout=10).json()["entries"]
    assert {"routed", "sent", "status", "reply"} <= {entry["step"] for entry in entries}
