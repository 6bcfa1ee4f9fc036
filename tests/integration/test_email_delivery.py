"""Email jobs on the delivery state machine, against Azurite and the fake SendGrid; events back onto jobs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.channels.sendgrid import client as sendgrid_module
from shared.channels.sendgrid.client import CUSTOM_ARG, SENDGRID_RETRY_POLICY, SendGridChannel, reset_sendgrid_channels
from shared.channels.sendgrid.connection import SendGridConnection
from shared.clients import PerConnection
from shared.config.model import SecretRef
from shared.http import RetryLater
from shared.model import NOTIFICATION, SENDGRID_EVENT, Envelope
from shared.pipeline.deliver import DISPATCH_LEASE_SECONDS, open_job
from shared.pipeline.email_flow import EmailDelivery, record_email_event
from shared.storage.secrets import EnvSecretProvider, reset_secret_provider
from shared.storage.tables import Stores
from tests.fakes.sendgrid import MAIL_SEND, FakeSendGrid, Mail

pytestmark = pytest.mark.timeout(60)

SENDER = "alerts@contoso.example"
KEY_NAME = "sendgrid-main-api-key"
RECORD = "fo|VendorInvoice|usmf|MAIL-1"
SEND = f"POST {MAIL_SEND}"


@pytest.fixture
def stores(app_stores: Stores) -> Stores:
    """The app's own stores: the event handler opens them from the settings."""
    return app_stores


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        server.verify_sender(SENDER)
        yield server


@pytest.fixture
def connection(fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> Iterator[SendGridConnection]:
    """The process's channel for this connection, with a short read timeout so a lost answer is quick."""
    key = fake.add_api_key()
    monkeypatch.setattr(sendgrid_module, "_channels", PerConnection(lambda made: SendGridChannel(
        made, EnvSecretProvider(env={KEY_NAME: key}), policy=replace(SENDGRID_RETRY_POLICY, read_timeout=1.0))))
    reset_secret_provider()
    yield SendGridConnection(name="sendgrid-main", api_key=SecretRef(KEY_NAME), from_email=SENDER,
                             api_base_url=fake.base_url)
    reset_sendgrid_channels()


def notification(to: str, **payload: Any) -> Envelope:
    job_id = uuid.uuid4().hex
    return Envelope(NOTIFICATION, "sendgrid-main", job_id, {
        "job_id": job_id, "rule": "invoice-email", "channel": "email", "via": "sendgrid-main", "to": to,
        "record": RECORD, "subject": "Invoice MAIL-1 posted", "text": "Invoice MAIL-1 from Fabrikam posted.",
        **payload})


def deliver(stores: Stores, connection: SendGridConnection, envelope: Envelope) -> None:
    EmailDelivery(stores, connection, envelope, open_job(stores, envelope)).run()


def job_of(stores: Stores, envelope: Envelope) -> Any:
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None
    return job


def steps(stores: Stores, envelope: Envelope) -> list[str]:
    return [entry.step for entry in stores.audit.by_correlation(envelope.correlation_id)]


def event(fake: FakeSendGrid, mail: Mail, name: str, **fields: Any) -> Envelope:
    body = fake.event_for(mail, name, **fields)
    return Envelope(SENDGRID_EVENT, "sendgrid-main", body["sg_event_id"], {"event": body})


def new_address() -> str:
    return f"ap-{uuid.uuid4().hex[:8]}@fabrikam.example"


# --- out -----------------------------------------------------------------------------------------


def test_an_email_job_is_sent_once_with_its_job_id_and_recorded(stores: Stores, fake: FakeSendGrid,
                                                                connection: SendGridConnection) -> None:
    to = new_address()
    envelope = notification(f"Fabrikam AP <{to}>")
    deliver(stores, connection, envelope)
    [mail] = fake.mails(to=to)
    assert mail.custom_args == {CUSTOM_ARG: envelope.payload["job_id"]}
    assert (mail.subject, mail.text) == ("Invoice MAIL-1 posted", "Invoice MAIL-1 from Fabrikam posted.")
    job = job_of(stores, envelope)
    assert (job.status, job.fields["provider_id"], job.fields["to"]) == ("accepted", mail.message_id, to)
    link = stores.providers.lookup(mail.message_id)
    assert link is not None and link.job_id == envelope.payload["job_id"]
    [sent] = stores.audit.by_correlation(envelope.correlation_id)
    assert sent.step == "sent" and sent.record == RECORD
    assert dict(sent.detail) == {"provider_id": mail.message_id, "status": "accepted", "channel": "email", "to": to}

    deliver(stores, connection, envelope)  # redelivered by the queue
    assert len(fake.requests_to(SEND)) == 1
    assert steps(stores, envelope) == ["sent", "duplicate"]


def test_two_deliveries_of_one_job_at_once_send_one_mail(stores: Stores, fake: FakeSendGrid,
                                                        connection: SendGridConnection) -> None:
    to = new_address()
    envelope = notification(to)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def run() -> None:
        job = open_job(stores, envelope)
        start.wait()  # both have read the job before either claims it
        try:
            EmailDelivery(stores, connection, envelope, job).run()
            outcomes.append("ran")
        except RetryLater as later:
            outcomes.append(f"later: {later.reason}")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(fake.mails(to=to)) == 1
    assert sorted(outcomes) == ["later: another delivery of this job is under way", "ran"]


def test_a_refused_mail_fails_the_job_with_sendgrids_words(stores: Stores, fake: FakeSendGrid,
                                                          connection: SendGridConnection) -> None:
    envelope = notification(new_address(), subject="")
    deliver(stores, connection, envelope)
    job = job_of(stores, envelope)
    assert job.status == "failed" and job.fields["error_code"] == 400
    assert "subject: The subject is required" in job.fields["reason"]
    [failed] = stores.audit.by_correlation(envelope.correlation_id)
    assert failed.step == "failed" and "subject: The subject is required" in failed.detail["reason"]
    deliver(stores, connection, envelope)
    assert len(fake.requests_to(SEND)) == 1  # a refusal is final


def test_an_address_that_is_not_one_fails_the_job_without_a_request(stores: Stores, fake: FakeSendGrid,
                                                                    connection: SendGridConnection) -> None:
    envelope = notification("ap at fabrikam")
    deliver(stores, connection, envelope)
    job = job_of(stores, envelope)
    assert job.status == "failed" and "not a valid email address" in job.fields["reason"]
    assert fake.requests == []


def test_a_long_throttle_puts_the_job_back_and_the_next_attempt_sends(stores: Stores, fake: FakeSendGrid,
                                                                      connection: SendGridConnection) -> None:
    to = new_address()
    envelope = notification(to)
    reset = datetime.now(UTC) + timedelta(seconds=30)
    fake.fail_next(1, status=429, headers=fake.rate_limit_headers(reset.timestamp()))
    with pytest.raises(RetryLater) as later:
        deliver(stores, connection, envelope)
    assert 28 <= later.value.delay <= 31
    assert job_of(stores, envelope).status == "pending" and fake.mails(to=to) == []
    deliver(stores, connection, envelope)  # the queue's next attempt
    assert len(fake.mails(to=to)) == 1 and job_of(stores, envelope).status == "accepted"


def test_a_lost_answer_leaves_the_job_unknown_and_it_is_never_sent_again(stores: Stores, fake: FakeSendGrid,
                                                                        connection: SendGridConnection) -> None:
    to = new_address()
    envelope = notification(to)
    fake.stall_after_handling(1, seconds=4.0)
    deliver(stores, connection, envelope)
    job = job_of(stores, envelope)
    assert job.status == "unknown" and not job.fields.get("provider_id")
    assert "not sent again" in job.fields["reason"]
    assert steps(stores, envelope) == ["unknown"]
    deliver(stores, connection, envelope)
    [mail] = fake.mails(to=to)  # SendGrid had it all along; one mail, never two
    assert len(fake.requests_to(SEND)) == 1

    record_email_event(event(fake, mail, "processed"))  # its first event carries the job id: adopted
    job = job_of(stores, envelope)
    assert (job.status, job.fields["provider_id"]) == ("queued", mail.message_id)
    link = stores.providers.lookup(mail.message_id)
    assert link is not None and link.job_id == envelope.payload["job_id"]
    adopted = stores.audit.by_correlation(envelope.correlation_id)[-1]
    assert adopted.step == "status" and adopted.detail["adopted"] is True and adopted.detail["status"] == "queued"


def test_a_delivery_that_stopped_after_claiming_is_not_sent_again(stores: Stores, fake: FakeSendGrid,
                                                                  connection: SendGridConnection) -> None:
    envelope = notification(new_address())
    job = open_job(stores, envelope)
    long_ago = (datetime.now(UTC) - timedelta(seconds=DISPATCH_LEASE_SECONDS + 5)).isoformat()
    stores.jobs.update(job, {"status": "dispatching", "dispatch_at": long_ago})  # a crash after the claim
    deliver(stores, connection, envelope)
    assert job_of(stores, envelope).status == "unknown" and fake.requests == []


def test_a_live_claim_makes_the_other_delivery_wait(stores: Stores, fake: FakeSendGrid,
                                                    connection: SendGridConnection) -> None:
    envelope = notification(new_address())
    job = open_job(stores, envelope)
    stores.jobs.update(job, {"status": "dispatching", "dispatch_at": datetime.now(UTC).isoformat()})
    with pytest.raises(RetryLater, match="under way"):
        deliver(stores, connection, envelope)
    assert job_of(stores, envelope).status == "dispatching" and fake.requests == []


# --- events back -----------------------------------------------------------------------------------


def sent_mail(stores: Stores, fake: FakeSendGrid, connection: SendGridConnection) -> tuple[Envelope, Mail]:
    to = new_address()
    envelope = notification(to)
    deliver(stores, connection, envelope)
    [mail] = fake.mails(to=to)
    return envelope, mail


def status_lines(stores: Stores, envelope: Envelope) -> list[tuple[str, str]]:
    return [(e.detail["event"], e.detail["status"]) for e in stores.audit.by_correlation(envelope.correlation_id)
            if e.step == "status"]


def test_events_move_the_status_forward_only_and_each_counts_once(stores: Stores, fake: FakeSendGrid,
                                                                  connection: SendGridConnection) -> None:
    envelope, mail = sent_mail(stores, fake, connection)
    delivered = event(fake, mail, "delivered")
    record_email_event(delivered)
    record_email_event(event(fake, mail, "processed"))  # late: changes nothing
    record_email_event(replace(delivered, correlation_id=uuid.uuid4().hex))  # SendGrid posting it again
    assert job_of(stores, envelope).status == "delivered"
    record_email_event(event(fake, mail, "open"))
    record_email_event(event(fake, mail, "open"))  # opened again: nothing new
    assert job_of(stores, envelope).status == "read"
    assert status_lines(stores, envelope) == [("delivered", "delivered"), ("open", "read")]
    [line] = [e for e in stores.audit.by_correlation(envelope.correlation_id) if e.detail.get("event") == "delivered"]
    assert line.record == RECORD and line.job_id == envelope.payload["job_id"] and line.detail["event_at"]


def test_a_bounce_records_sendgrids_reason_and_a_deferral_only_an_audit_line(stores: Stores, fake: FakeSendGrid,
                                                                             connection: SendGridConnection) -> None:
    envelope, mail = sent_mail(stores, fake, connection)
    deferred = event(fake, mail, "deferred", attempt="2")
    record_email_event(deferred)
    record_email_event(replace(deferred, correlation_id=uuid.uuid4().hex))  # posted again: one line
    assert job_of(stores, envelope).status == "accepted"
    record_email_event(event(fake, mail, "bounce"))
    job = job_of(stores, envelope)
    assert job.status == "undelivered" and job.fields["error_code"] == "5.1.1"
    assert "does not exist" in job.fields["reason"]
    trail = stores.audit.by_correlation(envelope.correlation_id)
    assert [e.step for e in trail] == ["sent", "deferred", "status"]
    assert trail[1].detail["attempt"] == "2" and "try again later" in trail[1].detail["reason"]


def test_a_drop_fails_the_job(stores: Stores, fake: FakeSendGrid, connection: SendGridConnection) -> None:
    envelope, mail = sent_mail(stores, fake, connection)
    record_email_event(event(fake, mail, "dropped", reason="Unsubscribed Address"))
    job = job_of(stores, envelope)
    assert job.status == "failed" and job.fields["reason"] == "Unsubscribed Address"


def test_an_event_without_our_custom_arg_finds_the_job_by_message_id(stores: Stores, fake: FakeSendGrid,
                                                                     connection: SendGridConnection) -> None:
    envelope, mail = sent_mail(stores, fake, connection)
    body = fake.event_for(mail, "delivered")
    del body[CUSTOM_ARG]
    record_email_event(Envelope(SENDGRID_EVENT, "sendgrid-main", body["sg_event_id"], {"event": body}))
    assert job_of(stores, envelope).status == "delivered"


def test_events_of_other_mails_are_ignored(stores: Stores, fake: FakeSendGrid,
                                           connection: SendGridConnection) -> None:
    envelope, _sent = sent_mail(stores, fake, connection)
    stranger = Mail("Zx9" * 7 + "A", ("x@y.example",), SENDER, None, "s", {}, {}, {}, 0.0)
    record_email_event(event(fake, stranger, "delivered"))  # sent by someone else on the same account
    record_email_event(event(fake, stranger, "delivered", **{CUSTOM_ARG: uuid.uuid4().hex}))  # a job of another
    forged_job = event(fake, stranger, "bounce", **{CUSTOM_ARG: envelope.payload["job_id"]})
    record_email_event(forged_job)  # names our job but another mail: not ours to apply
    assert job_of(stores, envelope).status == "accepted"
    assert steps(stores, envelope) == ["sent"]


def test_an_event_before_the_send_is_recorded_is_tried_again(stores: Stores, fake: FakeSendGrid,
                                                             connection: SendGridConnection) -> None:
    envelope, mail = sent_mail(stores, fake, connection)
    job = job_of(stores, envelope)
    stores.jobs.update(job, {"status": "dispatching", "provider_id": None})  # as just before record_mail
    with pytest.raises(RetryLater, match="not recorded as sent"):
        record_email_event(event(fake, mail, "processed"))


def test_events_of_a_mail_sent_before_a_replay_are_ignored(stores: Stores, fake: FakeSendGrid,
                                                           connection: SendGridConnection) -> None:
    envelope, first = sent_mail(stores, fake, connection)
    job = job_of(stores, envelope)
    stores.jobs.update(job, {"status": "pending", "provider_id": None,
                             "previous_provider_ids": [first.message_id]})  # as a replay leaves it
    deliver(stores, connection, envelope)
    record_email_event(event(fake, first, "bounce"))
    job = job_of(stores, envelope)
    assert job.status == "accepted" and job.fields["provider_id"] != first.message_id
