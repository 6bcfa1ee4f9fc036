"""Push and poll name one business fact with one key; the silence alarm's settings and its business hours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.erp.dynamics.connection import DynamicsConnection, SilenceAlarm
from shared.erp.dynamics.events import POLLED, POSTED_VENDOR_INVOICES, event_fact_key, parse_event, polled_fact
from shared.pipeline.ingest import event_key
from shared.pipeline.silence import business_hours_between
from tests.unit.test_config import base, dynamics, errors_of

POSTED_ROW = {"dataAreaId": "USMF", "InvoiceId": "INV-1001", "InvoiceAccount": "US-104", "InvoiceAmount": 950.0,
              "CurrencyCode": "USD", "ModifiedDateTime": "2026-11-30T09:00:00Z"}


def pushed(business_event_id: str = "VendorInvoicePostedBusinessEvent", **fields: Any) -> Any:
    return parse_event({"BusinessEventId": business_event_id, "ControlNumber": 5637144576,
                        "BusinessEventLegalEntity": "usmf", "InvoiceId": "INV-1001", "InvoiceAccount": "US-104",
                        **fields})


def test_a_posted_invoice_has_one_key_whether_pushed_or_found_by_the_poll() -> None:
    key, event = polled_fact(POLLED[POSTED_VENDOR_INVOICES], "contoso-fo", POSTED_ROW,
                             {"legal_entity": "USMF", "invoice_id": "INV-1001"}) or ("", None)
    assert key == event_fact_key("contoso-fo", pushed()) == "dynamics|contoso-fo|VendorInvoice|usmf|INV-1001|posted"
    assert event_key("contoso-fo", pushed()) == key
    assert event is not None and parse_event(event).business_event_id == "VendorInvoicePostedBusinessEvent"
    assert event["InvoiceAmount"] == 950.0 and event["EventTimeIso8601"] == "2026-11-30T09:00:00Z"


def test_events_that_report_no_fact_keep_their_control_number_key() -> None:
    work_item = pushed("Workflow_VendInvoiceApproval_000001_Approval_WorkItem", WorkflowWorkItemInstanceId="5637")
    assert event_key("contoso-fo", work_item) == "contoso-fo|5637144576"
    assert event_key("contoso-fo", pushed(InvoiceId="")) == "contoso-fo|5637144576"  # names no document


def test_a_pending_invoice_on_hold_is_a_fact_of_its_own_and_one_not_on_hold_a_change() -> None:
    pending = POLLED["VendorInvoiceHeaders"]
    record = {"legal_entity": "usmf", "invoice_id": "PINV-1"}
    assert polled_fact(pending, "fo", {"IsOnHold": "Yes"}, record) == (
        "dynamics|fo|VendorInvoice|usmf|PINV-1|on-hold", None)
    assert polled_fact(pending, "fo", {"IsOnHold": "No"}, record) is None
    assert polled_fact(pending, "fo", {"IsOnHold": "Yes"}, {"legal_entity": "usmf", "invoice_id": ""}) is None


def alarm(**changes: Any) -> SilenceAlarm:
    return SilenceAlarm(**{"business_hours": 4, "time_zone": "Europe/Berlin", **changes})


def test_business_hours_leave_out_nights_weekends_and_follow_the_zone() -> None:
    friday_5pm, monday_11am = datetime(2026, 12, 4, 16, tzinfo=UTC), datetime(2026, 12, 7, 10, tzinfo=UTC)
    assert business_hours_between(friday_5pm, monday_11am, alarm()) == 4.0  # Fri 17-18, Mon 8-11 (Berlin)
    assert business_hours_between(friday_5pm, monday_11am, alarm(days="Mon-Sun")) == 24.0
    assert business_hours_between(friday_5pm, monday_11am, alarm(days="Tue-Thu")) == 0.0


def test_the_silence_alarm_is_read_from_the_connection() -> None:
    data = base()
    dynamics(data)["legal_entities"] = ["usmf"]
    dynamics(data)["silence_alarm"] = {"business_hours": 4, "days": "Mon,Wed-Fri", "time_zone": "Europe/Berlin"}
    connection = config_from_dict(data).connections["contoso"]
    assert isinstance(connection, DynamicsConnection) and connection.silence_alarm is not None
    assert connection.silence_alarm.weekdays() == {0, 2, 3, 4}
    assert connection.watched_legal_entities() == ("usmf",)


@pytest.mark.parametrize(("settings", "message"), [
    ({"business_hours": 0}, "business_hours: must be a number of hours above 0"),
    ({"business_hours": 4, "days": "Monday"}, "days: must name business days"),
    ({"business_hours": 4, "start": "18:00", "end": "08:00"}, "end: must be later than start"),
    ({"business_hours": 4, "legal_entities": []}, "legal_entities: must be a non-empty list"),
    ({"business_hours": 4}, "legal_entities: name the legal entities to watch"),
])
def test_a_wrong_silence_alarm_is_named(settings: dict[str, Any], message: str) -> None:
    data = base()
    dynamics(data)["silence_alarm"] = settings
    errors = errors_of(data)
    assert any(error.startswith(f"connections.contoso.silence_alarm.{message}") for error in errors), errors
