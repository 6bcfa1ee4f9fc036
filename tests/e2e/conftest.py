"""The whole app, as deployed code, against Azurite and the fake Entra ID, Dynamics and Twilio.

The app runs under the local host in its own process (the real function_app, storage
queues on Azurite); the fakes run in the test process, over real HTTP(S) on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devhost.azurite import Azurite, start_azurite
from shared.settings import StorageSettings
from shared.storage.tables import Stores
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.slack import FakeSlack
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.support.app import REPO_ROOT, TEST_DATA_PROTECTION_KEY, local_app

TENANT, CLIENT_ID, CLIENT_SECRET = "contoso-tenant", "a1b2c3d4-app", "entra-client-secret-value"
FUNCTION_KEY, MASTER_KEY = "e2e-function-key", "e2e-master-key"
POLL_RECIPIENT = "+14155559901"
SLACK_SIGNING_SECRET = "e2e-slack-signing-secret-0123456789"
JOURNAL_APPROVAL_EVENT = "Workflow_LedgerDailyJournalApproval_000001_Approval_WorkItem"
APPROVALS_CHANNEL = "C0APPROVALS"
FALLBACK_CHANNEL = "C0FALLBACK"
PACED_CHANNEL = "C0PACED"
NAMED_CHANNEL = "C0NAMEDCH1"  # a rule names it "#ap-named"
NAMED_CHANNEL_EVENT = "Workflow_VendInvoiceNamed_000001_Approval_WorkItem"
APPROVER = ("U0ANA", "ana@contoso.example")
HIGH_VALUE_EVENT = "Workflow_VendInvoiceHighValue_000001_Approval_WorkItem"
CODE_ABOVE = 10000
BYSTANDER = ("U0BOB", "bob@contoso.example")
SAFETY_NET_VENDORS = "SAFETYNET-"  # vendor accounts whose posted invoices a rule texts (tests/e2e/test_safety_net.py)

# Fast queue polling so each hop takes milliseconds, not the 2 s of the production host.json.
FAST_HOST_JSON = {
    "version": "2.0",
    "extensions": {"http": {"routePrefix": "api"},
                   "queues": {"maxPollingInterval": "00:00:00.100", "visibilityTimeout": "00:00:01",
                              "batchSize": 16, "maxDequeueCount": 5, "messageEncoding": "base64"}},
}


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by fixture scope
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The privacy scan runs last: it reads what every other flow left in the shared app's log and queues."""
    items.sort(key=lambda item: item.path.name == "test_privacy.py")


def audit_of(base_url: str, record: str, *, reveal_texts: bool = False, master_key: str = MASTER_KEY) -> dict:
    """The ops audit of one ERP record from the app at ``base_url``: its ``entries`` and ``contacts``
    (the texts people wrote in clear with ``reveal_texts``, else masked)."""
    response = requests.get(f"{base_url}/api/ops/audit",
                            params={"record": record, **({"reveal": "texts"} if reveal_texts else {})},
                            headers={"x-functions-key": master_key}, timeout=10)
    response.raise_for_status()
    return response.json()


def text_in(twilio: FakeTwilio, base_url: str, params: dict[str, str]) -> None:
    """Twilio posting an SMS someone sent to our number (``inbound_sms_params``) to the app's webhook."""
    answer = twilio.send_status_callback(f"{base_url}/api/twilio/inbound/twilio-main", params)
    assert answer.status_code == 200, answer.text


@dataclass
class Stack:
    base_url: str
    twilio: FakeTwilio
    twilio_creds: TwilioCredentials
    slack: FakeSlack
    dynamics: FakeDynamics
    entra: FakeEntra
    azurite: Azurite
    log_path: Path
    settings_path: Path

    def post_events(self, body: Any, key: str = FUNCTION_KEY) -> requests.Response:
        return requests.post(f"{self.base_url}/api/dynamics/events/contoso-fo", json=body,
                             headers={"x-functions-key": key}, timeout=10)

    def audit(self, record: str) -> dict:
        return audit_of(self.base_url, record)

    def steps(self, record: str) -> list[str]:
        return [entry["step"] for entry in self.audit(record)["entries"]]

    def status_url(self, job: str | None = None) -> str:
        """The status callback URL; the app asks Twilio for it with ``?job=<job id>``."""
        url = f"{self.base_url}/api/twilio/status/twilio-main"
        return f"{url}?job={job}" if job else url

    def stores(self) -> Stores:
        """The app's tables, opened from this deployment's settings (close them after use)."""
        prefix = json.loads(self.settings_path.read_text())["Values"]["STORAGE_TABLE_PREFIX"]
        return Stores.open(StorageSettings(self.azurite.connection_string, None, None, None), prefix)

    def poison(self, queue: str) -> list[dict]:
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self.azurite.connection_string, f"{queue}-poison")
        try:
            return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]
        except Exception:
            return []

    def send(self, queue: str, envelope: Any) -> None:
        from shared.settings import StorageSettings
        from shared.storage.bus import StorageQueueBus

        bus = StorageQueueBus(StorageSettings(self.azurite.connection_string, None, None, None))
        try:
            bus.send(queue, envelope)
        finally:
            bus.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``python -m shared.cli`` as an operator runs it, with this deployment's settings."""
        env = {k: v for k, v in os.environ.items() if k not in ("QUEUE_BACKEND", "AzureWebJobsStorage")}
        return subprocess.run([sys.executable, "-m", "shared.cli", "--settings", str(self.settings_path), *args],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def app_config(dynamics: FakeDynamics, entra: FakeEntra, twilio: FakeTwilio, creds: TwilioCredentials,
               slack: FakeSlack | None = None) -> dict:
    notify = [{"field": "NotifyPhone"}]
    return {
        "connections": {
            "contoso-fo": {"kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": TENANT,
                           "client_id": CLIENT_ID, "client_secret": {"secret": "contoso-fo-client-secret"},
                           "authority": entra.authority, "ca_bundle": str(entra.ca_pem_path),
                           # A daily slot: the test drives polls itself instead of waiting for the timer.
                           "poll": {"entities": ["VendorInvoiceHeaders"], "interval_minutes": 1440},
                           "dimensions": {"names": ["BusinessUnit", "Department", "CostCenter"]}},
            "twilio-main": {"kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
                            "api_key_secret": {"secret": "twilio-api-key-secret"},
                            "auth_token": {"secret": "twilio-auth-token"}, "from_number": creds.phone_number,
                            "verify_service_sid": creds.verify_service_sid, "api_base_url": twilio.base_url,
                            "verify_base_url": twilio.base_url},
            **({"slack-main": {"kind": "slack", "bot_token": {"secret": "slack-bot-token"},
                               "signing_secret": {"secret": "slack-signing-secret"},
                               "api_base_url": slack.api_base_url, "default_channel": FALLBACK_CHANNEL}}
               if slack else {}),
        },
        "rules": [
            {"id": "invoice-sms", "source": "contoso-fo", "event": "VendorInvoicePostedBusinessEvent",
             "when": [{"field": "amount", "op": "le", "value": 10000}], "channel": "sms", "via": "twilio-main",
             "to": notify, "template": "vendor-invoice-posted"},
            {"id": "large-invoice-call", "source": "contoso-fo", "event": "VendorInvoicePostedBusinessEvent",
             "when": [{"field": "amount", "op": "gt", "value": 10000}, {"field": "vendor_group", "op": "in",
                                                                          "value": ["10", "20"]}],
             "channel": "voice", "via": "twilio-main",
             "to": notify, "template": "large-invoice-call"},
            {"id": "invoice-on-hold-sms", "source": "contoso-fo", "event": "VendorInvoiceHeaders",
             "when": [{"field": "on_hold", "op": "eq", "value": "Yes"}], "channel": "sms", "via": "twilio-main",
             "to": [POLL_RECIPIENT], "template": "invoice-on-hold"},
            *([{"id": "approval-card", "source": "contoso-fo",
                "event": "Workflow_VendInvoiceApproval_000001_Approval_WorkItem", "channel": "slack",
                "via": "slack-main", "to": [APPROVALS_CHANNEL], "template": "workflow-approval"},
              {"id": "approval-dm", "source": "contoso-fo",
               "event": "Workflow_PurchReqReview_000001_Review_WorkItem", "channel": "slack",
               "via": "slack-main", "to": [{"field": "assignee_email"}], "template": "workflow-approval"},
              {"id": "high-value-approval-card", "source": "contoso-fo", "event": HIGH_VALUE_EVENT,
               "channel": "slack", "via": "slack-main", "to": [APPROVALS_CHANNEL], "template": "workflow-approval",
               "verify_above": CODE_ABOVE, "verify_via": "twilio-main", "verify_amount_field": "InvoiceAmount",
               "reject_reason": False},
              {"id": "paced-cards", "source": "contoso-fo",
               "event": "Workflow_BulkNotice_000001_Notice_WorkItem", "channel": "slack",
               "via": "slack-main", "to": [PACED_CHANNEL], "template": "workflow-approval"},
              {"id": "named-channel-card", "source": "contoso-fo", "event": NAMED_CHANNEL_EVENT, "channel": "slack",
               "via": "slack-main", "to": ["#ap-named"], "template": "workflow-approval"},
              {"id": "journal-approval-card", "source": "contoso-fo", "event": JOURNAL_APPROVAL_EVENT,
               "channel": "slack", "via": "slack-main", "to": [APPROVALS_CHANNEL],
               "template": "workflow-approval"}] if slack else []),
            # Posted invoices of the safety-net vendors text the vendor, whether pushed or found by the poll.
            {"id": "posted-invoice-vendor-sms", "source": "contoso-fo", "event": "VendorInvoicePostedBusinessEvent",
             "when": [{"field": "vendor_account", "op": "contains", "value": SAFETY_NET_VENDORS}], "channel": "sms",
             "via": "twilio-main", "to": [{"field": "vendor_phone"}], "template": "vendor-invoice-posted"},
            {"id": "payment-verified-sms", "source": "contoso-fo", "event": "VendorPaymentPostedBusinessEvent",
             "channel": "sms", "via": "twilio-main", "to": notify, "template": "vendor-payment-posted",
             "verify": True},
        ],
        "templates": {
            "invoice-on-hold": {"sms": "Invoice {invoice_id} from {vendor_name} is on hold, due {due_date}."},
        },
    }


def prepare_dynamics(entra: FakeEntra, dynamics: FakeDynamics) -> None:
    """The app's Entra registration, and the vendor the invoice events name."""
    entra.register_client(TENANT, CLIENT_ID, CLIENT_SECRET)
    dynamics.allow_clients(CLIENT_ID)
    dynamics.add_entities("VendorsV2", [
        {"dataAreaId": "usmf", "VendorAccountNumber": "US-104", "VendorOrganizationName": "Fabrikam Supplies",
         "PrimaryPhoneNumber": "+14155550100", "PrimaryEmailAddress": "ap@fabrikam.example",
         "VendorGroupId": "10"},
    ], keys=("dataAreaId", "VendorAccountNumber"))


def prepare_slack(slack: FakeSlack) -> None:
    """The workspace: the channels the rules name, the approver and a bystander."""
    for channel_id, name in ((APPROVALS_CHANNEL, "ap-approvals"), (FALLBACK_CHANNEL, "ap-unrouted"),
                             (PACED_CHANNEL, "ap-bulk"), (NAMED_CHANNEL, "ap-named")):
        slack.add_channel(channel_id, name)
    for user_id, email in (APPROVER, BYSTANDER):
        slack.add_user(user_id, email, email.split("@")[0])


def app_values(storage: str, table_prefix: str, creds: TwilioCredentials, slack: FakeSlack | None = None) -> dict:
    """The local settings Values of the app under test: storage, keys, and every secret the config names."""
    values = {
        "AzureWebJobsStorage": storage, "STORAGE_TABLE_PREFIX": table_prefix,
        "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
        "CONTOSO_FO_CLIENT_SECRET": CLIENT_SECRET, "TWILIO_API_KEY_SECRET": creds.api_key_secret,
        "TWILIO_AUTH_TOKEN": creds.auth_token, "QUEUE_MAX_ATTEMPTS": "6",
        "DATA_PROTECTION_KEY": TEST_DATA_PROTECTION_KEY,
    }
    if slack is not None:
        values |= {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET}
    return values


@pytest.fixture(scope="session")
def e2e_azurite() -> Iterator[Azurite]:
    """An Azurite of its own: the app's queue names are fixed, and another app under test
    on the shared Azurite would consume this one's messages."""
    instance = start_azurite()
    try:
        yield instance
    finally:
        instance.stop()


@contextmanager
def running_stack(folder: Path, azurite: Azurite, **settings: str) -> Iterator[Stack]:
    """The app under the local host with fresh fakes, on ``azurite``, with ``settings`` over the defaults."""
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    twilio = FakeTwilio().start()
    slack = FakeSlack().start()
    prepare_slack(slack)
    prepare_dynamics(entra, dynamics)
    creds = twilio.add_test_account()
    values = app_values(azurite.connection_string, "e" + uuid.uuid4().hex[:10], creds, slack) | settings
    try:
        with local_app(folder, config=app_config(dynamics, entra, twilio, creds, slack), values=values,
                       host_json=FAST_HOST_JSON) as app:
            yield Stack(app.base_url, twilio, creds, slack, dynamics, entra, azurite, app.log_path,
                        app.settings_path)
    finally:
        for server in (slack, twilio, dynamics, entra):
            server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, e2e_azurite: Azurite) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), e2e_azurite) as running:
        yield running
