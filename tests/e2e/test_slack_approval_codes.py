"""A high-value work item: Approve opens a modal, a Verify code goes by SMS, and Dynamics is
written only after the right code."""

from __future__ import annotations

import itertools
import time
from typing import Any

import requests

from tests.e2e.conftest import (
    APPROVALS_CHANNEL,
    BYSTANDER,
    CODE_ABOVE,
    HIGH_VALUE_EVENT,
    SLACK_SIGNING_SECRET,
    Stack,
)
from tests.fakes.slack import SlackMessage
from tests.support.waiting import wait_for

_controls = itertools.count(5637190000)
_people = itertools.count(1)
SPEC = "slack/slack_web_openapi_v2.json"


def new_approver(stack: Stack) -> tuple[str, str, str]:
    """A Slack user of their own per test (user id, email, phone): Verify keeps one pending
    code per number, so tests that share a phone would share a code."""
    n = next(_people)
    user_id, email, phone = f"U0CODE{n:04d}", f"approver{n}@contoso.example", f"+1415555{7000 + n:04d}"
    stack.slack.add_user(user_id, email, f"approver{n}", phone=f"(415) 555-{7000 + n:04d}")  # as people type it
    return user_id, email, phone


def post_card(stack: Stack, work_item: str, amount: float, approver_email: str) -> SlackMessage:
    stack.dynamics.add_work_item(work_item)
    event = {"BusinessEventId": HIGH_VALUE_EVENT, "ControlNumber": next(_controls), "LegalEntity": "usmf",
             "WorkflowWorkItemInstanceId": work_item, "WorkflowUserEmail": approver_email,
             "WorkflowWorkItemSubject": f"Approve vendor invoice {work_item}",
             "WorkflowDocument": f"Invoice {work_item}", "InvoiceAmount": amount}
    assert stack.post_events(event).status_code == 202
    return wait_for(lambda: next((m for m in stack.slack.messages(APPROVALS_CHANNEL) if work_item in m.text), None),
                    what="the card in the approvals channel")


def buttons(card: SlackMessage) -> dict[str, str]:
    return {element["action_id"]: element["value"] for block in card.blocks or []
            if block["type"] == "actions" for element in block["elements"]}


def interactions_url(stack: Stack) -> str:
    return f"{stack.base_url}/api/slack/interactions/slack-main"


def click(stack: Stack, card: SlackMessage, user: str, action: str, **options: Any) -> tuple[requests.Response, dict]:
    payload = stack.slack.block_actions_payload(user, APPROVALS_CHANNEL, card.ts, action, buttons(card)[action],
                                                **options)
    return stack.slack.send_interaction(interactions_url(stack), payload, SLACK_SIGNING_SECRET), payload


def submit(stack: Stack, user: str, view_id: str, code: str) -> dict:
    submission = stack.slack.view_submission_payload(user, view_id, {"code": code})
    answer = stack.slack.send_interaction(interactions_url(stack), submission, SLACK_SIGNING_SECRET)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    return answer.json()


def modal_text(view: dict) -> str:
    return " ".join(str((block.get("text") or {}).get("text", "")) for block in view.get("blocks", []))


def writebacks(stack: Stack, work_item: str) -> list:
    """Every Validate or Complete the app sent to Dynamics for this work item."""
    return [r for r in stack.dynamics.requests_to("POST /data/WorkflowWorkItems") if work_item in r.body.decode()]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def record_of(work_item: str) -> str:
    return f"contoso-fo|WorkflowWorkItem|{work_item}"


def open_modal(stack: Stack, card: SlackMessage, user: str) -> str:
    """Click Approve; the modal opens with the click's trigger before the answer; its view id."""
    started = time.monotonic()
    answer, payload = click(stack, card, user, "approve")
    assert answer.status_code == 200 and time.monotonic() - started < 3.0
    [opened] = [view for view in stack.slack.views_opened if view.trigger_id == payload["trigger_id"]]
    return opened.id


def test_a_high_value_approval_is_written_only_after_the_right_code(stack: Stack) -> None:
    user, email, phone = new_approver(stack)
    card = post_card(stack, "WI-OTP-1", 25000, email)
    assert buttons(card)["approve"].endswith("|code") and not buttons(card)["reject"].endswith("|code")

    view_id = open_modal(stack, card, user)
    wait_for(lambda: "We sent a code" in modal_text(stack.slack.view(view_id)), what="the modal says a code was sent")
    [verification] = stack.twilio.verifications(to=phone)
    assert verification.channel == "sms" and verification.status == "pending"
    assert writebacks(stack, "WI-OTP-1") == [] and stack.dynamics.work_item_state("WI-OTP-1") == "open"

    code = stack.twilio.code_for(phone)
    answer = submit(stack, user, view_id, wrong(code))
    assert answer["response_action"] == "errors" and "not right" in answer["errors"]["approval-code"]
    assert writebacks(stack, "WI-OTP-1") == []

    answer = submit(stack, user, view_id, code)
    assert answer["response_action"] == "update" and "Code accepted" in modal_text(answer["view"])
    wait_for(lambda: stack.dynamics.work_item_state("WI-OTP-1") == "completed", what="the work item completed")
    [completion] = [c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-OTP-1"]
    assert completion["outcome"] == "Approve" and email in completion["comment"] and "code" in completion["comment"]
    assert [r.path.rsplit(".", 1)[-1] for r in writebacks(stack, "WI-OTP-1")] == ["Validate", "Complete"]
    update = wait_for(lambda: next((u for u in stack.slack.updates if u.ts == card.ts), None), what="card updated")
    assert "Approved by" in (update.text or "") and not any(b["type"] == "actions" for b in update.blocks or [])

    entries = wait_for(lambda: [e for e in stack.audit(record_of("WI-OTP-1"))["entries"] if e["step"] == "decided"]
                       and stack.audit(record_of("WI-OTP-1"))["entries"], what="the decision audited")
    steps = [entry["step"] for entry in entries]
    assert [s for s in steps if s.startswith("otp-") or s == "decided"] == [
        "otp-sent", "otp-wrong", "otp-approved", "decided"]
    by_step = {entry["step"]: entry["detail"] for entry in entries}
    assert by_step["otp-sent"]["to"] != phone and by_step["otp-sent"]["to"].endswith(phone[-2:])  # masked
    assert by_step["otp-approved"]["by"] == email and by_step["otp-approved"]["approved_at"]
    assert by_step["decided"]["by"] == email and by_step["decided"]["decided_at"]

    again = submit(stack, user, view_id, code)  # a second press of the button
    assert "already decided" in modal_text(again["view"])
    time.sleep(0.5)
    assert len(writebacks(stack, "WI-OTP-1")) == 2


def test_too_many_wrong_codes_end_the_attempt_and_write_nothing(stack: Stack) -> None:
    user, email, phone = new_approver(stack)
    card = post_card(stack, "WI-OTP-2", 18000.5, email)
    view_id = open_modal(stack, card, user)
    wait_for(lambda: "We sent a code" in modal_text(stack.slack.view(view_id)), what="a code was sent")
    code = stack.twilio.code_for(phone)

    answers = [submit(stack, user, view_id, wrong(code)) for _ in range(6)]

    assert [a["response_action"] for a in answers] == ["errors"] * 5 + ["update"]
    assert "Too many wrong codes" in modal_text(answers[-1]["view"])
    assert "nothing was approved" in modal_text(submit(stack, user, view_id, code)["view"])  # too late now
    steps = stack.steps(record_of("WI-OTP-2"))
    assert steps.count("otp-wrong") == 5 and "otp-exhausted" in steps and "otp-approved" not in steps
    assert writebacks(stack, "WI-OTP-2") == [] and stack.dynamics.work_item_state("WI-OTP-2") == "open"


def test_a_low_value_approval_is_written_at_once(stack: Stack) -> None:
    user, email, _ = new_approver(stack)
    card = post_card(stack, "WI-OTP-3", CODE_ABOVE - 100, email)
    assert buttons(card)["approve"] == buttons(card)["reject"]  # the job id, no code mark

    answer, payload = click(stack, card, user, "approve")

    assert answer.status_code == 200
    wait_for(lambda: stack.dynamics.work_item_state("WI-OTP-3") == "completed", what="completed without a code")
    assert not [v for v in stack.slack.views_opened if v.trigger_id == payload["trigger_id"]]
    assert "otp-sent" not in stack.steps(record_of("WI-OTP-3"))


def test_a_bystander_gets_no_code_and_reject_needs_none(stack: Stack) -> None:
    user, email, phone = new_approver(stack)
    card = post_card(stack, "WI-OTP-4", 99000, email)

    view_id = open_modal(stack, card, BYSTANDER[0])
    wait_for(lambda: "not the approver" in modal_text(stack.slack.view(view_id)), what="the bystander told")
    assert stack.twilio.verifications(to=phone) == [] and "refused" in stack.steps(record_of("WI-OTP-4"))

    answer, _ = click(stack, card, user, "reject")
    assert answer.status_code == 200
    wait_for(lambda: stack.dynamics.work_item_state("WI-OTP-4") == "completed", what="rejected")
    [completion] = [c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-OTP-4"]
    assert completion["outcome"] == "Reject"
    assert stack.twilio.verifications(to=phone) == []


def test_an_expired_trigger_sends_no_code(stack: Stack) -> None:
    user, email, phone = new_approver(stack)
    card = post_card(stack, "WI-OTP-5", 50000, email)

    answer, _ = click(stack, card, user, "approve", trigger_id="4916855695380.1.stale")

    assert answer.status_code == 200
    wait_for(lambda: "otp-failed" in stack.steps(record_of("WI-OTP-5")), what="the failure audited")
    # The approver is told right after the audit, by the same handler.
    wait_for(lambda: any(e.user == user and "could not be opened in time" in (e.text or "")
                         for e in stack.slack.ephemerals), what="the approver told")
    assert stack.twilio.verifications(to=phone) == [] and writebacks(stack, "WI-OTP-5") == []


def test_the_slack_calls_of_a_code_approval_match_the_spec(stack: Stack) -> None:
    from tests.support.openapi import require_spec, validate_swagger_definition, validate_swagger_request

    spec = require_spec(SPEC)
    user, email, _ = new_approver(stack)
    card = post_card(stack, "WI-OTP-6", 30000, email)
    view_id = open_modal(stack, card, user)
    wait_for(lambda: "We sent a code" in modal_text(stack.slack.view(view_id)), what="a code was sent")

    for method in ("views.open", "views.update", "users.info"):
        calls = stack.slack.requests_to(f"POST /api/{method}")
        assert calls, method
        for call in calls:
            arguments = call.json if isinstance(call.json, dict) else {k: v[0] for k, v in (call.form or {}).items()}
            assert validate_swagger_request(spec, f"/{method}", arguments) == [], method
            if "view" in arguments:
                assert validate_swagger_definition(spec, "blocks", arguments["view"]["blocks"]) == []
    assert stack.slack.view(view_id)["private_metadata"]
