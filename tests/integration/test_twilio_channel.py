"""TwilioChannel against the fake Twilio over real HTTP, with the real twilio SDK underneath."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from shared.channels.signed import SignatureRefused
from shared.channels.twilio import client as channel_module
from shared.channels.twilio import signature
from shared.channels.twilio.client import (
    AmbiguousSendError,
    PermanentSendError,
    SendResult,
    TwilioChannel,
    TwilioConfigurationError,
    interactive_twilio_channel,
    reset_twilio_channels,
    twilio_channel,
)
from shared.channels.twilio.connection import TwilioConnection
from shared.config.model import SecretRef
from shared.http import RetryLater
from shared.phones import InvalidNumber, normalize_number
from shared.storage.secrets import EnvSecretProvider, reset_secret_provider
from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route
from tests.fakes.twilio import FakeTwilio, TwilioCredentials, twilio_signature
from tests.support.openapi import require_spec, validate_form_request, validate_response

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
API_SPEC = "twilio/twilio_api_v2010.json"
VERIFY_SPEC = "twilio/twilio_verify_v2.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
CUSTOMER = "+14155550100"
CUSTOMER_AS_TYPED = "(415) 555-0100"
STATUS_URL = "https://app.example.com/api/twilio/status"
KEY_SECRET_NAME = "twilio-api-key-secret"
AUTH_TOKEN_NAME = "twilio-auth-token"
CREATE_MESSAGE = "POST /2010-04-01/"
LIST_MESSAGES = "GET /2010-04-01/"


# --- helpers -------------------------------------------------------------------------------------


class RecordingSleep:
    """Stands in for time.sleep: records each wait, sleeps for real only when asked to."""

    def __init__(self, real: bool = False) -> None:
        self.waits: list[float] = []
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            import time

            time.sleep(seconds)


class CallbackSink(FakeServer):
    """The app's webhook endpoint as Twilio sees it: records POSTs, answers 204."""

    service_name = "sink"

    def routes(self) -> Sequence[Route]:
        return [route("POST", r"/.*", lambda request, match: Response(204))]


def connection_for(fake: FakeTwilio, account: TwilioCredentials, **overrides: Any) -> TwilioConnection:
    settings: dict[str, Any] = {
        "name": "twilio-main",
        "account_sid": account.account_sid,
        "api_key_sid": account.api_key_sid,
        "api_key_secret": SecretRef(KEY_SECRET_NAME),
        "auth_token": SecretRef(AUTH_TOKEN_NAME),
        "from_number": account.phone_number,
        "verify_service_sid": account.verify_service_sid,
        "api_base_url": fake.base_url,
        "verify_base_url": fake.base_url,
    }
    return TwilioConnection(**(settings | overrides))


def secrets_for(account: TwilioCredentials, **overrides: str) -> EnvSecretProvider:
    values = {KEY_SECRET_NAME: account.api_key_secret, AUTH_TOKEN_NAME: account.auth_token}
    return EnvSecretProvider(env=values | overrides)


def basic_username(request: RecordedRequest) -> str:
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode().partition(":")[0]


def single_values(request: RecordedRequest) -> dict[str, str]:
    return {name: values[0] for name, values in (request.form or {}).items()}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def account(fake: FakeTwilio) -> TwilioCredentials:
    return fake.add_test_account()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def channel(fake: FakeTwilio, account: TwilioCredentials, sleep: RecordingSleep) -> Iterator[TwilioChannel]:
    made = TwilioChannel(connection_for(fake, account), secrets_for(account), timeout=(2.0, 5.0), sleep=sleep)
    yield made
    made.close()


# --- send_sms ------------------------------------------------------------------------------------


def test_send_sms_authenticates_with_the_api_key_and_sends_a_spec_valid_form(
    fake: FakeTwilio, account: TwilioCredentials, channel: TwilioChannel
) -> None:
    result = channel.send_sms(CUSTOMER_AS_TYPED, "Invoice INV-4 needs approval", STATUS_URL)

    assert result.sid.startswith("SM") and result.status == "queued"
    [created] = fake.requests_to(CREATE_MESSAGE)
    assert created.path == f"/2010-04-01/Accounts/{account.account_sid}/Messages.json"
    assert basic_username(created) == account.api_key_sid and account.api_key_sid.startswith("SK")
    assert created.content_type == "application/x-www-form-urlencoded"
    assert single_values(created) == {
        "To": CUSTOMER,
        "From": account.phone_number,
        "Body": "Invoice INV-4 needs approval",
        "StatusCallback": STATUS_URL,
    }
    assert validate_form_request(require_spec(API_SPEC), created.path, "POST", created.form or {}) == []
    assert fake.message(result.sid).status_callback == STATUS_URL


def test_messaging_service_is_preferred_over_the_from_number(fake: FakeTwilio, account: TwilioCredentials) -> None:
    connection = connection_for(fake, account, messaging_service_sid=account.messaging_service_sid)
    channel = TwilioChannel(connection, secrets_for(account))

    result = channel.send_sms(CUSTOMER, "hello", None)

    sent = single_values(fake.requests_to(CREATE_MESSAGE)[0])
    assert sent == {"To": CUSTOMER, "MessagingServiceSid": account.messaging_service_sid, "Body": "hello"}
    assert result.status == "accepted"
    channel.close()


def test_environment_region_and_edge_cannot_redirect_the_client(
    fake: FakeTwilio, account: TwilioCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    channel = TwilioChannel(connection_for(fake, account), secrets_for(account))

    assert channel.send_sms(CUSTOMER, "hello").sid.startswith("SM")
    channel.close()


def test_ca_bundle_is_used_even_when_the_environment_names_another(
    account: TwilioCredentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "test-ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(trustme.CA().cert_pem.bytes())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))  # would win over Session.verify
    tls_fake = FakeTwilio()
    tls_fake.ssl_context = context
    with tls_fake:
        tls_fake.add_account(account.account_sid, account.auth_token)
        tls_fake.add_api_key(account.account_sid, account.api_key_sid, account.api_key_secret)
        connection = connection_for(tls_fake, account, ca_bundle=str(ca_file))
        channel = TwilioChannel(connection, secrets_for(account))
        assert tls_fake.base_url.startswith("https://")
        assert channel.send_sms(CUSTOMER, "over TLS").sid.startswith("SM")
        channel.close()


# --- place_call ----------------------------------------------------------------------------------


def test_place_call_sends_twiml_and_repeated_status_events(
    fake: FakeTwilio, account: TwilioCredentials, channel: TwilioChannel
) -> None:
    twiml = "<Response><Say>Invoice INV-4 needs your approval.</Say></Response>"

    result = channel.place_call(CUSTOMER_AS_TYPED, twiml, "https://app.example.com/api/twilio/voice-status")

    assert result.sid.startswith("CA") and result.status == "queued"
    created = fake.requests_to(CREATE_MESSAGE)[-1]
    assert created.path.endswith("/Calls.json")
    form = created.form or {}
    assert form["StatusCallbackEvent"] == ("initiated", "ringing", "answered", "completed")
    assert (form["Twiml"], form["To"], form["From"]) == ((twiml,), (CUSTOMER,), (account.phone_number,))
    assert form["StatusCallbackMethod"] == ("POST",)
    assert validate_form_request(require_spec(API_SPEC), created.path, "POST", form) == []
    assert fake.call(result.sid).status_callback_events == ("initiated", "ringing", "answered", "completed")


def test_a_call_needs_a_from_number(fake: FakeTwilio, account: TwilioCredentials) -> None:
    connection = connection_for(fake, account, from_number=None, messaging_service_sid=account.messaging_service_sid)
    channel = TwilioChannel(connection, secrets_for(account))

    with pytest.raises(TwilioConfigurationError, match="no from_number"):
        channel.place_call(CUSTOMER, "<Response/>", None)
    assert fake.requests == []
    channel.close()


# --- throttling and server errors ----------------------------------------------------------------


def test_short_retry_after_is_waited_out_inline(fake: FakeTwilio, account: TwilioCredentials) -> None:
    channel = TwilioChannel(connection_for(fake, account), secrets_for(account))  # real sleep
    fake.fail_next(status=429, headers={"Retry-After": "1"}, match=CREATE_MESSAGE)

    result = channel.send_sms(CUSTOMER, "hello")

    first, second = fake.requests_to(CREATE_MESSAGE)
    assert (first.scripted, second.scripted) == ("fail", None)
    assert second.at - first.at >= 1.0
    assert [message.sid for message in fake.messages()] == [result.sid]
    channel.close()


def test_long_retry_after_goes_back_to_the_queue(
    fake: FakeTwilio, channel: TwilioChannel, sleep: RecordingSleep
) -> None:
    fake.fail_next(status=429, headers={"Retry-After": "30"}, match=CREATE_MESSAGE)

    with pytest.raises(RetryLater) as raised:
        channel.send_sms(CUSTOMER, "hello")

    assert (raised.value.delay, raised.value.status) == (30.0, 429)
    assert len(fake.requests_to(CREATE_MESSAGE)) == 1
    assert fake.messages() == [] and sleep.waits == []


def test_503_without_retry_after_backs_off_and_succeeds(
    fake: FakeTwilio, channel: TwilioChannel, sleep: RecordingSleep
) -> None:
    fake.fail_next(status=503, headers={}, match=CREATE_MESSAGE)

    result = channel.send_sms(CUSTOMER, "hello")

    assert result.sid.startswith("SM")
    assert sleep.waits == [1.0]  # the policy's default for a throttle without Retry-After
    assert len(fake.requests_to(CREATE_MESSAGE)) == 2


def test_persistent_throttling_ends_in_retry_later_after_four_attempts(
    fake: FakeTwilio, channel: TwilioChannel, sleep: RecordingSleep
) -> None:
    fake.fail_next(n=4, status=429, headers={}, match=CREATE_MESSAGE)

    with pytest.raises(RetryLater) as raised:
        channel.send_sms(CUSTOMER, "hello")

    assert len(fake.requests_to(CREATE_MESSAGE)) == 4
    assert sleep.waits == [1.0, 1.0, 1.0]
    assert raised.value.delay == 1.0 and "after 4 attempts" in raised.value.reason


def test_500_on_create_is_ambiguous_and_not_repeated(
    fake: FakeTwilio, channel: TwilioChannel, sleep: RecordingSleep
) -> None:
    fake.fail_next(status=500, match=CREATE_MESSAGE)

    with pytest.raises(AmbiguousSendError) as raised:
        channel.send_sms(CUSTOMER, "hello")

    assert raised.value.status == 500
    assert len(fake.requests_to(CREATE_MESSAGE)) == 1 and sleep.waits == []


# --- rejections ----------------------------------------------------------------------------------


def test_a_deadline_goes_to_twilio_as_the_whole_seconds_left_within_its_range(
    fake: FakeTwilio, channel: TwilioChannel
) -> None:
    now = datetime.now(UTC)
    channel.send_sms(CUSTOMER, "within the hour", valid_until=now + timedelta(hours=1))
    channel.send_sms(CUSTOMER, "past already", valid_until=now - timedelta(seconds=5))
    channel.send_sms(CUSTOMER, "within the week", valid_until=now + timedelta(days=7))

    periods = [int(single_values(created)["ValidityPeriod"]) for created in fake.requests_to(CREATE_MESSAGE)]
    assert 0 < periods[0] <= 3600 and periods[1:] == [1, 36000]  # never more than is left; Twilio's 1 to 36,000
    for created in fake.requests_to(CREATE_MESSAGE):
        assert validate_form_request(require_spec(API_SPEC), created.path, "POST", created.form or {}) == []
    assert channel_module.validity_period(now + timedelta(seconds=90.9), now=now) == 90


@pytest.mark.parametrize("period", ["0", "36001", "-5", "12.5", "soon"])
def test_the_fake_refuses_a_validity_period_twilio_refuses(fake: FakeTwilio, account: TwilioCredentials,
                                                           period: str) -> None:
    import requests

    answer = requests.post(f"{fake.base_url}/2010-04-01/Accounts/{account.account_sid}/Messages.json",
                           auth=(account.api_key_sid, account.api_key_secret), timeout=10,
                           data={"To": CUSTOMER, "From": account.phone_number, "Body": "hi", "ValidityPeriod": period})

    assert answer.status_code == 400 and answer.json()["code"] == 21624
    assert fake.messages(to=CUSTOMER) == []


def test_twilio_invalid_number_is_permanent(fake: FakeTwilio, channel: TwilioChannel) -> None:
    message = f"The 'To' number {CUSTOMER} is not a valid phone number."
    body = {"code": 21211, "message": message, "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
    fake.fail_next(status=400, body=body, match=CREATE_MESSAGE)

    with pytest.raises(PermanentSendError) as raised:
        channel.send_sms(CUSTOMER, "hello")

    error = raised.value
    assert (error.code, error.status, error.invalid_number, error.opted_out) == (21211, 400, True, False)
    assert "21211" in str(error) and message in str(error)
    assert len(fake.requests_to(CREATE_MESSAGE)) == 1


@pytest.mark.parametrize(
    ("mark", "code", "opted_out", "invalid_number"),
    [("add_opted_out", 21610, True, False), ("add_landline", 21614, False, True)],
)
def test_recipient_rejections_say_what_is_wrong(
    fake: FakeTwilio, channel: TwilioChannel, mark: str, code: int, opted_out: bool, invalid_number: bool
) -> None:
    getattr(fake, mark)(CUSTOMER)

    with pytest.raises(PermanentSendError) as raised:
        channel.send_sms(CUSTOMER_AS_TYPED, "hello")

    error = raised.value
    assert (error.code, error.status, error.opted_out, error.invalid_number) == (code, 400, opted_out, invalid_number)


def test_an_unusable_number_fails_before_any_request(fake: FakeTwilio, channel: TwilioChannel) -> None:
    with pytest.raises(PermanentSendError) as raised:
        channel.send_sms("+1555", "hello")

    assert raised.value.invalid_number and raised.value.code is None
    assert str(raised.value) == "'+1555' is not a valid phone number"
    assert fake.requests == []


def test_wrong_credentials_are_permanent(fake: FakeTwilio, account: TwilioCredentials) -> None:
    channel = TwilioChannel(connection_for(fake, account), secrets_for(account, **{KEY_SECRET_NAME: "wrong"}))

    with pytest.raises(PermanentSendError) as raised:
        channel.send_sms(CUSTOMER, "hello")

    assert (raised.value.code, raised.value.status) == (20003, 401)
    assert len(fake.requests) == 1
    channel.close()


def test_without_an_api_key_the_account_sid_and_auth_token_send_and_a_wrong_token_is_refused(
    fake: FakeTwilio, account: TwilioCredentials
) -> None:
    connection = connection_for(fake, account, api_key_sid=None, api_key_secret=None)
    channel = TwilioChannel(connection, secrets_for(account))
    refused = TwilioChannel(connection, secrets_for(account, **{AUTH_TOKEN_NAME: "not-the-token"}))

    result = channel.send_sms(CUSTOMER, "Invoice INV-5 needs approval", STATUS_URL)
    with pytest.raises(PermanentSendError) as raised:
        refused.send_sms(CUSTOMER, "Invoice INV-5 needs approval", STATUS_URL)

    assert fake.message(result.sid).to == CUSTOMER and result.status == "queued"
    first, second = fake.requests_to(CREATE_MESSAGE)
    assert basic_username(first) == basic_username(second) == account.account_sid
    assert (raised.value.code, raised.value.status) == (20003, 401)
    assert len(fake.messages(to=CUSTOMER)) == 1
    channel.close()
    refused.close()


# --- ambiguity and find_sent_message -------------------------------------------------------------


def test_read_timeout_on_create_is_ambiguous_and_the_created_message_is_found(
    fake: FakeTwilio, account: TwilioCredentials, sleep: RecordingSleep
) -> None:
    channel = TwilioChannel(connection_for(fake, account), secrets_for(account), timeout=(2.0, 0.5), sleep=sleep)
    fake.stall_after_handling(seconds=3.0, match=CREATE_MESSAGE)
    since = datetime.now(UTC)

    with pytest.raises(AmbiguousSendError):
        channel.send_sms(CUSTOMER, "Invoice INV-9 needs approval", STATUS_URL)

    assert len(fake.requests_to(CREATE_MESSAGE)) == 1 and sleep.waits == []
    [created] = fake.messages(to=CUSTOMER)
    # Still queued, it has no sent date: the lookup must not depend on one.
    assert channel.find_sent_message(CUSTOMER, "Invoice INV-9 needs approval", since) == SendResult(
        created.sid, "queued")
    fake.advance_message(created.sid, "sent", send=False)

    found = channel.find_sent_message(CUSTOMER_AS_TYPED, "Invoice INV-9 needs approval", since)

    assert found == SendResult(created.sid, "sent")
    lookup = fake.requests_to(LIST_MESSAGES)[-1]
    assert lookup.path == f"/2010-04-01/Accounts/{account.account_sid}/Messages.json"
    assert lookup.query_value("To") == CUSTOMER and lookup.query_value("From") == account.phone_number
    assert not [name for name in lookup.query if name.startswith("DateSent")]
    channel.close()


def test_dropped_connection_on_create_is_ambiguous(fake: FakeTwilio, channel: TwilioChannel) -> None:
    since = datetime.now(UTC)
    fake.drop_next(match=CREATE_MESSAGE)

    with pytest.raises(AmbiguousSendError):
        channel.send_sms(CUSTOMER, "hello")

    assert len(fake.requests_to(CREATE_MESSAGE)) == 1
    assert channel.find_sent_message(CUSTOMER, "hello", since) is None  # dropped before creating: safe to resend


def test_refused_connection_is_retried_and_never_ambiguous(account: TwilioCredentials, sleep: RecordingSleep) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    connection = TwilioConnection(
        name="twilio-down",
        account_sid=account.account_sid,
        api_key_sid=account.api_key_sid,
        api_key_secret=SecretRef(KEY_SECRET_NAME),
        auth_token=SecretRef(AUTH_TOKEN_NAME),
        from_number=account.phone_number,
        api_base_url=dead,
        verify_base_url=dead,
    )
    channel = TwilioChannel(connection, secrets_for(account), sleep=sleep)

    with pytest.raises(RetryLater) as raised:
        channel.send_sms(CUSTOMER, "hello")

    assert len(sleep.waits) == 3  # four attempts, nothing was sent
    assert "ConnectionError" in raised.value.reason
    channel.close()


def test_find_sent_message_pages_newest_first_and_stops_at_older_messages(
    fake: FakeTwilio, channel: TwilioChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_module, "FIND_PAGE_SIZE", 2)
    old = channel.send_sms(CUSTOMER, "repeat me")
    fake.message(old.sid).date_created -= timedelta(hours=1)
    since = datetime.now(UTC) - timedelta(minutes=1)
    sent = [channel.send_sms(CUSTOMER, body) for body in ("first", "repeat me", "third", "fourth", "fifth")]
    channel.send_sms("+14155550199", "first")  # another recipient: filtered out by To
    for message in fake.messages():
        fake.advance_message(message.sid, "delivered", send=False)

    fake.clear_log()
    assert channel.find_sent_message(CUSTOMER, "first", since) == SendResult(sent[0].sid, "delivered")
    assert len(fake.requests_to(LIST_MESSAGES)) == 3  # fifth+fourth | third+repeat me | first+old

    fake.clear_log()
    assert channel.find_sent_message(CUSTOMER, "repeat me", since) == SendResult(sent[1].sid, "delivered")
    assert len(fake.requests_to(LIST_MESSAGES)) == 2  # found on the second page: no further page read

    fake.clear_log()
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert channel.find_sent_message(CUSTOMER, "fifth", later) is None
    assert len(fake.requests_to(LIST_MESSAGES)) == 1  # the newest is already older than `since`


def test_find_sent_message_retries_a_server_error(
    fake: FakeTwilio, channel: TwilioChannel, sleep: RecordingSleep
) -> None:
    since = datetime.now(UTC)
    result = channel.send_sms(CUSTOMER, "hello")
    fake.advance_message(result.sid, "sent", send=False)
    fake.fail_next(status=502, match=LIST_MESSAGES)

    assert channel.find_sent_message(CUSTOMER, "hello", since) == SendResult(result.sid, "sent")
    assert len(sleep.waits) == 1 and len(fake.requests_to(LIST_MESSAGES)) == 2


def test_find_sent_message_with_a_messaging_service_finds_it_accepted_and_skips_anothers(
    fake: FakeTwilio, account: TwilioCredentials, sleep: RecordingSleep
) -> None:
    connection = connection_for(fake, account, from_number=None, messaging_service_sid=account.messaging_service_sid)
    channel = TwilioChannel(connection, secrets_for(account), timeout=(2.0, 5.0), sleep=sleep)
    since = datetime.now(UTC)
    earlier = channel.send_sms(CUSTOMER, "Invoice INV-10 needs approval")
    latest = channel.send_sms(CUSTOMER, "Invoice INV-10 needs approval")

    assert channel.find_sent_message(CUSTOMER, "Invoice INV-10 needs approval", since) == SendResult(
        latest.sid, "accepted")
    lookup = fake.requests_to(LIST_MESSAGES)[-1]
    assert lookup.query_value("From") is None  # the service picks the sender: no From to filter on
    taken = {latest.sid}
    found = channel.find_sent_message(CUSTOMER, "Invoice INV-10 needs approval", since, skip=taken.__contains__)
    assert found == SendResult(earlier.sid, "accepted")
    channel.close()


def test_a_call_whose_answer_was_lost_is_found_while_still_queued(
    fake: FakeTwilio, account: TwilioCredentials, sleep: RecordingSleep
) -> None:
    channel = TwilioChannel(connection_for(fake, account), secrets_for(account), timeout=(2.0, 0.5), sleep=sleep)
    since = datetime.now(UTC)
    fake.drop_after_handling(match="POST /2010-04-01/Accounts/")

    with pytest.raises(AmbiguousSendError):
        channel.place_call(CUSTOMER, "<Response><Say>Invoice INV-11</Say></Response>", STATUS_URL)

    [created] = fake.calls(to=CUSTOMER)
    assert channel.find_placed_call(CUSTOMER_AS_TYPED, since) == SendResult(created.sid, "queued")
    lookup = fake.requests_to("GET /2010-04-01/")[-1]
    assert lookup.path == f"/2010-04-01/Accounts/{account.account_sid}/Calls.json"
    assert lookup.query_value("To") == CUSTOMER and lookup.query_value("From") == account.phone_number
    assert not [name for name in lookup.query if name.startswith("StartTime")]
    assert channel.find_placed_call(CUSTOMER, datetime.now(UTC) + timedelta(minutes=1)) is None
    assert channel.find_placed_call(CUSTOMER, since, skip=lambda sid: sid == created.sid) is None
    channel.close()


# --- the fake's Messages list, checked against the spec ------------------------------------------


def test_message_list_shape_and_filters_follow_the_spec(
    fake: FakeTwilio, account: TwilioCredentials, channel: TwilioChannel
) -> None:
    import requests

    api = require_spec(API_SPEC)
    for body in ("one", "two", "three"):
        fake.advance_message(channel.send_sms(CUSTOMER, body).sid, "sent", send=False)
    channel.send_sms(CUSTOMER, "still queued")
    today = datetime.now(UTC).date()
    url = f"{fake.base_url}/2010-04-01/Accounts/{account.account_sid}/Messages.json"
    auth = (account.api_key_sid, account.api_key_secret)

    def listing(**params: str) -> requests.Response:
        return requests.get(url, params=params, auth=auth, timeout=5)

    first = listing(To=CUSTOMER, **{"DateSent>": today.isoformat()}, PageSize="2").json()
    list_schema = api["paths"][MESSAGES_PATH]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(first) == set(list_schema["properties"])
    assert [message["body"] for message in first["messages"]] == ["three", "two"]
    assert all(validate_response(api, "api.v2010.account.message", message) == [] for message in first["messages"])
    assert (first["page"], first["page_size"], first["start"], first["end"], first["previous_page_uri"]) == (
        0,
        2,
        0,
        1,
        None,
    )
    second = requests.get(fake.base_url + first["next_page_uri"], auth=auth, timeout=5).json()
    assert [message["body"] for message in second["messages"]] == ["one"]
    assert second["next_page_uri"] is None and second["previous_page_uri"] is not None

    assert len(listing(To=CUSTOMER).json()["messages"]) == 4  # no date filter: the queued one too
    assert listing(**{"DateSent<": (today - timedelta(days=1)).isoformat()}).json()["messages"] == []
    assert len(listing(DateSent=today.isoformat()).json()["messages"]) == 3
    rejected = listing(**{"DateSent>": f"{today.isoformat()}T00:00:00Z"})
    assert (rejected.status_code, rejected.json()["code"]) == (400, 20001)
    declared = {parameter["name"] for parameter in api["paths"][MESSAGES_PATH]["get"]["parameters"]}
    sent_by_channel = {name for request in fake.requests_to(LIST_MESSAGES) for name in request.query}
    assert sent_by_channel <= declared


def test_call_list_shape_and_filters_follow_the_spec(
    fake: FakeTwilio, account: TwilioCredentials, channel: TwilioChannel
) -> None:
    import requests

    api = require_spec(API_SPEC)
    twiml = "<Response><Say>hello</Say></Response>"
    for _ in range(2):
        fake.advance_call(channel.place_call(CUSTOMER, twiml).sid, "in-progress", send=False)
    queued = channel.place_call(CUSTOMER, twiml)
    channel.place_call("+14155550199", twiml)
    today = datetime.now(UTC).date()
    url = f"{fake.base_url}/2010-04-01/Accounts/{account.account_sid}/Calls.json"
    auth = (account.api_key_sid, account.api_key_secret)

    def listing(**params: str) -> requests.Response:
        return requests.get(url, params=params, auth=auth, timeout=5)

    first = listing(To=CUSTOMER, From=account.phone_number, PageSize="2").json()
    path = "/2010-04-01/Accounts/{AccountSid}/Calls.json"
    list_schema = api["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(first) == set(list_schema["properties"])
    assert first["calls"][0]["sid"] == queued.sid and first["calls"][0]["start_time"] is None  # newest first
    assert all(validate_response(api, "api.v2010.account.call", call) == [] for call in first["calls"])
    second = requests.get(fake.base_url + first["next_page_uri"], auth=auth, timeout=5).json()
    assert len(second["calls"]) == 1 and second["next_page_uri"] is None

    started = listing(To=CUSTOMER, **{"StartTime>": today.isoformat()}).json()["calls"]
    assert len(started) == 2 and queued.sid not in [call["sid"] for call in started]  # not started: no match
    assert len(listing(Status="queued").json()["calls"]) == 2
    assert listing(**{"StartTime<": today.isoformat()}).json()["calls"] == []
    rejected = listing(StartTime=f"{today.isoformat()}T00:00:00Z")
    assert (rejected.status_code, rejected.json()["code"]) == (400, 20001)


# --- Verify --------------------------------------------------------------------------------------


def test_verification_start_wrong_right_and_repeated_check(
    fake: FakeTwilio, account: TwilioCredentials, channel: TwilioChannel
) -> None:
    started = channel.start_verification(CUSTOMER_AS_TYPED)

    assert started.sid.startswith("VE") and started.status == "pending"
    start_request = fake.requests_to("POST /v2/")[-1]
    assert validate_form_request(require_spec(VERIFY_SPEC), start_request.path, "POST", start_request.form or {}) == []
    code = fake.code_for(CUSTOMER)
    wrong = "000000" if code != "000000" else "111111"
    assert channel.check_verification(CUSTOMER, wrong) == "pending"
    assert channel.check_verification(CUSTOMER_AS_TYPED, code) == "approved"
    assert channel.check_verification(CUSTOMER, code) == "expired"  # Twilio answers 404 once approved
    check_request = fake.requests_to("POST /v2/")[-1]
    assert validate_form_request(require_spec(VERIFY_SPEC), check_request.path, "POST", check_request.form or {}) == []


def test_verification_attempt_limits_are_not_treated_as_throttling(
    fake: FakeTwilio, channel: TwilioChannel, sleep: RecordingSleep
) -> None:
    channel.start_verification(CUSTOMER)
    code = fake.code_for(CUSTOMER)
    wrong = "000000" if code != "000000" else "111111"
    assert [channel.check_verification(CUSTOMER, wrong) for _ in range(5)] == ["pending"] * 5
    assert channel.check_verification(CUSTOMER, code) == "max_attempts_reached"

    other = "+14155550111"
    for _ in range(5):
        channel.start_verification(other)
    with pytest.raises(PermanentSendError) as raised:
        channel.start_verification(other)
    assert (raised.value.code, raised.value.status) == (60203, 429)
    assert sleep.waits == []


def test_the_interactive_channel_checks_a_code_once_within_two_seconds(
    fake: FakeTwilio, account: TwilioCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr("shared.storage.secrets.get_secret_provider", lambda: secrets_for(account))
    reset_twilio_channels()
    quick = interactive_twilio_channel(connection_for(fake, account))
    try:
        quick.start_verification(CUSTOMER)
        checks = "POST /v2/Services"
        fake.fail_next(status=429, match=lambda request: request.path.endswith("/VerificationCheck"))
        with pytest.raises(RetryLater):
            quick.check_verification(CUSTOMER, "123456")
        fake.stall_after_handling(1, 3.0, match=lambda request: request.path.endswith("/VerificationCheck"))
        started = time.monotonic()
        with pytest.raises(AmbiguousSendError):
            quick.check_verification(CUSTOMER, "123456")
        elapsed = time.monotonic() - started
    finally:
        reset_twilio_channels()

    assert quick is not twilio_channel(connection_for(fake, account))
    assert elapsed < 2.0
    assert len([r for r in fake.requests_to(checks) if r.path.endswith("/VerificationCheck")]) == 2
    reset_twilio_channels()


def test_verification_needs_a_service(fake: FakeTwilio, account: TwilioCredentials) -> None:
    channel = TwilioChannel(connection_for(fake, account, verify_service_sid=None), secrets_for(account))
    with pytest.raises(TwilioConfigurationError, match="verify_service_sid"):
        channel.start_verification(CUSTOMER)
    channel.close()


# --- signatures ----------------------------------------------------------------------------------


def test_signed_status_callback_validates_and_tampering_does_not(
    fake: FakeTwilio, account: TwilioCredentials, channel: TwilioChannel
) -> None:
    result = channel.send_sms(CUSTOMER, "hello", STATUS_URL)
    with CallbackSink() as sink:
        callback_url = f"{sink.base_url}/api/twilio/status?connection=twilio-main"
        fake.send_status_callback(callback_url, fake.message_status_params(result.sid, "delivered"))
        [received] = sink.requests
    params = {name: list(values) for name, values in (received.form or {}).items()}
    headers = {"X-Twilio-Signature": received.headers["X-Twilio-Signature"]}
    token = channel.auth_token()

    signature.verify(token, callback_url, params, headers)
    refused = [
        (token, callback_url, {**params, "MessageStatus": ["failed"]}, headers),
        (token, callback_url.replace("twilio-main", "other"), params, headers),
        (token, callback_url, params, {"X-Twilio-Signature": ""}),
        ("another-auth-token", callback_url, params, headers),
    ]
    for case in refused:
        with pytest.raises(SignatureRefused):
            signature.verify(*case)


def test_repeated_parameters_and_default_ports_validate(account: TwilioCredentials) -> None:
    url = "https://app.example.com/api/twilio/voice-status"
    params = {"CallSid": "CA" + "1" * 32, "StatusCallbackEvent": ["initiated", "answered"], "To": CUSTOMER}
    headers = {"X-Twilio-Signature": twilio_signature(account.auth_token, url, params)}

    signature.verify(account.auth_token, url, params, headers)
    signature.verify(account.auth_token, "https://app.example.com:443/api/twilio/voice-status", params, headers)
    with pytest.raises(SignatureRefused):
        signature.verify(account.auth_token, url, {**params, "StatusCallbackEvent": ["initiated"]}, headers)


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-0100", "US", "+14155550100"),
        (" +1 415-555-0100 ", "GB", "+14155550100"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("00 44 20 7946 0958", "GB", "+442079460958"),
        ("00 44 20 7946 0958", "US", "+442079460958"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
    ],
)
def test_normalize_number_accepts_common_forms(raw: str, region: str, expected: str) -> None:
    assert normalize_number(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "message"),
    [
        ("+1555", "US", "'+1555' is not a valid phone number"),
        ("+15558675310", "US", "'+15558675310' is not a valid phone number"),
        ("abc", "US", "'abc' is not a phone number"),
        ("", "US", "'' is not a phone number"),
        ("4155550100", "ZZ", "'4155550100' has no known country code (write it as +<country code> <number>)"),
    ],
)
def test_normalize_number_explains_what_is_wrong(raw: str, region: str, message: str) -> None:
    with pytest.raises(InvalidNumber) as raised:
        normalize_number(raw, region)
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)


# --- registry and import cost -------------------------------------------------------------------


def test_registry_keeps_one_channel_per_connection_until_it_changes(
    fake: FakeTwilio, account: TwilioCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.setenv("TWILIO_API_KEY_SECRET", account.api_key_secret)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", account.auth_token)
    reset_secret_provider()
    try:
        connection = connection_for(fake, account)
        first = twilio_channel(connection)
        assert twilio_channel(connection_for(fake, account)) is first  # equal configuration
        changed = twilio_channel(connection_for(fake, account, messaging_service_sid=account.messaging_service_sid))
        assert changed is not first and twilio_channel(changed.connection) is changed
        assert changed.send_sms(CUSTOMER, "hello").status == "accepted"
        reset_twilio_channels()
        assert twilio_channel(changed.connection) is not changed
    finally:
        reset_twilio_channels()
        reset_secret_provider()


def test_importing_the_module_loads_no_heavy_packages() -> None:
    script = (
        "import sys, shared.channels.twilio.client\n"
        "loaded = sorted({name.split('.')[0] for name in sys.modules} & {'twilio', 'phonenumbers', 'requests'})\n"
        "print(','.join(loaded))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    assert finished.stdout.strip() == ""
