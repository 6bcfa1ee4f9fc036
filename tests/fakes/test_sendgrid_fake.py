"""The fake SendGrid over real HTTP: auth, body checks, limits, failure injection, signed events."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from tests.fakes.sendgrid import MAIL_SEND, SIGNATURE_HEADER, TIMESTAMP_HEADER, FakeSendGrid
from tests.fakes.server import FakeServer, Response, Route, route

pytestmark = pytest.mark.timeout(60)

SENDER = "alerts@contoso.example"
RECIPIENT = "ap@fabrikam.example"


class AppStub(FakeServer):
    """Stands in for the app's Event Webhook endpoint: answers 200 and keeps what arrived."""

    service_name = "app"

    def routes(self) -> Sequence[Route]:
        return [route("POST", r"/api/sendgrid/events/.*", lambda _request, _match: Response(200))]


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        fake.verify_sender(SENDER)
        yield fake


@pytest.fixture
def key(sendgrid: FakeSendGrid) -> str:
    return sendgrid.add_api_key()


def body(**changes: Any) -> dict[str, Any]:
    mail = {"personalizations": [{"to": [{"email": RECIPIENT}], "custom_args": {"job": "j-1"}}],
            "from": {"email": SENDER, "name": "Contoso AP"}, "subject": "Invoice INV-1 posted",
            "content": [{"type": "text/plain", "value": "Invoice INV-1 from Fabrikam posted."}]}
    return {**mail, **changes}


def send(fake: FakeSendGrid, key: str | None, payload: Any, timeout: float = 10) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return requests.post(fake.base_url + MAIL_SEND, data=data, headers=headers, timeout=timeout)


def fields_of(answer: requests.Response) -> list[str | None]:
    return [error["field"] for error in answer.json()["errors"]]


def test_an_accepted_mail_answers_202_with_a_message_id_and_is_kept(sendgrid: FakeSendGrid, key: str) -> None:
    answer = send(sendgrid, key, body())
    assert answer.status_code == 202 and answer.content == b""
    message_id = answer.headers["X-Message-Id"]
    assert len(message_id) == 22 and "." not in message_id
    assert "X-RateLimit-Remaining" not in answer.headers  # mail/send answers carry none
    [mail] = sendgrid.mails(to=RECIPIENT)
    assert mail.message_id == message_id and mail.subject == "Invoice INV-1 posted"
    assert mail.text.startswith("Invoice INV-1") and mail.custom_args == {"job": "j-1"}
    assert mail.from_name == "Contoso AP"


@pytest.mark.parametrize(
    ("authorization", "status", "message"),
    [(None, 401, "authorization required"), ("SG.wrong.key", 401, "authorization grant is invalid")],
)
def test_a_missing_or_unknown_key_is_refused(sendgrid: FakeSendGrid, authorization: str | None, status: int,
                                             message: str) -> None:
    answer = send(sendgrid, authorization, body())
    assert answer.status_code == status and message in answer.json()["errors"][0]["message"]
    assert sendgrid.mails() == []


def test_a_key_without_mail_send_and_an_unverified_sender_are_forbidden(sendgrid: FakeSendGrid, key: str) -> None:
    stats_only = sendgrid.add_api_key(scopes=("stats.read",))
    assert send(sendgrid, stats_only, body()).status_code == 403
    stranger = send(sendgrid, key, body(**{"from": {"email": "someone@else.example"}}))
    assert stranger.status_code == 403 and "verified Sender Identity" in stranger.json()["errors"][0]["message"]
    assert sendgrid.mails() == []


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"personalizations": []}, ["personalizations"]),
        ({"personalizations": [{"to": []}]}, ["personalizations.0.to"]),
        ({"personalizations": [{"to": [{"email": "not an address"}]}]}, ["personalizations.0.to.0.email"]),
        ({"from": {"name": "no address"}}, ["from.email"]),
        ({"subject": ""}, ["subject"]),
        ({"content": [{"type": "text/plain", "value": ""}]}, ["content.0.value"]),
        ({"content": None}, ["content"]),
        ({"personalizations": [{"to": [{"email": RECIPIENT}], "custom_args": {"n": 1}}]},
         ["personalizations.0.custom_args"]),
        ({"personalizations": [{"to": [{"email": RECIPIENT}], "custom_args": {"big": "x" * 10_001}}]},
         ["personalizations.0.custom_args"]),
        ({"subject": "", "content": []}, ["subject", "content"]),
    ],
)
def test_bad_bodies_get_400_with_every_field_named(sendgrid: FakeSendGrid, key: str, changes: dict,
                                                   fields: list[str]) -> None:
    answer = send(sendgrid, key, body(**changes))
    assert answer.status_code == 400
    assert fields_of(answer) == fields
    assert all(error["message"] for error in answer.json()["errors"])
    assert sendgrid.mails() == []


def test_a_subject_in_every_personalization_is_enough(sendgrid: FakeSendGrid, key: str) -> None:
    personalized = body(subject=None, personalizations=[{"to": [{"email": RECIPIENT}], "subject": "Per person"}])
    assert send(sendgrid, key, personalized).status_code == 202
    assert sendgrid.mails()[0].subject == "Per person"


def test_not_json_is_400_and_too_large_is_413() -> None:
    with FakeSendGrid(max_body_bytes=2048) as small:
        small.verify_sender(SENDER)
        small_key = small.add_api_key()
        assert send(small, small_key, b"{not json").status_code == 400
        huge = body(content=[{"type": "text/plain", "value": "x" * 4096}])
        answer = send(small, small_key, huge)
        assert answer.status_code == 413 and answer.json()["errors"][0]["message"] == "content too large"
        assert small.mails() == []


def test_the_rate_limit_answers_429_with_the_reset_time(sendgrid: FakeSendGrid, key: str) -> None:
    sendgrid.limit_rate(2, period=2.0)
    answers = [send(sendgrid, key, body()) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    throttled = answers[2]
    assert throttled.json() == {"errors": [{"message": "too many requests", "field": None, "help": None}]}
    assert throttled.headers["X-RateLimit-Remaining"] == "0" and throttled.headers["X-RateLimit-Limit"] == "2"
    reset = int(throttled.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + 3
    assert "Retry-After" not in throttled.headers
    time.sleep(max(0.0, reset - time.time()) + 0.1)
    assert send(sendgrid, key, body()).status_code == 202
    assert len(sendgrid.mails()) == 3


def test_retry_after_is_added_only_when_asked() -> None:
    with FakeSendGrid(send_retry_after=True) as fake:
        fake.verify_sender(SENDER)
        key = fake.add_api_key()
        fake.fail_next(1, status=429)
        answer = send(fake, key, body())
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
        assert "X-RateLimit-Reset" in answer.headers


def test_fail_next_429_looks_like_sendgrids(sendgrid: FakeSendGrid, key: str) -> None:
    sendgrid.fail_next(1, status=429)
    answer = send(sendgrid, key, body())
    assert answer.status_code == 429 and "Retry-After" not in answer.headers
    assert int(answer.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert answer.json()["errors"][0]["message"] == "too many requests"
    assert send(sendgrid, key, body()).status_code == 202


def test_fail_nth_fails_only_that_call(sendgrid: FakeSendGrid, key: str) -> None:
    sendgrid.fail_nth(3, status=500)
    statuses = [send(sendgrid, key, body()).status_code for _ in range(4)]
    assert statuses == [202, 202, 500, 202]
    assert len(sendgrid.mails()) == 3
    assert [r.scripted for r in sendgrid.requests_to(f"POST {MAIL_SEND}")] == [None, None, "fail", None]


def test_a_stall_after_handling_keeps_the_mail_but_not_the_answer(sendgrid: FakeSendGrid, key: str) -> None:
    sendgrid.stall_after_handling(1, seconds=3.0)
    with pytest.raises(requests.ReadTimeout):
        send(sendgrid, key, body(), timeout=0.5)
    assert len(sendgrid.mails()) == 1  # SendGrid has it; the client cannot know


def test_a_delay_before_handling_sends_nothing(sendgrid: FakeSendGrid, key: str) -> None:
    sendgrid.delay_next(1, seconds=3.0)
    with pytest.raises(requests.ReadTimeout):
        send(sendgrid, key, body(), timeout=0.5)
    assert sendgrid.mails() == []


def test_events_are_signed_like_sendgrid_over_timestamp_and_raw_body(sendgrid: FakeSendGrid, key: str) -> None:
    send(sendgrid, key, body())
    [mail] = sendgrid.mails()
    delivered = sendgrid.event_for(mail, "delivered")
    assert delivered["sg_message_id"].startswith(mail.message_id + ".")
    assert delivered["job"] == "j-1" and delivered["email"] == RECIPIENT and isinstance(delivered["timestamp"], int)
    with AppStub() as app:
        answer = sendgrid.post_events(f"{app.base_url}/api/sendgrid/events/main", [delivered])
        assert answer.status_code == 200
        [request] = app.requests
    assert request.json == [delivered] and request.body.endswith(b"\r\n")
    public_key = load_der_public_key(base64.b64decode(sendgrid.public_key))
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"
    signature = base64.b64decode(request.headers[SIGNATURE_HEADER])
    stamp = request.headers[TIMESTAMP_HEADER].encode()
    public_key.verify(signature, stamp + request.body, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, stamp + request.body.replace(b"delivered", b"bounce"), ec.ECDSA(hashes.SHA256()))
    assert sendgrid.events_sent()[0].status_code == 200


def test_each_event_has_its_own_id_and_the_fields_of_its_kind(sendgrid: FakeSendGrid, key: str) -> None:
    send(sendgrid, key, body())
    [mail] = sendgrid.mails()
    events = [sendgrid.event_for(mail, name) for name in ("processed", "deferred", "bounce", "dropped", "open")]
    assert len({event["sg_event_id"] for event in events}) == 5
    assert events[1]["attempt"] == "1" and events[2]["type"] == "bounce" and events[3]["reason"]
    assert sendgrid.event_for(mail, "delivered", timestamp=1600112492)["timestamp"] == 1600112492


def test_a_key_reads_its_scopes_and_the_sender_identities(sendgrid: FakeSendGrid, key: str) -> None:
    narrow = sendgrid.add_api_key(scopes=("stats.read",))
    sendgrid.add_sender("pending@contoso.example")

    def get(path: str, api_key: str) -> requests.Response:
        return requests.get(sendgrid.base_url + path, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)

    assert get("/v3/scopes", key).json() == {"scopes": ["mail.send"]}
    assert get("/v3/scopes", narrow).json() == {"scopes": ["stats.read"]}
    listed = get("/v3/verified_senders", key).json()["results"]
    senders = {sender["from_email"]: sender["verified"] for sender in listed}
    assert senders == {SENDER: True, "pending@contoso.example": False}
    assert get("/v3/scopes", "SG.unknown").status_code == 401
    assert get("/v3/verified_senders", "SG.unknown").status_code == 401
