"""DynamicsClient against the fake Entra ID and the fake F&O OData service, over real HTTPS."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError

from shared.config.model import SecretRef
from shared.erp.dynamics.client import (
    DynamicsClient,
    ODataPagingError,
    dynamics_client,
    key_segment,
    odata_datetime,
    odata_string,
    reset_dynamics_clients,
)
from shared.erp.dynamics.connection import DynamicsConnection
from shared.erp.dynamics.events import VENDOR_INVOICE_POSTED, parse_event, record_fields
from shared.http import HttpClient, HttpFailure, RetryLater, RetryPolicy
from shared.storage.secrets import CachedSecretProvider, EnvSecretProvider, reset_secret_provider
from tests.conftest import REPO_ROOT
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra

pytestmark = pytest.mark.timeout(30)

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET_NAME = "contoso-fo-client-secret"
SECRET_VALUE = "s3cr3t-" + "x" * 24
VENDOR_KEYS = ("dataAreaId", "VendorAccountNumber")
TOKEN_POSTS = "POST /" + TENANT + "/oauth2/v2.0/token"


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    with FakeEntra() as fake:
        fake.register_client(TENANT, CLIENT_ID, SECRET_VALUE)
        yield fake


@pytest.fixture
def dynamics(entra: FakeEntra) -> Iterator[FakeDynamics]:
    with FakeDynamics(entra) as fake:
        fake.add_entities(
            "VendorsV2",
            [
                vendor("usmf", "US-101", "Fabrikam Supplies", "+14155550101"),
                vendor("usmf", "US-104", "Contoso Office", "+14155550104"),
                vendor("demf", "DE-001", "Müller GmbH", "+4930555001"),
            ],
            VENDOR_KEYS,
        )
        yield fake


def vendor(company: str, account: str, name: str, phone: str) -> dict[str, Any]:
    return {
        "dataAreaId": company,
        "VendorAccountNumber": account,
        "VendorOrganizationName": name,
        "PrimaryPhoneNumber": phone,
        "PrimaryEmailAddress": f"ap@{account.lower()}.example", "VendorGroupId": "10",
        "VendorSearchName": name.upper(),
    }


def connection_for(dynamics: FakeDynamics, entra: FakeEntra, **changes: Any) -> DynamicsConnection:
    values: dict[str, Any] = {
        "name": "contoso-fo",
        "environment_url": dynamics.environment_url,
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SecretRef(SECRET_NAME),
        "authority": entra.authority,
        "ca_bundle": entra.ca_pem_path,
        **changes,
    }
    return DynamicsConnection(**values)


def secrets_with(value: str = SECRET_VALUE) -> EnvSecretProvider:
    return EnvSecretProvider(env={SECRET_NAME: value})


@pytest.fixture
def client(dynamics: FakeDynamics, entra: FakeEntra) -> Iterator[DynamicsClient]:
    instance = DynamicsClient(connection_for(dynamics, entra), secrets_with())
    yield instance
    instance.close()


def odata_requests(dynamics: FakeDynamics) -> list[Any]:
    return dynamics.requests_to("/data/")


class RecordingHttp(HttpClient):
    """The production client, keeping each JSON answer so a test can see what the service sent."""

    def __init__(self, verify: str) -> None:
        super().__init__(RetryPolicy(default_retry_after=30.0), verify=verify)
        self.answers: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = super().request(method, url, **kwargs)
        self.answers.append(response.json())
        return response


# --- tokens --------------------------------------------------------------------------------


def test_many_reads_use_one_cached_token(client: DynamicsClient, entra: FakeEntra, dynamics: FakeDynamics) -> None:
    for _ in range(5):
        assert client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"}) is not None
    assert len(list(client.query("VendorsV2"))) == 3

    assert len(entra.requests_to(TOKEN_POSTS)) == 1
    token_request = entra.requests_to(TOKEN_POSTS)[0]
    assert token_request.form_value("scope") == f"{dynamics.environment_url}/.default"
    assert token_request.form_value("grant_type") == "client_credentials"
    assert len({request.headers["Authorization"] for request in odata_requests(dynamics)}) == 1


def test_every_request_carries_the_odata_headers(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"})

    headers = odata_requests(dynamics)[0].headers
    assert headers["Authorization"].startswith("Bearer ")
    assert headers["OData-Version"] == "4.0"
    assert headers["OData-MaxVersion"] == "4.0"
    assert headers["Accept"] == "application/json"


def test_expired_token_is_renewed_once_and_the_read_succeeds(
    client: DynamicsClient, entra: FakeEntra, dynamics: FakeDynamics
) -> None:
    keys = {"dataAreaId": "usmf", "VendorAccountNumber": "US-104"}
    client.read_entity("VendorsV2", keys)
    entra.expire_all_tokens()

    row = client.read_entity("VendorsV2", keys)

    assert row is not None and row["VendorOrganizationName"] == "Contoso Office"
    assert len(entra.requests_to(TOKEN_POSTS)) == 2
    tokens = [request.headers["Authorization"] for request in odata_requests(dynamics)]
    assert len(tokens) == 3 and tokens[0] == tokens[1] != tokens[2]
    # The renewed credential keeps its token: the next read asks Entra for nothing.
    client.read_entity("VendorsV2", keys)
    assert len(entra.requests_to(TOKEN_POSTS)) == 2


def test_a_second_401_raises_http_failure_with_the_reason(dynamics: FakeDynamics, entra: FakeEntra) -> None:
    # Same server, other host name: the token's audience is not the environment F&O expects.
    wrong_audience = dynamics.environment_url.replace("127.0.0.1", "localhost")
    client = DynamicsClient(connection_for(dynamics, entra, environment_url=wrong_audience), secrets_with())

    with pytest.raises(HttpFailure) as raised:
        client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"})

    assert raised.value.status == 401
    assert "audience" in str(raised.value)
    assert len(odata_requests(dynamics)) == 2  # the first try and exactly one retry
    assert len(entra.requests_to(TOKEN_POSTS)) == 2
    for token in _bearer_tokens_sent(dynamics):
        assert token not in str(raised.value)
    client.close()


def _bearer_tokens_sent(dynamics: FakeDynamics) -> list[str]:
    return [request.headers["Authorization"].partition(" ")[2] for request in odata_requests(dynamics)]


def test_a_wrong_secret_fails_clearly_without_showing_it(dynamics: FakeDynamics, entra: FakeEntra) -> None:
    wrong = "not-the-secret-" + "y" * 20
    client = DynamicsClient(connection_for(dynamics, entra), secrets_with(wrong))

    with pytest.raises(ClientAuthenticationError) as raised:
        client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"})

    message = str(raised.value)
    assert "AADSTS7000215" in message
    assert wrong not in message and SECRET_VALUE not in message
    assert odata_requests(dynamics) == []
    client.close()


def test_a_refused_secret_is_read_again_on_the_next_call(dynamics: FakeDynamics, entra: FakeEntra) -> None:
    env = {SECRET_NAME: "rotated-away-" + "z" * 20}
    secrets = CachedSecretProvider(EnvSecretProvider(env=env), ttl_seconds=3600)
    client = DynamicsClient(connection_for(dynamics, entra), secrets)
    keys = {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"}
    with pytest.raises(ClientAuthenticationError):
        client.read_entity("VendorsV2", keys)

    env[SECRET_NAME] = SECRET_VALUE  # the new value is in the vault now

    assert client.read_entity("VendorsV2", keys) is not None
    client.close()


# --- reads by key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account",
    ["O'Neil A/P 7", "50% #1?", "Müller & Søn, (Oslo)=ok", "plain"],
)
def test_read_by_full_key_with_awkward_characters(client: DynamicsClient, dynamics: FakeDynamics, account: str) -> None:
    dynamics.add_entities("VendorsV2", [vendor("usmf", account, "Awkward Ltd", "+14155550199")], VENDOR_KEYS)
    select = ("VendorAccountNumber", "VendorOrganizationName", "PrimaryPhoneNumber")

    row = client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": account}, select)

    assert row is not None
    assert row["VendorAccountNumber"] == account
    assert set(row) - {"@odata.etag"} == set(select)
    assert "@odata.context" not in row
    request = odata_requests(dynamics)[-1]
    assert request.query_value("$select") == ",".join(select)
    assert request.query_value("cross-company") == "true"
    segment = request.path.partition("(")[2]
    for character in "/#? ":
        assert character not in segment  # each was percent-encoded
    assert unquote(request.path).endswith(f"(dataAreaId='usmf',VendorAccountNumber={odata_string(account)})")


def test_read_in_another_company_needs_cross_company(client: DynamicsClient) -> None:
    keys = {"dataAreaId": "demf", "VendorAccountNumber": "DE-001"}

    assert client.read_entity("VendorsV2", keys)["VendorOrganizationName"] == "Müller GmbH"  # type: ignore[index]
    assert client.read_entity("VendorsV2", keys, cross_company=False) is None


def test_int_keys_are_unquoted(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    dynamics.add_entities(
        "VendorPaymentJournalLines",
        [{"dataAreaId": "usmf", "JournalBatchNumber": "00282", "LineNumber": 1, "CreditAmount": 250.0}],
        ("dataAreaId", "JournalBatchNumber", "LineNumber"),
    )
    keys = {"dataAreaId": "usmf", "JournalBatchNumber": "00282", "LineNumber": 1}

    row = client.read_entity("VendorPaymentJournalLines", keys)

    assert row is not None and row["CreditAmount"] == 250.0
    assert odata_requests(dynamics)[-1].path.endswith("LineNumber=1)")


def test_missing_row_is_none(client: DynamicsClient) -> None:
    assert client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "NOPE"}) is None


def test_a_bad_request_names_the_odata_error(client: DynamicsClient) -> None:
    with pytest.raises(HttpFailure) as raised:
        client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"}, ("NoSuchField",))

    assert raised.value.status == 400
    assert "Could not find a property named 'NoSuchField'" in raised.value.reason


# --- queries -------------------------------------------------------------------------------


def test_query_follows_next_links_verbatim(dynamics: FakeDynamics, entra: FakeEntra) -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    invoices = [
        {"dataAreaId": "usmf", "HeaderReference": f"INV-{n}", "ModifiedDateTime": start + timedelta(hours=n)}
        for n in range(1, 6)
    ]
    old = {"dataAreaId": "usmf", "HeaderReference": "INV-0", "ModifiedDateTime": start - timedelta(days=1)}
    dynamics.add_entities("VendorInvoiceHeaders", [*invoices, old], ("dataAreaId", "HeaderReference"))
    dynamics.page_size = 2
    http = RecordingHttp(verify=entra.ca_pem_path)
    client = DynamicsClient(connection_for(dynamics, entra), secrets_with(), http=http)

    rows = client.query(
        "VendorInvoiceHeaders",
        filter=f"ModifiedDateTime gt {odata_datetime(start)}",
        select=("HeaderReference", "ModifiedDateTime"),
        orderby="ModifiedDateTime",
    )

    assert [row["HeaderReference"] for row in rows] == [f"INV-{n}" for n in range(1, 6)]
    sent = odata_requests(dynamics)
    assert len(sent) == 3
    assert sent[0].query_value("$filter") == "ModifiedDateTime gt 2024-05-01T00:00:00Z"
    next_links = [answer["@odata.nextLink"] for answer in http.answers if "@odata.nextLink" in answer]
    assert len(next_links) == 2
    assert [dynamics.base_url + request.target for request in sent[1:]] == next_links
    client.close()
    http.close()


def test_query_is_lazy_and_reads_one_page_at_a_time(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    dynamics.page_size = 1

    rows = client.query("VendorsV2", select=("VendorAccountNumber",))
    assert odata_requests(dynamics) == []  # nothing is fetched before iteration
    first = next(rows)

    assert first["VendorAccountNumber"] == "DE-001"  # key order: demf before usmf
    assert len(odata_requests(dynamics)) == 1
    assert [row["VendorAccountNumber"] for row in rows] == ["US-101", "US-104"]


def test_query_top_and_company(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    dynamics.page_size = 1

    own_company = list(client.query("VendorsV2", cross_company=False))
    top_two = list(client.query("VendorsV2", top=2))

    assert {row["dataAreaId"] for row in own_company} == {"usmf"}
    assert len(top_two) == 2


def test_query_with_a_string_literal(client: DynamicsClient) -> None:
    rows = list(client.query("VendorsV2", filter=f"VendorOrganizationName eq {odata_string('Contoso Office')}"))

    assert [row["VendorAccountNumber"] for row in rows] == ["US-104"]


def test_a_repeating_next_link_stops_with_a_clear_error(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    looping = f"{dynamics.base_url}/data/VendorsV2?cross-company=true&$skip=1"
    page = {"value": [{"VendorAccountNumber": "US-101"}], "@odata.nextLink": looping}
    dynamics.fail_next(n=5, status=200, headers={}, body=page, match="/data/VendorsV2")

    with pytest.raises(ODataPagingError, match="repeats"):
        list(client.query("VendorsV2"))

    assert len(odata_requests(dynamics)) == 2


def test_a_next_link_to_another_host_is_not_followed(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    elsewhere = "https://attacker.example/data/VendorsV2?$skip=1"
    dynamics.fail_next(status=200, headers={}, body={"value": [], "@odata.nextLink": elsewhere})

    with pytest.raises(ODataPagingError, match="leaves the environment"):
        list(client.query("VendorsV2"))


# --- throttling ----------------------------------------------------------------------------


def test_429_with_short_retry_after_waits_exactly_then_succeeds(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    dynamics.fail_next(status=429, headers={"Retry-After": "2"}, match="/data/")

    row = client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"})

    assert row is not None
    first, second = odata_requests(dynamics)
    assert first.scripted == "fail" and second.scripted is None
    assert second.at - first.at >= 2.0


def test_429_with_long_retry_after_goes_back_to_the_queue(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    dynamics.fail_next(status=429, headers={"Retry-After": "120"}, match="/data/")

    with pytest.raises(RetryLater) as raised:
        client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"})

    assert raised.value.delay == 120
    assert raised.value.status == 429
    assert len(odata_requests(dynamics)) == 1


def test_429_without_retry_after_waits_thirty_seconds(client: DynamicsClient, dynamics: FakeDynamics) -> None:
    dynamics.fail_next(status=429, headers={}, match="/data/")

    with pytest.raises(RetryLater) as raised:
        list(client.query("VendorsV2"))

    assert raised.value.delay == 30.0


def test_concurrent_requests_are_capped(dynamics: FakeDynamics, entra: FakeEntra) -> None:
    client = DynamicsClient(connection_for(dynamics, entra), secrets_with(), max_concurrency=2)
    keys = {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"}
    client.read_entity("VendorsV2", keys)  # token and connection ready before the race
    dynamics.clear_log()
    dynamics.delay_next(n=6, seconds=0.3, match="/data/")
    results: list[Any] = []

    threads = [threading.Thread(target=lambda: results.append(client.read_entity("VendorsV2", keys))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 6 and all(results)
    arrivals = sorted(request.at for request in odata_requests(dynamics))
    # With two slots, the third request can only start once the first answer is back.
    assert all(later - earlier >= 0.25 for earlier, later in zip(arrivals, arrivals[2:], strict=False))
    client.close()


# --- the pipeline's end of the chain -------------------------------------------------------


def test_record_fields_reads_the_vendor_of_a_posted_invoice(client: DynamicsClient) -> None:
    event = parse_event(
        {
            "BusinessEventId": VENDOR_INVOICE_POSTED,
            "BusinessEventLegalEntity": "usmf",
            "ControlNumber": 5637144577,
            "EventId": "55A81094-A14E-46A6-A12C-07ED5C5990C7",
            "EventTimeIso8601": "2024-05-01T10:15:00.1234567Z",
            "InvoiceAccount": "US-104",
            "InvoiceId": "APINV-0042",
            "InvoiceAmountInAccountingCurrency": 1250.5,
            "InvoiceDueDate": "/Date(1717200000000)/",
        }
    )

    enriched = record_fields(event, client)

    assert enriched.reads == ["VendorsV2"]
    assert enriched.record_key == "usmf|APINV-0042"
    assert enriched.fields["vendor_name"] == "Contoso Office"
    assert enriched.fields["vendor_phone"] == "+14155550104"
    assert enriched.fields["vendor_email"] == "ap@us-104.example"


# --- registry ------------------------------------------------------------------------------


def test_one_client_per_connection_name(
    dynamics: FakeDynamics, entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    reset_secret_provider()
    connection = connection_for(dynamics, entra)
    try:
        shared_client = dynamics_client(connection)
        assert dynamics_client(connection) is shared_client
        assert dynamics_client(connection_for(dynamics, entra, name="other-fo")) is not shared_client
        assert shared_client.read_entity("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"})
        reset_dynamics_clients()
        assert dynamics_client(connection) is not shared_client
    finally:
        reset_dynamics_clients()
        reset_secret_provider()


# --- units ---------------------------------------------------------------------------------


def test_literals() -> None:
    assert odata_string("O'Neil") == "'O''Neil'"
    assert odata_datetime(datetime(2024, 5, 1, tzinfo=UTC)) == "2024-05-01T00:00:00Z"
    assert odata_datetime(datetime(2024, 5, 1, 2, 30, tzinfo=timezone(timedelta(hours=2)))) == "2024-05-01T00:30:00Z"
    assert odata_datetime(datetime(2024, 5, 1, 0, 0, 0, 500, tzinfo=UTC)) == "2024-05-01T00:00:00.000500Z"
    with pytest.raises(ValueError):
        odata_datetime(datetime(2024, 5, 1))
    assert key_segment({"dataAreaId": "usmf", "LineNumber": 3}) == "(dataAreaId='usmf',LineNumber=3)"
    assert key_segment({"Id": "a b/c'd"}) == "(Id='a%20b%2Fc''d')"
    with pytest.raises(TypeError):
        key_segment({"Flag": True})
    with pytest.raises(ValueError):
        key_segment({"Bad)Name": "x"})


def test_import_loads_neither_azure_identity_nor_requests() -> None:
    probe = (
        "import json, sys\n"
        "import shared.erp.dynamics.client\n"
        "print(json.dumps([name for name in ('azure.identity', 'azure.core', 'requests', 'msal')"
        " if name in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30
    )

    assert json.loads(result.stdout) == []
