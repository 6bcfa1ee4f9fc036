"""The fake Slack, driven by the real slack_sdk WebClient, and checked against Slack's Web API spec."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from tests.fakes.server import FakeServer, Headers, RecordedRequest, Response, Route, route
from tests.fakes.slack import FakeSlack
from tests.support.openapi import require_spec, validate_swagger_request, validate_swagger_response

pytestmark = pytest.mark.timeout(60)

SPEC = "slack/slack_web_openapi_v2.json"
APPROVALS = "C0APPROVAL1"
FINANCE = "C0FINANCE01"
ALICE = "U0ALICE0001"
ALICE_EMAIL = "alice@contoso.example"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BLOCKS = [
    {"type": "section", "block_id": "summary-1", "text": {"type": "mrkdwn", "text": "*PO-0042*"}},
    {
        "type": "actions",
        "block_id": "actions-1",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Approve"},
                "action_id": "approve",
                "value": "job-1",
            }
        ],
    },
]


class AppStub(FakeServer):
    """Stands in for the app's interactivity endpoint: answers 200 and keeps what arrived."""

    service_name = "app"

    def routes(self) -> Sequence[Route]:
        return [route("POST", r"/api/slack/interactions", lambda _request, _match: Response(200))]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(APPROVALS, "approvals")
        fake.add_channel(FINANCE, "finance")
        fake.add_user(ALICE, ALICE_EMAIL, "alice")
        yield fake
        assert fake.handler_errors == []


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    # No retry handlers: the tests see every 429 and connection error as it happens.
    return WebClient(token=slack.bot_token, base_url=slack.api_base_url, retry_handlers=[])


def api_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        call()
    return raised.value


def assert_valid(path: str, body: Any, status: str = "200") -> None:
    assert validate_swagger_response(require_spec(SPEC), path, body, status=status) == []


# --- auth ----------------------------------------------------------------------------------------


def test_missing_token_is_not_authed_and_unknown_token_invalid_auth(slack: FakeSlack) -> None:
    anonymous = WebClient(base_url=slack.api_base_url, retry_handlers=[])
    stranger = WebClient(token="xoxb-not-a-real-token", base_url=slack.api_base_url, retry_handlers=[])

    missing = api_error(anonymous.auth_test)
    unknown = api_error(stranger.auth_test)

    assert (missing.response.status_code, missing.response["error"]) == (200, "not_authed")
    assert (unknown.response.status_code, unknown.response["error"]) == (200, "invalid_auth")
    assert_valid("/auth.test", unknown.response.data, "default")


def test_auth_test_answers_in_the_spec_shape(client: WebClient) -> None:
    answer = client.auth_test()

    assert answer["user_id"].startswith("U") and answer["team_id"].startswith("T")
    assert_valid("/auth.test", answer.data)


# --- messages ------------------------------------------------------------------------------------


def test_post_message_by_name_returns_channel_id_and_increasing_ts(slack: FakeSlack, client: WebClient) -> None:
    first = client.chat_postMessage(channel="#approvals", text="PO-0042 needs approval", blocks=BLOCKS)
    second = client.chat_postMessage(channel=FINANCE, text="second")

    assert first["channel"] == APPROVALS
    assert re.fullmatch(r"\d{10}\.\d{6}", first["ts"])
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["blocks"] == BLOCKS
    stored = slack.messages(APPROVALS)
    assert [(m.ts, m.text, m.blocks) for m in stored] == [(first["ts"], "PO-0042 needs approval", BLOCKS)]
    assert_valid("/chat.postMessage", first.data)


def test_post_message_takes_a_form_body_with_blocks_as_json_text(slack: FakeSlack, client: WebClient) -> None:
    answer = client.api_call(
        "chat.postMessage", params={"channel": APPROVALS, "text": "form", "blocks": json.dumps(BLOCKS)}
    )

    assert slack.requests_to("POST /api/chat.postMessage")[-1].form is not None
    assert slack.message(APPROVALS, answer["ts"]).blocks == BLOCKS


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"channel": "C0NOWHERE01", "text": "hi"}, "channel_not_found"),
        ({"channel": APPROVALS}, "no_text"),
        ({"channel": APPROVALS, "text": "x", "blocks": [{"text": "no type"}]}, "invalid_blocks"),
        (
            {
                "channel": APPROVALS,
                "text": "x",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "a" * 3001}}],
            },
            "invalid_blocks",
        ),
    ],
)
def test_post_message_refusals(client: WebClient, arguments: dict[str, Any], error: str) -> None:
    refused = api_error(lambda: client.chat_postMessage(**arguments))

    assert (refused.response.status_code, refused.response["error"]) == (200, error)
    if error != "invalid_blocks":  # the 2021 spec predates invalid_blocks
        assert_valid("/chat.postMessage", refused.response.data, "default")


def test_update_replaces_text_and_blocks_and_unknown_ts_is_message_not_found(
    slack: FakeSlack, client: WebClient
) -> None:
    posted = client.chat_postMessage(channel=APPROVALS, text="pending", blocks=BLOCKS)
    decided = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "Approved by <@U0ALICE0001>"}]}]

    answer = client.chat_update(channel=APPROVALS, ts=posted["ts"], text="approved", blocks=decided)
    missing = api_error(lambda: client.chat_update(channel=APPROVALS, ts="1000000000.000001", text="x"))

    assert (answer["ts"], answer["text"]) == (posted["ts"], "approved")
    assert slack.message(APPROVALS, posted["ts"]).blocks == decided
    assert [(u.ts, u.text) for u in slack.updates] == [(posted["ts"], "approved")]
    assert missing.response["error"] == "message_not_found"
    assert_valid("/chat.update", answer.data)
    assert_valid("/chat.update", missing.response.data, "default")


def test_post_ephemeral_returns_message_ts(slack: FakeSlack, client: WebClient) -> None:
    answer = client.chat_postEphemeral(channel=APPROVALS, user=ALICE, text="Only you can see this")
    stranger = api_error(lambda: client.chat_postEphemeral(channel=APPROVALS, user="U0NOBODY001", text="x"))

    assert [(e.user, e.message_ts) for e in slack.ephemerals] == [(ALICE, answer["message_ts"])]
    assert stranger.response["error"] == "user_not_in_channel"
    assert_valid("/chat.postEphemeral", answer.data)


# --- users, DMs, modals ---------------------------------------------------------------------------


def test_lookup_by_email_over_post_and_get(slack: FakeSlack, client: WebClient) -> None:
    posted = client.users_lookupByEmail(email=ALICE_EMAIL.upper())
    # slack_sdk sends even "GET" methods as a POST with a form body; Slack also takes a real GET.
    via_get = requests.get(
        f"{slack.api_base_url}users.lookupByEmail",
        params={"email": ALICE_EMAIL},
        headers={"Authorization": f"Bearer {slack.bot_token}"},
        timeout=5,
    ).json()
    missing = api_error(lambda: client.users_lookupByEmail(email="nobody@contoso.example"))

    assert posted["user"]["id"] == via_get["user"]["id"] == ALICE
    assert missing.response["error"] == "users_not_found"
    assert_valid("/users.lookupByEmail", posted.data)
    assert_valid("/users.lookupByEmail", missing.response.data, "default")


def test_users_info_carries_the_profile_email(client: WebClient) -> None:
    answer = client.users_info(user=ALICE)
    missing = api_error(lambda: client.users_info(user="U0NOBODY001"))

    assert answer["user"]["profile"]["email"] == ALICE_EMAIL
    assert missing.response["error"] == "user_not_found"
    assert_valid("/users.info", answer.data)


def test_conversations_open_gives_one_dm_per_user(slack: FakeSlack, client: WebClient) -> None:
    first = client.conversations_open(users=ALICE)
    again = client.conversations_open(users=[ALICE])
    posted = client.chat_postMessage(channel=first["channel"]["id"], text="direct")

    assert first["channel"]["id"].startswith("D")
    assert again["channel"]["id"] == first["channel"]["id"] and again["already_open"] is True
    assert posted["channel"] == first["channel"]["id"]
    assert_valid("/conversations.open", first.data)
    assert_valid("/conversations.open", again.data)


# --- message metadata and history -----------------------------------------------------------------

ALERT = {"event_type": "ml_connector_alert", "event_payload": {"job_id": "job-1"}}


def without_metadata(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as the 2021 spec knows it: it predates message metadata and history cursors."""
    messages = [{k: v for k, v in message.items() if k != "metadata"} for message in answer.get("messages", [])]
    return {**{k: v for k, v in answer.items() if k != "response_metadata"}, "messages": messages}


def test_metadata_is_kept_with_the_message_and_shown_in_the_answer(slack: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=APPROVALS, text="card", blocks=BLOCKS, metadata=ALERT)
    malformed = api_error(lambda: client.api_call("chat.postMessage", json={
        "channel": APPROVALS, "text": "x", "metadata": {"event_type": "ml_connector_alert"}}))

    assert posted["message"]["metadata"] == ALERT
    assert slack.message(APPROVALS, posted["ts"]).metadata == ALERT
    assert malformed.response["error"] == "invalid_metadata_format"
    assert len(slack.messages(APPROVALS)) == 1


def test_history_pages_newest_first_with_metadata_only_when_asked(slack: FakeSlack, client: WebClient) -> None:
    spec = require_spec(SPEC)
    before = client.chat_postMessage(channel=APPROVALS, text="before")["ts"]
    slack.post_burst = 10  # six posts in a row, without the per-channel limit in the way
    posted = [client.chat_postMessage(channel=APPROVALS, text=f"card {n}", metadata={
        "event_type": "ml_connector_alert", "event_payload": {"job_id": f"job-{n}"}})["ts"] for n in range(5)]
    client.chat_postMessage(channel=FINANCE, text="elsewhere")

    first = client.conversations_history(channel=APPROVALS, oldest=before, limit=2, include_all_metadata=True)
    second = client.conversations_history(channel=APPROVALS, oldest=before, limit=2, include_all_metadata=True,
                                          cursor=first["response_metadata"]["next_cursor"])
    third = client.conversations_history(channel=APPROVALS, oldest=before, limit=2, include_all_metadata=True,
                                         cursor=second["response_metadata"]["next_cursor"])
    plain = client.conversations_history(channel=APPROVALS, latest=posted[1], inclusive=True)

    pages = [first, second, third]
    assert [[m["ts"] for m in page["messages"]] for page in pages] == [posted[4:2:-1], posted[2:0:-1], posted[:1]]
    assert [page["has_more"] for page in pages] == [True, True, False] and "response_metadata" not in third.data
    assert first["messages"][0]["metadata"] == {"event_type": "ml_connector_alert",
                                                "event_payload": {"job_id": "job-4"}}
    assert [m["ts"] for m in plain["messages"]] == [posted[1], posted[0], before]
    assert all("metadata" not in m for m in plain["messages"])
    for page in [*pages, plain]:
        assert_valid("/conversations.history", without_metadata(page.data))
    for request in slack.requests_to("POST /api/conversations.history"):
        arguments = {k: v[0] for k, v in (request.form or {}).items() if k != "include_all_metadata"}
        assert validate_swagger_request(spec, "/conversations.history", arguments) == []


def test_history_of_a_dm_and_its_refusals(slack: FakeSlack, client: WebClient) -> None:
    dm = client.conversations_open(users=ALICE)["channel"]["id"]
    posted = client.chat_postMessage(channel=dm, text="direct", metadata=ALERT)

    history = client.conversations_history(channel=dm, include_all_metadata=True)
    by_name = api_error(lambda: client.conversations_history(channel="approvals"))
    bad_oldest = api_error(lambda: client.conversations_history(channel=APPROVALS, oldest="yesterday"))
    bad_cursor = api_error(lambda: client.conversations_history(channel=APPROVALS, cursor="not-ours"))

    assert [(m["ts"], m["metadata"]) for m in history["messages"]] == [(posted["ts"], ALERT)]
    assert [e.response["error"] for e in (by_name, bad_oldest, bad_cursor)] == [
        "channel_not_found", "invalid_ts_oldest", "invalid_cursor"]
    for refused in (by_name, bad_oldest):
        assert_valid("/conversations.history", refused.response.data, "default")


# --- channel lists and scopes ---------------------------------------------------------------------


def test_conversations_list_pages_the_channels_the_app_can_see(slack: FakeSlack, client: WebClient) -> None:
    spec = require_spec(SPEC)
    slack.add_channel("G0PRIVATE01", "ap-private", private=True)
    slack.add_channel("G0HIDDEN001", "not-invited", private=True, member=False)
    slack.add_channel("C0ARCHIVED1", "old-approvals", archived=True)
    arguments = {"types": "public_channel,private_channel", "exclude_archived": True, "limit": 2}

    pages = [client.conversations_list(**arguments)]
    while pages[-1]["response_metadata"]["next_cursor"]:
        pages.append(client.conversations_list(**arguments, cursor=pages[-1]["response_metadata"]["next_cursor"]))
    public_only = client.conversations_list()
    with_archived = client.conversations_list(types="public_channel")

    listed = {c["name"]: (c["id"], c["is_private"]) for page in pages for c in page["channels"]}
    assert listed == {"approvals": (APPROVALS, False), "finance": (FINANCE, False),
                      "ap-private": ("G0PRIVATE01", True)}
    assert [len(page["channels"]) for page in pages] == [2, 1]
    assert {c["id"] for c in public_only["channels"]} == {APPROVALS, FINANCE, "C0ARCHIVED1"}
    assert [c["is_archived"] for c in with_archived["channels"] if c["id"] == "C0ARCHIVED1"] == [True]
    for page in [*pages, public_only]:
        assert_valid("/conversations.list", page.data)
    for request in slack.requests_to(lambda r: r.path.endswith("/conversations.list")):
        sent = {**{k: v[0] for k, v in request.query.items()}, **{k: v[0] for k, v in (request.form or {}).items()}}
        assert validate_swagger_request(spec, "/conversations.list", sent) == []


def test_missing_scopes_are_refused_as_slack_refuses_them(slack: FakeSlack, client: WebClient) -> None:
    slack.revoke_scope("groups:read")
    slack.revoke_scope("channels:history")

    listed = client.conversations_list(types="public_channel")
    refused_list = api_error(lambda: client.conversations_list(types="public_channel,private_channel"))
    refused_history = api_error(lambda: client.conversations_history(channel=APPROVALS))
    bad_cursor = api_error(lambda: client.conversations_list(cursor="not-ours"))

    assert {c["id"] for c in listed["channels"]} == {APPROVALS, FINANCE}
    assert (refused_list.response["error"], refused_list.response["needed"]) == ("missing_scope", "groups:read")
    assert "groups:read" not in refused_list.response["provided"].split(",")
    assert (refused_history.response["error"], refused_history.response["needed"]) == (
        "missing_scope", "channels:history")
    assert bad_cursor.response["error"] == "invalid_cursor"
    assert_valid("/conversations.list", refused_list.response.data, "default")
    assert_valid("/conversations.history", refused_history.response.data, "default")


def test_views_open_takes_a_fresh_trigger_once(slack: FakeSlack, client: WebClient) -> None:
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Reason"}, "blocks": []}
    trigger = slack.block_actions_payload(ALICE, APPROVALS, "1000000000.000001", "reject", "job-1")["trigger_id"]

    opened = client.views_open(trigger_id=trigger, view=view)
    reused = api_error(lambda: client.views_open(trigger_id=trigger, view=view))
    unknown = api_error(lambda: client.views_open(trigger_id="123.456.abc", view=view))

    assert opened["view"]["id"].startswith("V")
    assert [v.view["title"]["text"] for v in slack.views_opened] == ["Reason"]
    assert reused.response["error"] == unknown.response["error"] == "expired_trigger_id"
    assert_valid("/views.open", opened.data)


def test_views_open_refuses_a_trigger_older_than_its_ttl(client: WebClient) -> None:
    with FakeSlack(trigger_ttl=0.2) as slack:
        late = WebClient(token=slack.bot_token, base_url=slack.api_base_url, retry_handlers=[])
        trigger = slack.issue_trigger_id()
        time.sleep(0.3)
        expired = api_error(lambda: late.views_open(trigger_id=trigger, view={"type": "modal", "blocks": []}))

    assert expired.response["error"] == "expired_trigger_id"


CODE_VIEW = {
    "type": "modal", "callback_id": "approval-code", "private_metadata": '{"job": "job-1"}',
    "title": {"type": "plain_text", "text": "Approve with a code"}, "submit": {"type": "plain_text", "text": "Approve"},
    "blocks": [{"type": "input", "block_id": "approval-code", "label": {"type": "plain_text", "text": "Code"},
                "element": {"type": "plain_text_input", "action_id": "code"}}],
}


def open_code_view(slack: FakeSlack, client: WebClient) -> str:
    trigger = slack.block_actions_payload(ALICE, APPROVALS, "1000000000.000001", "approve", "job-1")["trigger_id"]
    return str(client.views_open(trigger_id=trigger, view=CODE_VIEW)["view"]["id"])


def test_views_update_replaces_an_open_view_and_refuses_a_stale_hash(slack: FakeSlack, client: WebClient) -> None:
    view_id = open_code_view(slack, client)
    first_hash = client.views_update(view_id=view_id, view=CODE_VIEW)["view"]["hash"]
    notice = {"type": "modal", "title": {"type": "plain_text", "text": "Done"},
              "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Approved."}}]}

    updated = client.views_update(view_id=view_id, view=notice, hash=first_hash)
    stale = api_error(lambda: client.views_update(view_id=view_id, view=notice, hash=first_hash))
    unknown = api_error(lambda: client.views_update(view_id="V0NOWHERE1", view=notice))

    assert updated["view"]["id"] == view_id and updated["view"]["hash"] != first_hash
    assert slack.view(view_id)["blocks"][0]["text"]["text"] == "Approved."
    assert len(slack.view_history(view_id)) == 3
    assert (stale.response["error"], unknown.response["error"]) == ("hash_conflict", "not_found")
    assert_valid("/views.update", updated.data)


def test_a_closed_view_cannot_be_updated(slack: FakeSlack, client: WebClient) -> None:
    view_id = open_code_view(slack, client)
    slack.close_view(view_id)

    closed = api_error(lambda: client.views_update(view_id=view_id, view=CODE_VIEW))

    assert closed.response["error"] == "not_found"


@pytest.mark.parametrize(
    "change",
    [
        lambda view: view.pop("submit"),  # an input block needs a submit button
        lambda view: view["title"].update(text="A title longer than 24 chars"),
        lambda view: view.update(private_metadata="x" * 3001),
        lambda view: view.update(type="dialog"),
    ],
)
def test_views_are_checked_as_slack_checks_them(slack: FakeSlack, client: WebClient, change: Any) -> None:
    view = json.loads(json.dumps(CODE_VIEW))
    change(view)
    trigger = slack.issue_trigger_id()

    refused = api_error(lambda: client.views_open(trigger_id=trigger, view=view))

    assert refused.response["error"] == "invalid_arguments"


def test_view_submission_carries_the_view_and_what_was_typed(slack: FakeSlack, client: WebClient) -> None:
    view_id = open_code_view(slack, client)

    submission = slack.view_submission_payload(ALICE, view_id, {"code": "123456"})

    assert submission["type"] == "view_submission" and submission["user"]["id"] == ALICE
    view = submission["view"]
    assert (view["id"], view["callback_id"], view["private_metadata"]) == (
        view_id, "approval-code", '{"job": "job-1"}')
    assert view["state"]["values"] == {"approval-code": {"code": {"type": "plain_text_input", "value": "123456"}}}
    assert view["hash"] and submission["trigger_id"]


def test_users_info_carries_the_profile_phone(slack: FakeSlack, client: WebClient) -> None:
    slack.add_user("U0PHONE0001", "pat@contoso.example", "pat", phone="(415) 555-0142")

    answer = client.users_info(user="U0PHONE0001")

    assert answer["user"]["profile"]["phone"] == "(415) 555-0142"
    assert client.users_info(user=ALICE)["user"]["profile"]["phone"] == ""
    assert_valid("/users.info", answer.data)


# --- rate limits and injected failures ----------------------------------------------------------


def test_second_post_within_a_second_on_one_channel_is_429(slack: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel=APPROVALS, text="one")
    limited = api_error(lambda: client.chat_postMessage(channel=APPROVALS, text="two"))
    other_channel = client.chat_postMessage(channel=FINANCE, text="elsewhere")

    assert limited.response.status_code == 429
    assert limited.response.headers["Retry-After"] == "1"
    assert limited.response["error"] == "ratelimited"
    assert other_channel["ok"] is True
    assert [m.text for m in slack.messages(APPROVALS)] == ["one"]


def test_post_after_retry_after_is_accepted_and_spacing_recorded(slack: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel=APPROVALS, text="one")
    limited = api_error(lambda: client.chat_postMessage(channel=APPROVALS, text="two"))
    time.sleep(float(limited.response.headers["Retry-After"]))
    client.chat_postMessage(channel=APPROVALS, text="two")

    first, second = slack.post_times(APPROVALS)
    assert second - first >= 1.0


def test_burst_allowance_is_configurable() -> None:
    with FakeSlack(post_burst=3) as slack:
        slack.add_channel(APPROVALS, "approvals")
        client = WebClient(token=slack.bot_token, base_url=slack.api_base_url, retry_handlers=[])
        for number in range(3):
            client.chat_postMessage(channel=APPROVALS, text=f"burst {number}")
        fourth = api_error(lambda: client.chat_postMessage(channel=APPROVALS, text="too many"))

    assert fourth.response.status_code == 429


@pytest.mark.parametrize(("status", "error"), [(429, "ratelimited"), (500, "fatal_error")])
def test_injected_failures_answer_in_slacks_shape(slack: FakeSlack, client: WebClient, status: int, error: str) -> None:
    slack.fail_next(status=status, headers={"Retry-After": "7"} if status == 429 else {}, match="/api/chat.")

    failed = api_error(lambda: client.chat_postMessage(channel=APPROVALS, text="x"))

    assert (failed.response.status_code, failed.response["error"]) == (status, error)
    assert slack.messages(APPROVALS) == []
    if status == 429:
        assert failed.response.headers["Retry-After"] == "7"


# --- interactions to the app ----------------------------------------------------------------------


def interaction_parts(request: RecordedRequest) -> tuple[str, Headers, dict[str, Any]]:
    body = request.body.decode("utf-8")
    payload = json.loads(parse_qs(body)["payload"][0])
    return body, request.headers, payload


def test_a_click_carries_its_buttons_value_even_after_an_update_took_the_buttons_away(
        slack: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=APPROVALS, text="PO-0042", blocks=BLOCKS)
    assert slack.block_actions_payload(ALICE, APPROVALS, posted["ts"], "approve", "x")["actions"][0]["value"] == "job-1"
    client.chat_update(channel=APPROVALS, ts=posted["ts"], text="Approved", blocks=BLOCKS[:1])

    # A click made before the update (in flight, or Slack's retry of it) carries the value the button had.
    payload = slack.block_actions_payload(ALICE, APPROVALS, posted["ts"], "approve", "x")
    assert payload["actions"][0]["value"] == "job-1" and payload["message"]["blocks"] == BLOCKS[:1]
    assert slack.block_actions_payload(ALICE, APPROVALS, "1.000001", "approve", "x")["actions"][0]["value"] == "x"


def test_signed_click_verifies_and_carries_a_real_shaped_payload(slack: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=APPROVALS, text="PO-0042", blocks=BLOCKS)
    payload = slack.block_actions_payload(ALICE, APPROVALS, posted["ts"], "approve", "job-1")

    with AppStub() as app:
        answer = slack.send_interaction(f"{app.base_url}/api/slack/interactions", payload, SIGNING_SECRET)
        body, headers, received = interaction_parts(app.requests[0])

    assert answer.status_code == 200
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    assert received["type"] == "block_actions"
    assert received["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": APPROVALS,
        "is_ephemeral": False,
    }
    assert received["actions"][0] | {"action_ts": "-"} == {
        "action_id": "approve",
        "block_id": "actions-1",
        "type": "button",
        "value": "job-1",
        "text": {"type": "plain_text", "text": "Approve", "emoji": True},
        "action_ts": "-",
    }
    assert received["message"]["blocks"] == BLOCKS
    assert received["response_url"].startswith(f"{slack.base_url}/actions/")


def test_stale_and_retried_interactions(slack: FakeSlack) -> None:
    payload = slack.block_actions_payload(ALICE, APPROVALS, "1000000000.000001", "reject", "job-2")
    six_minutes_ago = int(time.time()) - 360

    with AppStub() as app:
        url = f"{app.base_url}/api/slack/interactions"
        slack.send_interaction(url, payload, SIGNING_SECRET, timestamp=six_minutes_ago)
        slack.send_interaction(url, payload, SIGNING_SECRET, retry_num=1)
        stale, retried = (interaction_parts(request) for request in app.requests)

    assert stale[1]["X-Slack-Request-Timestamp"] == str(six_minutes_ago)
    assert not SignatureVerifier(SIGNING_SECRET).is_valid_request(stale[0], stale[1])
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(retried[0], retried[1])
    assert (retried[1]["X-Slack-Retry-Num"], retried[1]["X-Slack-Retry-Reason"]) == ("1", "http_timeout")


def test_response_url_records_json_posted_to_it(slack: FakeSlack) -> None:
    from slack_sdk.webhook import WebhookClient

    url = slack.block_actions_payload(ALICE, APPROVALS, "1000000000.000001", "approve", "job-1")["response_url"]

    answer = WebhookClient(url).send(text="Approved", replace_original=True, response_type="ephemeral")

    assert answer.status_code == 200
    assert [post.body for post in slack.response_url_posts] == [
        {"text": "Approved", "replace_original": True, "response_type": "ephemeral"}
    ]


def test_conversations_info_shows_membership_and_every_answer_the_granted_scopes(slack: FakeSlack,
                                                                                client: WebClient) -> None:
    slack.add_channel("C0OUTSIDE1", "outside", member=False)

    inside = client.conversations_info(channel=FINANCE)
    outside = client.conversations_info(channel="C0OUTSIDE1")

    assert (inside["channel"]["is_member"], outside["channel"]["is_member"]) == (True, False)
    assert_valid("/conversations.info", inside.data)
    assert "chat:write" in inside.headers["x-oauth-scopes"].split(",")
    assert api_error(lambda: client.conversations_info(channel="C0NOSUCH01")).response["error"] == "channel_not_found"
    slack.revoke_scope("channels:read")
    refused = api_error(lambda: client.conversations_info(channel=FINANCE))
    assert refused.response["error"] == "missing_scope"
    assert "channels:read" not in refused.response.headers["x-oauth-scopes"]
