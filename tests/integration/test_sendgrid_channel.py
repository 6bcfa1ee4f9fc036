"""SendGridChannel against the fake SendGrid over real HTTP: the body, refusals, throttling, lost answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from shared.channels.sendgrid.client import (
    CUSTOM_ARG,
    SENDGRID_RETRY_POLICY,
    MailOutcomeUnknown,
    MailRejected,
    SendGridChannel,
)
from shared.channels.sendgrid.connection import SendGridConnection
from shared.config.model import SecretRef
from shared.http import RetryLater
from shared.storage.secrets import EnvSecretProvider
from tests.fakes.sendgrid import MAIL_SEND, FakeSendGrid

pytestmark = pytest.mark.timeout(60)

SENDER = "alerts@contoso.example"
TO = "ap@fabrikam.example"
KEY_NAME = "sendgrid-api-key"
JOB = "0123456789abcdef0123456789abcdef"
SEND = f"POST {MAIL_SEND}"


class RecordingSleep:
    """Stands in for time.sleep: records each wait, and sleeps it for real (the fake's window is real)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        server.verify_sender(SENDER)
        yield server


@pytest.fixture
def key(fake: FakeSendGrid) -> str:
    return fake.add_api_key()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def connection_for(fake: FakeSendGrid, **changes: Any) -> SendGridConnection:
    return SendGridConnection(name="sendgrid-main", api_key=SecretRef(KEY_NAME), from_email=SENDER,
                              from_name="Contoso AP", api_base_url=fake.base_url, **changes)


def channel_for(fake: FakeSendGrid, key: str, sleep: RecordingSleep | None = None, **policy: Any) -> SendGridChannel:
    return SendGridChannel(connection_for(fake), EnvSecretProvider(env={KEY_NAME: key}),
                           policy=replace(SENDGRID_RETRY_POLICY, **policy), sleep=sleep or RecordingSleep())


def test_a_mail_is_one_json_post_with_the_bearer_key_and_the_job_id(fake: FakeSendGrid, key: str) -> None:
    result = channel_for(fake, key).send_mail(" Fabrikam AP <ap@fabrikam.example>", "Invoice INV-1", "Posted.", JOB)
    [request] = fake.requests_to(SEND)
    assert request.headers["Authorization"] == f"Bearer {key}"
    assert request.content_type == "application/json"
    assert request.json == {
        "personalizations": [{"to": [{"email": TO}], "custom_args": {CUSTOM_ARG: JOB}}],
        "from": {"email": SENDER, "name": "Contoso AP"}, "subject": "Invoice INV-1",
        "content": [{"type": "text/plain", "value": "Posted."}],
    }
    [mail] = fake.mails(to=TO)
    assert (result.message_id, result.status) == (mail.message_id, "accepted")


@pytest.mark.parametrize(
    ("subject", "text", "message"),
    [("", "Posted.", "subject: The subject is required"),
     ("Invoice", "", "content.0.value: The content value must be a string at least one character in length.")],
)
def test_a_refused_body_is_a_rejection_naming_the_field(fake: FakeSendGrid, key: str, subject: str, text: str,
                                                        message: str) -> None:
    with pytest.raises(MailRejected) as caught:
        channel_for(fake, key).send_mail(TO, subject, text, JOB)
    assert caught.value.status == 400 and message in caught.value.message
    assert len(fake.requests_to(SEND)) == 1  # not retried


def test_a_wrong_key_an_unverified_sender_and_a_huge_mail_are_rejections(fake: FakeSendGrid, key: str) -> None:
    with pytest.raises(MailRejected) as wrong:
        channel_for(fake, "SG.not.the-key").send_mail(TO, "s", "t", JOB)
    assert wrong.value.status == 401
    stranger = SendGridChannel(replace(connection_for(fake), from_email="x@elsewhere.example"),
                               EnvSecretProvider(env={KEY_NAME: key}))
    with pytest.raises(MailRejected) as unverified:
        stranger.send_mail(TO, "s", "t", JOB)
    assert unverified.value.status == 403 and "from: The from address does not match" in unverified.value.message
    fake.max_body_bytes = 1000
    with pytest.raises(MailRejected) as huge:
        channel_for(fake, key).send_mail(TO, "s", "x" * 2000, JOB)
    assert huge.value.status == 413 and huge.value.message == "content too large"
    assert fake.mails() == []


def test_a_bad_address_is_refused_before_any_request(fake: FakeSendGrid, key: str) -> None:
    with pytest.raises(MailRejected, match="not a valid email address"):
        channel_for(fake, key).send_mail("ap at fabrikam", "s", "t", JOB)
    assert fake.requests == []


def test_a_missing_key_is_a_rejection_without_a_request(fake: FakeSendGrid) -> None:
    with pytest.raises(MailRejected, match="secret 'sendgrid-api-key' not found"):
        channel_for(fake, "").send_mail(TO, "s", "t", JOB)
    assert fake.requests == []


def test_a_429_waits_until_the_rate_limit_resets_then_sends_once(fake: FakeSendGrid, key: str,
                                                                  sleep: RecordingSleep) -> None:
    fake.limit_rate(1, period=0.8)
    channel = channel_for(fake, key, sleep)
    channel.send_mail(TO, "first", "t", JOB)
    channel.send_mail(TO, "second", "t", JOB)
    sends = fake.requests_to(SEND)
    assert len(sends) == 3 and len(fake.mails()) == 2
    assert len(sleep.waits) == 1 and 1.0 <= sleep.waits[0] <= 2.0  # X-RateLimit-Reset, whole seconds
    assert sends[2].wall_time >= sends[1].wall_time + 1.0


def test_retry_after_wins_over_the_reset_time_when_sendgrid_sends_it(key: str, sleep: RecordingSleep) -> None:
    with FakeSendGrid(send_retry_after=True) as fake:
        fake.verify_sender(SENDER)
        fake.add_api_key(key)
        fake.fail_next(1, status=429, headers={"Retry-After": "1", "X-RateLimit-Reset": str(int(time.time()) + 60)})
        channel_for(fake, key, sleep).send_mail(TO, "s", "t", JOB)
        assert sleep.waits == [1.0] and len(fake.mails()) == 1


def test_a_reset_further_off_than_is_worth_sleeping_goes_back_to_the_queue(fake: FakeSendGrid, key: str,
                                                                           sleep: RecordingSleep) -> None:
    fake.fail_next(1, status=429, headers={"X-RateLimit-Reset": str(int(time.time()) + 30)})
    with pytest.raises(RetryLater) as later:
        channel_for(fake, key, sleep).send_mail(TO, "s", "t", JOB)
    assert 28 <= later.value.delay <= 31 and later.value.status == 429
    assert sleep.waits == [] and fake.mails() == []


def test_throttled_every_time_hands_back_to_the_queue(fake: FakeSendGrid, key: str, sleep: RecordingSleep) -> None:
    fake.fail_next(4, status=429, headers={"X-RateLimit-Reset": "0"})  # a reset already past: wait the floor
    with pytest.raises(RetryLater) as later:
        channel_for(fake, key, sleep).send_mail(TO, "s", "t", JOB)
    assert sleep.waits == [1.0, 1.0, 1.0] and later.value.delay == 1.0
    assert fake.mails() == []


def test_a_503_is_retried_inline(fake: FakeSendGrid, key: str, sleep: RecordingSleep) -> None:
    fake.fail_next(1, status=503, headers={})
    channel_for(fake, key, sleep).send_mail(TO, "s", "t", JOB)
    assert sleep.waits == [1.0] and len(fake.mails()) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_5xx_that_may_have_sent_is_an_unknown_outcome_and_is_not_repeated(fake: FakeSendGrid, key: str,
                                                                            status: int) -> None:
    fake.fail_nth(1, status=status)
    with pytest.raises(MailOutcomeUnknown, match=f"HTTP {status}"):
        channel_for(fake, key).send_mail(TO, "s", "t", JOB)
    assert len(fake.requests_to(SEND)) == 1


def test_a_lost_answer_is_an_unknown_outcome_though_sendgrid_has_the_mail(fake: FakeSendGrid, key: str) -> None:
    fake.stall_after_handling(1, seconds=5.0)
    with pytest.raises(MailOutcomeUnknown, match="ReadTimeout"):
        channel_for(fake, key, read_timeout=0.5).send_mail(TO, "s", "t", JOB)
    assert len(fake.mails()) == 1 and len(fake.requests_to(SEND)) == 1


def test_a_dropped_connection_is_an_unknown_outcome(fake: FakeSendGrid, key: str) -> None:
    fake.drop_next(1)
    with pytest.raises(MailOutcomeUnknown):
        channel_for(fake, key).send_mail(TO, "s", "t", JOB)
    assert len(fake.requests_to(SEND)) == 1


def test_nobody_listening_is_retried_and_then_handed_back(key: str, sleep: RecordingSleep) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = SendGridConnection(name="sendgrid-main", api_key=SecretRef(KEY_NAME), from_email=SENDER,
                                api_base_url=f"http://127.0.0.1:{port}")
    channel = SendGridChannel(closed, EnvSecretProvider(env={KEY_NAME: key}),
                              policy=replace(SENDGRID_RETRY_POLICY, base_delay=0.01), sleep=sleep)
    with pytest.raises(RetryLater):
        channel.send_mail(TO, "s", "t", JOB)
    assert len(sleep.waits) == SENDGRID_RETRY_POLICY.max_attempts - 1


def test_a_rotated_key_is_used_without_a_new_channel(fake: FakeSendGrid, key: str) -> None:
    env = {KEY_NAME: "SG.old.revoked"}
    channel = SendGridChannel(connection_for(fake), EnvSecretProvider(env=env))
    with pytest.raises(MailRejected):
        channel.send_mail(TO, "s", "t", JOB)
    env[KEY_NAME] = key
    assert channel.send_mail(TO, "s", "t", JOB).message_id
