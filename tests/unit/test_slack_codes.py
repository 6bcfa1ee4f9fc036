"""One-time codes for Slack approvals: which cards ask for one, the modal, and what a submission is checked against."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.channels.slack.client import (
    CODE_ACTION_ID,
    CODE_BLOCK_ID,
    CODE_CALLBACK_ID,
    CODE_VIEW_TITLE,
    code_modal,
    notice_modal,
)
from shared.config.loading import config_from_dict
from shared.pipeline.process import notification_payload
from shared.pipeline.slack_clicks import asks_for_code, envelope_for_click, is_code_submission
from shared.pipeline.slack_codes import (
    ENDED,
    NOT_YET,
    _current_attempt,
    _job_named,
    _typed_code,
)
from shared.storage.tables import JobRow
from tests.support.openapi import require_spec, validate_swagger_definition

CONFIG = {
    "connections": {
        "fo": {"kind": "dynamics", "environment_url": "https://contoso.operations.dynamics.com", "tenant_id": "t",
               "client_id": "c", "client_secret": {"secret": "fo-secret"}},
        "sms": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                "api_key_secret": {"secret": "key"}, "auth_token": {"secret": "token"}, "from_number": "+15005550006",
                "verify_service_sid": "VA" + "0" * 32},
        "chat": {"kind": "slack", "bot_token": {"secret": "bot"}, "signing_secret": {"secret": "signing"}},
    },
    "rules": [{"id": "card", "source": "fo", "channel": "slack", "via": "chat", "to": ["#ap-approvals"],
               "template": "workflow-approval", "verify_above": 10000, "verify_via": "sms",
               "verify_phone_field": "assignee_phone"}],
}


def click(action: str = "approve", value: str = "job-1|code", trigger: str = "1.2.3") -> dict[str, Any]:
    return {"type": "block_actions", "user": {"id": "U1"}, "trigger_id": trigger,
            "container": {"channel_id": "C1", "message_ts": "1.000001"},
            "actions": [{"action_id": action, "value": value}]}


def payload_for(amount: Any) -> dict[str, Any]:
    config = config_from_dict(CONFIG)
    fields = {"work_item_id": "WI-1", "assignee_email": "ana@contoso.example", "assignee_phone": "(415) 555-0142",
              "amount": amount, "subject": "Approve"}
    return notification_payload(config, config.rules[0], "#ap-approvals", fields, job_id="job-1", source="fo",
                                record="fo|WorkflowWorkItem|WI-1", event_type="Workflow_X_WorkItem")


def job(**fields: Any) -> JobRow:
    return JobRow("job-1", {"correlation_id": "c1", **fields}, "etag")


def submitted(view_id: str = "V1", code: str = "123456", job_id: str = "job-1") -> dict[str, Any]:
    return {"id": view_id, "callback_id": CODE_CALLBACK_ID, "private_metadata": json.dumps({"job": job_id}),
            "state": {"values": {CODE_BLOCK_ID: {CODE_ACTION_ID: {"type": "plain_text_input", "value": code}}}}}


def test_a_card_above_the_amount_carries_how_its_approval_is_confirmed() -> None:
    high, low, unknown = payload_for(25000), payload_for(900), payload_for(None)

    assert high["code"] == {"via": "sms", "above": 10000.0, "amount": "25000", "phone_field": "assignee_phone",
                            "phone": "(415) 555-0142"}
    assert "code" not in low
    assert unknown["code"]["amount"] == ""


def test_only_an_approve_with_the_code_mark_asks_for_a_code() -> None:
    assert asks_for_code(click())
    assert not asks_for_code(click(value="job-1"))
    assert not asks_for_code(click(action="reject", value="job-1|code"))
    assert not asks_for_code({**click(), "type": "view_submission"})
    assert is_code_submission({"type": "view_submission", "view": {"callback_id": CODE_CALLBACK_ID}})
    assert not is_code_submission({"type": "view_submission", "view": {"callback_id": "other"}})


def test_each_code_click_is_an_attempt_of_its_own_while_other_clicks_repeat() -> None:
    plain = envelope_for_click("chat", click(value="job-1", trigger="1.1"))
    plain_again = envelope_for_click("chat", click(value="job-1", trigger="2.2"))
    coded = envelope_for_click("chat", click(trigger="1.1"), "V1")
    coded_again = envelope_for_click("chat", click(trigger="2.2"), "")

    assert plain.key == plain_again.key and "view_id" not in plain.payload
    assert coded.key != coded_again.key
    assert (coded.payload["view_id"], coded_again.payload["view_id"]) == ("V1", "")


def test_the_code_modal_names_its_job_and_asks_for_digits() -> None:
    view = code_modal("job-1", "We sent a code to +1*******42.", "Approval requested: Invoice 7")

    assert view["type"] == "modal" and view["callback_id"] == CODE_CALLBACK_ID
    assert view["title"]["text"] == CODE_VIEW_TITLE and len(CODE_VIEW_TITLE) <= 24
    assert view["submit"]["text"] == "Approve" and json.loads(view["private_metadata"]) == {"job": "job-1"}
    [code_input] = [block for block in view["blocks"] if block["type"] == "input"]
    assert code_input["block_id"] == CODE_BLOCK_ID and code_input["element"]["action_id"] == CODE_ACTION_ID
    assert (code_input["element"]["min_length"], code_input["element"]["max_length"]) == (4, 10)
    notice = notice_modal("Done.")
    assert "submit" not in notice and notice["close"]["text"] == "Close"


def test_the_modals_are_block_kit_blocks_by_the_spec() -> None:
    spec = require_spec("slack/slack_web_openapi_v2.json")

    for view in (code_modal("job-1", "text", "about"), notice_modal("text")):
        assert validate_swagger_definition(spec, "blocks", view["blocks"]) == []


def test_a_submission_names_its_job_and_code() -> None:
    assert (_job_named(submitted()), _typed_code(submitted(code=" 123456 "))) == ("job-1", " 123456 ")
    assert _job_named({"private_metadata": "not json"}) == _job_named({}) == ""
    assert _typed_code({"state": {"values": {}}}) == ""


SENT = {"state": "sent", "user": "U1", "view": "V1", "phone": "+14155550142", "via": "sms", "email": "a@x"}


@pytest.mark.parametrize(
    ("row", "user", "expected"),
    [
        (None, "U1", ("update", ENDED)),
        (job(decision="Reject", code_attempt=SENT), "U1", ("update", "already decided: Reject")),
        (job(code_attempt={**SENT, "view": "V0"}), "U1", ("errors", NOT_YET)),  # another modal's attempt
        (job(code_attempt=SENT), "U2", ("errors", NOT_YET)),  # another user
        (job(), "U1", ("errors", NOT_YET)),  # the code is not sent yet
        (job(code_attempt={**SENT, "state": "exhausted"}), "U1", ("update", ENDED)),
    ],
)
def test_a_submission_is_checked_only_against_its_own_stored_attempt(row: JobRow | None, user: str,
                                                                     expected: tuple[str, str]) -> None:
    answer = _current_attempt(row, submitted(), user)

    assert isinstance(answer, dict)
    action, text = expected
    assert answer["response_action"] == action
    shown = answer["errors"][CODE_BLOCK_ID] if action == "errors" else answer["view"]["blocks"][0]["text"]["text"]
    assert text in shown


def test_the_stored_attempt_of_this_modal_and_user_is_the_one_checked() -> None:
    row = job(code_attempt=SENT)

    attempt, found = _current_attempt(row, submitted(), "U1")  # type: ignore[misc]

    assert attempt == SENT and found is row
