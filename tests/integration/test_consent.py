"""The consent registry: per number, purpose and channel, fed by STOP, START, HELP, Twilio's 21610 and a CSV
import; it suppresses before sending and exports for an auditor. Real Azurite tables and queues, the fake
Twilio over loopback HTTP, the inbound SMS handled as the callbacks queue hands it over.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import cli
from shared.config.loading import get_config
from shared.model import NOTIFICATIONS, TWILIO_INBOUND, Envelope
from shared.pipeline.callbacks import record_inbound
from shared.pipeline.deliver import deliver_notification
from shared.pipeline.process import queue_notifications
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import OPT_OUTS, Stores
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_queue_batches import take_all
from tests.support.twilio_app import twilio_app

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("queued_notifications")]

SOURCE, TWILIO = "consent-fo", "consent-twilio"
FIELDS = {"invoice_id": "INV-5", "vendor_name": "Fabrikam", "money": "USD 70.00", "due_date": "2026-12-01",
          "legal_entity": "usmf"}


def rules() -> list[dict[str, Any]]:
    """Per event: an operational SMS, a marketing SMS and an operational call, each to the record's phone."""
    common = {"source": SOURCE, "via": TWILIO, "template": "vendor-invoice-posted", "to": [{"field": "phone"}]}
    return [
        {**common, "id": "ops-sms", "event": "ops-sms", "channel": "sms"},
        {**common, "id": "promo-sms", "event": "promo-sms", "channel": "sms", "category": "marketing"},
        {**common, "id": "ops-call", "event": "ops-call", "channel": "voice"},
    ]


SENDER: dict[str, str] = {}


@pytest.fixture
def app(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stores, FakeTwilio]]:
    twilio = FakeTwilio().start()
    try:
        with twilio_app(twilio, tmp_path, monkeypatch, name="consent", source=SOURCE, senders={TWILIO: {}},
                        rules=rules()) as creds:
            SENDER["number"] = creds.phone_number
            yield app_stores, twilio
    finally:
        twilio.stop()


@pytest.fixture
def settings(storage_connection_string: str) -> StorageSettings:
    return StorageSettings(storage_connection_string, None, None, None)


def new_phone() -> str:
    return f"+1415555{uuid.uuid4().int % 10_000:04d}"


def alert(stores: Stores, settings: StorageSettings, event_type: str, phone: str) -> Envelope:
    """Route one ERP change to the rule of ``event_type`` and deliver its notification; the notification."""
    bus = StorageQueueBus(settings)
    try:
        queue_notifications(get_config(), stores, bus, source=SOURCE, event_type=event_type,
                            event_key=f"{SOURCE}|{uuid.uuid4().hex}", record=f"{SOURCE}|Invoice|{uuid.uuid4().hex}",
                            fields={**FIELDS, "phone": phone}, correlation_id=uuid.uuid4().hex)
    finally:
        bus.close()
    [envelope] = take_all(settings, NOTIFICATIONS, TWILIO)
    deliver_notification(envelope)
    return envelope


def texted(twilio: FakeTwilio, phone: str, body: str) -> None:
    """``body`` texted by ``phone`` to the connection's number, as the callbacks queue hands it over."""
    params = twilio.inbound_sms_params(phone, SENDER["number"], body)
    record_inbound(Envelope(TWILIO_INBOUND, TWILIO, params["MessageSid"], {"params": params}, uuid.uuid4().hex))


def last_step(stores: Stores, envelope: Envelope) -> Any:
    return stores.audit.by_correlation(envelope.correlation_id)[-1]


def sms_to(twilio: FakeTwilio, phone: str) -> int:
    return len(twilio.messages(to=phone))


def sms_requests(twilio: FakeTwilio, phone: str) -> int:
    """Message creates Twilio was asked for, whatever it answered."""
    return len([request for request in twilio.requests_to("POST /2010-04-01/Accounts/")
                if request.path.endswith("/Messages.json") and request.form_value("To") == phone])


def test_stop_withdraws_every_purpose_on_texts_and_calls_and_the_suppression_says_who_and_when(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    phone = new_phone()
    texted(twilio, phone, "Stop")

    for event_type in ("ops-sms", "promo-sms"):
        envelope = alert(stores, settings, event_type, phone)
        suppressed = last_step(stores, envelope)
        assert suppressed.step == "suppressed" and suppressed.detail["reason"] == "the recipient replied STOP"
        assert suppressed.detail["withdrawn_by"] == "STOP" and suppressed.detail["withdrawn_at"]
        assert phone not in json.dumps(suppressed.detail)  # masked
    assert sms_to(twilio, phone) == 0

    # A revocation by any reasonable means covers the sender's calls too.
    call = last_step(stores, alert(stores, settings, "ops-call", phone))
    assert call.step == "suppressed" and call.detail["withdrawn_by"] == "STOP"
    assert twilio.calls(to=phone) == []


def test_help_changes_nothing_and_start_restores(app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    phone = new_phone()
    texted(twilio, phone, "STOP")
    texted(twilio, phone, "help")
    assert last_step(stores, alert(stores, settings, "ops-sms", phone)).step == "suppressed"

    texted(twilio, phone, "START")
    assert last_step(stores, alert(stores, settings, "promo-sms", phone)).step == "sent"
    assert sms_to(twilio, phone) == 1
    alert(stores, settings, "ops-call", phone)
    assert len(twilio.calls(to=phone)) == 1


def test_twilios_21610_is_recorded_as_withdrawn_and_stops_the_next_send_before_twilio(
        app: tuple, settings: StorageSettings) -> None:
    stores, twilio = app
    phone = new_phone()
    twilio.add_opted_out(phone)  # unsubscribed at Twilio, never at us

    first = last_step(stores, alert(stores, settings, "ops-sms", phone))
    assert first.step == "suppressed" and first.detail["error_code"] == 21610
    assert sms_requests(twilio, phone) == 1

    second = last_step(stores, alert(stores, settings, "promo-sms", phone))
    assert second.step == "suppressed" and second.detail["withdrawn_by"] == "21610"
    assert "21610" in second.detail["reason"]
    assert sms_requests(twilio, phone) == 1  # the registry answered: Twilio was not asked again


def write_csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "prior-consent.csv"
    path.write_text("\n".join(["number,purpose,channel,status,at", *rows]) + "\n")
    return path


def test_an_imported_opt_out_suppresses_its_purpose_and_channel_only_and_never_undoes_a_later_stop(
        app: tuple, settings: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stores, twilio = app
    phone, other = new_phone(), new_phone()
    texted(twilio, other, "STOP")  # before the import, which says an older yes
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path = write_csv(tmp_path, [f"{phone},marketing,sms,opt-out,2026-01-15T09:30:00Z",
                                f"{phone},operational,voice,withdrawn,", f"{other},*,sms,granted,{an_hour_ago}"])

    assert cli.main(["consent", "import", str(path)]) == 0
    said = capsys.readouterr().out
    assert "2 consent record(s) imported for consent-twilio" in said and "1 older" in said  # older than the STOP

    promo = last_step(stores, alert(stores, settings, "promo-sms", phone))
    assert promo.step == "suppressed" and promo.detail["withdrawn_by"] == "import:prior-consent.csv"
    assert promo.detail["withdrawn_at"] == "2026-01-15T09:30:00+00:00" and "2026-01-15" in promo.detail["reason"]
    assert last_step(stores, alert(stores, settings, "ops-sms", phone)).step == "sent"  # another purpose
    assert last_step(stores, alert(stores, settings, "ops-call", phone)).step == "suppressed"
    assert twilio.calls(to=phone) == []
    assert last_step(stores, alert(stores, settings, "ops-sms", other)).step == "suppressed"  # the STOP stands

    texted(twilio, phone, "START")  # the recipient's own later word restores every purpose on SMS
    assert last_step(stores, alert(stores, settings, "promo-sms", phone)).step == "sent"


def test_an_import_with_a_bad_row_imports_nothing_and_names_the_line(
        app: tuple, settings: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stores, _ = app
    phone = new_phone()
    path = write_csv(tmp_path, [f"{phone},marketing,sms,withdrawn,", f"{phone},marketing,fax,withdrawn,",
                                f"{phone},marketing,sms,granted,2099-01-01T00:00:00Z"])

    assert cli.main(["consent", "import", str(path)]) == 1
    said = capsys.readouterr().err
    assert "line 3: channel 'fax'" in said and "line 4: at '2099-01-01T00:00:00Z' is in the future" in said
    assert last_step(stores, alert(stores, settings, "promo-sms", phone)).step == "sent"


def test_the_export_lists_every_fact_with_numbers_masked_unless_revealed_and_storage_never_holds_them(
        app: tuple, settings: StorageSettings, capsys: pytest.CaptureFixture[str]) -> None:
    stores, twilio = app
    phone = new_phone()
    texted(twilio, phone, "STOP")
    twilio.add_opted_out(phone)

    assert cli.main(["consent", "export", "--csv"]) == 0
    masked = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    mine = [row for row in masked if row["number"].endswith(phone[-2:]) and row["source"] == "STOP"]
    assert mine and all(phone not in row["number"] for row in masked)
    assert mine[0] | {"at": ""} == {"connection": TWILIO, "number": mine[0]["number"], "channel": "sms",
                                    "purpose": "*", "status": "withdrawn", "source": "STOP", "at": ""}

    assert cli.main(["consent", "export", "--csv", "--reveal"]) == 0
    revealed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert any(row["number"] == phone and row["source"] == "STOP" for row in revealed)

    stored = repr([dict(row) for row in stores.tables.table(OPT_OUTS).list_entities()])
    assert phone not in stored and phone[1:] not in stored
