"""Delivery under races: two deliveries of one job send once."""

from __future__ import annotations

import base64
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.channels.twilio.client import reset_twilio_channels
from shared.channels.twilio.connection import TwilioConnection
from shared.http import RetryLater
from shared.model import NOTIFICATION, NOTIFICATIONS, TWILIO_STATUS, Envelope
from shared.pipeline.callbacks import record_status
from shared.pipeline.deliver import DISPATCH_LEASE_SECONDS, Delivery, open_job
from shared.pipeline.replay import replay_job
from shared.storage.bus import StorageQueueBus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import CONTACTS, PROVIDER_IDS, LastContact, Stores, table_key
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
    from shared.config.model import SecretRef

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


# --- lost answers and stops mid-send ----------------------------------------------------------------

CREATE = "POST /2010-04-01/Accounts/"


def voice_notification(job_id: str, to: str) -> Envelope:
    return Envelope(NOTIFICATION, "race-twilio", job_id, {
        "job_id": job_id, "rule": "r", "channel": "voice", "via": "race-twilio", "to": to,
        "record": "fo|VendorInvoice|usmf|CALL", "say": "Invoice CALL needs approval.",
    })


def deliver_once(stores: Stores, connection: TwilioConnection, envelope: Envelope) -> None:
    Delivery(stores, connection, envelope, open_job(stores, envelope)).run()


def test_an_sms_created_but_unanswered_and_still_queued_is_adopted_not_sent_again(
    stores: Stores, twilio: tuple
) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550123")
    fake.drop_after_handling(match=CREATE)  # Twilio created the message; its answer was lost

    with pytest.raises(RetryLater, match="outcome unknown"):
        deliver_once(stores, connection, envelope)
    [message] = fake.messages(to="+14155550123")
    assert message.status == "queued" and message.date_sent is None  # no callback moves it on

    deliver_once(stores, connection, envelope)

    assert len(fake.messages(to="+14155550123")) == 1
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.fields["provider_id"] == message.sid and job.status == "queued"
    link = stores.contacts.job_of_sid(connection.name, message.sid)
    assert link is not None and link.job_id == envelope.payload["job_id"]
    [sent] = [e for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE") if e.step == "sent"]
    assert sent.detail["adopted"] is True and sent.detail["provider_id"] == message.sid


def test_a_delivery_that_stopped_mid_send_is_looked_up_once_its_lease_ran_out(stores: Stores, twilio: tuple) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550124")
    fake.drop_after_handling(match=CREATE)
    with pytest.raises(RetryLater):
        deliver_once(stores, connection, envelope)
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None
    job = stores.jobs.update(job, {"ambiguous": False})  # as if the process stopped before noting it

    with pytest.raises(RetryLater, match="under way"):  # within the lease: another delivery may be sending
        deliver_once(stores, connection, envelope)
    long_ago = (datetime.now(UTC) - timedelta(seconds=DISPATCH_LEASE_SECONDS + 5)).isoformat()
    stores.jobs.update(job, {"dispatch_at": long_ago})
    deliver_once(stores, connection, envelope)

    [message] = fake.messages(to="+14155550124")
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.fields["provider_id"] == message.sid


def test_a_call_created_but_unanswered_is_placed_once(stores: Stores, twilio: tuple) -> None:
    fake, connection = twilio
    envelope = voice_notification(uuid.uuid4().hex, "+14155550125")
    fake.drop_after_handling(match=CREATE)

    with pytest.raises(RetryLater, match="outcome unknown"):
        deliver_once(stores, connection, envelope)
    deliver_once(stores, connection, envelope)
    deliver_once(stores, connection, envelope)  # a late duplicate of the notification

    [call] = fake.calls(to="+14155550125")
    assert call.status == "queued"
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.fields["provider_id"] == call.sid


def test_a_message_already_linked_to_another_job_is_not_adopted(stores: Stores, twilio: tuple) -> None:
    fake, connection = twilio
    first, second = notification(uuid.uuid4().hex, "+14155550126"), notification(uuid.uuid4().hex, "+14155550126")
    deliver_once(stores, connection, first)  # the same text to the same number, by another job
    fake.drop_next(match=CREATE)  # this one never reached Twilio

    with pytest.raises(RetryLater, match="outcome unknown"):
        deliver_once(stores, connection, second)
    deliver_once(stores, connection, second)

    first_sid = stores.jobs.get(first.payload["job_id"]).fields["provider_id"]
    second_sid = stores.jobs.get(second.payload["job_id"]).fields["provider_id"]
    assert len(fake.messages(to="+14155550126")) == 2 and first_sid != second_sid


def test_callbacks_find_and_repair_a_job_whose_link_write_failed(
    stores: Stores, twilio: tuple, app_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, connection = twilio
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://connector.example.com")
    envelope = notification(uuid.uuid4().hex, "+14155550127")
    job_id = envelope.payload["job_id"]
    real_remember = stores.contacts.remember
    failures = iter([True])

    def link_failing_once(connection: str, number: str, contact: LastContact, *, sid: str = "") -> None:
        if next(failures, False):
            raise ConnectionError("storage went away")
        real_remember(connection, number, contact, sid=sid)

    monkeypatch.setattr(stores.contacts, "remember", link_failing_once)
    with pytest.raises(ConnectionError):
        deliver_once(stores, connection, envelope)
    [message] = fake.messages(to="+14155550127")
    assert stores.contacts.job_of_sid("race-twilio", message.sid) is None
    assert stores.contacts.last("race-twilio", "+14155550127") is None

    callback = urlsplit(message.status_callback or "")
    assert callback.path == "/api/twilio/status/race-twilio" and parse_qs(callback.query) == {"job": [job_id]}
    for status in ("sent", "delivered"):
        record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{message.sid}|{status}",
                               {"params": fake.message_status_params(message.sid, status),
                                "job_id": parse_qs(callback.query)["job"][0]}))

    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered" and job.fields["provider_id"] == message.sid
    link = stores.contacts.job_of_sid("race-twilio", message.sid)
    assert link is not None and link.job_id == job_id
    contact = stores.contacts.last("race-twilio", "+14155550127")  # where a reply from that number lands
    assert contact is not None and contact.job_id == job_id and contact.record == "fo|VendorInvoice|usmf|RACE"
    deliver_once(stores, connection, envelope)  # the notification again, later: nothing more is sent
    assert len(fake.messages(to="+14155550127")) == 1


def test_a_callback_between_the_link_and_the_job_update_is_kept(
    stores: Stores, twilio: tuple, app_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550128")
    real_remember = stores.contacts.remember

    def remember_then_delivered(name: str, number: str, contact: LastContact, *, sid: str = "") -> None:
        real_remember(name, number, contact, sid=sid)
        [message] = fake.messages(to="+14155550128")  # Twilio is quick: delivered before the job says sent
        record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{message.sid}|delivered",
                               {"params": fake.message_status_params(message.sid, "delivered")}))

    monkeypatch.setattr(stores.contacts, "remember", remember_then_delivered)
    deliver_once(stores, connection, envelope)

    [message] = fake.messages(to="+14155550128")
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "delivered" and job.fields["provider_id"] == message.sid


def status_callback(fake: Any, sid: str, value: str, job_id: str) -> None:
    """Twilio's status callback for ``sid``, its URL naming ``job_id`` (none when "")."""
    named = {"job_id": job_id} if job_id else {}
    record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{sid}|{value}",
                           {"params": fake.message_status_params(sid, value), **named}))


def test_an_instance_that_saw_a_job_before_its_replay_elsewhere_still_applies_the_new_send_s_callbacks(
    stores: Stores, twilio: tuple, app_stores: Stores, bus: StorageQueueBus
) -> None:
    # Two instances: the test's stores send and replay; the app's (record_status) saw the first send fail.
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550131")
    job_id = envelope.payload["job_id"]

    def status(sid: str, value: str) -> None:
        status_callback(fake, sid, value, job_id)

    deliver_once(stores, connection, envelope)
    [first] = fake.messages(to="+14155550131")
    status(first.sid, "failed")
    assert replay_job(stores, bus, job_id).replayed
    deliver_once(stores, connection, envelope)
    second = next(m for m in fake.messages(to="+14155550131") if m.sid != first.sid)

    status(second.sid, "sent")  # the app last saw the job failed: it must not take that for where it is
    status(second.sid, "delivered")
    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered" and job.fields["provider_id"] == second.sid
    steps = [(e.step, e.detail.get("status"), e.detail.get("provider_id"))
             for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE") if e.job_id == job_id and e.step == "status"]
    assert steps == [("status", "failed", first.sid), ("status", "sent", second.sid),
                     ("status", "delivered", second.sid)]


def test_a_late_callback_of_a_replayed_jobs_earlier_send_changes_nothing(
    stores: Stores, twilio: tuple, app_stores: Stores, bus: StorageQueueBus
) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550133")
    job_id = envelope.payload["job_id"]

    deliver_once(stores, connection, envelope)
    [first] = fake.messages(to="+14155550133")
    status_callback(fake, first.sid, "failed", job_id)
    assert replay_job(stores, bus, job_id).replayed

    status_callback(fake, first.sid, "failed", job_id)  # Twilio posts it again, before the new send
    status_callback(fake, first.sid, "undelivered", "")  # found by the earlier send's link
    stores.tables.table(CONTACTS).delete_entity(table_key("race-twilio"), f"sid-{first.sid}")
    status_callback(fake, first.sid, "undelivered", job_id)  # by the job its URL names alone
    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "pending" and job.fields.get("provider_id") is None

    deliver_once(stores, connection, envelope)
    second = next(m for m in fake.messages(to="+14155550133") if m.sid != first.sid)
    status_callback(fake, first.sid, "undelivered", job_id)
    status_callback(fake, second.sid, "sent", job_id)
    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "sent" and job.fields["provider_id"] == second.sid
    steps = [(e.detail.get("status"), e.detail.get("provider_id"))
             for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE") if e.job_id == job_id and e.step == "status"]
    assert steps == [("failed", first.sid), ("sent", second.sid)]


def test_a_callback_for_an_earlier_unadopted_send_does_not_move_the_job(
    stores: Stores, twilio: tuple, app_stores: Stores
) -> None:
    _fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550129")
    deliver_once(stores, connection, envelope)
    stray = "SM" + uuid.uuid4().hex  # a message of this job that no lookup matched, never linked

    record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{stray}|failed",
                           {"params": {"MessageSid": stray, "MessageStatus": "failed"},
                            "job_id": envelope.payload["job_id"]}))

    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "queued" and stores.contacts.job_of_sid("race-twilio", stray) is None
    with pytest.raises(RetryLater):  # no job named and no link yet: Twilio may be ahead of the sender
        record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{stray}|sent",
                               {"params": {"MessageSid": stray, "MessageStatus": "sent"}}))


def counted_reads(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Point reads of ``stores``' tables from now on, by table; each still goes to Azurite."""
    reads: Counter[str] = Counter()
    real_row = stores.tables.row

    def row(name: str, partition_key: str, row_key: str) -> Any:
        reads[name] += 1
        return real_row(name, partition_key, row_key)

    monkeypatch.setattr(stores.tables, "row", row)
    return reads


def test_the_callbacks_of_a_recorded_send_find_their_job_without_a_provider_id_lookup(
    stores: Stores, twilio: tuple, app_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550132")
    job_id = envelope.payload["job_id"]
    deliver_once(stores, connection, envelope)
    [message] = fake.messages(to="+14155550132")
    reads = counted_reads(app_stores, monkeypatch)

    for status in ("sent", "delivered"):
        record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{message.sid}|{status}",
                               {"params": fake.message_status_params(message.sid, status), "job_id": job_id}))

    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered" and job.fields["provider_id"] == message.sid
    assert reads[CONTACTS] == reads[PROVIDER_IDS] == 0
    statuses = [e.detail["status"] for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE")
                if e.job_id == job_id and e.step == "status"]
    assert statuses == ["sent", "delivered"]

    stray = "SM" + uuid.uuid4().hex  # not the job's message: its link decides, as before
    record_status(Envelope(TWILIO_STATUS, "race-twilio", f"{stray}|read",
                           {"params": {"MessageSid": stray, "MessageStatus": "read"}, "job_id": job_id}))
    assert reads[CONTACTS] == reads[PROVIDER_IDS] == 1  # its link, beside the contacts, else in providerids
    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered"


def test_an_approved_code_releases_its_job_once_even_after_a_stop_before_the_release(
    stores: Stores, twilio: tuple, storage_connection_string: str
) -> None:
    from shared.channels.twilio.client import twilio_channel
    from shared.pipeline.jobs import merge
    from shared.pipeline.verify import check_gate
    from shared.settings import StorageSettings
    from shared.storage.bus import StorageQueueBus, read_envelope

    fake, connection = twilio
    connection = replace(connection, verify_service_sid="VA" + uuid.uuid4().hex)
    fake.add_verify_service(connection.verify_service_sid, connection.account_sid)
    number = "+14155550177"
    envelope = replace(notification(uuid.uuid4().hex, number), payload={
        **notification("", number).payload, "job_id": uuid.uuid4().hex, "verify": True})
    job_id = envelope.payload["job_id"]
    deliver_once(stores, connection, envelope)  # the code goes out, the job waits
    code = fake.code_for(number, connection.verify_service_sid)
    bus = StorageQueueBus(StorageSettings(storage_connection_string, None, None, None))
    bus._queue(NOTIFICATIONS).clear_messages()
    try:
        channel = twilio_channel(connection)
        # Approved by Twilio and recorded on the job, then the process stopped before the release:
        assert channel.check_verification(number, code) == "approved"
        merge(stores, job_id, {"verified": True})
        checks_before = len(fake.requests_to(lambda r: r.path.endswith("/VerificationCheck")))

        assert check_gate(stores, bus, channel, connection.name, number, code) == "approved"

        assert len(fake.requests_to(lambda r: r.path.endswith("/VerificationCheck"))) == checks_before
        assert stores.gates.find(connection.name, number) is None
        [released] = [read_envelope(base64.b64decode(m.content)) for m in bus._queue(NOTIFICATIONS).peek_messages(32)
                      if job_id in base64.b64decode(m.content).decode()]
        assert released.payload["job_id"] == job_id and released.key.endswith("|verified")
        assert check_gate(stores, bus, channel, connection.name, number, code) == "no-gate"
    finally:
        bus._queue(NOTIFICATIONS).clear_messages()
        bus.close()


# --- a first delivery creates its job already claimed ------------------------------------------------


class Stop(BaseException):
    """The process stops here (a crash, a host shutdown): nothing after it runs, nothing classifies it."""


def deliver_first(stores: Stores, connection: TwilioConnection, envelope: Envelope) -> None:
    """The notification as routed, handed to the delivery stage as the queue consumer does."""
    from shared.pipeline import twilio_flow
    from shared.pipeline.deliver import deliver_fresh

    assert deliver_fresh(stores, connection, twilio_flow, envelope)


def stop_once(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """``Delivery.<method>`` stops the process the first time it is called, then works as before."""
    real = getattr(Delivery, method)
    stops = iter([True])

    def stopping(self: Delivery, *args: object, **kwargs: object) -> object:
        if next(stops, False):
            raise Stop(method)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Delivery, method, stopping)


def lease_ran_out(stores: Stores, job_id: str) -> None:
    job = stores.jobs.get(job_id)
    assert job is not None
    long_ago = (datetime.now(UTC) - timedelta(seconds=DISPATCH_LEASE_SECONDS + 5)).isoformat()
    stores.jobs.update(job, {"dispatch_at": long_ago})


def test_a_first_delivery_sends_once_and_its_redelivery_sends_nothing(stores: Stores, twilio: tuple) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550141")

    deliver_first(stores, connection, envelope)
    deliver_first(stores, connection, envelope)  # the host delivers the same message again

    [message] = fake.messages(to="+14155550141")
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.status == "queued" and job.fields["provider_id"] == message.sid
    assert job.fields["to"] == "+14155550141" and job.fields["envelope"]  # what a replay sends again
    steps = [e.step for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE")
             if e.job_id == envelope.payload["job_id"]]
    assert steps == ["sent", "duplicate"]


def test_a_stop_between_the_claimed_create_and_the_send_sends_once_after_the_lease(
    stores: Stores, twilio: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550142")
    job_id = envelope.payload["job_id"]
    stop_once(monkeypatch, "send")

    with pytest.raises(Stop):
        deliver_first(stores, connection, envelope)
    job = stores.jobs.get(job_id)
    assert job is not None and job.status == "dispatching" and fake.messages(to="+14155550142") == []

    with pytest.raises(RetryLater, match="under way"):  # within the lease the claim may still be sending
        deliver_first(stores, connection, envelope)
    assert fake.messages(to="+14155550142") == []
    lease_ran_out(stores, job_id)
    deliver_first(stores, connection, envelope)  # Twilio is asked first: nothing there, so it is sent
    deliver_first(stores, connection, envelope)

    [message] = fake.messages(to="+14155550142")
    job = stores.jobs.get(job_id)
    assert job is not None and job.fields["provider_id"] == message.sid


def test_a_stop_after_twilio_took_the_first_send_is_adopted_not_sent_again(
    stores: Stores, twilio: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550143")
    job_id = envelope.payload["job_id"]
    stop_once(monkeypatch, "record_sent")  # Twilio created the message; nothing of it was written

    with pytest.raises(Stop):
        deliver_first(stores, connection, envelope)
    [message] = fake.messages(to="+14155550143")
    lease_ran_out(stores, job_id)
    deliver_first(stores, connection, envelope)

    assert len(fake.messages(to="+14155550143")) == 1
    job = stores.jobs.get(job_id)
    assert job is not None and job.fields["provider_id"] == message.sid
    [sent] = [e for e in stores.audit.by_record("fo|VendorInvoice|usmf|RACE")
              if e.step == "sent" and e.job_id == job_id]
    assert sent.detail["adopted"] is True


def test_a_first_delivery_waiting_for_its_slot_holds_no_claim(
    stores: Stores, twilio: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.outcomes import WaitForSlot
    from shared.pipeline import pacing

    fake, connection = twilio
    envelope = notification(uuid.uuid4().hex, "+14155550144")
    monkeypatch.setattr(pacing, "INLINE_HORIZON", 0.0)  # every slot is too far to wait for here

    with pytest.raises(WaitForSlot) as waiting:
        deliver_first(stores, connection, envelope)
    assert stores.jobs.get(envelope.payload["job_id"]) is None  # nothing claimed, nothing to wait out

    monkeypatch.setattr(pacing, "INLINE_HORIZON", 20.0)
    back = replace(envelope, payload={**envelope.payload, "paced_slot": waiting.value.slot}, deferrals=1)
    deliver_first(stores, connection, back)  # back from the queue for its slot
    [message] = fake.messages(to="+14155550144")
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None and job.fields["provider_id"] == message.sid
