"""Slack cards exactly once, on Azurite and the fake Slack: whatever happens around chat.postMessage
(a reset or a timeout after Slack posted, a crash before the job was recorded), one card per job."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.channels.slack import client as slack_module
from shared.channels.slack.client import CARD_EVENT_TYPE, SlackChannel, reset_slack_channels
from shared.channels.slack.connection import SlackConnection
from shared.clients import PerConnection
from shared.config.model import SecretRef
from shared.model import NOTIFICATION, Envelope
from shared.outcomes import RetryLater
from shared.pipeline import slack_flow
from shared.pipeline.deliver import DISPATCH_LEASE_SECONDS, open_job
from shared.pipeline.slack_flow import slack_ref
from shared.storage.secrets import EnvSecretProvider
from shared.storage.tables import JobRow, Stores
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.timeout(60)

APPROVALS = "C0APPROVAL1"
ALICE = "U0ALICE0001"
ALICE_EMAIL = "alice@contoso.example"
TOKEN_NAME = "slack-bot-token"
SIGNING_NAME = "slack-signing-secret"
READ_TIMEOUT = 1  # seconds: a stalled answer is given up on quickly
POST = "POST /api/chat.postMessage"
HISTORY = "POST /api/conversations.history"
RECORD = "fo|WorkflowWorkItem|usmf|WI-ONCE"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(APPROVALS, "approvals")
        fake.add_user(ALICE, ALICE_EMAIL, "alice")
        yield fake
        assert fake.handler_errors == []


@pytest.fixture
def connection(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackConnection]:
    """The process's channel for a connection of its own (its own pacing), with a short read timeout."""
    secrets = EnvSecretProvider({TOKEN_NAME: slack.bot_token, SIGNING_NAME: "signing-secret"})
    monkeypatch.setattr(slack_module, "_channels", PerConnection(
        lambda made: SlackChannel(made, secrets, timeout=READ_TIMEOUT)))
    yield SlackConnection(name=f"slack-{uuid.uuid4().hex[:8]}", bot_token=SecretRef(TOKEN_NAME),
                          signing_secret=SecretRef(SIGNING_NAME), api_base_url=slack.api_base_url)
    reset_slack_channels()


def notification(connection: SlackConnection, to: str = APPROVALS) -> Envelope:
    job_id = uuid.uuid4().hex
    return Envelope(NOTIFICATION, connection.name, job_id, {
        "job_id": job_id, "rule": "approvals", "channel": "slack", "via": connection.name, "to": to,
        "record": RECORD, "title": f"Approve invoice {job_id[:6]}", "facts": [["Amount", "1,250.00 USD"]],
        "work_item_id": "WI-ONCE"})


def deliver(stores: Stores, connection: SlackConnection, envelope: Envelope) -> None:
    """As the delivery stage runs a card: its fresh path first, which creates the job already claimed, or goes on
    from the job as it is when it exists; the usual path when the fresh one declines."""
    if not slack_flow.deliver_fresh(stores, connection, envelope, lambda job: False):
        slack_flow.deliver(stores, connection, envelope, open_job(stores, envelope))


def deliver_until_done(stores: Stores, connection: SlackConnection, envelope: Envelope, attempts: int = 3) -> None:
    """As the queue does: each RetryLater is another delivery of the same envelope."""
    for _ in range(attempts):
        try:
            deliver(stores, connection, envelope)
            return
        except RetryLater:
            continue
    raise AssertionError(f"not delivered in {attempts} attempts")


def job_of(stores: Stores, envelope: Envelope) -> JobRow:
    job = stores.jobs.get(envelope.payload["job_id"])
    assert job is not None
    return job


def cards_of(slack: FakeSlack, envelope: Envelope, channel: str = APPROVALS) -> list[Any]:
    return [m for m in slack.messages(channel) if (m.metadata or {}).get("event_payload", {}).get("job_id")
            == envelope.payload["job_id"]]


def sent_steps(stores: Stores, envelope: Envelope) -> list[dict[str, Any]]:
    return [entry.detail for entry in stores.audit.by_correlation(envelope.correlation_id) if entry.step == "sent"]


def assert_sent_once(stores: Stores, slack: FakeSlack, envelope: Envelope, *, adopted: bool,
                     channel: str = APPROVALS) -> None:
    """One card, the job sent with its ts, a click on it finds the job, one `sent` audit line."""
    [card] = cards_of(slack, envelope, channel)
    job = job_of(stores, envelope)
    ref = slack_ref(card.channel, card.ts)
    assert (job.status, job.fields["slack_channel"], job.fields["slack_ts"]) == ("sent", card.channel, card.ts)
    assert job.fields["provider_id"] == ref
    clicked = slack_flow.clicked_job(stores, str(job.fields["via"]), click_on(card.channel, card.ts, job.job_id))
    assert clicked is not None and clicked.job_id == envelope.payload["job_id"]  # a click on the card finds it
    [sent] = sent_steps(stores, envelope)
    assert sent["provider_id"] == ref and bool(sent.get("adopted")) is adopted


def test_every_card_carries_its_job_id_in_message_metadata(stores: Stores, slack: FakeSlack,
                                                           connection: SlackConnection) -> None:
    envelope = notification(connection)

    deliver(stores, connection, envelope)

    [request] = slack.requests_to(POST)
    assert request.json["metadata"] == {"event_type": CARD_EVENT_TYPE,
                                        "event_payload": {"job_id": envelope.payload["job_id"]}}
    assert_sent_once(stores, slack, envelope, adopted=False)
    assert slack.requests_to(HISTORY) == []  # nothing to look up on a clean post


def test_a_reset_after_slack_posted_leaves_one_card(stores: Stores, slack: FakeSlack,
                                                    connection: SlackConnection) -> None:
    envelope = notification(connection)
    slack.drop_after_handling(match=POST)

    with pytest.raises(RetryLater, match="may have posted"):
        deliver(stores, connection, envelope)
    job = job_of(stores, envelope)
    assert job.status == "dispatching" and job.fields["ambiguous"] is True
    assert len(slack.requests_to(POST)) == 1  # no SDK retry of the post

    deliver(stores, connection, envelope)

    assert len(slack.requests_to(POST)) == 1
    assert_sent_once(stores, slack, envelope, adopted=True)


@pytest.mark.parametrize("lost", ["read timeout", "500"])
def test_a_read_timeout_or_a_500_after_slack_posted_leaves_one_card(stores: Stores, slack: FakeSlack,
                                                                    connection: SlackConnection, lost: str) -> None:
    envelope = notification(connection)
    if lost == "read timeout":
        slack.delay_after_handling(seconds=READ_TIMEOUT + 2, match=POST)
    else:
        slack.fail_after_handling(status=500, match=POST)

    deliver_until_done(stores, connection, envelope)

    assert len(slack.requests_to(POST)) == 1
    assert_sent_once(stores, slack, envelope, adopted=True)


def test_a_post_that_never_reached_slack_is_posted_after_the_lookup(stores: Stores, slack: FakeSlack,
                                                                    connection: SlackConnection) -> None:
    envelope = notification(connection)
    slack.drop_next(match=POST)  # the connection breaks before Slack handled anything

    deliver_until_done(stores, connection, envelope)

    assert [r.scripted for r in slack.requests_to(POST)] == ["drop", None]
    assert len(slack.requests_to(HISTORY)) == 1
    assert_sent_once(stores, slack, envelope, adopted=False)


def test_a_crash_after_the_post_is_adopted_on_redelivery(stores: Stores, slack: FakeSlack,
                                                         connection: SlackConnection) -> None:
    envelope = notification(connection)
    deliver(stores, connection, envelope)
    [card] = cards_of(slack, envelope)
    # As if the delivery had stopped between the post and recording it: dispatching, no ts, gone quiet.
    long_ago = (datetime.now(UTC) - timedelta(seconds=DISPATCH_LEASE_SECONDS + 5)).isoformat()
    job = job_of(stores, envelope)
    stores.jobs.update(job, {"status": "dispatching", "provider_id": None, "slack_channel": None, "slack_ts": None,
                             "dispatch_at": long_ago})

    deliver(stores, connection, envelope)

    assert cards_of(slack, envelope) == [card]
    assert len(slack.requests_to(POST)) == 1
    job = job_of(stores, envelope)
    assert (job.status, job.fields["slack_ts"]) == ("sent", card.ts)
    assert sent_steps(stores, envelope)[-1]["adopted"] is True


def test_a_crash_before_the_post_posts_once(stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    envelope = notification(connection)
    job = open_job(stores, envelope)
    long_ago = (datetime.now(UTC) - timedelta(seconds=DISPATCH_LEASE_SECONDS + 5)).isoformat()
    stores.jobs.update(job, {"status": "dispatching", "dispatch_at": long_ago, "dispatch_started": long_ago,
                             "slack_target": APPROVALS})

    deliver(stores, connection, envelope)

    assert len(slack.requests_to(HISTORY)) == 1
    assert_sent_once(stores, slack, envelope, adopted=False)


def test_a_live_dispatch_makes_the_other_delivery_wait(stores: Stores, slack: FakeSlack,
                                                       connection: SlackConnection) -> None:
    envelope = notification(connection)
    job = open_job(stores, envelope)
    stores.jobs.update(job, {"status": "dispatching", "dispatch_at": datetime.now(UTC).isoformat()})

    with pytest.raises(RetryLater, match="under way"):
        deliver(stores, connection, envelope)

    assert slack.requests == []
    assert job_of(stores, envelope).status == "dispatching"


def test_a_card_back_after_its_slot_passed_waits_for_a_fresh_one_and_slack_takes_both(
        stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    first = notification(connection)
    deliver(stores, connection, first)
    late = notification(connection)  # it held a slot that went by while it was on the queue
    late = replace(late, payload={**late.payload, "paced_slot": time.time() - 3})

    deliver(stores, connection, late)

    assert len(slack.requests_to(POST)) == 2  # no 429 to absorb: the stale slot was not used
    first_at, late_at = slack.post_times(APPROVALS)  # by the fake's clock, as Slack counts
    assert late_at - first_at >= slack.post_interval
    assert_sent_once(stores, slack, late, adopted=False)


def test_a_lost_answer_in_a_direct_message_is_looked_up_there(stores: Stores, slack: FakeSlack,
                                                              connection: SlackConnection) -> None:
    envelope = notification(connection, to=ALICE_EMAIL)
    slack.drop_after_handling(match=POST)

    deliver_until_done(stores, connection, envelope)

    [dm] = {m.channel for m in slack.messages()}
    assert dm.startswith("D")
    assert {r.form_value("channel") for r in slack.requests_to(HISTORY)} == {dm}
    assert len(slack.requests_to(POST)) == 1
    assert_sent_once(stores, slack, envelope, adopted=True, channel=dm)


def test_the_lookup_reads_bounded_pages_since_the_dispatch(stores: Stores, slack: FakeSlack,
                                                           connection: SlackConnection) -> None:
    envelope = notification(connection)
    slack.drop_after_handling(match=POST)
    with pytest.raises(RetryLater):
        deliver(stores, connection, envelope)
    started = datetime.fromisoformat(job_of(stores, envelope).fields["dispatch_started"]).timestamp()

    deliver(stores, connection, envelope)

    [lookup] = slack.requests_to(HISTORY)
    assert lookup.form_value("channel") == APPROVALS
    assert lookup.form_value("include_all_metadata") in ("1", "true", "True")
    assert 0 < started - float(lookup.form_value("oldest") or 0) <= 300
    assert 0 < int(lookup.form_value("limit") or 0) <= 999
    assert_sent_once(stores, slack, envelope, adopted=True)


# --- channel names, refused lookups, busy channels -------------------------------------------------


def channel_lists(slack: FakeSlack) -> list[Any]:
    return slack.requests_to(lambda r: r.path.endswith("/conversations.list"))


def steps_of(stores: Stores, envelope: Envelope, step: str) -> list[dict[str, Any]]:
    return [entry.detail for entry in stores.audit.by_correlation(envelope.correlation_id) if entry.step == step]


def crashed_before_the_post(stores: Stores, envelope: Envelope) -> None:
    """As if a delivery had claimed the job and stopped before posting, long enough ago."""
    job = open_job(stores, envelope)
    long_ago = (datetime.now(UTC) - timedelta(seconds=DISPATCH_LEASE_SECONDS + 5)).isoformat()
    stores.jobs.update(job, {"status": "dispatching", "dispatch_at": long_ago, "dispatch_started": long_ago,
                             "slack_target": APPROVALS})


def others_post(slack: FakeSlack, count: int) -> None:
    """People and other apps talk in the channel after the dispatch began."""
    from slack_sdk import WebClient

    slack.post_burst = count + 1
    client = WebClient(token=slack.bot_token, base_url=slack.api_base_url, retry_handlers=[])
    for n in range(count):
        client.chat_postMessage(channel=APPROVALS, text=f"chatter {n}")
    slack.clear_log()


def test_a_channel_named_in_the_rule_is_posted_to_by_id_and_a_lost_answer_gives_one_card(
        stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    envelope = notification(connection, to="#approvals")
    slack.drop_after_handling(match=POST)

    deliver_until_done(stores, connection, envelope)

    [post] = slack.requests_to(POST)
    assert post.json["channel"] == APPROVALS  # the ID, which the job records and history is read by
    assert job_of(stores, envelope).fields["slack_target"] == APPROVALS
    assert [r.form_value("channel") for r in slack.requests_to(HISTORY)] == [APPROVALS]
    assert len(channel_lists(slack)) == 1  # the second attempt took the ID from the cache
    assert_sent_once(stores, slack, envelope, adopted=True)
    assert steps_of(stores, envelope, "lookup-unavailable") == []


@pytest.mark.parametrize("refusal", ["missing_scope", "not_in_channel"])
def test_a_refused_lookup_never_posts_a_second_card_and_leaves_the_job_for_replay(
        stores: Stores, slack: FakeSlack, connection: SlackConnection, storage_connection_string: str,
        refusal: str) -> None:
    from shared.model import NOTIFICATIONS, REPLAYABLE_STATUSES
    from shared.pipeline.replay import replay_job
    from shared.settings import StorageSettings
    from shared.storage.bus import StorageQueueBus, read_envelope

    envelope = notification(connection)
    slack.drop_after_handling(match=POST)
    if refusal == "missing_scope":
        slack.revoke_scope("channels:history")
    else:  # a public channel the app posts to without being a member (chat:write.public)
        slack.fail_next(status=200, body={"ok": False, "error": "not_in_channel"}, match=HISTORY)
    since = datetime.now(UTC) - timedelta(seconds=1)

    with pytest.raises(RetryLater):
        deliver(stores, connection, envelope)
    deliver(stores, connection, envelope)  # the lookup is refused
    deliver(stores, connection, envelope)  # and a redelivery later

    assert len(slack.requests_to(POST)) == 1 and len(cards_of(slack, envelope)) == 1
    job = job_of(stores, envelope)
    assert job.status == "unknown" and "replay" in job.fields["reason"]
    [unavailable] = steps_of(stores, envelope, "lookup-unavailable")
    assert unavailable["error"] == refusal and unavailable["status"] == "unknown"
    assert sent_steps(stores, envelope) == []
    listed = stores.jobs.with_status(REPLAYABLE_STATUSES, since, datetime.now(UTC) + timedelta(seconds=5))
    assert envelope.payload["job_id"] in [j.job_id for j in listed]  # what a replay of the window takes

    # The operator, having fixed the app, replays it: the card is posted again, knowingly.
    bus = StorageQueueBus(StorageSettings(storage_connection_string, None, None, None))
    try:
        assert replay_job(stores, bus, envelope.payload["job_id"]).replayed
        [queued] = [read_envelope(base64.b64decode(m.content)) for m in bus._queue(NOTIFICATIONS).peek_messages(32)
                    if envelope.payload["job_id"] in base64.b64decode(m.content).decode()]
        deliver(stores, connection, queued)
    finally:
        bus._queue(NOTIFICATIONS).clear_messages()
        bus.close()
    assert job_of(stores, envelope).status == "sent" and len(cards_of(slack, envelope)) == 2


def test_a_named_channel_slack_will_not_list_is_posted_by_name_and_never_twice(
        stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    slack.revoke_scope("channels:read")
    envelope = notification(connection, to="#approvals")
    slack.drop_after_handling(match=POST)

    with pytest.raises(RetryLater):
        deliver(stores, connection, envelope)
    deliver(stores, connection, envelope)

    [post] = slack.requests_to(POST)
    assert post.json["channel"] == "#approvals"
    assert len(cards_of(slack, envelope)) == 1
    assert steps_of(stores, envelope, "channel-unresolved")[0]["error"] == "missing_scope"
    assert job_of(stores, envelope).status == "unknown"
    assert steps_of(stores, envelope, "lookup-unavailable")[0]["error"] == "missing_scope"
    assert slack.requests_to(HISTORY) == []


def test_a_card_not_found_back_to_the_dispatch_start_is_posted_once_however_busy_the_channel(
        stores: Stores, slack: FakeSlack, connection: SlackConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slack_module, "HISTORY_PAGE_SIZE", 2)
    envelope = notification(connection)
    crashed_before_the_post(stores, envelope)
    others_post(slack, 13)  # seven pages: more than the five read before

    deliver(stores, connection, envelope)

    lookups = slack.requests_to(HISTORY)
    assert len(lookups) == 7 and {r.form_value("channel") for r in lookups} == {APPROVALS}
    assert_sent_once(stores, slack, envelope, adopted=False)


def test_a_card_behind_many_newer_messages_is_still_adopted(stores: Stores, slack: FakeSlack,
                                                            connection: SlackConnection,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slack_module, "HISTORY_PAGE_SIZE", 2)
    envelope = notification(connection)
    slack.drop_after_handling(match=POST)
    with pytest.raises(RetryLater):
        deliver(stores, connection, envelope)
    others_post(slack, 13)  # the card now lies on the seventh page

    deliver(stores, connection, envelope)

    assert slack.requests_to(POST) == []
    assert len(slack.requests_to(HISTORY)) == 7
    assert_sent_once(stores, slack, envelope, adopted=True)


def test_a_channel_too_busy_to_read_back_to_the_dispatch_start_leaves_the_job_unknown(
        stores: Stores, slack: FakeSlack, connection: SlackConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slack_module, "HISTORY_PAGE_SIZE", 2)
    monkeypatch.setattr(slack_module, "HISTORY_MAX_PAGES", 3)
    envelope = notification(connection)
    crashed_before_the_post(stores, envelope)
    others_post(slack, 7)

    deliver(stores, connection, envelope)

    assert slack.requests_to(POST) == [] and cards_of(slack, envelope) == []
    assert job_of(stores, envelope).status == "unknown"
    [unavailable] = steps_of(stores, envelope, "lookup-unavailable")
    assert "may be among the older ones" in unavailable["reason"]


def click_on(channel: str, ts: str, job_id: str) -> dict[str, Any]:
    """What Slack posts when someone presses Approve on the card at ``channel``/``ts`` (the fields read here)."""
    return {"type": "block_actions", "user": {"id": ALICE}, "container": {"channel_id": channel, "message_ts": ts},
            "actions": [{"action_id": "approve", "value": job_id}]}


def test_a_click_on_a_card_whose_job_never_recorded_it_adopts_the_card(
        stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    from shared.pipeline.slack_flow import adopt_clicked_card, clicked_job

    envelope = notification(connection)
    deliver(stores, connection, envelope)
    [card] = cards_of(slack, envelope)
    job_id, ref = envelope.payload["job_id"], slack_ref(card.channel, card.ts)
    # As if the process stopped right after the post: the job never recorded the card.
    stores.jobs.update(job_of(stores, envelope), {"status": "unknown", "provider_id": None, "slack_channel": None,
                                                  "slack_ts": None})

    adopted = adopt_clicked_card(stores, connection.name, click_on(card.channel, card.ts, job_id))

    assert adopted is not None and adopted.job_id == job_id
    job = job_of(stores, envelope)
    assert (job.status, job.fields["provider_id"], job.fields["slack_ts"]) == ("sent", ref, card.ts)
    again = clicked_job(stores, connection.name, click_on(card.channel, card.ts, job_id))
    assert again is not None and again.job_id == job_id  # the next click finds it the usual way, adopting nothing
    assert [bool(step.get("adopted")) for step in sent_steps(stores, envelope)] == [False, True]


def test_a_click_adopts_nothing_that_is_not_its_own(stores: Stores, slack: FakeSlack,
                                                    connection: SlackConnection) -> None:
    from shared.pipeline.slack_flow import adopt_clicked_card

    envelope = notification(connection)
    deliver(stores, connection, envelope)
    [card] = cards_of(slack, envelope)
    job_id = envelope.payload["job_id"]

    assert adopt_clicked_card(stores, "another-connection", click_on(card.channel, card.ts, job_id)) is None
    assert adopt_clicked_card(stores, connection.name, click_on(card.channel, card.ts, "no-such-job")) is None
    # The job recorded another card: a click on this one does not move it.
    assert adopt_clicked_card(stores, connection.name, click_on(card.channel, "1.000001", job_id)) is None
    assert job_of(stores, envelope).fields["slack_ts"] == card.ts


def test_a_click_finds_its_job_by_the_job_id_its_button_carries_without_a_link(
        stores: Stores, slack: FakeSlack, connection: SlackConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.pipeline.slack_flow import clicked_job
    from shared.storage.tables import PROVIDER_IDS
    from tests.integration.test_deliver import counted_reads

    envelope = notification(connection)
    deliver(stores, connection, envelope)
    [card] = cards_of(slack, envelope)
    job_id = envelope.payload["job_id"]
    ref = slack_ref(card.channel, card.ts)
    assert stores.providers.lookup(ref) is None  # a card's post writes no link: its buttons name the job
    reads = counted_reads(stores, monkeypatch)

    job = clicked_job(stores, connection.name, click_on(card.channel, card.ts, job_id))
    assert job is not None and job.job_id == job_id
    # A card of the job that it does not record (one from before a replay): Slack sends a click only to the app
    # that posted the card, so the job it names is its job.
    earlier = clicked_job(stores, connection.name, click_on(card.channel, "1.000001", job_id))
    assert earlier is not None and earlier.job_id == job_id
    assert job_of(stores, envelope).fields["slack_ts"] == card.ts  # the job still records its own card
    assert reads[PROVIDER_IDS] == 0
    # A button naming a job of another connection, or none that exists, is no card of this connection's.
    assert clicked_job(stores, "another-connection", click_on(card.channel, card.ts, job_id)) is None
    assert clicked_job(stores, connection.name, click_on(card.channel, card.ts, "no-such-job")) is None


def test_a_click_on_a_button_that_names_no_job_is_found_by_the_cards_link(
        stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    from shared.pipeline.slack_flow import clicked_job

    envelope = notification(connection)
    deliver(stores, connection, envelope)
    [card] = cards_of(slack, envelope)
    job_id = envelope.payload["job_id"]
    unnamed = {**click_on(card.channel, card.ts, job_id), "actions": [{"action_id": "approve"}]}

    assert clicked_job(stores, connection.name, unnamed) is None  # no link, no name: no card of ours
    stores.providers.link(slack_ref(card.channel, card.ts), job_id, connection.name)  # as cards were linked before
    job = clicked_job(stores, connection.name, unnamed)
    assert job is not None and job.job_id == job_id


def test_a_cards_first_delivery_creates_its_job_claimed_and_writes_it_once_more_with_the_card(
        stores: Stores, slack: FakeSlack, connection: SlackConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []

    def counted(name: str) -> Any:
        real = getattr(stores.jobs, name)

        def write(*args: Any, **kwargs: Any) -> Any:
            writes.append(name)
            return real(*args, **kwargs)

        return write

    for name in ("create", "update"):
        monkeypatch.setattr(stores.jobs, name, counted(name))
    envelope = notification(connection)

    assert slack_flow.deliver_fresh(stores, connection, envelope, lambda job: False) is True

    assert writes == ["create", "update"]  # created dispatching, then the card recorded: no separate claim
    assert_sent_once(stores, slack, envelope, adopted=False)


def test_a_card_whose_recipient_slack_cannot_resolve_is_left_to_the_usual_path_which_fails_it(
        stores: Stores, slack: FakeSlack, connection: SlackConnection) -> None:
    envelope = notification(connection, to="nobody@example.com")  # no such Slack user, and no default channel

    assert slack_flow.deliver_fresh(stores, connection, envelope, lambda job: False) is False
    assert stores.jobs.get(envelope.payload["job_id"]) is None  # nothing written

    deliver(stores, connection, envelope)

    assert job_of(stores, envelope).status == "failed" and slack.requests_to(POST) == []
