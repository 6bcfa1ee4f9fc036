"""Every HTTP input of the app, generated: no request makes it answer 500 or worse.

The real function_app runs in-process (each request is an ``azure.functions.HttpRequest``
routed as the local host routes it, then handed to the function), against an Azurite of
its own (enqueued work stays there) and the fake Twilio and Slack over loopback. Requests
are junk of every kind, and some carry genuine signatures so the code behind the Slack,
Twilio and SendGrid checks is reached too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devhost.azurite import Azurite, start_azurite
from devhost.host import HostedFunction, discover_functions
from devhost.http_server import RouteTable, query_parameters
from tests.fakes.slack import FakeSlack
from tests.fakes.twilio import FakeTwilio, TwilioCredentials

PUBLIC_BASE_URL = "https://connector.contoso.example"
SLACK_SIGNING_SECRET = "fuzz-slack-signing-secret-0123456789"
CONNECTIONS = ("contoso-fo", "twilio-main", "slack-main", "mail")
# Routes as the app declares them; ``{connection}`` is filled in per request.
ROUTES = (
    ("GET", "health"), ("POST", "dynamics/events/{connection}"), ("POST", "twilio/status/{connection}"),
    ("POST", "twilio/inbound/{connection}"), ("POST", "twilio/gather/{connection}"),
    ("POST", "twilio/verify/{connection}"), ("POST", "slack/interactions/{connection}"),
    ("POST", "slack/events/{connection}"), ("POST", "sendgrid/events/{connection}"), ("POST", "ops/ping"),
    ("GET", "ops/audit"), ("POST", "ops/replay"), ("GET", "ops/deadletters"), ("GET", "ops/deadletters/{connection}"),
    ("POST", "ops/deadletters/redrive"),
    ("GET", "ops/polls"), ("POST", "ops/polls/run"),
)


def fuzz(examples: int) -> settings:
    """Stable in CI: the same requests every run, no deadline, nothing kept between runs."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@dataclass
class Harness:
    routes: RouteTable
    twilio_creds: TwilioCredentials
    sendgrid_key: Any  # the private half of the connection's event_webhook_public_key
    storage: str  # the connection string of the app's own Azurite
    answered: list[int] = field(default_factory=list, repr=False)

    def call(self, method: str, path: str, query: str = "", headers: Mapping[str, str] | None = None,
             body: bytes = b"") -> int:
        """The status the app answers, as the local host would route the request; 404 for no route."""
        route, route_params = self.routes.find(method, "/api/" + path.lstrip("/"))
        if route is None:
            return 404
        headers = {name.lower(): value for name, value in (headers or {}).items()}
        host = headers.get("host", "127.0.0.1:7071")
        request = func.HttpRequest(method, f"http://{host}/api/{path.lstrip('/')}" + (f"?{query}" if query else ""),
                                   headers=headers, params=query_parameters(query), route_params=route_params,
                                   body=body)
        response = invoke(route.function, request)
        self.answered.append(response.status_code)
        return response.status_code


def invoke(function: HostedFunction, request: func.HttpRequest) -> func.HttpResponse:
    result = function.user_function(**{function.arg_name: request})
    assert isinstance(result, func.HttpResponse), f"{function.name} answered {result!r}"
    return result


def app_config(twilio: FakeTwilio, creds: TwilioCredentials, slack: FakeSlack, public_key: str) -> dict:
    return {
        "connections": {
            "contoso-fo": {"kind": "dynamics", "environment_url": "https://contoso-fo.operations.example",
                           "tenant_id": "contoso-tenant", "client_id": "a1b2c3d4-app",
                           "client_secret": {"secret": "contoso-fo-client-secret"}},
            "twilio-main": {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
                            "api_key_secret": {"secret": "twilio-api-key-secret"},
                            "auth_token": {"secret": "twilio-auth-token"}, "from_number": creds.phone_number,
                            "verify_service_sid": creds.verify_service_sid, "api_base_url": twilio.base_url,
                            "verify_base_url": twilio.base_url},
            "slack-main": {"kind": "slack", "bot_token": {"secret": "slack-bot-token"},
                           "signing_secret": {"secret": "slack-signing-secret"}, "api_base_url": slack.api_base_url},
            "mail": {"kind": "sendgrid", "api_key": {"secret": "sendgrid-api-key"}, "from_email": "ap@contoso.example",
                     "event_webhook_public_key": public_key},
        },
        "rules": [],
    }


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    azurite: Azurite = start_azurite()  # of its own: the fuzzed messages must reach no other app's consumers
    twilio, slack = FakeTwilio().start(), FakeSlack().start()
    creds = twilio.add_test_account()
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_key = base64.b64encode(private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    config_path = Path(tmp_path_factory.mktemp("fuzz")) / "connections.json"
    config_path.write_text(json.dumps(app_config(twilio, creds, slack, public_key)))
    values = {
        "CONNECTOR_CONFIG_PATH": str(config_path), "AzureWebJobsStorage": azurite.connection_string,
        "STORAGE_TABLE_PREFIX": "f" + uuid.uuid4().hex[:10], "QUEUE_BACKEND": "storage",
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL, "CONTOSO_FO_CLIENT_SECRET": "entra-client-secret-value",
        "TWILIO_API_KEY_SECRET": creds.api_key_secret, "TWILIO_AUTH_TOKEN": creds.auth_token,
        "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
        "SENDGRID_API_KEY": "SG.fuzz-key",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        forget_app_state()
        import function_app

        try:
            yield Harness(RouteTable("api", discover_functions(function_app.app)), creds, private_key,
                          azurite.connection_string)
        finally:
            function_app.app.functions_bindings = None  # get_functions() may be called again (it keeps names)
            forget_app_state()
            twilio.stop()
            slack.stop()
            azurite.stop()


def forget_app_state() -> None:
    from shared.config.loading import reset_config
    from shared.storage.bus import reset_bus
    from shared.storage.secrets import reset_secret_provider
    from shared.storage.tables import reset_stores

    reset_config()
    reset_stores()
    reset_bus()
    reset_secret_provider()


# --- what requests are made of -------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
big_numbers = st.sampled_from([10**20, -(10**20), 10**400, 2**63, -(2**63) - 1, 10**4000])
numbers = st.integers() | big_numbers | st.floats(allow_nan=True, allow_infinity=True)
timestamps = st.sampled_from([
    "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2026-11-22T08:00:00Z", "2026-13-45", "/Date(1)/",
    "/Date(99999999999999999999)/", "/Date(-99999999999999999999+0100)/", "1" * 5000, "9" * 30, "-1", "",
    "\u0661\u0662", "\u00b2", " 1700000000 ",
]) | st.integers(min_value=-(10**30), max_value=10**30).map(str)
FIELD_NAMES = (
    "BusinessEventId", "ControlNumber", "EventTime", "EventTimeIso8601", "BusinessEventLegalEntity", "LegalEntity",
    "EventId", "InvoiceId", "InvoiceAccount", "VendorAccount", "PurchaseOrderNumber", "JournalBatchNumber",
    "WorkflowWorkItemInstanceId", "job_id", "from", "to", "code", "type", "challenge", "event_id", "event",
    "sg_event_id", "sg_message_id", "timestamp", "email", "user", "actions", "container", "view", "state", "values",
    "id", "callback_id", "private_metadata", "trigger_id", "message", "action_id", "value", "channel_id",
    "message_ts",
)
keys = st.sampled_from(FIELD_NAMES) | text
scalars = st.none() | st.booleans() | numbers | text | timestamps
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(keys, children, max_size=5), max_leaves=25)


def deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


json_bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value, allow_nan=True).encode()),
    st.integers(min_value=10, max_value=5_000).map(deep_json),
    st.integers(min_value=10, max_value=5_000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b"1" * 5000, b'{"ControlNumber": ' + b"7" * 5000 + b"}", b"\xef\xbb\xbf{}", b"[]", b"{}"]),
)
form_bodies = st.dictionaries(st.sampled_from(
    ("payload", "MessageSid", "MessageStatus", "CallSid", "CallStatus", "From", "To", "Body", "Digits")) | text,
    text | json_bodies.map(lambda raw: raw.decode("utf-8", "replace")), max_size=5).map(
    lambda form: urlencode(form).encode())
bodies = json_bodies | form_bodies | st.binary(max_size=200)
HEADER_NAMES = (
    "host", "content-type", "content-length", "x-slack-signature", "x-slack-request-timestamp", "x-slack-retry-num",
    "x-twilio-signature", "i-twilio-idempotency-token", "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp", "x-functions-key",
)
header_values = st.one_of(text, ascii_text, timestamps, st.sampled_from([
    "v0=" + "a" * 64, "v0=é" + "b" * 63, "[::1", "exa mple.com:99999", "[fe80::1%eth0]", "h\u00e9llo:80", "",
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=",
    str(2**64), "99999999999999999999999", "-5", "application/x-www-form-urlencoded", "application/json",
]))
headers = st.dictionaries(st.sampled_from(HEADER_NAMES) | ascii_text.filter(bool), header_values, max_size=6)
query_strings = st.dictionaries(
    st.sampled_from(("record", "correlation", "job", "code", "reveal")) | text,
    text | timestamps, max_size=4).map(urlencode) | ascii_text
connections = st.sampled_from(CONNECTIONS) | text.filter(lambda name: "/" not in name and name.strip())
methods = st.sampled_from(("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"))


@st.composite
def requests_to_any_route(draw: st.DrawFn) -> tuple[str, str, str, dict[str, str], bytes]:
    declared_method, template = draw(st.sampled_from(ROUTES))
    method = declared_method if draw(st.integers(0, 9)) else draw(methods)
    path = template.format(connection=draw(connections))
    if not draw(st.integers(0, 19)):
        path = draw(st.sampled_from(("", "api", "health/x", "ops", "ops/audit/x", "dynamics/events"))) or path
    return method, path, draw(query_strings), draw(headers), draw(bodies)


def assert_no_server_error(status: int, what: str) -> None:
    assert status < 500, f"answered {status} to {what}"


# --- junk of every kind, to every route ----------------------------------------------------------


@fuzz(5000)
@given(request=requests_to_any_route())
def test_no_request_to_any_route_makes_the_app_fail(harness: Harness,
                                                   request: tuple[str, str, str, dict[str, str], bytes]) -> None:
    method, path, query, header_map, body = request
    assert_no_server_error(harness.call(method, path, query, header_map, body), f"{method} {path}?{query}")


@st.composite
def business_events(draw: st.DrawFn) -> Any:
    event_ids = st.sampled_from(("VendorInvoicePostedBusinessEvent", "PurchaseOrderConfirmedBusinessEvent",
                                 "VendorPaymentPostedBusinessEvent", "Workflow_VendInvoice_000001_Approval_WorkItem",
                                 "Workflow_VendInvoice_000001_Step", "BusinessEventsTestEndpointContract")) | text
    event = draw(st.fixed_dictionaries(
        {"BusinessEventId": event_ids, "ControlNumber": numbers | timestamps},
        optional={name: json_values | timestamps for name in FIELD_NAMES[2:14]}))
    return draw(st.sampled_from([event, [event], [event, event]]))


@fuzz(1200)
@given(events=business_events(), query=query_strings)
def test_no_business_event_makes_the_ingest_fail(harness: Harness, events: Any, query: str) -> None:
    body = json.dumps(events, allow_nan=True).encode()
    status = harness.call("POST", "dynamics/events/contoso-fo", query, {"content-type": "application/json"}, body)
    assert_no_server_error(status, body[:200].decode(errors="replace"))


@fuzz(800)
@given(body=json_values | st.dictionaries(st.sampled_from(("job_id", "from", "to")), json_values | timestamps),
       query=query_strings)
def test_no_operator_request_makes_the_ops_routes_fail(harness: Harness, body: Any, query: str) -> None:
    raw = json.dumps(body, allow_nan=True).encode()
    assert_no_server_error(harness.call("POST", "ops/replay", query, {}, raw), f"replay {raw[:200]!r}")
    assert_no_server_error(harness.call("POST", "ops/deadletters/redrive", query, {}, raw), f"redrive {raw[:200]!r}")
    assert_no_server_error(harness.call("GET", "ops/audit", query, {}, b""), f"audit ?{query}")


# --- genuinely signed requests, so the code behind the checks runs --------------------------------


def slack_headers(body: bytes) -> dict[str, str]:
    from shared.channels.slack.signature import sign

    return {**sign(SLACK_SIGNING_SECRET, body), "content-type": "application/x-www-form-urlencoded"}


def odd(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field as Slack sends it, or of any other shape."""
    return shape | json_values


@st.composite
def slack_payloads(draw: st.DrawFn) -> dict[str, Any]:
    from shared.channels.slack.client import (
        APPROVE_ACTION_ID,
        CODE_ACTION_ID,
        CODE_BLOCK_ID,
        CODE_CALLBACK_ID,
        CODE_VALUE_SUFFIX,
    )

    action = st.fixed_dictionaries({"action_id": odd(st.sampled_from((APPROVE_ACTION_ID, "reject"))),
                                    "value": odd(text.map(lambda job: job + CODE_VALUE_SUFFIX) | text)})
    state = st.fixed_dictionaries({"values": odd(st.fixed_dictionaries(
        {CODE_BLOCK_ID: odd(st.fixed_dictionaries({CODE_ACTION_ID: odd(st.fixed_dictionaries({"value": odd(text)}))}))}
    ))})
    view = st.fixed_dictionaries({"callback_id": odd(st.just(CODE_CALLBACK_ID)), "id": odd(text),
                                  "private_metadata": odd(json_values.map(json.dumps)), "state": odd(state)})
    return draw(st.fixed_dictionaries(
        {"type": odd(st.sampled_from(("block_actions", "view_submission")))},
        optional={"user": odd(st.fixed_dictionaries({"id": odd(text)})), "actions": odd(st.lists(odd(action),
                  max_size=2)), "container": odd(st.fixed_dictionaries({"channel_id": odd(text),
                                                                        "message_ts": odd(text)})),
                  "trigger_id": odd(text), "view": odd(view),
                  "message": odd(st.fixed_dictionaries({"text": odd(text)}))},
    ))


@fuzz(1200)
@given(payload=slack_payloads(), as_event=st.booleans(), event=json_values)
def test_no_signed_slack_request_makes_the_app_fail(harness: Harness, payload: dict[str, Any], as_event: bool,
                                                    event: Any) -> None:
    if as_event:
        body = json.dumps({"type": odd_type(payload), "event_id": payload.get("trigger_id"), "event": event,
                           "challenge": event}).encode()
        route = "slack/events/slack-main"
    else:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        route = "slack/interactions/slack-main"
    status = harness.call("POST", route, "", slack_headers(body), body)
    assert status != 401, "the signature was not accepted: the fuzz would not reach the handler"
    assert_no_server_error(status, body[:300].decode(errors="replace"))


def odd_type(payload: Mapping[str, Any]) -> Any:
    kind = payload.get("type")
    return {"block_actions": "event_callback", "view_submission": "url_verification"}.get(kind, kind) \
        if isinstance(kind, str) else kind


TWILIO_ROUTES = ("twilio/status/twilio-main", "twilio/inbound/twilio-main", "twilio/gather/twilio-main")


@fuzz(800)
@given(route=st.sampled_from(TWILIO_ROUTES), query=query_strings, params=st.dictionaries(
    st.sampled_from(("MessageSid", "MessageStatus", "CallSid", "CallStatus", "From", "To", "Body", "Digits",
                     "ErrorCode", "AccountSid")) | text, text | timestamps, max_size=6))
def test_no_signed_twilio_webhook_makes_the_app_fail(harness: Harness, route: str, query: str,
                                                     params: dict[str, str]) -> None:
    from shared.channels.twilio.signature import sign

    url = f"{PUBLIC_BASE_URL}/api/{route}" + (f"?{query}" if query else "")
    body = urlencode(params).encode()
    status = harness.call("POST", route, query, sign(harness.twilio_creds.auth_token, url, params), body)
    assert_no_server_error(status, f"{route}?{query} {params}")


@fuzz(600)
@given(events=st.lists(st.dictionaries(keys, json_values, max_size=6), max_size=3) | json_values,
       verify=st.sampled_from([{}, {"to": "+14155550100", "code": "123456"}]) | json_values)
def test_no_signed_sendgrid_post_makes_the_app_fail(harness: Harness, events: Any, verify: Any) -> None:
    from shared.channels.sendgrid.signature import sign

    body = json.dumps(events, allow_nan=True).encode()
    status = harness.call("POST", "sendgrid/events/mail", "", sign(harness.sendgrid_key, body), body)
    assert status != 401, "the signature was not accepted: the fuzz would not reach the handler"
    assert_no_server_error(status, body[:300].decode(errors="replace"))
    raw = json.dumps(verify, allow_nan=True).encode()
    assert_no_server_error(harness.call("POST", "twilio/verify/twilio-main", "", {}, raw), f"verify {raw[:200]!r}")


def test_the_fuzz_reached_every_route_and_got_answers_of_every_kind(harness: Harness) -> None:
    answered = set(harness.answered)
    assert {200, 202, 400, 401, 403, 404} <= answered, sorted(answered)
    assert len(harness.answered) >= 10_000



def test_an_inbound_sms_is_queued_under_its_message_sid_without_the_phone_number(harness: Harness) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    from shared.channels.twilio.signature import sign
    from shared.model import CALLBACKS
    from shared.storage.bus import read_envelope

    queue = QueueClient.from_connection_string(harness.storage, CALLBACKS)
    with contextlib.suppress(ResourceNotFoundError):  # the queue is made by the first message sent
        queue.clear_messages()  # what the fuzz left there
    route, sid = "twilio/inbound/twilio-main", "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "From": "+14155550134", "To": "+15017122661", "Body": "Paid on Friday"}
    signed = sign(harness.twilio_creds.auth_token, f"{PUBLIC_BASE_URL}/api/{route}", params)
    for _ in range(2):  # Twilio's retry of the same SMS is the same message
        assert harness.call("POST", route, "", signed, urlencode(params).encode()) == 200

    texts = [base64.b64decode(m.content).decode() for m in queue.peek_messages(max_messages=32)]
    assert not any("4155550134" in text for text in texts)  # sealed on the queue
    queued = [read_envelope(text) for text in texts]
    assert [envelope.key for envelope in queued] == [sid, sid]
    assert queued[0].payload["params"]["From"] == "+14155550134"  # the handler still gets the number


def test_reply_texts_in_the_audit_answer_are_masked_unless_the_operator_asks(harness: Harness) -> None:
    from shared.storage.tables import get_stores

    correlation = uuid.uuid4().hex
    get_stores().audit.append(correlation, "reply", connection="twilio-main", record="fo|VendorInvoice|usmf|X",
                              text="Call me on my mobile about the invoice", message_sid="SM1")
    answers = {}
    for query in (f"correlation={correlation}", f"correlation={correlation}&reveal=texts"):
        route, route_params = harness.routes.find("GET", "/api/ops/audit")
        assert route is not None
        request = func.HttpRequest("GET", f"http://127.0.0.1/api/ops/audit?{query}", params=query_parameters(query),
                                   route_params=route_params, body=b"")
        answers[query] = invoke(route.function, request).get_body().decode()

    masked, revealed = answers.values()
    assert json.loads(masked)["entries"][0]["detail"] == {"text": "***", "message_sid": "SM1"}
    assert "Call me" not in masked
    assert json.loads(revealed)["entries"][0]["detail"]["text"] == "Call me on my mobile about the invoice"
