"""Dynamics business event -> an email through SendGrid -> its events back on the record.

The app runs under the local host with a configuration of its own (Dynamics and SendGrid)
and an Azurite of its own: the queue names are fixed, and the session's shared app would
otherwise take this app's messages off the queues.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devhost.azurite import start_azurite
from tests.e2e.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    FAST_HOST_JSON,
    FUNCTION_KEY,
    MASTER_KEY,
    TENANT,
    audit_of,
    prepare_dynamics,
)
from tests.e2e.test_dynamics_to_twilio import invoice_event, record_of
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.sendgrid import MAIL_SEND, FakeSendGrid, Mail
from tests.support.app import local_app
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

SENDER = "ap-alerts@contoso.example"
CONNECTION = "sendgrid-main"
_addresses = itertools.count(1)


@dataclass
class EmailStack:
    base_url: str
    sendgrid: FakeSendGrid
    log_path: Path

    @property
    def events_url(self) -> str:
        return f"{self.base_url}/api/sendgrid/events/{CONNECTION}"

    def post_event(self, body: Any) -> requests.Response:
        return requests.post(f"{self.base_url}/api/dynamics/events/contoso-fo", json=body,
                             headers={"x-functions-key": FUNCTION_KEY}, timeout=10)

    def audit(self, record: str) -> dict:
        return audit_of(self.base_url, record)

    def steps(self, record: str) -> list[str]:
        return [entry["step"] for entry in self.audit(record)["entries"]]

    def contact(self, record: str) -> dict:
        [contact] = self.audit(record)["contacts"]
        return contact


def email_config(dynamics: FakeDynamics, entra: FakeEntra, sendgrid: FakeSendGrid) -> dict:
    return {
        "connections": {
            "contoso-fo": {"kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": TENANT,
                           "client_id": CLIENT_ID, "client_secret": {"secret": "contoso-fo-client-secret"},
                           "authority": entra.authority, "ca_bundle": str(entra.ca_pem_path)},
            CONNECTION: {"kind": "sendgrid", "api_key": {"secret": "sendgrid-api-key"}, "from_email": SENDER,
                         "from_name": "Contoso AP", "api_base_url": sendgrid.base_url,
                         "event_webhook_public_key": sendgrid.public_key},
        },
        "rules": [{"id": "invoice-email", "source": "contoso-fo", "event": "VendorInvoicePostedBusinessEvent",
                   "channel": "email", "via": CONNECTION, "to": [{"field": "NotifyEmail"}],
                   "template": "invoice-mail"}],
        "templates": {"invoice-mail": {"subject": "Invoice {invoice_id} posted: {money}",
                                       "email": "Invoice {invoice_id} from {vendor_name} was posted for {money}, "
                                                "due {due_date}."}},
    }


@pytest.fixture(scope="module")
def email_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmailStack]:
    azurite = start_azurite()
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    sendgrid = FakeSendGrid().start()
    try:
        prepare_dynamics(entra, dynamics)
        sendgrid.verify_sender(SENDER)
        values = {"AzureWebJobsStorage": azurite.connection_string, "STORAGE_TABLE_PREFIX": "m" + uuid.uuid4().hex[:10],
                  "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
                  "CONTOSO_FO_CLIENT_SECRET": CLIENT_SECRET, "SENDGRID_API_KEY": sendgrid.add_api_key(),
                  "QUEUE_MAX_ATTEMPTS": "6"}
        with local_app(tmp_path_factory.mktemp("e2e-email"), config=email_config(dynamics, entra, sendgrid),
                       values=values, host_json=FAST_HOST_JSON) as app:
            yield EmailStack(app.base_url, sendgrid, app.log_path)
    finally:
        for server in (sendgrid, dynamics, entra):
            server.stop()
        azurite.stop()


def new_address() -> str:
    return f"ap-{next(_addresses)}-{uuid.uuid4().hex[:6]}@fabrikam.example"


def email_event(invoice_id: str, address: str) -> dict:
    return invoice_event(invoice_id, "", NotifyEmail=address)


def mail_requests(stack: EmailStack) -> list:
    return [r for r in stack.sendgrid.requests_to(f"POST {MAIL_SEND}") if not r.scripted]


def one_mail(stack: EmailStack, address: str) -> Mail:
    [mail] = wait_for(lambda: stack.sendgrid.mails(to=address), what=f"a mail to {address}")
    return mail


def test_an_invoice_event_whose_rule_chooses_email_becomes_one_mail_with_the_job_id(email_stack: EmailStack) -> None:
    address = new_address()
    assert email_stack.post_event(email_event("INV-MAIL-1", address)).status_code == 202
    mail = one_mail(email_stack, address)
    assert (mail.from_email, mail.from_name) == (SENDER, "Contoso AP")
    assert mail.subject == "Invoice INV-MAIL-1 posted: 950.00 USD"
    assert "from Fabrikam Supplies was posted for 950.00 USD" in mail.text
    record = record_of("INV-MAIL-1")
    contact = wait_for(lambda: email_stack.contact(record)["status"] == "accepted" and email_stack.contact(record),
                       what="the send recorded")
    assert mail.custom_args == {"mlc_job_id": contact["job_id"]}
    assert (contact["channel"], contact["to"], contact["provider_id"]) == ("email", address, mail.message_id)
    assert email_stack.steps(record)[:4] == ["received", "enriched", "routed", "sent"]


def test_the_same_event_again_sends_no_second_mail(email_stack: EmailStack) -> None:
    address = new_address()
    event = email_event("INV-MAIL-2", address)
    email_stack.post_event(event)
    one_mail(email_stack, address)
    assert email_stack.post_event(event).status_code == 202
    wait_for(lambda: "duplicate" in email_stack.steps(record_of("INV-MAIL-2")), what="the repeat recorded")
    assert len(email_stack.sendgrid.mails(to=address)) == 1


def test_a_429_then_success_sends_one_mail_after_the_rate_limit_resets(email_stack: EmailStack) -> None:
    address = new_address()
    email_stack.sendgrid.fail_next(1, status=429, match=f"POST {MAIL_SEND}")
    email_stack.post_event(email_event("INV-MAIL-3", address))
    one_mail(email_stack, address)
    throttled = [r for r in email_stack.sendgrid.requests_to(f"POST {MAIL_SEND}") if r.scripted]
    [real] = [r for r in mail_requests(email_stack) if address in r.body.decode()]
    assert throttled and real.at - throttled[-1].at >= 1.0  # no sooner than X-RateLimit-Reset allowed
    wait_for(lambda: email_stack.contact(record_of("INV-MAIL-3"))["status"] == "accepted", what="sent")
    assert len(email_stack.sendgrid.mails(to=address)) == 1


def test_signed_events_carry_the_job_to_delivered(email_stack: EmailStack) -> None:
    address = new_address()
    email_stack.post_event(email_event("INV-MAIL-4", address))
    mail = one_mail(email_stack, address)
    record = record_of("INV-MAIL-4")
    wait_for(lambda: email_stack.contact(record)["status"] == "accepted", what="the send recorded")
    events = [email_stack.sendgrid.event_for(mail, name) for name in ("processed", "delivered")]
    answer = email_stack.sendgrid.post_events(email_stack.events_url, events)
    assert answer.status_code == 200 and answer.json() == {"queued": 2}
    wait_for(lambda: email_stack.contact(record)["status"] == "delivered", what="delivered")
    assert email_stack.sendgrid.post_events(email_stack.events_url, events).status_code == 200  # posted again
    opened = email_stack.sendgrid.post_events(email_stack.events_url, [email_stack.sendgrid.event_for(mail, "open")])
    assert opened.status_code == 200
    wait_for(lambda: email_stack.contact(record)["status"] == "read", what="read after delivered")
    statuses = [e["detail"]["status"] for e in email_stack.audit(record)["entries"] if e["step"] == "status"]
    assert statuses in (["queued", "delivered", "read"], ["delivered", "read"])  # each once, never backwards


def test_forged_stale_and_malformed_posts_are_refused_and_change_nothing(email_stack: EmailStack) -> None:
    address = new_address()
    email_stack.post_event(email_event("INV-MAIL-5", address))
    mail = one_mail(email_stack, address)
    record = record_of("INV-MAIL-5")
    wait_for(lambda: email_stack.contact(record)["status"] == "accepted", what="the send recorded")
    bounce = [email_stack.sendgrid.event_for(mail, "bounce")]
    sendgrid, url = email_stack.sendgrid, email_stack.events_url
    impostor = FakeSendGrid()  # another key pair: what a forger could sign with
    raw = (json.dumps(bounce) + "\r\n").encode()
    now = str(int(time.time()))
    assert sendgrid.post_events(url, bounce, signature=impostor.sign(now, raw), timestamp=int(now)).status_code == 401
    assert sendgrid.post_events(url, bounce, timestamp=int(time.time()) - 3600).status_code == 401  # stale
    tampered = raw.replace(b'"bounce"', b'"dropped"')
    assert sendgrid.post_events(url, [], body=tampered, signature=sendgrid.sign(now, raw),
                                timestamp=int(now)).status_code == 401
    unsigned = requests.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "bad_signature"
    malformed = sendgrid.post_events(url, [], body=b'[{"event": "bounce"')
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_json"
    not_a_list = sendgrid.post_events(url, [], body=b'{"event": "bounce"}')
    assert not_a_list.status_code == 400
    unknown = sendgrid.post_events(f"{email_stack.base_url}/api/sendgrid/events/nope", bounce)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_connection"
    huge = sendgrid.post_events(url, [], body=b"[" + b" " * (1024 * 1024) + b"]")
    assert huge.status_code == 413
    # Had a refused bounce been queued, the job would be undelivered and "delivered" could not follow.
    assert sendgrid.post_events(url, [sendgrid.event_for(mail, "delivered")]).status_code == 200
    wait_for(lambda: email_stack.contact(record)["status"] == "delivered", what="the genuine event applied")
    assert [e["detail"]["event"] for e in email_stack.audit(record)["entries"] if e["step"] == "status"] == [
        "delivered"]
