"""Answers that become notes on ERP records: the callbacks stage with its configuration, real Azurite
tables and queues, the fake Twilio and the fake SYSPRO."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.config.loading import reset_config
from shared.erp.syspro.client import reset_sessions
from shared.model import CALLBACKS, ERP_NOTE, TWILIO_INBOUND, TWILIO_VOICE_MESSAGE, Envelope
from shared.pipeline.callbacks import record_inbound, record_voice_message
from shared.pipeline.notes import write_reply_note
from shared.settings import StorageSettings
from shared.storage.bus import reset_bus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import LastContact, Stores
from tests.fakes.syspro import FakeSyspro
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.integration.test_queue_batches import take_all

pytestmark = pytest.mark.timeout(60)

OPERATOR, PASSWORD, ODATA_PASSWORD = "MLCONNECT", "notes-operator-password", "notes-odata-password"
SUPPLIER_PHONE = "+14155550177"


@dataclass
class Replies:
    stores: Stores
    storage: StorageSettings
    twilio: FakeTwilio
    creds: TwilioCredentials
    erp: FakeSyspro

    def last_contact(self, number: str, record: str) -> str:
        """``number``'s last message was about ``record``; the correlation id of that alert."""
        correlation = uuid.uuid4().hex
        self.stores.contacts.remember("twilio-main", number, LastContact("job-" + correlation[:8], record,
                                                                          correlation))
        return correlation

    def queued_notes(self, connection: str) -> list[Envelope]:
        """The notes queued on ``callbacks`` for ``connection``, taken off the queue."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [envelope for envelope in take_all(self.storage, CALLBACKS, connection)
                    if envelope.type == ERP_NOTE]
        except ResourceNotFoundError:
            return []  # nothing was ever queued on this Azurite

    def steps(self, correlation: str) -> list[str]:
        return [entry.step for entry in sorted(self.stores.audit.by_correlation(correlation),
                                               key=lambda entry: entry.at)]


@pytest.fixture
def replies(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            storage_connection_string: str) -> Iterator[Replies]:
    twilio, erp = FakeTwilio().start(), FakeSyspro().start()
    erp.add_operator(OPERATOR, PASSWORD, ODATA_PASSWORD)
    erp.add_company("EDU1")
    creds = twilio.add_test_account()
    poll = {"entities": ["PorMasterHdr"], "interval_minutes": 1440}
    config = {"connections": {
        "twilio-main": {"kind": "twilio", "account_sid": creds.account_sid,
                        "auth_token": {"secret": "notes-auth-token"}, "from_number": creds.phone_number,
                        "api_base_url": twilio.base_url, "verify_base_url": twilio.base_url},
        "syspro-odata": {"kind": "syspro", "api": "odata", "odata_url": erp.odata_url, "operator": OPERATOR,
                         "odata_password": {"secret": "notes-odata-password"}, "company_id": "EDU1", "poll": poll},
        "syspro-main": {"kind": "syspro", "base_url": erp.rest_url, "operator": OPERATOR,
                        "password": {"secret": "notes-operator-password"}, "company_id": "EDU1", "poll": poll},
    }, "rules": []}
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(config))
    for name, value in {"CONNECTOR_CONFIG_PATH": str(path), "QUEUE_BACKEND": "storage",
                        "NOTES_AUTH_TOKEN": creds.auth_token, "NOTES_OPERATOR_PASSWORD": PASSWORD,
                        "NOTES_ODATA_PASSWORD": ODATA_PASSWORD}.items():
        monkeypatch.setenv(name, value)
    resets = (reset_config, reset_bus, reset_secret_provider, reset_sessions)
    for reset in resets:
        reset()
    storage = StorageSettings(storage_connection_string, None, None, None)
    yield Replies(app_stores, storage, twilio, creds, erp)
    for reset in resets:
        reset()
    twilio.stop()
    erp.stop()


def test_a_reply_to_an_odata_only_syspro_record_is_audited_as_not_written_back(replies: Replies) -> None:
    correlation = replies.last_contact(SUPPLIER_PHONE, "syspro-odata|PorMasterHdr|PO-1001")
    params = replies.twilio.inbound_sms_params(SUPPLIER_PHONE, replies.creds.phone_number, "Ships on Friday")

    record_inbound(Envelope(TWILIO_INBOUND, "twilio-main", params["MessageSid"], {"params": params}))

    assert replies.steps(correlation) == ["reply", "note-not-written"]
    [entry] = [entry for entry in replies.stores.audit.by_correlation(correlation) if entry.step == "note-not-written"]
    assert entry.record == "syspro-odata|PorMasterHdr|PO-1001" and entry.detail["reference"] == params["MessageSid"]
    assert "reads SYSPRO through OData only" in entry.detail["reason"]
    assert replies.queued_notes("syspro-odata") == []  # nothing queued to fail later
    assert replies.erp.logons() == []


def test_a_transcribed_voice_message_becomes_one_note_on_the_record_with_its_recording_link(
    replies: Replies, caplog: pytest.LogCaptureFixture
) -> None:
    replies.erp.add_supplier("S1", "Acme Supplies", SUPPLIER_PHONE)
    replies.erp.add_purchase_order("PO-2001", "S1", [(1, 5)])
    correlation = replies.last_contact(SUPPLIER_PHONE, "syspro-main|PorMasterHdr|PO-2001")
    said = "Hi it's Dana from Acme the order ships Friday"
    params = replies.twilio.transcription_params(SUPPLIER_PHONE, replies.creds.phone_number, said)
    def posted() -> Envelope:  # each post of Twilio's is queued as a message of its own
        return Envelope(TWILIO_VOICE_MESSAGE, "twilio-main", params["RecordingSid"], {"params": params})

    with caplog.at_level("DEBUG"):
        record_voice_message(posted())
        record_voice_message(posted())  # Twilio posted the transcription again
        [queued] = replies.queued_notes("syspro-main")
        write_reply_note(queued)

    assert replies.steps(correlation) == ["voice-message", "duplicate", "note-written"]
    [heard] = [entry for entry in replies.stores.audit.by_correlation(correlation) if entry.step == "voice-message"]
    assert heard.detail["text"] == said and heard.detail["recording_url"] == params["RecordingUrl"]
    assert heard.detail["from"] != SUPPLIER_PHONE  # masked
    heading, *lines = replies.erp.comments("PO-2001")  # one note: a heading, then its text in comment lines
    assert heading.endswith(f"ref {params['RecordingSid']}")
    assert " ".join(lines).startswith(f"Voice message: {said} Recording: ")
    assert params["RecordingUrl"] in "".join(lines)  # the link, wrapped over comment lines
    assert said not in caplog.text and SUPPLIER_PHONE not in caplog.text


def test_a_message_twilio_could_not_transcribe_is_still_noted_with_its_recording(replies: Replies) -> None:
    replies.erp.add_supplier("S1", "Acme Supplies", SUPPLIER_PHONE)
    replies.erp.add_purchase_order("PO-2002", "S1", [(1, 5)])
    correlation = replies.last_contact(SUPPLIER_PHONE, "syspro-main|PorMasterHdr|PO-2002")
    params = replies.twilio.transcription_params(SUPPLIER_PHONE, replies.creds.phone_number, "", status="failed")

    record_voice_message(Envelope(TWILIO_VOICE_MESSAGE, "twilio-main", params["RecordingSid"], {"params": params}))
    [queued] = replies.queued_notes("syspro-main")
    write_reply_note(queued)

    assert replies.steps(correlation) == ["voice-message", "note-written"]
    lines = replies.erp.comments("PO-2002")[1:]
    assert " ".join(lines).startswith("Voice message: (no transcription) Recording: ")
    assert params["RecordingUrl"] in "".join(lines)
