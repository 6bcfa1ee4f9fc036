"""Outcome notes: what became of an alert (an SMS delivered or failed, a call answered) written back to the
ERP record it was about, once however often the provider reports it, and never an alert of its own when
the next poll sees the record's stamp moved. The callbacks stage with its configuration, real Azurite
tables and queues, and the fake SYSPRO, Sage X3, QAD and Dynamics."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.config.loading import get_config, reset_config
from shared.erp.dynamics.client import reset_dynamics_clients
from shared.erp.qad.qxtend import reset_qxtend_clients
from shared.erp.sagex3.adapter import open_source as x3_source
from shared.erp.sagex3.client import reset_sagex3_clients
from shared.erp.syspro.client import reset_sessions
from shared.model import CALLBACKS, ERP_NOTE, TWILIO_GATHER, TWILIO_INBOUND, Envelope
from shared.pipeline.callbacks import apply_status, record_inbound, record_key_press
from shared.pipeline.notes import write_reply_note
from shared.pipeline.poll import poll_entity
from shared.settings import StorageSettings
from shared.storage.bus import reset_bus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import LastContact, Stores
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.qad import DEFAULT_PASSWORD as QAD_PASSWORD
from tests.fakes.qad import DEFAULT_USER as QAD_USER
from tests.fakes.qad import FakeQad
from tests.fakes.sagex3 import FakeSageX3
from tests.fakes.syspro import FakeSyspro
from tests.integration.test_queue_batches import take_all
from tests.integration.test_sagex3 import RecordingBus

pytestmark = pytest.mark.timeout(90)

OPERATOR, SYSPRO_PASSWORD = "MLCONNECT", "outcome-operator-password"
X3_PASSWORD = "outcome-x3-password"
TENANT, CLIENT_ID, CLIENT_SECRET = "contoso.onmicrosoft.com", "outcome-app", "outcome-client-secret-0123456789"
PHONE = "+14155550134"
MASKED = "+1*******34"
ATTACHMENTS = "DocumentAttachments"
ATTACHMENT_FIELDS = ("RefEntity", "RefKey", "TypeId", "Name", "Notes", "Restriction")
EVERY_OUTCOME = {"on": ["delivered", "failed", "answered", "reply"]}


@dataclass
class Outcomes:
    stores: Stores
    storage: StorageSettings
    syspro: FakeSyspro
    x3: FakeSageX3
    qad: FakeQad
    dynamics: FakeDynamics

    def sms_job(self, record: str, channel: str = "sms") -> tuple[str, str, str]:
        """A sent alert about ``record`` to PHONE: its job id, provider id and correlation id."""
        job_id, sid, correlation = uuid.uuid4().hex, ("SM" if channel == "sms" else "CA") + uuid.uuid4().hex, \
            uuid.uuid4().hex
        self.stores.jobs.create(job_id, {"status": "sent", "channel": channel, "via": "twilio-main", "to": PHONE,
                                         "record": record, "correlation_id": correlation, "provider_id": sid})
        self.stores.contacts.remember("twilio-main", "", LastContact(job_id, record, correlation), sid=sid)
        return job_id, sid, correlation

    def status(self, job_id: str, sid: str, status: str, **extra: str) -> None:
        """Twilio's status callback for the job's message, applied as the webhook applies it."""
        apply_status(self.stores, "twilio-main", {"MessageSid": sid, "MessageStatus": status, "To": PHONE, **extra},
                     job_id, uuid.uuid4().hex)

    def write_queued_notes(self, connection: str) -> list[Envelope]:
        """Run the callbacks stage on every note queued for ``connection``; those notes."""
        queued = queued_notes(self, connection)
        for envelope in queued:
            write_reply_note(envelope)
        return queued

    def steps(self, correlation: str) -> list[str]:
        return [entry.step for entry in sorted(self.stores.audit.by_correlation(correlation),
                                               key=lambda entry: entry.at)]


def connections(syspro: FakeSyspro, x3: FakeSageX3, qad: FakeQad, dynamics: FakeDynamics, entra: FakeEntra
                ) -> dict[str, Any]:
    daily = {"interval_minutes": 1440}
    return {
        "syspro-main": {"kind": "syspro", "base_url": syspro.rest_url, "operator": OPERATOR,
                        "password": {"secret": "outcome-operator-password"}, "company_id": "EDU1",
                        "poll": {"entities": ["PorMasterHdr"], **daily}, "outcome_notes": EVERY_OUTCOME},
        "x3": {"kind": "sagex3", "base_url": x3.base_url, "folder": x3.folder, "username": x3.user,
               "password": {"secret": "outcome-x3-password"}, "soap_pool_alias": x3.pool_alias,
               "poll": {"entities": ["PORDER"], **daily}, "outcome_notes": {"on": ["failed"]}},
        "qad-main": {"kind": "qad", "base_url": qad.tenant_url, "domain": "10USA", "username": QAD_USER,
                     "password": {"secret": "outcome-qad-password"}, "poll": {"entities": ["PendingPurchaseOrders"]},
                     "qxtend": {"url": qad.qxtend_url, "receiver": "QADERP", "comment_type": "SMS"},
                     "outcome_notes": EVERY_OUTCOME},
        "fo": {"kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": TENANT,
               "client_id": CLIENT_ID, "client_secret": {"secret": "outcome-fo-secret"},
               "authority": entra.authority, "ca_bundle": entra.ca_pem_path, "outcome_notes": EVERY_OUTCOME},
        "fo-quiet": {"kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": TENANT,
                     "client_id": CLIENT_ID, "client_secret": {"secret": "outcome-fo-secret"},
                     "authority": entra.authority, "ca_bundle": entra.ca_pem_path},
        "twilio-main": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "auth_token": {"secret": "outcome-token"},
                        "from_number": "+14155550100"},
    }


@pytest.fixture
def outcomes(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             storage_connection_string: str) -> Iterator[Outcomes]:
    syspro, x3, qad = FakeSyspro().start(), FakeSageX3().start(), FakeQad().start()
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    entra.register_client(TENANT, CLIENT_ID, CLIENT_SECRET)
    dynamics.accept_creates(ATTACHMENTS, ("dataAreaId", "DocumentId"), ATTACHMENT_FIELDS, generated_key="DocumentId")
    syspro.add_operator(OPERATOR, SYSPRO_PASSWORD, "unused-odata-password")
    syspro.add_company("EDU1")
    x3.add_supplier("S001", "Acme Parts", mobile=PHONE)
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"connections": connections(syspro, x3, qad, dynamics, entra), "rules": []}))
    for name, value in {"CONNECTOR_CONFIG_PATH": str(path), "QUEUE_BACKEND": "storage",
                        "OUTCOME_OPERATOR_PASSWORD": SYSPRO_PASSWORD, "OUTCOME_X3_PASSWORD": x3.password,
                        "OUTCOME_QAD_PASSWORD": QAD_PASSWORD, "OUTCOME_FO_SECRET": CLIENT_SECRET,
                        "OUTCOME_TOKEN": "unused"}.items():
        monkeypatch.setenv(name, value)
    resets = (reset_config, reset_bus, reset_secret_provider, reset_sessions, reset_sagex3_clients,
              reset_qxtend_clients, reset_dynamics_clients)
    for reset in resets:
        reset()
    yield Outcomes(app_stores, StorageSettings(storage_connection_string, None, None, None), syspro, x3, qad,
                   dynamics)
    for reset in resets:
        reset()
    for fake in (dynamics, entra, qad, x3, syspro):
        fake.stop()


def test_a_delivered_sms_becomes_one_note_on_the_syspro_po_however_often_twilio_says_so(outcomes: Outcomes) -> None:
    outcomes.syspro.add_supplier("S1", "Acme Supplies", PHONE)
    outcomes.syspro.add_purchase_order("PO-3001", "S1", [(1, 5)])
    job_id, sid, correlation = outcomes.sms_job("syspro-main|PorMasterHdr|PO-3001")

    outcomes.status(job_id, sid, "delivered")
    outcomes.status(job_id, sid, "delivered")  # Twilio reports it again
    outcomes.status(job_id, sid, "sent")  # a late one changes nothing
    assert len(outcomes.write_queued_notes("syspro-main")) == 2  # the repeat is queued, and written no second time

    heading, text = outcomes.syspro.comments("PO-3001")
    assert heading.startswith("Alert ") and heading.endswith(f"ref {job_id[:12]}-delivered")
    assert text.startswith(f"SMS to {MASKED} delivered ") and text.endswith(" UTC")
    steps = outcomes.steps(correlation)
    assert steps.count("note-written") == 1 and steps.count("duplicate") == 1


def test_a_failed_sms_is_noted_once_on_the_x3_order_and_the_next_poll_does_not_alert_on_it(
        outcomes: Outcomes) -> None:
    x3, order = outcomes.x3, f"PO-{uuid.uuid4().hex[:6].upper()}"
    x3.add_order(order, updated=datetime.now(UTC) - timedelta(minutes=2), signed=3)
    connection = get_config().connections["x3"]
    assert poll(outcomes, connection) == [order]  # the alert's change
    job_id, sid, correlation = outcomes.sms_job(f"x3|PORDER|{order}")

    outcomes.status(job_id, sid, "undelivered", ErrorCode="30003")
    outcomes.status(job_id, sid, "undelivered", ErrorCode="30003")
    outcomes.write_queued_notes("x3")

    [line] = x3.record("PORDER", order)["YNOTES"].splitlines()
    assert f" SMS to {MASKED} failed " in line and line.endswith(f"(error 30003) [{job_id[:12]}-failed]")
    assert PHONE not in line
    assert outcomes.steps(correlation).count("note-written") == 1
    assert poll(outcomes, connection) == []  # the note moved the order's stamp: not news
    assert poll(outcomes, connection) == []  # nor when the overlap reads it again

    x3.change("PORDER", order, APPFLG=1)  # a change rules can see is news again
    assert poll(outcomes, connection) == [order]


def poll(outcomes: Outcomes, connection: Any) -> list[str]:
    """One poll of the X3 orders, as the worker runs it; the orders it sends on."""
    bus, source = RecordingBus(), x3_source(connection)
    try:
        poll_entity(connection, connection.poll, source, source.entities["PORDER"], outcomes.stores, bus)
    finally:
        source.close()
    return [envelope.payload["record_key"] for envelope in bus.sent]


def test_a_key_pressed_on_a_call_is_noted_once_as_a_qad_comment(outcomes: Outcomes) -> None:
    job_id, sid, correlation = outcomes.sms_job("qad-main|PurchaseOrder|10USA|PO300", channel="voice")
    pressed = Envelope(TWILIO_GATHER, "twilio-main", f"gather|{sid}", {"job_id": job_id,
                                                                     "params": {"CallSid": sid, "Digits": "1"}})
    record_key_press(pressed)
    record_key_press(pressed)  # Twilio posted the key press again
    outcomes.status(job_id, sid, "completed")  # the call's end: the same outcome, noted already

    assert len(outcomes.write_queued_notes("qad-main")) == 3
    [comment] = outcomes.qad.comments("PO300")
    assert comment.lines[0].startswith("Alert outcome ")
    assert comment.lines[-1].startswith(f"call to {MASKED} answered ") and comment.lines[-1].endswith(", key 1 pressed")
    assert outcomes.steps(correlation).count("note-written") == 1


def test_dynamics_takes_outcomes_and_replies_as_note_attachments_on_the_document_once(outcomes: Outcomes) -> None:
    record = "fo|VendorInvoice|usmf|INV-0042"
    job_id, sid, correlation = outcomes.sms_job(record)
    outcomes.status(job_id, sid, "delivered")
    [queued] = queued_notes(outcomes, "fo")
    outcomes.dynamics.drop_after_handling(1, match=f"POST /data/{ATTACHMENTS}")  # created, the answer lost
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport raised, the queue tries again
        write_reply_note(queued)
    write_reply_note(queued)  # the queue's retry of the same message: F&O is asked first, and has it
    outcomes.status(job_id, sid, "delivered")  # and Twilio's repeat
    outcomes.write_queued_notes("fo")

    [(entity_set, note)] = outcomes.dynamics.created
    assert entity_set == ATTACHMENTS and note["TypeId"] == "Note" and note["Restriction"] == "Internal"
    assert (note["dataAreaId"], note["RefEntity"], note["RefKey"]) == ("usmf", "VendorInvoice", "INV-0042")
    assert note["Notes"].startswith(f"SMS to {MASKED} delivered ")
    assert outcomes.steps(correlation).count("note-written") == 1

    # A reply, as the person wrote it, on the same document.
    outcomes.stores.contacts.remember("twilio-main", PHONE, LastContact(job_id, record, correlation))
    reply = {"MessageSid": "SM" + uuid.uuid4().hex, "From": PHONE, "To": "+14155550100", "Body": "OK ship Monday"}
    record_inbound(Envelope(TWILIO_INBOUND, "twilio-main", reply["MessageSid"], {"params": reply}))
    outcomes.write_queued_notes("fo")
    replied = outcomes.dynamics.created[1][1]
    assert replied["Notes"].endswith(": OK ship Monday") and PHONE not in replied["Notes"]


def queued_notes(outcomes: Outcomes, connection: str) -> list[Envelope]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [envelope for envelope in take_all(outcomes.storage, CALLBACKS, connection)
                if envelope.type == ERP_NOTE]
    except ResourceNotFoundError:
        return []  # nothing was ever queued on this Azurite


def test_a_dynamics_connection_without_outcome_notes_gets_none(outcomes: Outcomes) -> None:
    job_id, sid, correlation = outcomes.sms_job("fo-quiet|VendorInvoice|usmf|INV-0043")
    outcomes.status(job_id, sid, "delivered")
    assert queued_notes(outcomes, "fo-quiet") == []
    assert "status" in outcomes.steps(correlation) and outcomes.dynamics.created == []
