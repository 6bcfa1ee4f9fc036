"""Business Events as Dynamics sends them, and the record each one reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.erp.dynamics.events import (
    EnrichmentError,
    EventError,
    parse_event,
    parse_events,
    parse_wcf_date,
    record_fields,
)

# The real captured payload quoted in the Dynamics reference (an older envelope).
PO_CONFIRMED = {
    "BusinessEventId": "PurchaseOrderConfirmedBusinessEvent", "ControlNumber": 5637144576,
    "EventId": "55A81094-A14E-46A6-A12C-07ED5C5990C6", "EventTime": "/Date(1637246655000)/",
    "LegalEntity": "brmf", "MajorVersion": 0, "MinorVersion": 0,
    "PurchaseJournal": "BRMF-000018-2", "PurchaseOrderDate": "/Date(1637193600000)/",
    "PurchaseOrderNumber": "BRMF-000018", "PurchaseType": "Purch",
    "TransactionCurrencyAmount": 90055.6, "TransactionCurrencyCode": "BRL", "VendorAccount": "BRMF-000004",
}
INVOICE_POSTED = {
    "BusinessEventId": "VendorInvoicePostedBusinessEvent", "BusinessEventLegalEntity": "usmf",
    "ContextRecordSubject": "", "ControlNumber": 5637145001, "EventId": "7D0C5A5E-1F6B-4F0E-9C1B-3C2F4B0E9A11",
    "EventTime": "/Date(1763802000000)/", "EventTimeIso8601": "2025-11-22T09:00:00.3440655Z",
    "InitiatingUserAADObjectId": "{410A2690-5EC2-42EE-9F2A-E75B4E324930}", "InvoiceAccount": "US-104",
    "InvoiceAmountInAccountingCurrency": 12500.5, "InvoiceDate": "/Date(1763769600000)/",
    "InvoiceDueDate": "/Date(1766361600000)/", "InvoiceId": "INV-0042", "LegalEntity": "usmf",
    "MajorVersion": 0, "MinorVersion": 0, "ParentContextRecordSubjects": [],
}


def test_wcf_dates() -> None:
    assert parse_wcf_date("/Date(1697470966000)/") == datetime(2023, 10, 16, 15, 42, 46, tzinfo=UTC)
    assert parse_wcf_date("/Date(-2208988800000)/") == datetime(1900, 1, 1, tzinfo=UTC)
    assert parse_wcf_date("/Date(1697470966000+0200)/") == datetime(2023, 10, 16, 15, 42, 46, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_wcf_date("2023-10-16")


def test_older_envelope_without_newer_fields_parses() -> None:
    event = parse_event(PO_CONFIRMED)
    assert event.control_number == 5637144576
    assert event.legal_entity == "brmf"
    assert event.event_time == datetime(2021, 11, 18, 14, 44, 15, tzinfo=UTC)


def test_iso_time_is_preferred_and_seven_digit_fractions_parse() -> None:
    event = parse_event(INVOICE_POSTED)
    assert event.event_time == datetime(2025, 11, 22, 9, 0, 0, 344065, tzinfo=UTC)
    assert event.legal_entity == "usmf"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: an empty array holds no business event"),
        ("text", "body: must be a JSON object"),
        ({"ControlNumber": 1}, "BusinessEventId: is required"),
        ({"BusinessEventId": "X"}, "ControlNumber: is required"),
        ({"BusinessEventId": "X", "ControlNumber": "abc"}, "ControlNumber: is required"),
        ({"BusinessEventId": "X", "ControlNumber": 1, "EventTime": "yesterday"}, "EventTime: must be a /Date(ms)/"),
        ([PO_CONFIRMED, {"BusinessEventId": "X"}], "[1].ControlNumber: is required"),
        ([PO_CONFIRMED] * 101, "body: at most 100 events per request"),
    ],
)
def test_bad_events_name_the_problem(body: object, message: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_events(body)
    assert str(caught.value).startswith(message)


def test_an_array_is_accepted() -> None:
    assert [e.control_number for e in parse_events([PO_CONFIRMED, INVOICE_POSTED])] == [5637144576, 5637145001]


class Reader:
    """A tiny in-memory OData reader: (entity set, sorted keys) -> row."""

    def __init__(self, rows: dict) -> None:
        self.rows = rows
        self.calls: list[tuple] = []

    def read_entity(self, entity_set: str, keys: dict, select: tuple, cross_company: bool = True) -> dict | None:
        self.calls.append((entity_set, dict(keys), select))
        return self.rows.get((entity_set, tuple(sorted(keys.items()))))

    def query(self, entity_set: str, *, filter: str | None = None, select: tuple = (), orderby: str | None = None,
              top: int | None = None, cross_company: bool = True) -> list[dict]:
        self.calls.append((entity_set, filter, select))
        return list(self.rows.get((entity_set, filter), []))[:top]


def test_invoice_record_merges_event_and_vendor() -> None:
    reader = Reader({("VendorsV2", (("VendorAccountNumber", "US-104"), ("dataAreaId", "usmf"))): {
        "VendorOrganizationName": "Fabrikam Supplies", "PrimaryPhoneNumber": "+14155550100"}})
    enriched = record_fields(parse_event(INVOICE_POSTED), reader)
    assert enriched.record_entity == "VendorInvoice"
    assert enriched.record_key == "usmf|INV-0042"
    fields = enriched.fields
    assert (fields["invoice_id"], fields["vendor_name"], fields["amount"]) == ("INV-0042", "Fabrikam Supplies", 12500.5)
    assert fields["due_date"] == "2025-12-22T00:00:00+00:00"
    assert fields["vendor_phone"] == "+14155550100"
    assert reader.calls[0][2] == (
        "VendorOrganizationName", "PrimaryPhoneNumber", "PrimaryEmailAddress", "VendorGroupId",
    )


def test_a_required_record_that_is_gone_is_an_enrichment_error() -> None:
    with pytest.raises(EnrichmentError, match=r"VendorsV2\(dataAreaId=usmf,VendorAccountNumber=US-104\): not found"):
        record_fields(parse_event(INVOICE_POSTED), Reader({}))


def test_unknown_events_keep_their_own_fields_for_rules() -> None:
    enriched = record_fields(parse_event({"BusinessEventId": "CustomThingHappened", "ControlNumber": 7,
                                          "LegalEntity": "usmf", "Severity": "High"}), Reader({}))
    assert enriched.fields["Severity"] == "High"
    assert enriched.record_key == "usmf|7"


def test_purchase_order_confirmed_reads_the_header_then_the_vendor() -> None:
    reader = Reader({
        ("PurchaseOrderHeadersV2", (("PurchaseOrderNumber", "BRMF-000018"), ("dataAreaId", "brmf"))): {
            "OrderVendorAccountNumber": "BRMF-000004", "CurrencyCode": "BRL", "PurchaseOrderStatus": "Backorder"},
        ("VendorsV2", (("VendorAccountNumber", "BRMF-000004"), ("dataAreaId", "brmf"))): {
            "VendorOrganizationName": "Fornecedor Ltda", "PrimaryPhoneNumber": "+5511912345678"},
    })
    enriched = record_fields(parse_event(PO_CONFIRMED), reader)
    assert (enriched.record_entity, enriched.record_key) == ("PurchaseOrder", "brmf|BRMF-000018")
    assert [call[0] for call in reader.calls] == ["PurchaseOrderHeadersV2", "VendorsV2"]
    fields = enriched.fields
    assert (fields["amount"], fields["currency"], fields["vendor_name"]) == (90055.6, "BRL", "Fornecedor Ltda")
    assert fields["po_status"] == "Backorder"


WORK_ITEM = {
    "BusinessEventId": "Workflow_VendInvoiceApproval_000001_Approval_WorkItem", "ControlNumber": 42,
    "LegalEntity": "usmf", "WorkflowWorkItemInstanceId": "WI-0007", "WorkflowUserEmail": "ana@contoso.example",
    "WorkflowWorkItemSubject": "Approve invoice INV-0042", "WorkflowDocument": "Vendor invoice INV-0042",
}


def test_a_work_items_assignee_is_read_as_the_worker_who_signs_in_with_its_email() -> None:
    reader = Reader({("Workers", "IdentityEmail eq 'ana@contoso.example'"): [
        {"Name": "Ana Souza", "PersonnelNumber": "000123", "PrimaryContactPhone": "+14155550123"}]})
    enriched = record_fields(parse_event(WORK_ITEM), reader)
    assert (enriched.record_entity, enriched.record_key) == ("WorkflowWorkItem", "WI-0007")
    assert reader.calls[0][:2] == ("Workers", "IdentityEmail eq 'ana@contoso.example'")
    fields = enriched.fields
    assert (fields["assignee_name"], fields["assignee_personnel_number"]) == ("Ana Souza", "000123")
    assert fields["assignee_phone"] == "+14155550123"


def test_a_work_item_whose_assignee_is_no_worker_keeps_what_the_event_says() -> None:
    enriched = record_fields(parse_event(WORK_ITEM), Reader({}))
    assert enriched.fields["assignee_email"] == "ana@contoso.example"
    assert enriched.fields["subject"] == "Approve invoice INV-0042"
    assert "assignee_name" not in enriched.fields


def test_a_workflow_step_completed_event_is_recognised() -> None:
    event = parse_event({"BusinessEventId": "Workflow_VendInvoiceApproval_000001_Approval", "ControlNumber": 43,
                         "LegalEntity": "usmf", "WorkflowDocument": "Vendor invoice INV-0042"})
    enriched = record_fields(event, Reader({}))
    assert (enriched.record_entity, enriched.record_key) == ("Workflow", "usmf|43")


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("ControlNumber", 2**63, "ControlNumber"),
    ("ControlNumber", "7" * 5000, "ControlNumber"),
    ("EventTime", "/Date(99999999999999999)/", "EventTime"),
    ("EventTimeIso8601", "0001-01-01T00:00:00+05:00", "EventTimeIso8601"),
    ("InvoiceId", ["INV-1", "INV-2"], "InvoiceId"),  # part of the record key
    ("InvoiceAccount", {"id": "US-104"}, "InvoiceAccount"),  # the key of the vendor read
    ("invoice_id", [1], "invoice_id"),  # the record field by its own name
])
def test_values_that_cannot_name_a_record_or_a_time_are_refused(field: str, value: object, problem: str) -> None:
    with pytest.raises(EventError, match=problem):
        parse_event({**INVOICE_POSTED, "EventTimeIso8601": "", field: value})


def test_fields_that_name_nothing_may_have_any_shape() -> None:
    event = parse_event({**INVOICE_POSTED, "ParentContextRecordSubjects": [{"a": [1]}], "Note": {"x": 1}})
    assert event.fields["Note"] == {"x": 1}


class LinesReader(Reader):
    """The reader, with collection queries answered from lines held per entity set."""

    def __init__(self, rows: dict, lines: dict) -> None:
        super().__init__(rows)
        self.lines = lines

    def query(self, entity_set: str, *, filter: str | None = None, select: tuple = (), **_: object) -> list:
        self.calls.append((entity_set, filter, select))
        return self.lines.get(entity_set, [])


def test_a_work_item_naming_a_pending_invoice_reads_it_its_lines_and_its_vendor() -> None:
    reader = LinesReader({
        ("VendorInvoiceHeaders", (("HeaderReference", "APH-1"), ("dataAreaId", "usmf"))): {
            "InvoiceNumber": "INV-7", "VendorAccount": "US-104", "Currency": "EUR", "DueDate": "2025-12-15T12:00:00Z"},
        ("VendorsV2", (("VendorAccountNumber", "US-104"), ("dataAreaId", "usmf"))): {
            "VendorOrganizationName": "Fabrikam Supplies"},
    }, {"VendorInvoiceLines": [{"Amount": 100.25, "DimensionDisplayValue": "001-022"},
                               {"Amount": 50, "DimensionDisplayValue": "001-023"},
                               {"Amount": 1, "DimensionDisplayValue": "001-022"}]})
    event = parse_event({"BusinessEventId": "Workflow_VendInvoiceApproval_000001_Approval_WorkItem",
                         "ControlNumber": 44, "LegalEntity": "usmf", "WorkflowWorkItemInstanceId": "WI-9",
                         "HeaderReference": "APH-1"})
    enriched = record_fields(event, reader)
    fields = enriched.fields
    assert (fields["invoice_id"], fields["vendor_name"], fields["currency"]) == ("INV-7", "Fabrikam Supplies", "EUR")
    assert fields["amount"] == 151.25 and fields["document_kind"] == "VendorInvoice"
    assert fields["dimension_values"] == ["001-022", "001-023"]
    [lines_call] = [call for call in reader.calls if call[0] == "VendorInvoiceLines"]
    assert lines_call[1] == "dataAreaId eq 'usmf' and HeaderReference eq 'APH-1'"
    assert enriched.record_key == "WI-9"


def test_work_item_fields_are_matched_without_regard_to_case() -> None:
    event = parse_event({"BusinessEventId": "Workflow_VendInvoiceApproval_000001_Approval_WorkItem",
                         "ControlNumber": 45, "LegalEntity": "usmf", "workflowworkiteminstanceid": "WI-10",
                         "workflowuseremail": "ana@contoso.example", "WorkflowWorkitemSubject": "Approve INV-8"})
    fields = record_fields(event, Reader({})).fields
    assert (fields["work_item_id"], fields["assignee_email"], fields["subject"]) == (
        "WI-10", "ana@contoso.example", "Approve INV-8")
    with pytest.raises(EventError, match="workflowworkiteminstanceid"):
        parse_event({"BusinessEventId": "Workflow_X_WorkItem", "ControlNumber": 46,
                     "workflowworkiteminstanceid": ["WI-1"]})


def test_dimensions_are_shown_with_the_names_of_the_display_format_and_the_link_is_filled_in() -> None:
    from shared.config.model import SecretRef
    from shared.erp.dynamics.connection import DimensionSettings, DynamicsConnection
    from shared.erp.dynamics.documents import document_fields

    connection = DynamicsConnection(name="fo", environment_url="https://contoso.operations.dynamics.com/",
                                    tenant_id="t", client_id="c", client_secret=SecretRef("s"),
                                    dimensions=DimensionSettings(names=("BusinessUnit", "Department", "CostCenter")),
                                    links={"LedgerJournal": "{environment_url}/?cmp={legal_entity}&mi=Mine"
                                                            "&j={journal}"})
    invoice = document_fields({"document_kind": "VendorInvoice", "legal_entity": "us mf",
                               "dimension_values": ["001-022-0101", "002--0102", "1-2-3-4"]}, connection)
    assert invoice["dimensions"] == ("BusinessUnit 001, Department 022, CostCenter 0101; "
                                     "BusinessUnit 002, CostCenter 0102; 1-2-3-4")
    assert invoice["record_url"] == "https://contoso.operations.dynamics.com/?cmp=us%20mf&mi=VendInvoiceInfoListPage"
    journal = document_fields({"document_kind": "LedgerJournal", "legal_entity": "usmf", "journal": "GJ&1"},
                              connection)
    assert journal == {"record_url": "https://contoso.operations.dynamics.com/?cmp=usmf&mi=Mine&j=GJ%261"}
    assert document_fields({"legal_entity": "usmf"}, connection) == {}  # no document read: no link


def test_workflow_names_links_and_dimensions_are_checked_in_the_configuration() -> None:
    from shared.config.loading import config_from_dict
    from shared.config.model import ConfigError

    base = {"kind": "dynamics", "environment_url": "https://contoso.operations.dynamics.com",
            "tenant_id": "t", "client_id": "c", "client_secret": {"secret": "s"}}
    good = config_from_dict({"connections": {"fo": {
        **base, "workflow": {"complete_action": "CompleteWorkItem", "work_item_parameter": "WorkItemId"},
        "links": {"VendorInvoice": "https://fo.example/?cmp={legal_entity}&mi=VendInvoiceInfoListPage"},
        "dimensions": {"names": ["BusinessUnit", "Department"], "separator": "|"}}}, "rules": []})
    connection = good.connections["fo"]
    assert connection.workflow.complete_action == "CompleteWorkItem"  # type: ignore[attr-defined]
    assert connection.workflow.validate_action == "Validate"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"connections": {"fo": {
            **base, "workflow": {"complete_action": "Complete work item"},
            "links": {"VendorInvoice": "javascript:alert(1)", "Unknown": "https://x"}}}, "rules": []})
    text = str(refused.value)
    assert "workflow.complete_action" in text and "links.VendorInvoice" in text and "links.Unknown" in text
