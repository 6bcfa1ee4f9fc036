"""A Dynamics workflow work item -> a Slack card -> the approver's click -> Complete in Dynamics."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from tests.e2e.conftest import (
    APPROVALS_CHANNEL,
    APPROVER,
    BYSTANDER,
    FALLBACK_CHANNEL,
    NAMED_CHANNEL,
    NAMED_CHANNEL_EVENT,
    PACED_CHANNEL,
    SLACK_SIGNING_SECRET,
    Stack,
)
from tests.support.waiting import wait_for

_controls = itertools.count(5637170000)


def work_item_event(work_item: str) -> dict:
    return {
        "BusinessEventId": "Workflow_VendInvoiceApproval_000001_Approval_WorkItem", "ControlNumber": next(_controls),
        "BusinessEventLegalEntity": "usmf", "LegalEntity": "usmf", "EventTime": "/Date(1763802000000)/",
        "WorkflowWorkItemInstanceId": work_item, "WorkflowUserEmail": APPROVER[1],
        "WorkflowWorkItemSubject": f"Approve vendor invoice {work_item}", "WorkflowDocument": f"Invoice {work_item}",
    }


def post_card(stack: Stack, work_item: str) -> object:
    stack.dynamics.add_work_item(work_item)
    assert stack.post_events(work_item_event(work_item)).status_code == 202
    return wait_for(lambda: next((m for m in stack.slack.messages(APPROVALS_CHANNEL) if work_item in m.text), None),
                    what="the card in the approvals channel")


def job_of_card(card: object) -> str:
    """The job id the card carries: its buttons' value, which a repeat of a click still carries once the decided
    card has lost its buttons."""
    return str(card.metadata["event_payload"]["job_id"])  # type: ignore[attr-defined]


def click(stack: Stack, card: object, user: str, action: str, **options: object) -> object:
    payload = stack.slack.block_actions_payload(user, APPROVALS_CHANNEL, card.ts, action,  # type: ignore[attr-defined]
                                                job_of_card(card))
    return stack.slack.send_interaction(f"{stack.base_url}/api/slack/interactions/slack-main", payload,
                                        SLACK_SIGNING_SECRET, **options)


def buttons(card: object) -> dict[str, str]:
    return {element["action_id"]: element["value"] for block in card.blocks or []  # type: ignore[attr-defined]
            if block["type"] == "actions" for element in block["elements"]}


def test_an_approval_card_and_the_approvers_click_complete_the_work_item(stack: Stack) -> None:
    card = post_card(stack, "WI-E2E-1")
    assert set(buttons(card)) == {"approve", "reject"}
    assert card.text  # the plain-text fallback for notifications
    record = "contoso-fo|WorkflowWorkItem|WI-E2E-1"

    refused = click(stack, card, BYSTANDER[0], "reject")
    assert refused.status_code == 200
    wait_for(lambda: "refused" in stack.steps(record), what="the bystander refused")
    assert any(e.user == BYSTANDER[0] and "not the approver" in (e.text or "") for e in stack.slack.ephemerals)

    assert click(stack, card, APPROVER[0], "approve").status_code == 200
    wait_for(lambda: stack.dynamics.work_item_state("WI-E2E-1") == "completed", what="the work item completed")
    [completion] = [c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-E2E-1"]
    assert completion["outcome"] == "Approve" and APPROVER[1] in completion["comment"]
    update = wait_for(lambda: next((u for u in stack.slack.updates if u.ts == card.ts), None), what="card updated")
    assert "Approved by" in (update.text or "") and not any(b["type"] == "actions" for b in update.blocks or [])
    decided = wait_for(lambda: [e for e in stack.audit(record)["entries"] if e["step"] == "decided"],
                       what="decision audited")
    assert decided[0]["detail"]["by"] == APPROVER[1] and decided[0]["detail"]["outcome"] == "Approve"

    assert click(stack, card, APPROVER[0], "approve").status_code == 200  # the same click again
    assert click(stack, card, APPROVER[0], "approve", retry_num=1).status_code == 200  # Slack's retry
    assert click(stack, card, APPROVER[0], "reject").status_code == 200  # a change of mind, too late
    wait_for(lambda: any("already decided" in (e.text or "") for e in stack.slack.ephemerals), what="told")
    assert len([c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-E2E-1"]) == 1


def test_a_work_item_completed_elsewhere_closes_the_card_without_writing(stack: Stack) -> None:
    card = post_card(stack, "WI-E2E-2")
    stack.dynamics.add_work_item("WI-E2E-2", state="completed")  # decided in Dynamics meanwhile
    click(stack, card, APPROVER[0], "approve")
    wait_for(lambda: "work-item-closed" in stack.steps("contoso-fo|WorkflowWorkItem|WI-E2E-2"), what="closed")
    assert not [c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-E2E-2"]


@pytest.mark.parametrize("age", [0, 360])
def test_forged_or_stale_clicks_get_401_and_change_nothing(stack: Stack, age: int) -> None:
    card = post_card(stack, f"WI-E2E-3{age}")
    payload = stack.slack.block_actions_payload(  # type: ignore[attr-defined]
        APPROVER[0], APPROVALS_CHANNEL, card.ts, "approve", job_of_card(card))
    url = f"{stack.base_url}/api/slack/interactions/slack-main"
    secret = "not-the-signing-secret" if age == 0 else SLACK_SIGNING_SECRET
    answer = stack.slack.send_interaction(url, payload, secret, timestamp=int(time.time()) - age)
    assert answer.status_code == 401
    assert stack.dynamics.work_item_state(f"WI-E2E-3{age}") == "open"


def review_event(work_item: str, email: str, event: str = "Workflow_PurchReqReview_000001_Review_WorkItem") -> dict:
    return {"BusinessEventId": event, "ControlNumber": next(_controls), "LegalEntity": "usmf",
            "WorkflowWorkItemInstanceId": work_item, "WorkflowUserEmail": email,
            "WorkflowWorkItemSubject": f"Review {work_item}", "WorkflowDocument": f"Requisition {work_item}"}


def test_a_card_for_an_approver_goes_to_their_dm_or_else_to_the_fallback_channel(stack: Stack) -> None:
    stack.dynamics.add_work_item("WI-DM-1")
    stack.post_events(review_event("WI-DM-1", APPROVER[1]))
    dm = wait_for(lambda: next((m for m in stack.slack.messages() if "WI-DM-1" in m.text), None), what="a DM card")
    assert dm.channel.startswith("D")
    stack.post_events(review_event("WI-DM-2", "nobody@contoso.example"))
    fallback = wait_for(lambda: next((m for m in stack.slack.messages() if "WI-DM-2" in m.text), None),
                        what="a card in the fallback channel")
    assert fallback.channel == FALLBACK_CHANNEL
    assert "no-slack-user" in stack.steps("contoso-fo|WorkflowWorkItem|WI-DM-2")


def test_thirty_cards_for_one_channel_are_all_posted_a_second_apart(stack: Stack) -> None:
    events = [review_event(f"WI-BULK-{n:02d}", APPROVER[1], "Workflow_BulkNotice_000001_Notice_WorkItem")
              for n in range(30)]
    for n in range(30):
        stack.dynamics.add_work_item(f"WI-BULK-{n:02d}")
    assert stack.post_events(events).status_code == 202  # one burst
    wait_for(lambda: len(stack.slack.messages(PACED_CHANNEL)) == 30, timeout=120, what="all thirty cards")
    times = stack.slack.post_times(PACED_CHANNEL)
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times))
    attempts = [r for r in stack.slack.requests_to("POST /api/chat.postMessage")
                if f'"{PACED_CHANNEL}"' in r.body.decode() or PACED_CHANNEL in str(r.form)]
    assert len(attempts) - 30 <= 3  # paced before sending: (almost) no 429s to absorb


def test_events_api_challenge_and_retries(stack: Stack) -> None:
    import json

    from shared.channels.slack.signature import sign

    url = f"{stack.base_url}/api/slack/events/slack-main"

    def signed(body: dict, **headers: str) -> object:
        raw = json.dumps(body)
        import requests

        return requests.post(url, data=raw, timeout=10, headers={
            "Content-Type": "application/json", **sign(SLACK_SIGNING_SECRET, raw), **headers})

    token = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    challenge = signed({"type": "url_verification", "challenge": token})
    assert challenge.status_code == 200
    assert challenge.json()["challenge"] == token
    callback = {"type": "event_callback", "event_id": "Ev0PV52K21", "event": {"type": "app_mention"}}
    assert signed(callback).status_code == 200
    assert signed(callback, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}).status_code == 200


def test_a_card_whose_post_lost_its_answer_is_posted_once_and_its_click_completes(stack: Stack) -> None:
    stack.slack.drop_after_handling(match=lambda r: r.path.endswith("/chat.postMessage") and "WI-LOST-1" in
                                    r.body.decode())  # Slack posts the card, the answer is lost
    card = post_card(stack, "WI-LOST-1")
    record = "contoso-fo|WorkflowWorkItem|WI-LOST-1"
    sent = wait_for(lambda: [e for e in stack.audit(record)["entries"] if e["step"] == "sent"], timeout=60,
                    what="the card adopted")
    assert sent[0]["detail"]["adopted"] is True
    assert sent[0]["detail"]["provider_id"] == f"slack:{APPROVALS_CHANNEL}|{card.ts}"  # type: ignore[attr-defined]
    assert [m.ts for m in stack.slack.messages(APPROVALS_CHANNEL) if "WI-LOST-1" in m.text] == [card.ts]  # type: ignore[attr-defined]

    assert click(stack, card, APPROVER[0], "approve").status_code == 200
    wait_for(lambda: stack.dynamics.work_item_state("WI-LOST-1") == "completed", what="the work item completed")
    assert len([m for m in stack.slack.messages(APPROVALS_CHANNEL) if "WI-LOST-1" in m.text]) == 1


def test_a_card_for_a_channel_named_in_the_rule_is_posted_once_by_id_though_its_answer_was_lost(stack: Stack) -> None:
    stack.slack.drop_after_handling(match=lambda r: r.path.endswith("/chat.postMessage") and "WI-NAMED-1" in
                                    r.body.decode())
    stack.dynamics.add_work_item("WI-NAMED-1")
    event = {**work_item_event("WI-NAMED-1"), "BusinessEventId": NAMED_CHANNEL_EVENT}
    assert stack.post_events(event).status_code == 202
    record = "contoso-fo|WorkflowWorkItem|WI-NAMED-1"
    sent = wait_for(lambda: [e for e in stack.audit(record)["entries"] if e["step"] == "sent"], timeout=60,
                    what="the card adopted")

    [card] = [m for m in stack.slack.messages() if "WI-NAMED-1" in m.text]
    assert card.channel == NAMED_CHANNEL
    assert sent[0]["detail"]["adopted"] is True
    assert sent[0]["detail"]["provider_id"] == f"slack:{NAMED_CHANNEL}|{card.ts}"
    posts = [r for r in stack.slack.requests_to("POST /api/chat.postMessage") if "WI-NAMED-1" in r.body.decode()]
    assert len(posts) == 1 and NAMED_CHANNEL in posts[0].body.decode()  # posted to the ID, not the name


def decided_steps(stack: Stack, record: str) -> list[str]:
    return [step for step in stack.steps(record) if step in ("decided", "work-item-closed")]


def test_a_click_stopped_after_dynamics_took_the_decision_is_shown_and_audited_once_without_asking_again(
        stack: Stack) -> None:
    from shared.model import CALLBACKS, now_iso
    from shared.pipeline.slack_clicks import envelope_for_click

    card = post_card(stack, "WI-STOP-1")
    record = "contoso-fo|WorkflowWorkItem|WI-STOP-1"
    click_payload = stack.slack.block_actions_payload(  # type: ignore[attr-defined]
        APPROVER[0], APPROVALS_CHANNEL, card.ts, "approve", job_of_card(card))
    envelope = envelope_for_click("slack-main", click_payload)
    # As if the click's handling had stopped right after recording that Dynamics completed the work
    # item: the decision claimed and written, neither audited nor shown on the card.
    stores = stack.stores()
    try:
        # The card is in Slack a moment before the app has recorded it on its job.
        job_id = job_of_card(card)

        def recorded() -> Any:
            row = stores.jobs.get(job_id)
            return row if row is not None and row.fields.get("slack_ts") == card.ts else None  # type: ignore[attr-defined]

        job = wait_for(recorded, what="the card recorded on its job")
        stores.jobs.update(job, {"decision": "Approve", "decided_by": APPROVER[1], "decided_at": now_iso(),
                                 "decision_key": envelope.key, "decision_owner": envelope.correlation_id,
                                 "written": True})
    finally:
        stores.close()
    stack.dynamics.add_work_item("WI-STOP-1", state="completed")  # what that stopped attempt did in Dynamics

    stack.send(CALLBACKS, envelope)  # the queue delivers the click again

    update = wait_for(lambda: next((u for u in stack.slack.updates if u.ts == card.ts), None),  # type: ignore[attr-defined]
                      what="card updated")
    assert "Approved by" in (update.text or "")  # not "closed in Dynamics": our own completion is not asked about
    wait_for(lambda: decided_steps(stack, record), what="decision audited")
    assert decided_steps(stack, record) == ["decided"]
    assert not [c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-STOP-1"]


def test_a_click_whose_card_update_failed_after_the_audit_is_audited_once_and_shown_on_retry(stack: Stack) -> None:
    card = post_card(stack, "WI-STOP-2")
    record = "contoso-fo|WorkflowWorkItem|WI-STOP-2"
    # Every inline try of the card update fails: the click goes back on its queue after the decision
    # was written to Dynamics and audited, and its retry finishes it.
    ts = str(card.ts)  # type: ignore[attr-defined]
    stack.slack.fail_next(5, status=500, match=lambda r: r.path.endswith("/chat.update") and ts in r.body.decode())

    assert click(stack, card, APPROVER[0], "approve").status_code == 200

    update = wait_for(lambda: next((u for u in stack.slack.updates if u.ts == card.ts), None),  # type: ignore[attr-defined]
                      timeout=60, what="card updated on the retry")
    assert "Approved by" in (update.text or "")
    assert len([r for r in stack.slack.requests_to("POST /api/chat.update") if r.scripted]) == 5
    assert decided_steps(stack, record) == ["decided"]
    assert len([c for c in stack.dynamics.completions if c["WorkflowWorkitemInstanceID"] == "WI-STOP-2"]) == 1
