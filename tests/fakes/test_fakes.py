"""The fakes themselves, exercised over real HTTP with the real client libraries."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fakes.dynamics import THROTTLED_MESSAGE, FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.support import openapi
from tests.support.openapi import require_spec, validate_form_request, validate_response

pytestmark = pytest.mark.timeout(30)

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "app-secret-value"
API_SPEC = "twilio/twilio_api_v2010.json"
VERIFY_SPEC = "twilio/twilio_verify_v2.json"
CUSTOMER = "+15558675310"
SENDER = "+15017122661"


# --- helpers -------------------------------------------------------------------------------


class EchoServer(FakeServer):
    """The smallest fake: enough routes to exercise the base class."""

    service_name = "echo"

    def routes(self) -> Sequence[Route]:
        return [route("GET", r"/echo/(?P<word>\w+)", self._echo), route("POST", r"/submit", self._submit)]

    def _echo(self, request: RecordedRequest, match: Any) -> Response:
        return Response.json(200, {"word": match["word"]})

    def _submit(self, request: RecordedRequest, match: Any) -> Response:
        return Response.json(201, {"form": {name: list(values) for name, values in (request.form or {}).items()}})


class CallbackSink(FakeServer):
    """Stands in for the app's webhook: records every POST and answers 204."""

    service_name = "sink"

    def routes(self) -> Sequence[Route]:
        return [route("POST", r"/.*", lambda request, match: Response(204))]

    def url(self, path: str = "/api/twilio/status") -> str:
        return self.base_url + path

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return self.requests
            time.sleep(0.01)
        raise AssertionError(f"expected {count} callbacks, got {len(self.requests)}")


def single_values(request: RecordedRequest) -> dict[str, str]:
    return {name: values[0] for name, values in (request.form or {}).items()}


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    with FakeEntra() as fake:
        fake.register_client(TENANT, CLIENT_ID, SECRET)
        yield fake


def credential(entra: FakeEntra, secret: str = SECRET) -> ClientSecretCredential:
    return ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        secret,
        authority=entra.authority,
        disable_instance_discovery=True,
        connection_verify=entra.ca_pem_path,
    )


def invoice(company: str, reference: str, number: str, amount: float, modified: str, vendor: str) -> dict[str, Any]:
    return {
        "dataAreaId": company,
        "HeaderReference": reference,
        "InvoiceNumber": number,
        "InvoiceAmount": amount,
        "ModifiedDateTime": modified,
        "VendorName": vendor,
        "IsApproved": "No",
    }


INVOICES = [
    invoice("usmf", "H-001", "INV-1", 100.0, "2024-04-30T23:00:00Z", "Contoso"),
    invoice("usmf", "H-002", "INV-2", 250.5, "2024-05-01T08:00:00Z", "O'Neil Supplies"),
    invoice("usmf", "H-003", "INV-3", 75.25, "2024-05-02T09:30:00Z", "Fabrikam"),
    invoice("usmf", "H-004", "INV-4", 980.0, "2024-05-03T10:00:00Z", "Contoso"),
    invoice("usmf", "H-005", "INV-5", 12.0, "2024-05-04T11:00:00Z", "Litware"),
    invoice("usrt", "H-001", "RT-1", 40.0, "2024-05-05T12:00:00Z", "Contoso Retail"),
]


@pytest.fixture
def dynamics(entra: FakeEntra) -> Iterator[FakeDynamics]:
    with FakeDynamics(entra, page_size=2) as fake:
        fake.add_entities("VendorInvoiceHeaders", INVOICES, keys=("dataAreaId", "HeaderReference"))
        fake.add_entities(
            "VendorPaymentJournalLines",
            [{"dataAreaId": "usmf", "JournalBatchNumber": "00282", "LineNumber": 1, "CreditAmount": 10.0}],
            keys=("dataAreaId", "JournalBatchNumber", "LineNumber"),
        )
        yield fake


@pytest.fixture
def token(entra: FakeEntra, dynamics: FakeDynamics) -> str:
    return credential(entra).get_token(dynamics.scope).token


def odata_get(dynamics: FakeDynamics, url: str, token: str | None, **params: str) -> requests.Response:
    headers = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    target = url if url.startswith("https://") else dynamics.base_url + url
    # verify= per request: the environment's REQUESTS_CA_BUNDLE would override Session.verify.
    return requests.get(target, params=params or None, headers=headers, verify=dynamics.ca_pem_path, timeout=5)


@pytest.fixture
def twilio_fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def account(twilio_fake: FakeTwilio) -> TwilioCredentials:
    return twilio_fake.add_test_account()


@pytest.fixture
def client(twilio_fake: FakeTwilio, account: TwilioCredentials) -> Client:
    return twilio_fake.point(Client(account.api_key_sid, account.api_key_secret, account.account_sid))


@pytest.fixture
def sink() -> Iterator[CallbackSink]:
    with CallbackSink() as server:
        yield server


def last_response_body(client: Client) -> Any:
    """The raw JSON the SDK last received (its objects hide fields and types)."""
    return json.loads(client.http_client._test_only_last_response.text)


# --- base server -----------------------------------------------------------------------------


def test_the_log_keeps_query_form_json_and_case_insensitive_headers(echo: EchoServer) -> None:
    requests.get(f"{echo.base_url}/echo/hi", params=[("a", "1"), ("a", "2"), ("b", "")], timeout=5)
    requests.post(f"{echo.base_url}/submit", data=[("To", "+1"), ("Tag", "x"), ("Tag", "y"), ("Blank", "")], timeout=5)
    requests.post(f"{echo.base_url}/submit", json={"k": [1, 2]}, headers={"X-Trace": "t-1"}, timeout=5)

    get, form_post, json_post = echo.requests
    assert (get.method, get.path, dict(get.query)) == ("GET", "/echo/hi", {"a": ("1", "2"), "b": ("",)})
    assert dict(form_post.form or {}) == {"To": ("+1",), "Tag": ("x", "y"), "Blank": ("",)}
    assert form_post.json is None
    assert json_post.json == {"k": [1, 2]} and json_post.form is None
    assert json_post.headers["x-trace"] == json_post.headers["X-TRACE"] == "t-1"
    assert get.at <= form_post.at <= json_post.at and get.wall_time > 0
    assert [r.path for r in echo.requests_to("POST /submit")] == ["/submit", "/submit"]
    assert echo.requests_to(lambda r: r.json is not None) == [json_post]
    echo.clear_log()
    assert echo.requests == []


def test_fail_next_answers_before_normal_handling_and_is_logged(echo: EchoServer) -> None:
    echo.fail_next(2, status=503, match="/echo")
    first = requests.get(f"{echo.base_url}/echo/one", timeout=5)
    unmatched = requests.post(f"{echo.base_url}/submit", data={"a": "1"}, timeout=5)
    second = requests.get(f"{echo.base_url}/echo/two", timeout=5)
    third = requests.get(f"{echo.base_url}/echo/three", timeout=5)

    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert unmatched.status_code == 201
    assert second.status_code == 503
    assert third.json() == {"word": "three"}
    assert [r.scripted for r in echo.requests] == ["fail", None, "fail", None]


def test_delay_next_times_out_the_client_and_drop_next_hangs_up(echo: EchoServer) -> None:
    echo.delay_next(1, seconds=1.0)
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{echo.base_url}/echo/slow", timeout=0.2)
    echo.drop_next()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{echo.base_url}/echo/dropped", timeout=5)
    assert requests.get(f"{echo.base_url}/echo/fine", timeout=5).status_code == 200
    assert [r.scripted for r in echo.requests] == ["delay", "drop", None]


class CountingEcho(EchoServer):
    """Counts the submissions it acted on, whatever the client was told."""

    handled = 0

    def _submit(self, request: RecordedRequest, match: Any) -> Response:
        self.handled += 1
        return super()._submit(request, match)


def test_after_handling_the_work_is_done_and_the_answer_is_lost() -> None:
    with CountingEcho() as server:
        server.drop_after_handling(match="/submit")
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{server.base_url}/submit", data={"a": "1"}, timeout=5)
        server.fail_after_handling(status=502, match="/submit")
        assert requests.post(f"{server.base_url}/submit", data={"a": "2"}, timeout=5).status_code == 502
        server.delay_after_handling(seconds=1.0, match="/submit")
        with pytest.raises(requests.ReadTimeout):
            requests.post(f"{server.base_url}/submit", data={"a": "3"}, timeout=0.3)
        assert requests.post(f"{server.base_url}/submit", data={"a": "4"}, timeout=5).status_code == 201

        assert server.handled == 4
        assert [r.scripted for r in server.requests] == ["drop-after", "fail-after", "delay-after", None]


def test_unknown_paths_and_methods_get_the_service_error_shape(echo: EchoServer) -> None:
    assert requests.get(f"{echo.base_url}/nowhere", timeout=5).status_code == 404
    assert requests.delete(f"{echo.base_url}/echo/x", timeout=5).status_code == 405
    assert echo.handler_errors == []


def test_stop_is_prompt_even_while_an_answer_is_stalled() -> None:
    server = EchoServer().start()
    server.delay_next(1, seconds=30)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(requests.get(f"{server.base_url}/echo/stuck", timeout=10).status_code)
        except requests.RequestException as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    while not server.requests:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], requests.ConnectionError)
    assert not server.running


# --- Entra ID --------------------------------------------------------------------------------


def test_client_secret_credential_gets_a_token_once_and_then_uses_its_cache(entra: FakeEntra) -> None:
    scope = "https://contoso.operations.dynamics.com/.default"
    cred = credential(entra)

    first = cred.get_token(scope)
    second = cred.get_token(scope)

    assert second.token == first.token
    assert len(entra.requests_to("POST /")) == 1
    assert entra.issued_count() == 1
    token_request = entra.requests_to("POST /")[0]
    assert token_request.path == f"/{TENANT}/oauth2/v2.0/token"
    assert token_request.form_value("grant_type") == "client_credentials"
    info = entra.token_info(first.token)
    assert info is not None
    assert (info.tenant, info.client_id, info.audience) == (
        TENANT,
        CLIENT_ID,
        "https://contoso.operations.dynamics.com",
    )
    assert abs(first.expires_on - (time.time() + 3599)) < 60


def test_a_wrong_secret_fails_with_aadsts7000215(entra: FakeEntra) -> None:
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(entra, secret="not-the-secret").get_token("https://contoso.operations.dynamics.com/.default")
    answer = requests.post(
        entra.token_endpoint(TENANT),
        data={
            "client_id": CLIENT_ID,
            "client_secret": "nope",
            "grant_type": "client_credentials",
            "scope": "x/.default",
        },
        verify=entra.ca_pem_path,
        timeout=5,
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert answer.json()["error_codes"] == [7000215]


@pytest.mark.parametrize(
    ("tenant", "form", "status", "error"),
    [
        ("unknown-tenant", {"grant_type": "client_credentials"}, 400, "invalid_request"),
        (TENANT, {"grant_type": "password"}, 400, "unsupported_grant_type"),
        (TENANT, {}, 400, "unsupported_grant_type"),
        (TENANT, {"grant_type": "client_credentials", "scope": "https://x.example"}, 400, "invalid_scope"),
        (TENANT, {"grant_type": "client_credentials", "client_id": "someone-else"}, 400, "unauthorized_client"),
    ],
)
def test_token_endpoint_errors(entra: FakeEntra, tenant: str, form: dict[str, str], status: int, error: str) -> None:
    body = {"client_id": CLIENT_ID, "client_secret": SECRET, "scope": "https://x.example/.default", **form}
    answer = requests.post(entra.token_endpoint(tenant), data=body, verify=entra.ca_pem_path, timeout=5)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert answer.json()["error_description"].startswith("AADSTS")


def test_the_ca_file_exists_while_running_and_is_removed_on_stop() -> None:
    fake = FakeEntra().start()
    path = Path(fake.ca_pem_path)
    assert path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    fake.stop()
    assert not path.exists()


# --- Dynamics 365 F&O ------------------------------------------------------------------------


def test_requests_without_a_valid_token_get_401(entra: FakeEntra, dynamics: FakeDynamics, token: str) -> None:
    other_audience = credential(entra).get_token("https://other.operations.dynamics.com/.default").token

    for bearer in (None, "made-up", other_audience):
        answer = odata_get(dynamics, "/data/VendorInvoiceHeaders", bearer)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert set(answer.json()["error"]) >= {"code", "message"}

    assert odata_get(dynamics, "/data/VendorInvoiceHeaders", token).status_code == 200
    entra.expire_all_tokens()
    assert odata_get(dynamics, "/data/VendorInvoiceHeaders", token).status_code == 401


def test_single_entity_by_full_key(dynamics: FakeDynamics, token: str) -> None:
    answer = odata_get(dynamics, "/data/VendorInvoiceHeaders(dataAreaId='usmf',HeaderReference='H-002')", token)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert answer.headers["OData-Version"] == "4.0"
    body = answer.json()
    assert body["@odata.context"] == f"{dynamics.base_url}/data/$metadata#VendorInvoiceHeaders/$entity"
    assert body["@odata.etag"].startswith('W/"')
    assert (body["InvoiceNumber"], body["VendorName"]) == ("INV-2", "O'Neil Supplies")

    by_numeric_key = odata_get(
        dynamics, "/data/VendorPaymentJournalLines(dataAreaId='usmf',JournalBatchNumber='00282',LineNumber=1)", token
    )
    assert by_numeric_key.json()["CreditAmount"] == 10.0

    quoted = odata_get(dynamics, "/data/VendorInvoiceHeaders", token, **{"$filter": "VendorName eq 'O''Neil Supplies'"})
    assert [row["HeaderReference"] for row in quoted.json()["value"]] == ["H-002"]


def test_reads_by_key_fail_as_f_and_o_does(dynamics: FakeDynamics, token: str) -> None:
    missing_key = odata_get(dynamics, "/data/VendorInvoiceHeaders(HeaderReference='H-002')", token)
    assert missing_key.status_code == 400
    assert "number of keys" in missing_key.json()["error"]["message"]
    assert (
        odata_get(dynamics, "/data/VendorInvoiceHeaders(dataAreaId='usmf',HeaderReference='H-999')", token).status_code
        == 404
    )
    assert odata_get(dynamics, "/data/NoSuchEntities", token).status_code == 404

    other_company = "/data/VendorInvoiceHeaders(dataAreaId='usrt',HeaderReference='H-001')"
    assert odata_get(dynamics, other_company, token).status_code == 404
    assert odata_get(dynamics, other_company + "?cross-company=true", token).json()["InvoiceNumber"] == "RT-1"


def test_filter_select_orderby_count(dynamics: FakeDynamics, token: str) -> None:
    answer = odata_get(
        dynamics,
        "/data/VendorInvoiceHeaders",
        token,
        **{
            "$filter": "ModifiedDateTime gt 2024-05-01T00:00:00Z and (VendorName eq 'contoso' or InvoiceAmount lt 80)",
            "$select": "InvoiceNumber,InvoiceAmount",
            "$orderby": "InvoiceAmount desc",
            "$count": "true",
        },
    )
    body = answer.json()
    assert body["@odata.context"].endswith("#VendorInvoiceHeaders(InvoiceNumber,InvoiceAmount)")
    assert body["@odata.count"] == 3
    # Page size 2: the first page holds the two largest amounts.
    assert [row["InvoiceNumber"] for row in body["value"]] == ["INV-4", "INV-3"]
    assert all(set(row) == {"@odata.etag", "InvoiceNumber", "InvoiceAmount"} for row in body["value"])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"$filter": "NoSuchField eq 'x'"}, "Could not find a property named 'NoSuchField'"),
        ({"$filter": "InvoiceAmount eq 'x'"}, "incompatible types"),
        ({"$filter": "VendorName in ('a')"}, "not supported"),
        ({"$select": "Nope"}, "Could not find a property named 'Nope'"),
        ({"$top": "-1"}, "$top"),
    ],
)
def test_bad_queries_get_400(dynamics: FakeDynamics, token: str, query: dict[str, str], message: str) -> None:
    answer = odata_get(dynamics, "/data/VendorInvoiceHeaders", token, **query)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


def test_next_links_followed_verbatim_return_every_row_once(dynamics: FakeDynamics, token: str) -> None:
    url: str | None = (
        f"{dynamics.base_url}/data/VendorInvoiceHeaders?cross-company=true"
        "&$filter=InvoiceAmount%20ge%2010&$select=dataAreaId,HeaderReference"
    )
    seen: list[tuple[str, str]] = []
    next_links: list[str] = []
    while url:
        body = odata_get(dynamics, url, token).json()
        seen += [(row["dataAreaId"], row["HeaderReference"]) for row in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            next_links.append(url)

    expected = {(row["dataAreaId"], row["HeaderReference"]) for row in INVOICES}
    assert len(seen) == len(expected) == 6 and set(seen) == expected
    assert len(next_links) == 2
    assert all("cross-company=true" in link and "$select=dataAreaId,HeaderReference" in link for link in next_links)
    assert next_links[-1].endswith("$skip=4")


def test_paging_honours_top(dynamics: FakeDynamics, token: str) -> None:
    first = odata_get(dynamics, "/data/VendorInvoiceHeaders", token, **{"$top": "3"}).json()
    assert first["@odata.nextLink"].endswith("$skip=2&$top=1")
    second = odata_get(dynamics, first["@odata.nextLink"], token).json()
    assert [row["HeaderReference"] for row in first["value"] + second["value"]] == ["H-001", "H-002", "H-003"]
    assert "@odata.nextLink" not in second


def test_cross_company(dynamics: FakeDynamics, token: str) -> None:
    dynamics.page_size = 100

    def companies(**query: str) -> list[str]:
        rows = odata_get(dynamics, "/data/VendorInvoiceHeaders", token, **query).json()["value"]
        return sorted({row["dataAreaId"] for row in rows})

    assert companies() == ["usmf"]
    assert companies(**{"cross-company": "true"}) == ["usmf", "usrt"]
    assert companies(**{"cross-company": "true", "$filter": "dataAreaId eq 'usrt'"}) == ["usrt"]
    assert companies(**{"$filter": "dataAreaId eq 'usrt'"}) == []


def test_throttling_injection_carries_retry_after(dynamics: FakeDynamics, token: str) -> None:
    dynamics.fail_next(status=429, headers={"Retry-After": "2"}, match="/data/VendorInvoiceHeaders")
    dynamics.fail_next(status=503)
    throttled = odata_get(dynamics, "/data/VendorInvoiceHeaders", token)
    unavailable = odata_get(dynamics, "/data/VendorInvoiceHeaders", token)
    fine = odata_get(dynamics, "/data/VendorInvoiceHeaders", token)

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error"]["message"] == THROTTLED_MESSAGE
    assert unavailable.status_code == 503
    assert fine.status_code == 200
    assert [r.scripted for r in dynamics.requests] == ["fail", "fail", None]


# --- Twilio ----------------------------------------------------------------------------------


def test_message_create_through_the_sdk(twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client) -> None:
    message = client.messages.create(
        to=CUSTOMER, from_=SENDER, body="Invoice INV-4 needs approval", status_callback="https://app.example/api/status"
    )

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert (message.status, message.direction, message.num_segments) == ("queued", "outbound-api", "1")
    created = twilio_fake.requests_to("POST /2010-04-01/")[0]
    assert created.path == f"/2010-04-01/Accounts/{account.account_sid}/Messages.json"
    assert created.headers["Content-Type"] == "application/x-www-form-urlencoded"
    api_key_pair = f"{account.api_key_sid}:{account.api_key_secret}".encode()
    assert created.headers["Authorization"] == "Basic " + base64.b64encode(api_key_pair).decode()

    api = require_spec(API_SPEC)
    assert validate_form_request(api, created.path, "POST", created.form or {}) == []
    assert (
        validate_response(api, "api.v2010.account.message", last_response_body(client), allow_unknown_fields=False)
        == []
    )
    assert client.messages(message.sid).fetch().body == "Invoice INV-4 needs approval"
    with pytest.raises(TwilioRestException) as unknown:
        client.messages("SM" + "0" * 32).fetch()
    assert (unknown.value.status, unknown.value.code) == (404, 20404)


def test_messaging_service_message_starts_accepted_without_a_sender(
    twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client
) -> None:
    message = client.messages.create(to=CUSTOMER, messaging_service_sid=account.messaging_service_sid, body="hi")
    body = last_response_body(client)
    assert (message.status, body["from"], body["num_segments"]) == ("accepted", None, "0")
    assert body["messaging_service_sid"] == account.messaging_service_sid


@pytest.mark.parametrize(
    ("to", "code"),
    [("+0123", 21211), ("5551234", 21211), ("+15550000001", 21610), ("+15550000002", 21614)],
)
def test_rejected_recipients_surface_as_twilio_rest_exceptions(
    twilio_fake: FakeTwilio, client: Client, to: str, code: int
) -> None:
    twilio_fake.add_opted_out("+15550000001")
    twilio_fake.add_landline("+15550000002")
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=to, from_=SENDER, body="hello")
    assert (raised.value.status, raised.value.code) == (400, code)
    assert twilio_fake.messages() == []


def test_bad_credentials_get_20003(twilio_fake: FakeTwilio, account: TwilioCredentials) -> None:
    stranger = twilio_fake.add_test_account()
    wrong_secret = twilio_fake.point(Client(account.api_key_sid, "wrong", account.account_sid))
    other_account_path = twilio_fake.point(Client(stranger.api_key_sid, stranger.api_key_secret, account.account_sid))
    for sdk in (wrong_secret, other_account_path):
        with pytest.raises(TwilioRestException) as raised:
            sdk.messages.create(to=CUSTOMER, from_=SENDER, body="x")
        assert (raised.value.status, raised.value.code) == (401, 20003)
    token_auth = twilio_fake.point(Client(account.account_sid, account.auth_token))
    assert token_auth.messages.create(to=CUSTOMER, from_=SENDER, body="x").status == "queued"


def test_non_form_bodies_are_rejected(twilio_fake: FakeTwilio, account: TwilioCredentials) -> None:
    answer = requests.post(
        f"{twilio_fake.base_url}/2010-04-01/Accounts/{account.account_sid}/Messages.json",
        json={"To": CUSTOMER, "From": SENDER, "Body": "x"},
        auth=(account.api_key_sid, account.api_key_secret),
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["more_info"] == f"https://www.twilio.com/docs/errors/{answer.json()['code']}"


def test_throttling_surfaces_through_the_sdk_with_retry_after(twilio_fake: FakeTwilio, client: Client) -> None:
    twilio_fake.fail_next(status=429, headers={"Retry-After": "2"})
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=CUSTOMER, from_=SENDER, body="x")
    assert (raised.value.status, raised.value.code) == (429, 20429)
    assert client.http_client._test_only_last_response.headers["Retry-After"] == "2"
    assert client.messages.create(to=CUSTOMER, from_=SENDER, body="x").status == "queued"


def test_call_with_inline_twiml(twilio_fake: FakeTwilio, client: Client) -> None:
    twiml = "<Response><Say>Invoice INV-4 needs your approval.</Say></Response>"
    call = client.calls.create(
        to=CUSTOMER,
        from_=SENDER,
        twiml=twiml,
        status_callback="https://app.example/api/voice-status",
        status_callback_event=["initiated", "answered", "completed"],
    )

    assert call.sid.startswith("CA") and call.status == "queued"
    stored = twilio_fake.call(call.sid)
    assert stored.twiml == twiml
    assert stored.status_callback_events == ("initiated", "answered", "completed")
    api = require_spec(API_SPEC)
    created = twilio_fake.requests_to("POST /2010-04-01/")[-1]
    assert validate_form_request(api, created.path, "POST", created.form or {}) == []
    assert (
        validate_response(api, "api.v2010.account.call", last_response_body(client), allow_unknown_fields=False) == []
    )


def test_verify_start_then_wrong_and_right_codes(
    twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client
) -> None:
    service = client.verify.v2.services(account.verify_service_sid)
    verify_spec = require_spec(VERIFY_SPEC)

    started = service.verifications.create(to=CUSTOMER, channel="sms")
    assert (started.status, started.valid) == ("pending", False)
    assert (
        validate_response(
            verify_spec, "verify.v2.service.verification", last_response_body(client), allow_unknown_fields=False
        )
        == []
    )
    start_request = twilio_fake.requests_to("POST /v2/")[-1]
    assert validate_form_request(verify_spec, start_request.path, "POST", start_request.form or {}) == []

    code = twilio_fake.code_for(CUSTOMER)
    wrong = "000000" if code != "000000" else "111111"
    assert service.verification_checks.create(to=CUSTOMER, code=wrong).status == "pending"
    approved = service.verification_checks.create(to=CUSTOMER, code=code)
    assert (approved.status, approved.valid) == ("approved", True)
    assert (
        validate_response(
            verify_spec, "verify.v2.service.verification_check", last_response_body(client), allow_unknown_fields=False
        )
        == []
    )

    with pytest.raises(TwilioRestException) as raised:
        service.verification_checks.create(to=CUSTOMER, code=code)
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_verify_limits_expiry_and_bad_input(
    twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client
) -> None:
    service = client.verify.v2.services(account.verify_service_sid)
    service.verifications.create(to=CUSTOMER, channel="sms")
    code = twilio_fake.code_for(CUSTOMER)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert service.verification_checks.create(to=CUSTOMER, code=wrong).status == "pending"
    with pytest.raises(TwilioRestException) as too_many:
        service.verification_checks.create(to=CUSTOMER, code=code)
    assert (too_many.value.status, too_many.value.code) == (429, 60202)

    other = "+15558675311"
    service.verifications.create(to=other, channel="sms")
    twilio_fake.expire_verifications()
    with pytest.raises(TwilioRestException) as expired:
        service.verification_checks.create(to=other, code=twilio_fake.verifications(other)[0].code)
    assert (expired.value.status, expired.value.code) == (404, 20404)

    canceled_to = "+15558675312"
    pending = service.verifications.create(to=canceled_to, channel="sms")
    assert service.verifications(pending.sid).update(status="canceled").status == "canceled"
    with pytest.raises(TwilioRestException) as canceled:
        service.verification_checks.create(
            verification_sid=pending.sid, code=twilio_fake.verifications(canceled_to)[0].code
        )
    assert canceled.value.status == 404

    for to, channel in (("not-a-number", "sms"), (CUSTOMER, "pigeon")):
        with pytest.raises(TwilioRestException) as invalid:
            service.verifications.create(to=to, channel=channel)
        assert (invalid.value.status, invalid.value.code) == (400, 60200)


def test_status_callbacks_are_signed_like_twilio(
    twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client, sink: CallbackSink
) -> None:
    message = client.messages.create(to=CUSTOMER, from_=SENDER, body="hello", status_callback=sink.url())

    answer = twilio_fake.advance_message(message.sid, "delivered")

    assert answer is not None and answer.status_code == 204
    received = sink.requests[0]
    params = single_values(received)
    assert params == {
        "MessageSid": message.sid,
        "MessageStatus": "delivered",
        "SmsSid": message.sid,
        "SmsStatus": "delivered",
        "AccountSid": account.account_sid,
        "From": SENDER,
        "To": CUSTOMER,
        "ApiVersion": "2010-04-01",
    }
    assert received.headers["I-Twilio-Idempotency-Token"]
    validator = RequestValidator(account.auth_token)
    signature = received.headers["X-Twilio-Signature"]
    assert validator.validate(sink.url(), params, signature)
    assert not validator.validate(sink.url(), {**params, "MessageStatus": "failed"}, signature)
    assert not RequestValidator("another-token").validate(sink.url(), params, signature)
    assert client.messages(message.sid).fetch().status == "delivered"


def test_callback_parameter_builders(twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client) -> None:
    message = client.messages.create(to=CUSTOMER, from_=SENDER, body="hello")
    failed = twilio_fake.message_status_params(message.sid, "undelivered", error_code=30003)
    assert failed["ErrorCode"] == "30003" and failed["MessageStatus"] == failed["SmsStatus"] == "undelivered"

    call = client.calls.create(to=CUSTOMER, from_=SENDER, url="https://app.example/twiml")
    ringing = twilio_fake.call_status_params(call.sid, "ringing", 1)
    completed = twilio_fake.call_status_params(call.sid, "completed", 3, duration=42)
    assert ringing["CallbackSource"] == "call-progress-events" and ringing["SequenceNumber"] == "1"
    assert "CallDuration" not in ringing
    assert (completed["CallDuration"], completed["Direction"]) == ("42", "outbound-api")

    inbound = twilio_fake.inbound_sms_params(CUSTOMER, SENDER, "STOP")
    assert inbound["MessageSid"] == inbound["SmsSid"] == inbound["SmsMessageSid"]
    assert (inbound["SmsStatus"], inbound["NumMedia"], inbound["AccountSid"]) == ("received", "0", account.account_sid)


def test_call_progress_callbacks_follow_the_requested_events(
    twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client, sink: CallbackSink
) -> None:
    call = client.calls.create(
        to=CUSTOMER,
        from_=SENDER,
        url="https://app.example/twiml",
        status_callback=sink.url("/api/voice-status"),
        status_callback_event=["initiated", "answered", "completed"],
    )

    assert twilio_fake.advance_call(call.sid, "initiated") is not None
    assert twilio_fake.advance_call(call.sid, "ringing") is None  # not asked for
    twilio_fake.advance_call(call.sid, "in-progress")
    twilio_fake.advance_call(call.sid, "completed", duration=61)

    received = [single_values(request) for request in sink.requests]
    assert [(p["CallStatus"], p["SequenceNumber"]) for p in received] == [
        ("initiated", "0"),
        ("in-progress", "1"),
        ("completed", "2"),
    ]
    assert (received[-1]["CallDuration"], received[-1]["Duration"]) == ("61", "2")
    validator = RequestValidator(account.auth_token)
    assert all(
        validator.validate(sink.url("/api/voice-status"), params, request.headers["X-Twilio-Signature"])
        for params, request in zip(received, sink.requests, strict=True)
    )
    fetched = client.calls(call.sid).fetch()
    assert (fetched.status, fetched.duration) == ("completed", "61")


def test_auto_callbacks_walk_a_message_to_delivered(account: TwilioCredentials, sink: CallbackSink) -> None:
    with FakeTwilio(auto_callbacks=True, auto_callback_interval=0.01) as fake:
        fake.add_account(account.account_sid, account.auth_token)
        fake.add_api_key(account.account_sid, account.api_key_sid, account.api_key_secret)
        sdk = fake.point(Client(account.api_key_sid, account.api_key_secret, account.account_sid))
        sdk.messages.create(to=CUSTOMER, from_=SENDER, body="hi", status_callback=sink.url())
        received = sink.wait_for(2)
    # Created "queued": no callback for the initial status, as on Twilio.
    assert [request.form_value("MessageStatus") for request in received] == ["sent", "delivered"]


# --- spec helper -----------------------------------------------------------------------------


def test_form_validation_reports_each_kind_of_problem() -> None:
    api = require_spec(API_SPEC)
    problems = validate_form_request(
        api,
        "/2010-04-01/Accounts/ACnot-a-sid/Messages.json",
        "POST",
        {
            "From": SENDER,
            "Body": ["a", "b"],
            "Colour": "blue",
            "ContentRetention": "forever",
            "ValidityPeriod": "soon",
            "StatusCallback": "not a url",
            "MediaUrl": ["https://a.example/1.png", "https://a.example/2.png"],
        },
    )
    assert any("path parameter 'AccountSid'" in problem for problem in problems)
    assert "missing required parameter 'To'" in problems
    assert any("'Body' is repeated" in problem for problem in problems)
    assert any("unknown parameter 'Colour'" in problem for problem in problems)
    assert any("'ContentRetention'" in problem and "not one of" in problem for problem in problems)
    assert any("'ValidityPeriod'" in problem and "integer" in problem for problem in problems)
    assert any("'StatusCallback'" in problem and "uri" in problem for problem in problems)
    assert not any("MediaUrl" in problem for problem in problems)


def test_response_validation_understands_nullable_and_formats() -> None:
    api = require_spec(API_SPEC)
    body = {"sid": "SM" + "a" * 32, "price": None, "date_created": "Wed, 08 Oct 2025 13:54:12 +0000"}
    assert validate_response(api, "api.v2010.account.message", body) == []
    problems = validate_response(
        api, ("/2010-04-01/Accounts/{AccountSid}/Messages.json", 201), {**body, "date_created": "yesterday"}
    )
    assert problems == ["date_created: 'yesterday' is not a 'date-time-rfc-2822'"]


def test_require_spec_skips_when_the_specs_are_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ML_CONNECTOR_SHARED_DIR", str(tmp_path))
    assert openapi.specs_dir() == tmp_path / "specs"
    with pytest.raises(pytest.skip.Exception, match="set ML_CONNECTOR_SHARED_DIR"):
        require_spec(API_SPEC)


def test_the_account_its_numbers_and_services_are_read_as_the_specs_describe(
    twilio_fake: FakeTwilio, account: TwilioCredentials, client: Client
) -> None:
    api_spec, verify_spec = require_spec(API_SPEC), require_spec(VERIFY_SPEC)
    twilio_fake.set_number_webhooks(SENDER, sms_url="https://app.example.com/api/twilio/inbound/sms")

    fetched = client.api.v2010.accounts(account.account_sid).fetch()
    assert fetched.status == "active"
    assert validate_response(api_spec, "api.v2010.account", last_response_body(client),
                             allow_unknown_fields=False) == []
    numbers = client.api.v2010.accounts(account.account_sid).incoming_phone_numbers.list(phone_number=SENDER)
    assert [number.sms_url for number in numbers] == ["https://app.example.com/api/twilio/inbound/sms"]
    page = last_response_body(client)
    listing = api_spec["paths"]["/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json"]["get"]
    assert set(page) == set(listing["responses"]["200"]["content"]["application/json"]["schema"]["properties"])
    assert validate_response(api_spec, "api.v2010.account.incoming_phone_number", page["incoming_phone_numbers"][0],
                             allow_unknown_fields=False) == []
    assert client.api.v2010.accounts(account.account_sid).incoming_phone_numbers.list(phone_number=CUSTOMER) == []
    assert client.verify.v2.services(account.verify_service_sid).fetch().sid == account.verify_service_sid
    assert validate_response(verify_spec, "verify.v2.service", last_response_body(client),
                             allow_unknown_fields=False) == []
    client.messaging.base_url = twilio_fake.base_url
    assert client.messaging.v1.services(account.messaging_service_sid).fetch().account_sid == account.account_sid

    with pytest.raises(TwilioRestException) as raised:
        client.verify.v2.services("VA" + "0" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)
    other = twilio_fake.add_test_account()
    with pytest.raises(TwilioRestException) as raised:
        client.api.v2010.accounts(other.account_sid).fetch()
    assert (raised.value.status, raised.value.code) == (401, 20003)
