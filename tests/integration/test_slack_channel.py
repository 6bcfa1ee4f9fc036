"""SlackChannel against the fake Slack over real HTTP, with the real slack_sdk underneath."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.channels.signed import SignatureRefused
from shared.channels.slack import signature
from shared.channels.slack.client import (
    APPROVE_ACTION_ID,
    HISTORY_CLOCK_MARGIN_SECONDS,
    REJECT_ACTION_ID,
    HistoryTooLong,
    PostedMessage,
    PostOutcomeUnknown,
    SlackChannel,
    SlackConfigurationError,
    SlackPermanentError,
    SlackProfile,
    approval_card,
    card_metadata,
    code_modal,
    decided_card,
    interactive_slack_channel,
    notice_modal,
    reset_slack_channels,
    slack_channel,
)
from shared.channels.slack.connection import SlackConnection
from shared.config.model import SecretRef
from shared.http import RetryLater
from shared.storage.secrets import EnvSecretProvider, Secret
from tests.fakes.server import FakeServer, Response, Route, route
from tests.fakes.slack import FakeSlack
from tests.support.openapi import require_spec, validate_swagger_definition, validate_swagger_request

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = "slack/slack_web_openapi_v2.json"
APPROVALS = "C0APPROVAL1"
ALICE = "U0ALICE0001"
ALICE_EMAIL = "alice@contoso.example"
TOKEN_NAME = "slack-bot-token"
SIGNING_NAME = "slack-signing-secret"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
JOB = "job-7f3a9c"
FACTS = [("Amount", "1,250.00 USD"), ("Vendor", "Contoso Supplies"), ("Requested by", "Bob")]
POST_MESSAGE = "POST /api/chat.postMessage"
LOOKUP = "POST /api/users.lookupByEmail"
HISTORY = "POST /api/conversations.history"


def channel_lists(slack: FakeSlack) -> list:
    return slack.requests_to(lambda r: r.path.endswith("/conversations.list"))


class RecordingSleep:
    """Stands in for time.sleep: records each wait, sleeps for real only when asked to."""

    def __init__(self, real: bool = False) -> None:
        self.waits: list[float] = []
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AppStub(FakeServer):
    """The app's interactivity endpoint: answers 200; the test reads the raw request."""

    service_name = "app"

    def routes(self) -> Sequence[Route]:
        return [route("POST", r"/api/slack/interactions", lambda _request, _match: Response(200))]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(APPROVALS, "approvals")
        fake.add_user(ALICE, ALICE_EMAIL, "alice")
        yield fake
        assert fake.handler_errors == []


def connection_for(slack: FakeSlack, name: str = "contoso-slack") -> SlackConnection:
    return SlackConnection(
        name=name,
        bot_token=SecretRef(TOKEN_NAME),
        signing_secret=SecretRef(SIGNING_NAME),
        api_base_url=slack.api_base_url,
        default_channel=APPROVALS,
    )


def secrets_for(slack: FakeSlack, token: str | None = None) -> EnvSecretProvider:
    return EnvSecretProvider({TOKEN_NAME: token or slack.bot_token, SIGNING_NAME: SIGNING_SECRET})


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep(real=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def channel(slack: FakeSlack, sleep: RecordingSleep, clock: ManualClock) -> SlackChannel:
    return SlackChannel(connection_for(slack), secrets_for(slack), sleep=sleep, clock=clock)


def card() -> tuple[str, list[dict]]:
    return approval_card(
        "Purchase order PO-0042",
        FACTS,
        "https://contoso.operations.dynamics.com/?mi=PurchTable&PurchId=PO-0042",
        f"{JOB}|approve",
        f"{JOB}|reject",
        JOB,
    )


def buttons(blocks: list[dict]) -> list[dict]:
    return [element for block in blocks if block["type"] == "actions" for element in block["elements"]]


# --- cards ---------------------------------------------------------------------------------------


def test_card_is_posted_with_approve_and_reject_carrying_the_job(slack: FakeSlack, channel: SlackChannel) -> None:
    text, blocks = card()

    posted = channel.post_card(APPROVALS, text, blocks)

    assert isinstance(posted, PostedMessage)
    stored = slack.message(APPROVALS, posted.ts)
    assert posted.channel == APPROVALS
    assert "PO-0042" in stored.text and "1,250.00 USD" in stored.text
    assert [(b["action_id"], b["value"], b["style"], b["text"]["text"]) for b in buttons(stored.blocks or [])] == [
        (APPROVE_ACTION_ID, f"{JOB}|approve", "primary", "Approve"),
        (REJECT_ACTION_ID, f"{JOB}|reject", "danger", "Reject"),
    ]
    block_ids = [block["block_id"] for block in stored.blocks or []]
    assert len(set(block_ids)) == len(block_ids) and all(JOB in block_id for block_id in block_ids)


def test_posted_card_request_matches_the_spec(slack: FakeSlack, channel: SlackChannel) -> None:
    spec = require_spec(SPEC)
    channel.post_card(APPROVALS, *card())

    request = slack.requests_to(POST_MESSAGE)[0]

    assert request.headers["Authorization"] == f"Bearer {slack.bot_token}"
    assert request.content_type.startswith("application/json")
    assert set(request.json) == {"channel", "text", "blocks"}
    assert isinstance(request.json["blocks"], list)
    assert validate_swagger_request(spec, "/chat.postMessage", request.json) == []


def test_update_card_replaces_the_buttons_with_the_decision(slack: FakeSlack, channel: SlackChannel) -> None:
    posted = channel.post_card(APPROVALS, *card())
    when = datetime(2026, 11, 22, 10, 4, 31, tzinfo=UTC)

    text, blocks = decided_card("Purchase order PO-0042", FACTS, "approved", ALICE, when)
    channel.update_card(posted.channel, posted.ts, text, blocks)

    stored = slack.message(APPROVALS, posted.ts)
    assert buttons(stored.blocks or []) == []
    context = [block for block in stored.blocks or [] if block["type"] == "context"]
    assert context[0]["elements"][0]["text"] == f"Approved by <@{ALICE}> at 2026-11-22 10:04 UTC"
    assert stored.text.startswith("Purchase order PO-0042: Approved by")
    update = slack.requests_to("POST /api/chat.update")[0]
    assert validate_swagger_request(require_spec(SPEC), "/chat.update", update.json) == []


def test_a_rejected_card_says_why_in_slacks_own_markup_and_keeps_its_link(slack: FakeSlack,
                                                                          channel: SlackChannel) -> None:
    posted = channel.post_card(APPROVALS, *card())
    when = datetime(2026, 11, 22, 10, 4, 31, tzinfo=UTC)
    link = "https://contoso.operations.dynamics.com/?cmp=usmf&mi=VendInvoiceInfoListPage"

    text, blocks = decided_card("Invoice INV-7", FACTS, "rejected", ALICE, when, link=link,
                                reason="Price <above> PO & wrong *VAT*")
    channel.update_card(posted.channel, posted.ts, text, blocks)

    stored = slack.message(APPROVALS, posted.ts)
    context = [block for block in stored.blocks or [] if block["type"] == "context"]
    assert context[0]["elements"][0]["text"] == (f"Rejected by <@{ALICE}> at 2026-11-22 10:04 UTC: "
                                                 "Price &lt;above&gt; PO &amp; wrong *VAT*")
    assert f"<{link}|Open in Dynamics 365>" in stored.blocks[0]["text"]["text"]


def test_card_text_is_capped_to_block_kit_limits(slack: FakeSlack, channel: SlackChannel) -> None:
    facts = [(f"Line {n}", "x" * 2500) for n in range(12)]
    text, blocks = approval_card("T" * 5000, facts, None, JOB, JOB, JOB)

    posted = channel.post_card(APPROVALS, text, blocks)  # the fake refuses blocks over the limits

    sections = [block for block in slack.message(APPROVALS, posted.ts).blocks or [] if block["type"] == "section"]
    assert len(sections[0]["text"]["text"]) <= 3000
    assert [len(section.get("fields", [])) for section in sections[1:]] == [10, 2]
    assert all(len(field["text"]) <= 2000 for section in sections[1:] for field in section["fields"])
    with pytest.raises(ValueError, match="2000"):
        approval_card("PO", FACTS, None, "v" * 2001, JOB, JOB)


def test_erp_text_cannot_inject_markup() -> None:
    text, blocks = approval_card("PO <!channel> & co", [("Vendor", "<https://evil|click>")], None, JOB, JOB, JOB)

    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; co" in text
    assert blocks[1]["fields"][0]["text"] == "*Vendor*\n&lt;https://evil|click&gt;"


# --- rate limits and failures -------------------------------------------------------------------


def test_429_with_retry_after_1_is_waited_once_inline(
    slack: FakeSlack, channel: SlackChannel, sleep: RecordingSleep
) -> None:
    channel.post_card(APPROVALS, *card())

    second = channel.post_card(APPROVALS, "second card", card()[1])  # the fake allows 1 post/s per channel

    first_at, second_at = slack.post_times(APPROVALS)
    assert second_at - first_at >= 1.0
    assert sleep.waits == [1.0]
    assert len(slack.requests_to(POST_MESSAGE)) == 3  # first, the refused second, the retried second
    assert slack.message(APPROVALS, second.ts).text == "second card"


def test_429_with_retry_after_30_goes_back_to_the_queue(slack: FakeSlack, channel: SlackChannel) -> None:
    slack.fail_next(status=429, headers={"Retry-After": "30"}, match=POST_MESSAGE)

    with pytest.raises(RetryLater) as raised:
        channel.post_card(APPROVALS, *card())

    assert (raised.value.delay, raised.value.status) == (30.0, 429)
    assert len(slack.requests_to(POST_MESSAGE)) == 1
    assert slack.messages(APPROVALS) == []


def test_repeated_429_after_the_inline_wait_goes_back_to_the_queue(
    slack: FakeSlack, channel: SlackChannel, sleep: RecordingSleep
) -> None:
    slack.fail_next(2, status=429, headers={"Retry-After": "1"}, match=POST_MESSAGE)

    with pytest.raises(RetryLater) as raised:
        channel.post_card(APPROVALS, *card())

    assert raised.value.delay == 1.0
    assert sleep.waits == [1.0]
    assert len(slack.requests_to(POST_MESSAGE)) == 2


def test_500_on_a_post_is_not_resent_inline_but_a_lookup_is(
    slack: FakeSlack, channel: SlackChannel, sleep: RecordingSleep
) -> None:
    slack.fail_next(status=500, match=POST_MESSAGE)
    slack.fail_next(status=503, headers={}, match=LOOKUP)

    with pytest.raises(RetryLater) as raised:
        channel.post_card(APPROVALS, *card())
    user_id = channel.user_id_for_email(ALICE_EMAIL)

    assert raised.value.status == 500
    assert len(slack.requests_to(POST_MESSAGE)) == 1  # a 500 may have posted: the queue decides
    assert user_id == ALICE
    assert len(slack.requests_to(LOOKUP)) == 2


def test_a_reset_after_a_post_is_not_resent_and_says_the_card_may_be_there(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    slack.drop_after_handling(match=POST_MESSAGE)
    slack.drop_next(match="POST /api/conversations.open")

    with pytest.raises(PostOutcomeUnknown):
        channel.post_card(APPROVALS, *card(), metadata=card_metadata(JOB))
    dm = channel.open_dm(ALICE)  # a read is tried again after a reset

    assert len(slack.requests_to(POST_MESSAGE)) == 1 and len(slack.messages(APPROVALS)) == 1
    assert dm.startswith("D") and len(slack.requests_to("POST /api/conversations.open")) == 2


def test_a_post_to_an_unreachable_slack_is_surely_not_posted(slack: FakeSlack) -> None:
    with FakeSlack() as gone:
        connection = connection_for(gone)
    channel = SlackChannel(connection, secrets_for(slack), timeout=2)

    with pytest.raises(RetryLater) as raised:
        channel.post_card(APPROVALS, *card())

    assert not isinstance(raised.value, PostOutcomeUnknown)


def test_find_card_matches_the_job_id_in_metadata_across_pages(slack: FakeSlack, channel: SlackChannel,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.channels.slack.client.HISTORY_PAGE_SIZE", 2)
    slack.post_burst = 10
    since = time.time()
    wanted = channel.post_card(APPROVALS, *card(), metadata=card_metadata(JOB))
    for n in range(4):
        channel.post_card(APPROVALS, f"other {n}", card()[1], metadata=card_metadata(f"job-other-{n}"))

    found = channel.find_card(APPROVALS, JOB, since)
    missing = channel.find_card(APPROVALS, "job-never-posted", since)

    assert found == wanted and missing is None
    assert len(slack.requests_to("POST /api/conversations.history")) == 3 + 3  # five cards, two per page


def test_find_card_reads_back_to_the_dispatch_start_however_many_pages(
        slack: FakeSlack, channel: SlackChannel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.channels.slack.client.HISTORY_PAGE_SIZE", 2)
    slack.post_burst = 100
    channel.post_card(APPROVALS, "before the dispatch", card()[1], metadata=card_metadata("job-older"))
    since = time.time() + HISTORY_CLOCK_MARGIN_SECONDS + 0.5  # that one lies before the bound
    time.sleep(0.6)
    wanted = channel.post_card(APPROVALS, *card(), metadata=card_metadata(JOB))
    for n in range(13):  # seven pages of two after it: beyond the five pages read before
        channel.post_card(APPROVALS, f"other {n}", card()[1], metadata=card_metadata(f"job-other-{n}"))

    found = channel.find_card(APPROVALS, JOB, since)
    slack.clear_log()
    missing = channel.find_card(APPROVALS, "job-never-posted", since)

    assert found == wanted and missing is None
    lookups = slack.requests_to(HISTORY)
    assert len(lookups) == 7  # fourteen cards since the bound, two per page; the older one is never read
    assert all(float(r.form_value("oldest") or 0) == pytest.approx(since - HISTORY_CLOCK_MARGIN_SECONDS, abs=1e-5)
               for r in lookups)


def test_find_card_that_cannot_read_back_to_the_bound_says_so(slack: FakeSlack, channel: SlackChannel,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.channels.slack.client.HISTORY_PAGE_SIZE", 2)
    monkeypatch.setattr("shared.channels.slack.client.HISTORY_MAX_PAGES", 3)
    slack.post_burst = 100
    since = time.time()
    channel.post_card(APPROVALS, *card(), metadata=card_metadata(JOB))
    for n in range(6):
        channel.post_card(APPROVALS, f"other {n}", card()[1], metadata=card_metadata(f"job-other-{n}"))

    with pytest.raises(HistoryTooLong):
        channel.find_card(APPROVALS, JOB, since)

    assert len(slack.requests_to(HISTORY)) == 3


def test_channel_names_resolve_to_ids_across_pages_and_are_cached(
        slack: FakeSlack, channel: SlackChannel, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = require_spec(SPEC)
    monkeypatch.setattr("shared.channels.slack.client.CHANNEL_LIST_PAGE_SIZE", 1)
    slack.add_channel("C0AAAAAAAA1", "general")
    slack.add_channel("C0ZZOLDAPP1", "ap-approvals", archived=True)  # an archived namesake is not the one
    slack.add_channel("G0PRIVATE01", "ap-approvals", private=True)

    first = channel.conversation_id("#ap-approvals")
    listed_once = len(channel_lists(slack))
    again = channel.conversation_id("AP-Approvals")
    cached = channel.conversation_id("approvals")  # seen on the way
    unknown = channel.conversation_id("no-such-channel")
    clock.now += 3601
    expired = channel.conversation_id("ap-approvals")

    assert (first, again, cached, unknown, expired) == ("G0PRIVATE01", "G0PRIVATE01", APPROVALS, None, "G0PRIVATE01")
    assert listed_once == 3  # C0AAAAAAAA1, C0APPROVAL1, G0PRIVATE01: stopped at the page that holds it
    requests = channel_lists(slack)
    assert len(requests) == listed_once + 3 + 3
    for request in requests:
        sent = {**{k: v[0] for k, v in request.query.items()}, **{k: v[0] for k, v in (request.form or {}).items()}}
        assert sent["types"] == "public_channel,private_channel" and sent["exclude_archived"] in ("1", "true")
        assert validate_swagger_request(spec, "/conversations.list", sent) == []


def test_a_refused_channel_list_is_permanent(slack: FakeSlack, channel: SlackChannel) -> None:
    slack.revoke_scope("channels:read")

    with pytest.raises(SlackPermanentError) as raised:
        channel.conversation_id("approvals")

    assert (raised.value.error, raised.value.method) == ("missing_scope", "conversations.list")


def test_unreachable_slack_is_retry_later(slack: FakeSlack) -> None:
    with FakeSlack() as gone:
        connection = connection_for(gone)
    channel = SlackChannel(connection, secrets_for(slack), timeout=2)

    with pytest.raises(RetryLater):
        channel.open_dm(ALICE)


@pytest.mark.parametrize(
    ("call", "error", "method"),
    [
        (lambda c: c.post_card("C0NOWHERE01", "x", []), "channel_not_found", "chat.postMessage"),
        (lambda c: c.update_card(APPROVALS, "1000000000.000001", "x", []), "message_not_found", "chat.update"),
        (lambda c: c.user_id_for_email("nobody@contoso.example"), "users_not_found", "users.lookupByEmail"),
        (lambda c: c.open_view("123.456.stale", {"type": "modal", "blocks": []}), "expired_trigger_id", "views.open"),
    ],
)
def test_refusals_are_permanent(
    channel: SlackChannel, call: Callable[[SlackChannel], object], error: str, method: str
) -> None:
    with pytest.raises(SlackPermanentError) as raised:
        call(channel)

    assert (raised.value.error, raised.value.method) == (error, method)


def test_a_wrong_token_is_permanent(slack: FakeSlack) -> None:
    channel = SlackChannel(connection_for(slack), secrets_for(slack, token="xoxb-revoked"))

    with pytest.raises(SlackPermanentError) as raised:
        channel.post_card(APPROVALS, *card())

    assert raised.value.error == "invalid_auth"


def test_an_empty_token_is_a_configuration_error(slack: FakeSlack) -> None:
    class BlankSecrets:
        def get(self, name: str) -> Secret:
            return Secret(name, "   ")

    provider = BlankSecrets()

    with pytest.raises(SlackConfigurationError, match=TOKEN_NAME):
        SlackChannel(connection_for(slack), provider)


# --- users, DMs, modals --------------------------------------------------------------------------


def test_email_lookup_is_cached_for_an_hour(slack: FakeSlack, channel: SlackChannel, clock: ManualClock) -> None:
    first = channel.user_id_for_email(ALICE_EMAIL)
    second = channel.user_id_for_email(" Alice@Contoso.example ")
    requests_before_expiry = len(slack.requests_to(LOOKUP))
    clock.now += 3601
    third = channel.user_id_for_email(ALICE_EMAIL)

    assert first == second == third == ALICE
    assert requests_before_expiry == 1
    assert len(slack.requests_to(LOOKUP)) == 2


def test_email_for_user_dm_ephemeral_and_modal(slack: FakeSlack, channel: SlackChannel) -> None:
    posted = channel.post_card(APPROVALS, *card())
    trigger = slack.block_actions_payload(ALICE, APPROVALS, posted.ts, "reject", f"{JOB}|reject")["trigger_id"]

    dm = channel.open_dm(ALICE)
    message_ts = channel.post_ephemeral(APPROVALS, ALICE, "Already decided by someone else")
    view_id = channel.open_view(
        trigger, {"type": "modal", "title": {"type": "plain_text", "text": "Why?"}, "blocks": []}
    )

    assert channel.email_for_user(ALICE) == ALICE_EMAIL
    assert dm.startswith("D")
    assert [(e.user, e.message_ts) for e in slack.ephemerals] == [(ALICE, message_ts)]
    assert [v.id for v in slack.views_opened] == [view_id]


def test_code_modal_opens_updates_and_matches_the_spec(slack: FakeSlack, channel: SlackChannel) -> None:
    spec = require_spec(SPEC)
    trigger = slack.issue_trigger_id()

    view_id = channel.open_view(trigger, code_modal(JOB, "A code is on its way.", "Approval requested: PO-0042"))
    channel.update_view(view_id, code_modal(JOB, "We sent a code to +1*******42."))
    channel.update_view(view_id, notice_modal("Code accepted."))
    slack.close_view(view_id)

    with pytest.raises(SlackPermanentError) as closed:
        channel.update_view(view_id, notice_modal("Too late."))
    assert closed.value.error == "not_found"
    assert [view["blocks"][0]["text"]["text"] for view in slack.view_history(view_id)] == [
        "A code is on its way.", "We sent a code to +1*******42.", "Code accepted."]
    for method in ("views.open", "views.update"):
        for request in slack.requests_to(f"POST /api/{method}"):
            assert request.content_type.startswith("application/json")
            assert validate_swagger_request(spec, f"/{method}", request.json) == []
            assert validate_swagger_definition(spec, "blocks", request.json["view"]["blocks"]) == []


def test_profile_gives_email_and_phone_in_one_call(slack: FakeSlack, channel: SlackChannel) -> None:
    slack.add_user("U0PAT000001", "pat@contoso.example", "pat", phone=" (415) 555-0142 ")

    with_phone, without = channel.profile_for_user("U0PAT000001"), channel.profile_for_user(ALICE)

    assert with_phone == SlackProfile("pat@contoso.example", "(415) 555-0142")
    assert without == SlackProfile(ALICE_EMAIL, None)
    assert len(slack.requests_to("POST /api/users.info")) == 2
    request = slack.requests_to("POST /api/users.info")[0]
    assert validate_swagger_request(require_spec(SPEC), "/users.info", {k: v[0] for k, v in request.form.items()}) == []


def test_the_interactive_channel_tries_once_and_does_not_wait(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.storage.secrets.get_secret_provider", lambda: secrets_for(slack))
    reset_slack_channels()
    try:
        quick = interactive_slack_channel(connection_for(slack))
        slack.fail_next(status=429, headers={"Retry-After": "1"}, match="POST /api/views.open")
        started = time.monotonic()
        with pytest.raises(RetryLater):
            quick.open_view(slack.issue_trigger_id(), notice_modal("x"))
        elapsed = time.monotonic() - started
    finally:
        reset_slack_channels()

    assert quick is not slack_channel(connection_for(slack))
    assert elapsed < 0.9 and len(slack.requests_to("POST /api/views.open")) == 1
    reset_slack_channels()


# --- signatures ----------------------------------------------------------------------------------


def test_the_signature_accepts_slacks_request_and_refuses_forged_and_stale_ones(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    payload = slack.block_actions_payload(ALICE, APPROVALS, "1000000000.000001", "approve", f"{JOB}|approve")
    six_minutes_ago = int(time.time()) - 360

    with AppStub() as app:
        url = f"{app.base_url}/api/slack/interactions"
        slack.send_interaction(url, payload, SIGNING_SECRET)
        slack.send_interaction(url, payload, "someone-elses-secret")
        slack.send_interaction(url, payload, SIGNING_SECRET, timestamp=six_minutes_ago)
        good, forged, stale = app.requests
    secret = channel.signing_secret()

    signature.verify(secret, good.body, good.headers)
    for body, headers in [(good.body.replace(b"approve", b"reject"), good.headers), (forged.body, forged.headers),
                          (stale.body, stale.headers), (good.body, {})]:
        with pytest.raises(SignatureRefused):
            signature.verify(secret, body, headers)


def test_the_signature_window_follows_the_given_clock() -> None:
    signed_at = 1531420618
    body = b"payload=%7B%7D"
    headers = signature.sign(SIGNING_SECRET, body, timestamp=signed_at)

    signature.verify(SIGNING_SECRET, body, headers, now=signed_at + 299)
    with pytest.raises(SignatureRefused):
        signature.verify(SIGNING_SECRET, body, headers, now=signed_at + 301)
    with pytest.raises(SignatureRefused):
        signature.verify(SIGNING_SECRET, body, {**headers, "X-Slack-Request-Timestamp": "soon"}, now=signed_at)


# --- registry and import cost ----------------------------------------------------------------------


def test_registry_keeps_one_channel_per_connection(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.storage.secrets.get_secret_provider", lambda: secrets_for(slack))
    reset_slack_channels()
    try:
        first = slack_channel(connection_for(slack))
        again = slack_channel(connection_for(slack))
        changed = slack_channel(replace(connection_for(slack), default_channel=None))
    finally:
        reset_slack_channels()

    assert first is again
    assert changed is not first
    assert slack_channel(connection_for(slack)) is not changed  # forgotten by the reset
    reset_slack_channels()


def test_importing_the_channel_does_not_import_slack_sdk() -> None:
    code = "import sys, shared.channels.slack.client; print(any(m.startswith('slack_sdk') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("changed", [
    {"X-Slack-Request-Timestamp": "9" * 400},  # too big for the float the window is computed in
    {"X-Slack-Request-Timestamp": "\u0661\u0665\u0663\u0661"},  # digits, but not ASCII ones
    {"X-Slack-Signature": "v0=\u00e9" + "0" * 63},  # compare_digest refuses non-ASCII text
])
def test_the_signature_refuses_headers_no_slack_request_carries(changed: dict[str, str]) -> None:
    signed_at = 1531420618
    body = b"payload=%7B%7D"
    headers = signature.sign(SIGNING_SECRET, body, timestamp=signed_at)

    with pytest.raises(SignatureRefused):
        signature.verify(SIGNING_SECRET, body, {**headers, **changed}, now=signed_at)
