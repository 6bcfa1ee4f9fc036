"""Delivery under races: two deliveries of one job send once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from shared.channels.twilio import reset_twilio_channels
from shared.config import TwilioConnection
from shared.http import RetryLater
from shared.model import NOTIFICATION, Envelope
from shared.pipeline.deliver import Delivery, open_job
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import Stores
from tests.fakes.twilio import FakeTwilio


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTwilio, TwilioConnection]]:
    fake = FakeTwilio().start()
    creds = fake.add_test_account()
    monkeypatch.setenv("RACE_TWILIO_KEY_SECRET", creds.api_key_secret)
    monkeypatch.setenv("RACE_TWILIO_AUTH_TOKEN", creds.auth_token)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    reset_secret_provider()
    reset_twilio_channels()
    from shared.config import SecretRef

    connection = TwilioConnection(
        name="race-twilio", account_sid=creds.account_sid, api_key_sid=creds.api_key_sid,
        api_key_secret=SecretRef("race-twilio-key-secret"), auth_token=SecretRef("race-twilio-auth-token"),
        from_number=creds.phone_number, api_base_url=fake.base_url, verify_base_url=fake.base_url,
    )
    yield fake, connection
    reset_twilio_channels()
    reset_secret_provider()
    fake.stop()


def notification(job_id: str, to: str) -> Envelope:
    return Envelope(NOTIFICATION, "race-twilio", job_id, {
        "job_id": job_id, "rule": "r", "channel": "sms", "via": "race-twilio", "to": to,
        "record": "fo|VendorInvoice|usmf|RACE", "text": "Invoice RACE posted.",
    })


def test_two_deliveries_of_one_job_at_once_send_one_sms(stores: Stores, twilio: tuple) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550199")
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver() -> None:
        job = open_job(stores, envelope)
        start.wait()  # both have read the job before either claims it
        try:
            Delivery(stores, connection, envelope, job).run()
            outcomes.append("ran")
        except RetryLater as later:
            outcomes.append(f"later: {later.reason}")

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(fake.messages(to="+14155550199")) == 1
    assert sorted(outcomes) == ["later: another delivery of this job is under way", "ran"]
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "queued" and job.fields["provider_id"].startswith("SM")

    Delivery(stores, connection, envelope, open_job(stores, envelope)).run()  # the requeued one, later
    assert len(fake.messages(to="+14155550199")) == 1
    assert [e.step for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE")][-1] == "duplicate"
