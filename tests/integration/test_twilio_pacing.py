"""SMS paced per sender, on Azurite and the fake Twilio: a burst waits in our queue, not in Twilio's,
goes out no faster than the sender's rate, and each message once, however often it went back."""

from __future__ import annotations

import base64
import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from shared.channels.twilio.client import reset_twilio_channels
from shared.channels.twilio.connection import (
    LONG_CODE_SENDS_PER_SECOND,
    MESSAGING_SERVICE_SENDS_PER_SECOND,
    SETTINGS,
    TOLL_FREE_SENDS_PER_SECOND,
    TwilioConnection,
    sender_rate,
)
from shared.config.fields import Invalid
from shared.config.model import SecretRef
from shared.model import Envelope
from shared.pipeline import pacing, registry
from shared.pipeline.consume import Delivery as QueueDelivery
from shared.pipeline.consume import consume
from shared.pipeline.deliver import Delivery, open_job
from shared.storage.bus import StorageQueueBus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import Stores
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.timeout(60)

CREATE = "POST /2010-04-01/Accounts/"
RATE = 2.0  # SMS per second from the sender under test
BURST = 8
HORIZON = 2.5  # short, so that part of the burst goes back to the queue for its slot


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTwilio, TwilioConnection]]:
    fake = FakeTwilio().start()
    creds = fake.add_test_account()
    monkeypatch.setenv("PACED_TWILIO_KEY_SECRET", creds.api_key_secret)
    monkeypatch.setenv("PACED_TWILIO_AUTH_TOKEN", creds.auth_token)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    reset_secret_provider()
    reset_twilio_channels()
    connection = TwilioConnection(
        name=f"paced-{uuid.uuid4().hex[:8]}", account_sid=creds.account_sid, api_key_sid=creds.api_key_sid,
        api_key_secret=SecretRef("paced-twilio-key-secret"), auth_token=SecretRef("paced-twilio-auth-token"),
        from_number=creds.phone_number, api_base_url=fake.base_url, verify_base_url=fake.base_url,
        sends_per_second=RATE,
    )
    yield fake, connection
    reset_twilio_channels()
    reset_secret_provider()
    fake.stop()


def sms(connection: TwilioConnection, n: int) -> Envelope:
    job_id = uuid.uuid4().hex
    return Envelope("test.sms", connection.name, job_id, {
        "job_id": job_id, "rule": "r", "channel": "sms", "via": connection.name, "to": f"+1415555{n:04d}",
        "record": f"fo|VendorInvoice|usmf|PACE{n}", "text": f"Invoice PACE{n} posted.",
    })


def run_queue(bus: StorageQueueBus, queue: str, until: int, fake: FakeTwilio) -> list[str]:
    """As the host does: each poll's batch handled concurrently by the consumer, until the fake holds
    ``until`` messages and the queue is empty. The consumer's outcomes, in order."""
    client = bus._queue(queue)
    outcomes: list[str] = []
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        for _ in range(600):
            batch = list(client.receive_messages(max_messages=BURST, visibility_timeout=60))
            if not batch and len(fake.requests_to(CREATE)) >= until:
                return outcomes

            def handle(message: object) -> str:
                body = base64.b64decode(message.content)  # type: ignore[attr-defined]
                outcome = consume(QueueDelivery(queue, body, message.id, message.dequeue_count), bus)  # type: ignore[attr-defined]
                client.delete_message(message)  # type: ignore[arg-type]
                return outcome

            outcomes += pool.map(handle, batch)
            if not batch:
                time.sleep(0.1)
    raise AssertionError("the queue did not drain")


def test_a_burst_from_one_sender_goes_out_at_its_rate_each_sms_once(
        stores: Stores, bus: StorageQueueBus, twilio: tuple[FakeTwilio, TwilioConnection],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, connection = twilio
    monkeypatch.setattr(pacing, "INLINE_HORIZON", HORIZON)
    queue = "q-" + uuid.uuid4().hex[:12]
    registry.handles(queue, "test.sms")(
        lambda envelope: Delivery(stores, connection, envelope, open_job(stores, envelope)).run())
    burst = [sms(connection, n) for n in range(BURST)]
    for envelope in burst:
        bus.send(queue, envelope)

    outcomes = run_queue(bus, queue, BURST, fake)

    assert outcomes.count("handled") == BURST and "requeued" in outcomes  # some waited on the queue for their slot
    creates = fake.requests_to(CREATE)
    assert len(creates) == BURST  # nothing refused, nothing sent twice
    assert sorted(m.to for m in fake.messages()) == sorted(e.payload["to"] for e in burst)
    # By the fake's clock at arrival: one slot apart, less the storage write between a slot and its send.
    arrivals = sorted(request.at for request in creates)
    assert all(later - earlier >= 0.8 / RATE for earlier, later in itertools.pairwise(arrivals))
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) <= RATE * 1.05
    for envelope in burst:
        job = stores.jobs.get(envelope.payload["job_id"])
        assert job is not None and job.status == "queued" and job.fields["provider_id"].startswith("SM")


def test_a_sender_s_rate_is_configured_or_follows_the_kind_of_sender() -> None:
    base = TwilioConnection(name="t", account_sid="AC" + "0" * 32, api_key_sid="SK" + "0" * 32,
                            api_key_secret=SecretRef("k"), auth_token=SecretRef("a"), from_number="+14155550100")
    assert sender_rate(base) == LONG_CODE_SENDS_PER_SECOND == 1.0
    assert sender_rate(replace(base, from_number="+18885550100")) == TOLL_FREE_SENDS_PER_SECOND == 3.0
    assert sender_rate(replace(base, messaging_service_sid="MG" + "0" * 32)) == MESSAGING_SERVICE_SENDS_PER_SECOND
    assert sender_rate(replace(base, from_number="+18885550100", sends_per_second=10)) == 10


@pytest.mark.parametrize("value", [0, -1, True, "2"])
def test_a_rate_of_nothing_or_not_a_number_is_refused(value: object) -> None:
    raw = {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
           "api_key_secret": {"secret": "k"}, "auth_token": {"secret": "a"}, "from_number": "+14155550100"}
    assert SETTINGS.build("t", {**raw, "sends_per_second": 2.5}).sends_per_second == 2.5  # type: ignore[attr-defined]
    with pytest.raises(Invalid):
        SETTINGS.build("t", {**raw, "sends_per_second": value})
