"""Full approval cards: the document behind a work item (a pending vendor invoice, a ledger journal)
read from Dynamics, shown with its facts and a link to it, and the decision written back."""

from __future__ import annotations

import itertools
from typing import Any

from tests.e2e.conftest import APPROVALS_CHANNEL, APPROVER, JOURNAL_APPROVAL_EVENT, SLACK_SIGNING_SECRET, Stack
from tests.e2e.test_slack_approvals import buttons, click
from tests.support.waiting import wait_for

_controls = itertools.count(5637180000)
INVOICE_APPROVAL_EVENT = "Workflow_VendInvoiceApproval_000001_Approval_WorkItem"
OLD = "2020-01-01T00:00:00Z"  # not a change any poll of these tests reads


def add_pending_invoice(stack: Stack, header: str, invoice: str) -> None:
    stack.dynamics.add_entities("VendorInvoiceHeaders", [{
        "dataAreaId": "usmf", "HeaderReference": header, "InvoiceNumber": invoice, "VendorAccount": "US-104",
        "VendorName": "Fabrikam", "Currency": "USD", "DueDate": "2025-12-15T12:00:00Z",
        "InvoiceDate": "2025-11-20T12:00:00Z", "InvoiceDescription": "Office chairs", "PurchaseOrderNumber": "",
        "IsOnHold": "No", "ModifiedDateTime": OLD}], keys=("dataAreaId", "HeaderReference"))
    stack.dynamics.add_entities("VendorInvoiceLines", [
        {"dataAreaId": "usmf", "HeaderReference": header, "InvoiceLineNumber": number, "Amount": amount,
         "DimensionDisplayValue": "001-022-0101"} for number, amount in ((1, 1000.0), (2, 500.0))],
        keys=("dataAreaId", "HeaderReference", "InvoiceLineNumber"))


def card_for(stack: Stack, work_item: str, event: dict[str, Any]) -> Any:
    stack.dynamics.add_work_item(work_item)
    assert stack.post_events(event).status_code == 202
    return wait_for(lambda: next((m for m in stack.slack.messages(APPROVALS_CHANNEL) if work_item in m.text), None),
                    what="the card in the approvals channel")


def facts_of(card: Any) -> dict[str, str]:
    texts = [field["text"] for block in card.blocks or [] if block["type"] == "section"
             for field in block.get("fields") or []]
    return dict(text.lstrip("*").split("*\n", 1) for text in texts)


def heading_of(card: Any) -> str:
    return next(block["text"]["text"] for block in card.blocks if block["type"] == "section" and block.get("text"))


def completion_of(stack: Stack, work_item: str) -> dict[str, Any]:
    wait_for(lambda: stack.dynamics.work_item_state(work_item) == "completed", what="the work item completed")
    [completion] = [c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == work_item]
    return completion


def test_an_invoice_card_shows_vendor_amount_due_date_dimensions_and_a_link_to_the_invoice(stack: Stack) -> None:
    add_pending_invoice(stack, "APH-1001", "INV-CARD-1")
    card = card_for(stack, "WI-CARD-1", {
        "BusinessEventId": INVOICE_APPROVAL_EVENT, "ControlNumber": next(_controls), "LegalEntity": "usmf",
        "WorkflowWorkItemInstanceId": "WI-CARD-1", "WorkflowUserEmail": APPROVER[1],
        "WorkflowWorkItemSubject": "Approve vendor invoice WI-CARD-1", "WorkflowDocument": "Vendor invoice",
        "HeaderReference": "APH-1001"})

    facts = facts_of(card)
    assert facts["Vendor"] == "Fabrikam Supplies"  # the vendor's own name, from VendorsV2
    assert facts["Amount"] == "1,500.00 USD"  # the lines' total in the invoice's currency
    assert facts["Invoice"] == "INV-CARD-1" and facts["Due"] == "2025-12-15"
    assert facts["Dimensions"] == "BusinessUnit 001, Department 022, CostCenter 0101"  # the configured names
    link = f"{stack.dynamics.environment_url}/?cmp=usmf&mi=VendInvoiceInfoListPage"
    assert f"<{link}|Open in Dynamics 365>" in heading_of(card)

    assert click(stack, card, APPROVER[0], "approve").status_code == 200
    assert completion_of(stack, "WI-CARD-1")["outcome"] == "Approve"


def test_a_work_item_with_the_lower_case_field_names_of_microsofts_how_to_is_carded_and_completed(
        stack: Stack) -> None:
    card = card_for(stack, "WI-LOWER-1", {
        "BusinessEventId": INVOICE_APPROVAL_EVENT, "ControlNumber": next(_controls), "LegalEntity": "usmf",
        "workflowworkiteminstanceid": "WI-LOWER-1", "workflowuseremail": APPROVER[1],
        "workflowworkitemsubject": "Approve vendor invoice WI-LOWER-1", "workflowdocument": "Vendor invoice"})
    assert facts_of(card)["Assigned to"] == APPROVER[1]
    assert "Approve vendor invoice WI-LOWER-1 (Vendor invoice)" in card.text  # subject and document

    assert click(stack, card, APPROVER[0], "approve").status_code == 200
    assert completion_of(stack, "WI-LOWER-1")["outcome"] == "Approve"


def test_a_journal_approval_shows_the_journal_and_its_totals_and_completes_its_work_item(stack: Stack) -> None:
    stack.dynamics.add_entities("LedgerJournalHeaders", [
        {"dataAreaId": "usmf", "JournalBatchNumber": "GJ-0042", "JournalName": "GenJrn",
         "Description": "December accruals", "IsPosted": "No"}], keys=("dataAreaId", "JournalBatchNumber"))
    stack.dynamics.add_entities("LedgerJournalLines", [
        {"dataAreaId": "usmf", "JournalBatchNumber": "GJ-0042", "LineNumber": n, "DebitAmount": debit,
         "CreditAmount": credit} for n, debit, credit in ((1, 2500.0, 0.0), (2, 0.0, 1500.0), (3, 0.0, 1000.0))],
        keys=("dataAreaId", "JournalBatchNumber", "LineNumber"))
    card = card_for(stack, "WI-JRN-1", {
        "BusinessEventId": JOURNAL_APPROVAL_EVENT, "ControlNumber": next(_controls), "LegalEntity": "usmf",
        "WorkflowWorkItemInstanceId": "WI-JRN-1", "WorkflowUserEmail": APPROVER[1],
        "WorkflowWorkItemSubject": "Approve journal WI-JRN-1", "WorkflowDocument": "General journal",
        "JournalBatchNumber": "GJ-0042"})

    facts = facts_of(card)
    assert (facts["Journal"], facts["Description"]) == ("GJ-0042", "December accruals")
    assert (facts["Total debit"], facts["Total credit"]) == ("2,500.00", "2,500.00")
    assert f"{stack.dynamics.environment_url}/?cmp=usmf&mi=LedgerJournalTable_Daily" in heading_of(card)
    assert set(buttons(card)) == {"approve", "reject"}

    assert click(stack, card, APPROVER[0], "approve").status_code == 200
    completion = completion_of(stack, "WI-JRN-1")
    assert completion["outcome"] == "Approve" and APPROVER[1] in completion["comment"]


def submit_reason(stack: Stack, view_id: str, reason: str) -> dict[str, Any]:
    submission = stack.slack.view_submission_payload(APPROVER[0], view_id, {"reason": reason})
    answer = stack.slack.send_interaction(f"{stack.base_url}/api/slack/interactions/slack-main", submission,
                                          SLACK_SIGNING_SECRET)
    assert answer.status_code == 200
    return answer.json()


def test_a_reject_asks_for_a_reason_which_is_written_back_as_the_comment_once(stack: Stack) -> None:
    card = card_for(stack, "WI-REASON-1", {
        "BusinessEventId": INVOICE_APPROVAL_EVENT, "ControlNumber": next(_controls), "LegalEntity": "usmf",
        "WorkflowWorkItemInstanceId": "WI-REASON-1", "WorkflowUserEmail": APPROVER[1],
        "WorkflowWorkItemSubject": "Approve vendor invoice WI-REASON-1", "WorkflowDocument": "Vendor invoice"})
    reject = stack.slack.block_actions_payload(APPROVER[0], APPROVALS_CHANNEL, card.ts, "reject",
                                               buttons(card)["reject"])
    answered = stack.slack.send_interaction(f"{stack.base_url}/api/slack/interactions/slack-main", reject,
                                            SLACK_SIGNING_SECRET)
    assert answered.status_code == 200
    # The modal was opened with the click's own trigger_id, before the answer (the trigger lives 3 s).
    [opened] = [v for v in stack.slack.views_opened if v.trigger_id == reject["trigger_id"]]
    assert opened.view["callback_id"] == "reject-reason"
    assert stack.dynamics.work_item_state("WI-REASON-1") == "open"  # a click alone rejects nothing

    blank = submit_reason(stack, opened.id, "   ")
    assert blank["response_action"] == "errors" and "reject-reason" in blank["errors"]
    recorded = submit_reason(stack, opened.id, "Wrong VAT rate on line 2")
    assert recorded["response_action"] == "update"

    completion = completion_of(stack, "WI-REASON-1")
    assert completion["outcome"] == "Reject"
    assert completion["comment"] == f"Rejected in Slack by {APPROVER[1]}: Wrong VAT rate on line 2"
    update = wait_for(lambda: next((u for u in stack.slack.updates if u.ts == card.ts), None), what="card updated")
    assert "Rejected by" in (update.text or "") and not any(b["type"] == "actions" for b in update.blocks or [])
    assert (update.text or "").endswith(": Wrong VAT rate on line 2")  # the card says why, as Dynamics does

    submit_reason(stack, opened.id, "Wrong VAT rate on line 2")  # Slack's retry of the same submission
    wait_for(lambda: "decided" in stack.steps("contoso-fo|WorkflowWorkItem|WI-REASON-1"), what="decision audited")
    assert len([c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-REASON-1"]) == 1
    assert "Wrong VAT" not in stack.log()  # the approver's words are not logged
