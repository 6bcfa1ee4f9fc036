"""The connection doctor against the fakes over real HTTP: every failure mode one at a time, named in
the answer with its fix; all passing; the CLI's exit codes; the admin route's JSON."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from shared.config.loading import config_from_dict, reset_config
from shared.doctor import Context
from shared.doctor.run import examine
from shared.erp.dynamics.events import VENDOR_INVOICE_POSTED
from shared.logs import mask_phone
from shared.storage.secrets import EnvSecretProvider, reset_secret_provider
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.qad import DEFAULT_PASSWORD, DEFAULT_USER, FakeQad
from tests.fakes.sagex3 import FakeSageX3
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.slack import FakeSlack
from tests.fakes.syspro import FakeSyspro
from tests.fakes.twilio import FakeTwilio, TwilioCredentials

pytestmark = pytest.mark.timeout(60)

PUBLIC_BASE_URL = "https://connector.example.com"
ENV = {"PUBLIC_BASE_URL": PUBLIC_BASE_URL}
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
FO_SECRET = "fo-secret-" + "x" * 24
SYSPRO_PASSWORD, SYSPRO_ODATA_PASSWORD = "syspro-pass", "syspro-odata-pass"
X3_PASSWORD = "x3-password"
SENDER = "ap@contoso.com"
CHANNEL_ID, CHANNEL_NAME = "C0APPROVE1", "ap-approvals"


# --- the fakes -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_secret_values_registered_before() -> None:
    """A doctor's detail passes log redaction: values other tests registered (a password "secret", say)
    would mask words of the texts these tests read."""
    from shared.logs import forget_registered_secrets

    forget_registered_secrets()


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    with FakeEntra() as fake:
        fake.register_client(TENANT, CLIENT_ID, FO_SECRET)
        yield fake


@pytest.fixture
def dynamics(entra: FakeEntra) -> Iterator[FakeDynamics]:
    with FakeDynamics(entra) as fake:
        fake.add_entities("VendorInvoiceHeaders", [{"dataAreaId": "usmf", "HeaderReference": "H-1"}],
                          ("dataAreaId", "HeaderReference"))
        fake.add_entities("VendorsV2", [{"dataAreaId": "usmf", "VendorAccountNumber": "US-101"}],
                          ("dataAreaId", "VendorAccountNumber"))
        yield fake


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def creds(twilio: FakeTwilio) -> TwilioCredentials:
    found = twilio.add_test_account()
    twilio.set_number_webhooks(found.phone_number, sms_url=f"{PUBLIC_BASE_URL}/api/twilio/inbound/sms",
                               status_callback=f"{PUBLIC_BASE_URL}/api/twilio/status/sms")
    return found


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL_ID, CHANNEL_NAME)
        yield fake


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        fake.verify_sender(SENDER)
        yield fake


@pytest.fixture
def syspro() -> Iterator[FakeSyspro]:
    fake = FakeSyspro().start()
    fake.add_operator("ADMIN", SYSPRO_PASSWORD, SYSPRO_ODATA_PASSWORD)
    fake.add_company("EDU1")
    fake.add_supplier("S1", "Acme Supplies", "(415) 555-0123")
    fake.add_purchase_order("PO-1", "S1")
    yield fake
    fake.stop()


@pytest.fixture
def x3() -> Iterator[FakeSageX3]:
    with FakeSageX3() as fake:
        yield fake


@pytest.fixture
def qad() -> Iterator[FakeQad]:
    fake = FakeQad().start()
    fake.add_supplier("S-100", "Acme Steel", "(415) 555-0100")
    yield fake
    fake.stop()


# --- connections, as a configuration file names them ------------------------------------------------


def dynamics_body(dynamics: FakeDynamics, entra: FakeEntra, **changes: Any) -> dict[str, Any]:
    return {"kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": TENANT,
            "client_id": CLIENT_ID, "client_secret": {"secret": "fo-secret"}, "authority": entra.authority,
            "ca_bundle": entra.ca_pem_path, "poll": {"entities": ["VendorInvoiceHeaders"]}, **changes}


def twilio_body(twilio: FakeTwilio, creds: TwilioCredentials, **changes: Any) -> dict[str, Any]:
    return {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
            "api_key_secret": {"secret": "tw-key"}, "auth_token": {"secret": "tw-token"},
            "from_number": creds.phone_number, "verify_service_sid": creds.verify_service_sid,
            "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url, **changes}


def slack_body(slack: FakeSlack, **changes: Any) -> dict[str, Any]:
    return {"kind": "slack", "bot_token": {"secret": "slack-bot"}, "signing_secret": {"secret": "slack-signing"},
            "api_base_url": slack.api_base_url, "default_channel": CHANNEL_ID, **changes}


def sendgrid_body(sendgrid: FakeSendGrid, **changes: Any) -> dict[str, Any]:
    return {"kind": "sendgrid", "api_key": {"secret": "sg-key"}, "from_email": SENDER,
            "api_base_url": sendgrid.base_url, **changes}


def syspro_body(syspro: FakeSyspro, **changes: Any) -> dict[str, Any]:
    return {"kind": "syspro", "base_url": syspro.rest_url, "operator": "ADMIN", "password": {"secret": "sys-pass"},
            "company_id": "EDU1", "odata_url": syspro.odata_url, "odata_password": {"secret": "sys-odata"},
            "poll": {"entities": ["PorMasterHdr", "ApInvoice"]}, **changes}


def odata_only_body(syspro: FakeSyspro) -> dict[str, Any]:
    body = syspro_body(syspro, api="odata")
    del body["base_url"], body["password"]
    return body


def x3_body(x3: FakeSageX3, **changes: Any) -> dict[str, Any]:
    return {"kind": "sagex3", "base_url": x3.base_url, "folder": "SEED", "username": "admin",
            "password": {"secret": "x3-pass"}, "poll": {"entities": ["PORDER", "PINVOICE"]}, **changes}


def qad_body(qad: FakeQad, **changes: Any) -> dict[str, Any]:
    return {"kind": "qad", "base_url": qad.tenant_url, "domain": "10USA", "username": DEFAULT_USER,
            "password": {"secret": "qad-pass"}, "poll": {"entities": ["GoodsReceipts"]}, **changes}


def secrets_for(twilio_creds: TwilioCredentials | None = None, slack: FakeSlack | None = None,
                sendgrid_key: str | None = None) -> dict[str, str]:
    values = {"fo-secret": FO_SECRET, "sys-pass": SYSPRO_PASSWORD, "sys-odata": SYSPRO_ODATA_PASSWORD,
              "x3-pass": X3_PASSWORD, "qad-pass": DEFAULT_PASSWORD, "slack-signing": "signing-secret"}
    if twilio_creds is not None:
        values |= {"tw-key": twilio_creds.api_key_secret, "tw-token": twilio_creds.auth_token}
    if slack is not None:
        values["slack-bot"] = slack.bot_token
    if sendgrid_key is not None:
        values["sg-key"] = sendgrid_key
    return values


def doctor(connections: dict[str, dict[str, Any]], secrets: dict[str, str], *, env: dict[str, str] | None = None,
           rules: list[dict[str, Any]] | None = None, only: str | None = None) -> dict[str, Any]:
    config = config_from_dict({"connections": connections, "rules": rules or []})
    context = Context(config, EnvSecretProvider(env=secrets), dict(ENV if env is None else env))
    return examine(config, connection=only, context=context)


def entry(report: dict[str, Any], connection: str) -> dict[str, Any]:
    return next(found for found in report["connections"] if found["connection"] == connection)


def only_failure(report: dict[str, Any], connection: str) -> dict[str, Any]:
    """The one failed check of ``connection`` (the test injected one failure)."""
    failures = [check for check in entry(report, connection)["checks"] if not check["ok"]]
    assert len(failures) == 1, failures
    assert report["ok"] is False and entry(report, connection)["ok"] is False
    assert failures[0]["fix"]
    return failures[0]


def names(report: dict[str, Any], connection: str) -> list[str]:
    return [check["name"] for check in entry(report, connection)["checks"]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- all passing -----------------------------------------------------------------------------------


def test_every_kind_passes_against_systems_set_up_right(
        entra: FakeEntra, dynamics: FakeDynamics, twilio: FakeTwilio, creds: TwilioCredentials, slack: FakeSlack,
        sendgrid: FakeSendGrid, syspro: FakeSyspro, x3: FakeSageX3, qad: FakeQad) -> None:
    key = sendgrid.add_api_key()
    connections = {"fo": dynamics_body(dynamics, entra), "sms": twilio_body(twilio, creds),
                   "chat": slack_body(slack), "mail": sendgrid_body(sendgrid), "sys": syspro_body(syspro),
                   "sys-odata": syspro_body(syspro, api="odata"), "sys-odata-only": odata_only_body(syspro),
                   "x3": x3_body(x3), "qad": qad_body(qad)}
    rules = [{"id": "invoice-sms", "source": "fo", "event": VENDOR_INVOICE_POSTED, "channel": "sms", "via": "sms",
              "to": ["+14155550100"], "template": "vendor-invoice-posted"}]

    report = doctor(connections, secrets_for(creds, slack, key), rules=rules)

    assert report["ok"] is True, [c for e in report["connections"] for c in e["checks"] if not c["ok"]]
    assert report["checked_at"].endswith("Z")
    assert [(e["connection"], e["kind"]) for e in report["connections"]] == [
        ("secrets", "keyvault"), ("fo", "dynamics"), ("sms", "twilio"), ("chat", "slack"), ("mail", "sendgrid"),
        ("sys", "syspro"), ("sys-odata", "syspro"), ("sys-odata-only", "syspro"), ("x3", "sagex3"), ("qad", "qad")]
    assert names(report, "fo") == ["Entra token", "OData $metadata", "$top=1 VendorInvoiceHeaders",
                                   "$top=1 VendorsV2"]
    assert names(report, "sms") == ["Credentials", "Sender number", "Inbound SMS URL (SmsUrl)",
                                    "Status callback (StatusCallback)", "Verify service"]
    assert names(report, "chat") == ["auth.test", "Scopes", f"Channel {CHANNEL_ID}"]
    assert names(report, "mail") == ["API key scopes", "Verified sender"]
    assert names(report, "sys") == ["e.net Logon", "e.net Logoff"]
    # OData reads for the poll; e.net, where it is set, for the notes.
    assert names(report, "sys-odata") == ["OData PorMasterHdr", "OData ApInvoice", "e.net Logon", "e.net Logoff"]
    assert names(report, "sys-odata-only") == ["OData PorMasterHdr", "OData ApInvoice"]
    assert names(report, "x3") == ["Read PORDER", "Read PINVOICE"]
    assert names(report, "qad") == ["Login", "Browse receipts", "Browse suppliers"]
    assert all(check["fix"] is None for e in report["connections"] for check in e["checks"])
    shown = json.dumps(report)
    for secret in secrets_for(creds, slack, key).values():
        assert secret not in shown
    assert creds.phone_number not in shown  # the sender number is shown masked
    assert syspro.active_sessions() == []  # the doctor's logon was logged off


# --- Dynamics --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "code", "fix_words"), [
    ({"client_secret": {"secret": "wrong-secret"}}, "AADSTS7000215", "Value (not its Secret ID)"),
    ({"tenant_id": "nowhere.onmicrosoft.com"}, "AADSTS90002", "tenant"),
    ({"client_id": "99999999-0000-0000-0000-000000000000"}, "AADSTS700016", "client_id"),
])
def test_an_entra_refusal_is_explained_by_its_code(entra: FakeEntra, dynamics: FakeDynamics,
                                                  change: dict[str, Any], code: str, fix_words: str) -> None:
    secrets = secrets_for() | {"wrong-secret": "not-the-secret-" + "y" * 20}
    report = doctor({"fo": dynamics_body(dynamics, entra, **change)}, secrets)

    failure = only_failure(report, "fo")
    assert failure["name"] == "Entra token"
    assert failure["detail"].startswith(code)
    assert fix_words in failure["fix"]
    assert "not-the-secret" not in json.dumps(report)


def test_an_entity_the_environment_does_not_publish_fails_its_read(entra: FakeEntra, dynamics: FakeDynamics) -> None:
    body = dynamics_body(dynamics, entra, poll={"entities": ["VendorInvoiceHeaders", "PurchaseOrderHeadersV2"]})
    failure = only_failure(doctor({"fo": body}, secrets_for()), "fo")

    assert failure["name"] == "$top=1 PurchaseOrderHeadersV2"
    assert "404" in failure["detail"]
    assert "published" in failure["fix"]


def test_an_app_not_registered_in_the_environment_is_refused_at_metadata(entra: FakeEntra,
                                                                        dynamics: FakeDynamics) -> None:
    dynamics.allow_clients("00000000-aaaa-bbbb-cccc-000000000000")

    report = doctor({"fo": dynamics_body(dynamics, entra)}, secrets_for())

    failed = [check for check in entry(report, "fo")["checks"] if not check["ok"]]
    assert [check["name"] for check in failed] == ["OData $metadata", "$top=1 VendorInvoiceHeaders"]
    assert "401" in failed[0]["detail"] and "Entra ID applications" in failed[0]["fix"]


# --- Twilio ----------------------------------------------------------------------------------------


def test_a_wrong_api_key_secret_fails_the_credentials(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    secrets = secrets_for(creds) | {"tw-key": "wrong-" + creds.api_key_secret}
    failure = only_failure(doctor({"sms": twilio_body(twilio, creds)}, secrets), "sms")

    assert failure["name"] == "Credentials"
    assert "20003" in failure["detail"] and "API key" in failure["fix"]


def test_a_suspended_account_fails_the_credentials(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    twilio.set_account_status(creds.account_sid, "suspended")
    failure = only_failure(doctor({"sms": twilio_body(twilio, creds)}, secrets_for(creds)), "sms")

    assert failure["name"] == "Credentials" and "suspended" in failure["detail"]


def test_a_sender_number_of_another_account_fails(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    report = doctor({"sms": twilio_body(twilio, creds, from_number="+14155550177")}, secrets_for(creds))
    failure = only_failure(report, "sms")

    assert failure["name"] == "Sender number"
    assert failure["detail"].startswith(mask_phone("+14155550177"))
    assert "+14155550177" not in json.dumps(report)


@pytest.mark.parametrize(("which", "check"), [("sms_url", "Inbound SMS URL (SmsUrl)"),
                                              ("status_callback", "Status callback (StatusCallback)")])
def test_number_webhooks_pointing_elsewhere_fail_with_the_url_to_set(twilio: FakeTwilio, creds: TwilioCredentials,
                                                                     which: str, check: str) -> None:
    twilio.set_number_webhooks(creds.phone_number, **{which: "https://old-app.example.com/sms"})
    failure = only_failure(doctor({"sms": twilio_body(twilio, creds)}, secrets_for(creds)), "sms")

    assert failure["name"] == check
    assert "https://old-app.example.com/sms" in failure["detail"]
    route = "inbound" if which == "sms_url" else "status"
    assert f"{PUBLIC_BASE_URL}/api/twilio/{route}/sms" in failure["fix"]


def test_webhooks_cannot_be_checked_without_public_base_url(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    report = doctor({"sms": twilio_body(twilio, creds)}, secrets_for(creds), env={})

    failed = [check for check in entry(report, "sms")["checks"] if not check["ok"]]
    assert len(failed) == 2 and all("PUBLIC_BASE_URL" in check["fix"] for check in failed)


def test_a_messaging_service_of_another_account_fails(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    body = twilio_body(twilio, creds, messaging_service_sid="MG" + "0" * 32)
    del body["from_number"]
    failure = only_failure(doctor({"sms": body}, secrets_for(creds)), "sms")

    assert failure["name"] == "Messaging Service" and "not a Messaging Service" in failure["detail"]


def test_a_messaging_service_with_its_inbound_url_set_passes(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    twilio.add_messaging_service(creds.messaging_service_sid, creds.account_sid,
                                 inbound_request_url=f"{PUBLIC_BASE_URL}/api/twilio/inbound/sms")
    body = twilio_body(twilio, creds, messaging_service_sid=creds.messaging_service_sid)
    del body["from_number"]

    report = doctor({"sms": body}, secrets_for(creds))

    assert entry(report, "sms")["ok"] is True
    assert names(report, "sms") == ["Credentials", "Messaging Service", "Verify service"]


def test_a_missing_verify_service_fails(twilio: FakeTwilio, creds: TwilioCredentials) -> None:
    body = twilio_body(twilio, creds, verify_service_sid="VA" + "f" * 32)
    failure = only_failure(doctor({"sms": body}, secrets_for(creds)), "sms")

    assert failure["name"] == "Verify service" and "Verify > Services" in failure["fix"]


# --- Slack -----------------------------------------------------------------------------------------


def test_a_revoked_token_fails_auth_test(slack: FakeSlack) -> None:
    secrets = secrets_for(slack=slack) | {"slack-bot": "xoxb-not-a-token"}
    failure = only_failure(doctor({"chat": slack_body(slack)}, secrets), "chat")

    assert failure["name"] == "auth.test" and "invalid_auth" in failure["detail"]


def test_a_missing_scope_is_named(slack: FakeSlack) -> None:
    slack.revoke_scope("users:read.email")
    failure = only_failure(doctor({"chat": slack_body(slack)}, secrets_for(slack=slack)), "chat")

    assert failure["name"] == "Scopes"
    assert failure["detail"].startswith("missing users:read.email")
    assert "users:read.email" in failure["fix"]


def test_a_channel_without_the_bot_fails(slack: FakeSlack) -> None:
    slack.add_channel(CHANNEL_ID, CHANNEL_NAME, member=False)
    failure = only_failure(doctor({"chat": slack_body(slack)}, secrets_for(slack=slack)), "chat")

    assert failure["name"] == f"Channel {CHANNEL_ID}"
    assert "not a member" in failure["detail"] and "/invite" in failure["fix"]


def test_a_channel_named_by_name_is_found_and_an_unknown_one_fails(slack: FakeSlack) -> None:
    by_name = doctor({"chat": slack_body(slack, default_channel=f"#{CHANNEL_NAME}")}, secrets_for(slack=slack))
    unknown = doctor({"chat": slack_body(slack, default_channel="#no-such-channel")}, secrets_for(slack=slack))

    assert entry(by_name, "chat")["ok"] is True
    assert only_failure(unknown, "chat")["detail"] == "no channel called #no-such-channel that the app can see"


def test_the_needed_scopes_are_those_the_manifest_asks_for() -> None:
    from shared.channels.slack.client import NEEDED_SCOPES

    manifest = (Path(__file__).resolve().parents[2] / "docs" / "slack-app-manifest.yaml").read_text()
    asked = [line.split("-", 1)[1].split("#")[0].strip() for line in manifest.splitlines()
             if line.strip().startswith("- ") and ":" in line.split("#")[0]]
    assert sorted(asked) == sorted(NEEDED_SCOPES)


# --- SendGrid --------------------------------------------------------------------------------------


def test_a_key_without_mail_send_fails(sendgrid: FakeSendGrid) -> None:
    key = sendgrid.add_api_key(scopes=("stats.read",))
    failure = only_failure(doctor({"mail": sendgrid_body(sendgrid)}, secrets_for(sendgrid_key=key)), "mail")

    assert failure["name"] == "API key scopes" and "mail.send" in failure["detail"]


def test_an_unknown_key_fails(sendgrid: FakeSendGrid) -> None:
    failure = only_failure(doctor({"mail": sendgrid_body(sendgrid)}, secrets_for(sendgrid_key="SG.nope")), "mail")

    assert failure["name"] == "API key scopes" and "401" in failure["detail"]


def test_an_unverified_sender_fails(sendgrid: FakeSendGrid) -> None:
    key = sendgrid.add_api_key()
    sendgrid.add_sender("billing@contoso.com")
    pending = doctor({"mail": sendgrid_body(sendgrid, from_email="billing@contoso.com")}, secrets_for(sendgrid_key=key))
    absent = doctor({"mail": sendgrid_body(sendgrid, from_email="nobody@contoso.com")}, secrets_for(sendgrid_key=key))

    assert only_failure(pending, "mail")["detail"] == "billing@contoso.com is added but not verified yet"
    assert "Sender Authentication" in only_failure(absent, "mail")["fix"]


# --- SYSPRO, Sage X3, QAD --------------------------------------------------------------------------


def test_a_bad_syspro_logon_fails(syspro: FakeSyspro) -> None:
    secrets = secrets_for() | {"sys-pass": "wrong"}
    failure = only_failure(doctor({"sys": syspro_body(syspro)}, secrets), "sys")

    assert failure["name"] == "e.net Logon" and "Invalid operator password" in failure["detail"]
    assert names(doctor({"sys": syspro_body(syspro)}, secrets), "sys") == ["e.net Logon"]


def test_a_bad_syspro_odata_password_fails(syspro: FakeSyspro) -> None:
    secrets = secrets_for() | {"sys-odata": "wrong"}
    report = doctor({"sys": odata_only_body(syspro)}, secrets)

    failed = [check for check in entry(report, "sys")["checks"] if not check["ok"]]
    assert [check["name"] for check in failed] == ["OData PorMasterHdr", "OData ApInvoice"]
    assert "odata_password" in failed[0]["fix"]


def test_a_bad_sage_x3_password_fails_each_read(x3: FakeSageX3) -> None:
    report = doctor({"x3": x3_body(x3)}, secrets_for() | {"x3-pass": "wrong"})

    failed = [check for check in entry(report, "x3")["checks"] if not check["ok"]]
    assert [check["name"] for check in failed] == ["Read PORDER", "Read PINVOICE"]
    assert "HTTP 401" in failed[0]["detail"] and "password" in failed[0]["fix"]


def test_an_unpublished_sage_x3_table_fails_its_read(x3: FakeSageX3) -> None:
    x3.unpublish("PINVOICE")
    failure = only_failure(doctor({"x3": x3_body(x3)}, secrets_for()), "x3")

    assert failure["name"] == "Read PINVOICE"


def test_a_bad_qad_login_fails(qad: FakeQad) -> None:
    failure = only_failure(doctor({"qad": qad_body(qad)}, secrets_for() | {"qad-pass": "wrong"}), "qad")

    assert failure["name"] == "Login" and "refused the login" in failure["detail"]


def test_a_qad_browse_that_does_not_exist_fails(qad: FakeQad) -> None:
    body = qad_body(qad, browses={"receipts": "urn:browse:mfg:no_such_browse"})
    failure = only_failure(doctor({"qad": body}, secrets_for()), "qad")

    assert failure["name"] == "Browse receipts" and "urn:browse:mfg:no_such_browse" in failure["detail"]


# --- secrets, reachability, the whole run ---------------------------------------------------------------


def test_a_missing_secret_is_named_with_where_to_put_it(qad: FakeQad) -> None:
    secrets = secrets_for()
    del secrets["qad-pass"]
    report = doctor({"qad": qad_body(qad)}, secrets)

    failure = only_failure(report, "secrets")
    assert failure["name"] == "secret qad-pass"
    assert "QAD_PASS" in failure["fix"] and "qad" in failure["detail"]
    assert entry(report, "qad")["checks"][0]["detail"].startswith("secret 'qad-pass' not found")


def test_a_service_that_does_not_answer_is_unreachable_with_its_host(qad: FakeQad) -> None:
    port = free_port()
    report = doctor({"qad": qad_body(qad, base_url=f"http://127.0.0.1:{port}/qad-central")}, secrets_for())

    failure = only_failure(report, "qad")
    assert failure["detail"].startswith(f"unreachable: 127.0.0.1:{port}")
    assert "Traceback" not in json.dumps(report)


def test_a_connection_still_being_checked_at_the_deadline_says_so_and_the_others_answer(
        syspro: FakeSyspro, qad: FakeQad) -> None:
    qad.delay_next(seconds=2.0)
    config = config_from_dict({"connections": {"sys": syspro_body(syspro), "qad": qad_body(qad)}})
    context = Context(config, EnvSecretProvider(env=secrets_for()), dict(ENV))

    report = examine(config, context=context, deadline_seconds=0.5)

    assert entry(report, "sys")["ok"] is True
    failure = only_failure(report, "qad")
    assert failure["detail"] == "no answer within 0.5 s"
    assert "--connection qad" in failure["fix"]


def test_one_connection_is_checked_alone_with_its_secrets(syspro: FakeSyspro, qad: FakeQad) -> None:
    report = doctor({"sys": syspro_body(syspro), "qad": qad_body(qad)}, secrets_for(), only="qad")

    assert [e["connection"] for e in report["connections"]] == ["secrets", "qad"]
    assert names(report, "secrets") == ["secret qad-pass"]


# --- the CLI and the route ---------------------------------------------------------------------------


@pytest.fixture
def app_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, qad: FakeQad) -> Path:
    """The app's own settings: a configuration file, secrets in the environment."""
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"connections": {"qad": qad_body(qad)}}))
    monkeypatch.setenv("CONNECTOR_CONFIG_PATH", str(path))
    monkeypatch.setenv("QAD_PASS", DEFAULT_PASSWORD)
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    reset_config()
    reset_secret_provider()
    yield path
    reset_config()
    reset_secret_provider()


def test_the_cli_exits_0_when_all_pass_and_1_on_a_failure(app_settings: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main

    assert main(["doctor"]) == 0
    table = capsys.readouterr().out
    assert "qad" in table and "Browse receipts" in table and "all passed" in table

    monkeypatch.setenv("QAD_PASS", "wrong")
    reset_secret_provider()
    assert main(["doctor", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False and entry(answer, "qad")["checks"][0]["name"] == "Login"


def test_the_cli_shows_each_fix_under_its_failure(app_settings: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main

    monkeypatch.setenv("QAD_PASS", "wrong")
    assert main(["doctor", "--connection", "qad"]) == 1
    lines = capsys.readouterr().out.splitlines()
    login = next(index for index, line in enumerate(lines) if "Login" in line)
    assert "FAIL" in lines[login] and lines[login + 1].strip().startswith("fix: check username")


def test_the_cli_exits_2_on_a_configuration_error_or_an_unknown_connection(
        app_settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main

    assert main(["doctor", "--connection", "nope"]) == 2
    app_settings.write_text("{not json")
    reset_config()
    assert main(["doctor"]) == 2
    assert "invalid JSON" in capsys.readouterr().err


@pytest.fixture
def hosted(app_settings: Path) -> Iterator[str]:
    """The ops routes on the local host, over HTTP with its admin key."""
    from devhost.host import DevHost
    from shared.triggers import ops

    app = func.FunctionApp()
    app.register_functions(ops.bp)
    host = DevHost(app, port=0, master_key="master-key", function_key="function-key")
    host.start()
    try:
        yield f"{host.base_url}/api/ops/doctor"
    finally:
        host.stop()


def test_the_route_answers_the_contract_json(hosted: str) -> None:
    answer = requests.get(hosted, headers={"x-functions-key": "master-key"}, timeout=10)
    one = requests.get(hosted, params={"connection": "qad", "code": "master-key"}, timeout=10)
    unknown = requests.get(hosted, params={"connection": "nope"}, headers={"x-functions-key": "master-key"},
                           timeout=10)
    refused = requests.get(hosted, headers={"x-functions-key": "function-key"}, timeout=10)

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"ok", "checked_at", "connections"} and body["ok"] is True
    assert [(e["connection"], e["kind"]) for e in body["connections"]] == [("secrets", "keyvault"), ("qad", "qad")]
    for found in body["connections"]:
        assert set(found) == {"connection", "kind", "ok", "checks"}
        for check in found["checks"]:
            assert set(check) == {"name", "ok", "detail", "fix"}
    assert one.status_code == 200 and [e["connection"] for e in one.json()["connections"]] == ["secrets", "qad"]
    assert unknown.status_code == 404
    assert refused.status_code == 401


@pytest.mark.parametrize(("api_base_url", "messaging"), [
    ("https://api.twilio.com", "https://messaging.twilio.com"),
    ("https://api.dublin.ie1.twilio.com/", "https://messaging.dublin.ie1.twilio.com"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
])
def test_messaging_services_are_read_beside_the_api_host(api_base_url: str, messaging: str) -> None:
    from shared.channels.twilio.connection import TwilioConnection, messaging_base_url
    from shared.config.model import SecretRef

    connection = TwilioConnection(name="sms", account_sid="AC" + "0" * 32, api_key_sid="SK" + "0" * 32,
                                  api_key_secret=SecretRef("k"), auth_token=SecretRef("t"),
                                  from_number="+14155550100", api_base_url=api_base_url)
    assert messaging_base_url(connection) == messaging
