"""Figures for the Slack interactions endpoint: how fast a button click is answered under load.

Slack gives up on an interaction that is not answered within 3 seconds (the user sees an
error and Slack retries), so ``POST /api/slack/interactions/{connection}`` only verifies the
signature, queues the click and answers 200. This measures that answer, client-side.

Everything runs on 127.0.0.1 and is started here: an Azurite of its own on free ports, the
fake Entra ID, Dynamics, Twilio and Slack (in this process), and the real function_app under
``python -m devhost`` in a subprocess with the shipped ``host.json``.

Dynamics workflow work-item events are posted first so that approval cards exist in the fake
Slack's approvals channel (the app posts about one card per second per channel). Each click is
a real-shaped ``block_actions`` payload, signed like Slack signs it, sent from ``--concurrency``
threads with a session each. A click is new work behind the queue when its (card, action,
user) was not clicked before, so the fake workspace gets enough users for every measured click
to be distinct; most users are not the approver and get an ephemeral "not the approver" answer.

In the order printed, after a warm-up that is not measured:

- [1 client] ``SINGLE_CLICKS`` distinct clicks one after the other, for comparison.
- [distinct] ``--clicks`` distinct clicks from ``--concurrency`` threads, and how long after
  the last answer every one of them was handled behind the queue.
- [repeats] ``--clicks`` clicks that repeat a few of the distinct ones (a double click, a
  user clicking again): answered and queued the same way, filtered behind the queue.

Each line gives p50 / p90 / p99 / max answer time, the answers by status, and how many took
longer than Slack's 3 seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes, the test stack and devhost live in the repository

import requests  # noqa: E402

from bench import report  # noqa: E402
from bench.dynamics_twilio import App as FlowApp  # noqa: E402
from bench.dynamics_twilio import (  # noqa: E402
    Fakes,
    ms,
    percentile,
    queue_settings,
    shipped_host_json,
    start_fakes,
    tail,
    wait_until,
)
from bench.harness import BenchError, machine, run_measured, stopped_with  # noqa: E402
from devhost.azurite import Azurite, start_azurite  # noqa: E402
from shared.channels.slack import signature as slack_signature  # noqa: E402
from shared.model import CALLBACKS  # noqa: E402
from tests.e2e.conftest import (  # noqa: E402
    APPROVALS_CHANNEL,
    APPROVER,
    BYSTANDER,
    FUNCTION_KEY,
    SLACK_SIGNING_SECRET,
    app_config,
    app_values,
    prepare_slack,
)
from tests.e2e.test_slack_approvals import work_item_event  # noqa: E402
from tests.fakes.slack import FakeSlack, SlackMessage  # noqa: E402
from tests.support.app import local_app  # noqa: E402

T = TypeVar("T")
ACTIONS = ("approve", "reject")
SLACK_DEADLINE = 3.0  # seconds: Slack shows an error and retries an interaction not answered by then
WARM_UP_SEQUENTIAL = 10
SINGLE_CLICKS = 50
REPEATED = 10  # how many distinct clicks the repeat run sends again and again
REQUEST_TIMEOUT = 30.0
_work_items = itertools.count(1)


# --- the stack ---------------------------------------------------------------------------------


class App(FlowApp):
    @property
    def interactions_url(self) -> str:
        return f"{self.base_url}/api/slack/interactions/slack-main"


def start_slack(users: int) -> FakeSlack:
    """The fake workspace of the end-to-end stack: the approvals channel, the approver, a bystander,
    and ``users`` more members who may click but are not the approver."""
    slack = FakeSlack().start()
    prepare_slack(slack)
    for number in range(1, users + 1):
        slack.add_user(f"U0BENCH{number:05d}", f"member{number}@contoso.example", f"member{number}")
    return slack


@contextmanager
def running_app(folder: Path, fakes: Fakes, slack: FakeSlack, azurite: Azurite) -> Iterator[App]:
    """The app under devhost, with the Slack connection, as the end-to-end stack starts it."""
    creds = fakes.twilio.add_test_account()
    config = app_config(fakes.dynamics, fakes.entra, fakes.twilio, creds, slack)
    config["connections"]["contoso-fo"].pop("poll", None)  # no scheduled poll inside a measured window
    values = app_values(azurite.connection_string, "s" + uuid.uuid4().hex[:10], creds, slack)
    with local_app(folder, config=config, values=values, host_json=shipped_host_json()) as app:
        yield App(**vars(app))


def post_cards(app: App, fakes: Fakes, slack: FakeSlack, count: int, timeout: float) -> list[SlackMessage]:
    """``count`` work-item events in, ``count`` approval cards in the approvals channel out."""
    work_items = [f"WI-BENCH-{next(_work_items):04d}" for _ in range(count)]
    with requests.Session() as session:
        session.headers["x-functions-key"] = FUNCTION_KEY
        for work_item in work_items:
            fakes.dynamics.add_work_item(work_item)
            answer = session.post(f"{app.base_url}/api/dynamics/events/contoso-fo", json=work_item_event(work_item),
                                  timeout=REQUEST_TIMEOUT)
            if answer.status_code != 202:
                raise BenchError(f"the work-item event for {work_item} was answered {answer.status_code}")

    def cards() -> list[SlackMessage] | None:
        found = {item: next((m for m in slack.messages(APPROVALS_CHANNEL) if item in m.text), None)
                 for item in work_items}
        return None if None in found.values() else [found[item] for item in work_items]  # type: ignore[misc]

    return wait_until(app, cards, timeout, f"{count} approval cards in the approvals channel")


# --- clicks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Click:
    card: str  # the card's ts
    action: str
    user: str


@dataclass(frozen=True)
class Signed:
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    seconds: float
    status: int  # 0: no answer
    error: str = ""


def distinct_clicks(cards: Sequence[SlackMessage], users: Sequence[str]) -> Iterator[Click]:
    """Every (card, action, user) once, cards varying fastest, so that concurrent clicks spread over them; but the
    approver's Reject: it opens the reason modal, and a rejection handled before the approval waits for the
    reason's submission with nothing shown in the channel, so it could not be counted as handled."""
    for user, action, card in itertools.product(users, ACTIONS, cards):
        if not (user == APPROVER[0] and action == "reject"):
            yield Click(card.ts, action, user)


def sign(slack: FakeSlack, click: Click) -> Signed:
    """The request Slack sends for ``click``: ``payload=<JSON>``, signed over the raw body, stamped now."""
    payload = slack.block_actions_payload(click.user, APPROVALS_CHANNEL, click.card, click.action, "job")
    body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
    return Signed(body.encode("utf-8"), {
        "Content-Type": "application/x-www-form-urlencoded", **slack_signature.sign(SLACK_SIGNING_SECRET, body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    })


def send_all(app: App, requests_: Sequence[Signed], concurrency: int) -> tuple[list[Answer], float]:
    """Each signed click from ``concurrency`` threads, a session each; the answers and the wall time."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()
    url = app.interactions_url

    def send(signed: Signed) -> Answer:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        started = time.monotonic()
        try:
            status, error = session.post(url, data=signed.body, headers=signed.headers,
                                         timeout=REQUEST_TIMEOUT).status_code, ""
        except requests.RequestException as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
        return Answer(time.monotonic() - started, status, error)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = list(pool.map(send, requests_))
    finally:
        for session in sessions:
            session.close()
    return answers, time.monotonic() - started


def handled(slack: FakeSlack) -> int:
    """Clicks the app has answered behind the queue: one ephemeral each, or the card's update for a decision."""
    return len(slack.ephemerals) + len(slack.updates)


def queued(azurite: Azurite, queue: str) -> int:
    from azure.storage.queue import QueueClient

    with QueueClient.from_connection_string(azurite.connection_string, queue) as client:
        try:
            return client.get_queue_properties().approximate_message_count or 0
        except Exception:  # noqa: BLE001 - a queue not created yet holds nothing
            return 0


def wait_drained(app: App, azurite: Azurite, timeout: float) -> None:
    """Until the callbacks queue is empty twice in a row, 0.2 s apart (its count includes hidden messages)."""
    deadline = time.monotonic() + timeout
    empty = 0
    while empty < 2:
        app.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"the {CALLBACKS} queue still holds {queued(azurite, CALLBACKS)} messages after "
                             f"{timeout:.0f} s; the app's log ends:\n{tail(app.log_path)}")
        empty = empty + 1 if queued(azurite, CALLBACKS) == 0 else 0
        time.sleep(0.2)


# --- figures -------------------------------------------------------------------------------------


def statuses(answers: Sequence[Answer]) -> str:
    counts = Counter(f"HTTP {a.status}" if a.status else (a.error.split(":")[0] + ", no answer") for a in answers)
    return ", ".join(f"{n} x {reason}" for reason, n in counts.most_common())


def report_answers(label: str, answers: Sequence[Answer], elapsed: float, what: str) -> None:
    answered = [a.seconds for a in answers if a.status]
    ok = sum(a.status == 200 for a in answers)
    late = sum(a.seconds > SLACK_DEADLINE for a in answers)
    print(f"{label} {len(answers)} {what} in {elapsed:.2f} s ({len(answers) / elapsed:.0f} clicks/s): "
          f"{ok} answered 200; all answers: {statuses(answers)}")
    if answered:
        print(f"{label} answer time over the {len(answered)} answered: p50 {ms(percentile(answered, 0.5))}, "
              f"p90 {ms(percentile(answered, 0.9))}, p99 {ms(percentile(answered, 0.99))}, "
              f"max {ms(max(answered))}; over Slack's {SLACK_DEADLINE * 1000:.0f} ms: {late}")


def run(app: App, azurite: Azurite, slack: FakeSlack, cards: Sequence[SlackMessage], warm_card: SlackMessage,
        members: Sequence[str], clicks: int, concurrency: int, timeout: float) -> None:
    # Warm-up on a card of its own, the approver's decision among the clicks: tables and the queue
    # created, the Entra token fetched, sessions and server threads open.
    warm_clicks = [Click(warm_card.ts, "approve", APPROVER[0]), *distinct_clicks([warm_card], members)]
    warm = [sign(slack, click) for click in warm_clicks[:WARM_UP_SEQUENTIAL + concurrency]]
    for batch, threads in ((warm[:WARM_UP_SEQUENTIAL], 1), (warm[WARM_UP_SEQUENTIAL:], concurrency)):
        answers, _ = send_all(app, batch, threads)
        if any(a.status != 200 for a in answers):
            raise BenchError(f"warm-up clicks not answered 200: {statuses(answers)}")
    wait_until(app, lambda: any(u.ts == warm_card.ts for u in slack.updates), timeout, "the warm-up card decided")
    wait_drained(app, azurite, timeout)

    # The approver halfway through the members: the cards are decided during the concurrent run.
    middle = len(members) // 2
    users = [*members[:middle], APPROVER[0], *members[middle:]]
    pool = distinct_clicks(cards, users)
    single = [sign(slack, click) for click in itertools.islice(pool, SINGLE_CLICKS)]
    answers, elapsed = send_all(app, single, 1)
    answered = [a.seconds for a in answers if a.status]
    print(f"[1 client] {len(answers)} distinct clicks one after the other, the queue handling them meanwhile "
          "(for comparison): "
          f"p50 {ms(percentile(answered, 0.5)) if answered else '-'}, max {ms(max(answered)) if answered else '-'}; "
          f"answers: {statuses(answers)}")
    wait_drained(app, azurite, timeout)

    measured = list(itertools.islice(pool, clicks))
    distinct = [sign(slack, click) for click in measured]
    before = handled(slack)
    answers, elapsed = send_all(app, distinct, concurrency)
    last_answer = time.monotonic()
    report_answers("[distinct]", answers, elapsed, f"distinct clicks on {len(cards)} cards from {concurrency} threads")
    answered = [a.seconds for a in answers if a.status]
    if answered:
        report.note("Slack click answer p99 over HTTP through devhost", percentile(answered, 0.99) * 1000, " ms",
                    f"{concurrency} concurrent")
    accepted = sum(a.status == 200 for a in answers)
    wait_until(app, lambda: handled(slack) - before >= accepted, timeout, f"{accepted} clicks handled behind the queue")
    decided = {update.ts for update in slack.updates} & {card.ts for card in cards}
    print(f"[distinct] behind the queue: all {accepted} accepted clicks handled (an ephemeral answer, or the "
          f"approver's decision completed in Dynamics and the card updated: {len(decided)} of {len(cards)} cards) "
          f"{time.monotonic() - last_answer:.2f} s after the last answer")
    wait_drained(app, azurite, timeout)

    again = [sign(slack, click) for click in itertools.islice(itertools.cycle(measured[:REPEATED]), clicks)]
    before = handled(slack)
    answers, elapsed = send_all(app, again, concurrency)
    last_answer = time.monotonic()
    report_answers("[repeats] ", answers, elapsed,
           f"clicks repeating {min(REPEATED, len(measured))} of the distinct ones, from {concurrency} threads")
    wait_drained(app, azurite, timeout)
    print(f"[repeats]  behind the queue: the {CALLBACKS} queue empty {time.monotonic() - last_answer:.2f} s after the "
          f"last answer; {handled(slack) - before} repeats answered again in Slack (filtered by the click's key)")


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=500, help="clicks per measured run (default 500)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clicking clients (default 50)")
    parser.add_argument("--cards", type=int, default=4, help="approval cards clicked (default 4)")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for any one step, s (default 60)")
    report.add_json_argument(parser)
    args = parser.parse_args()
    if min(args.clicks, args.concurrency, args.cards) < 1:
        parser.error("--clicks, --concurrency and --cards must be at least 1")
    report.write_json_to(args.json)

    warm_up = WARM_UP_SEQUENTIAL + args.concurrency
    # Enough members for every measured click to be a distinct (card, action, user), the approver's rejections apart.
    users_needed = max(math.ceil((SINGLE_CLICKS + args.clicks + args.cards) / (args.cards * len(ACTIONS))),
                       math.ceil(warm_up / len(ACTIONS)) + 1)
    print(f"setup: {machine()}, Azurite in memory, "
          f"app under devhost with storage queues and the shipped host.json ({queue_settings(shipped_host_json())})")
    print(f"setup: clicks {args.clicks} per run, concurrency {args.concurrency}, {args.cards} cards, "
          f"{users_needed} users; answer times measured by the clients, signing done before the clock starts; "
          f"warmed up with {warm_up} clicks on a card of its own first, not measured")
    return run_measured(lambda started_here: measure(args, users_needed, started_here))


def measure(args: argparse.Namespace, users_needed: int, started_here: ExitStack) -> None:
    azurite = stopped_with(started_here, start_azurite())
    fakes = stopped_with(started_here, start_fakes())
    slack = stopped_with(started_here, start_slack(users_needed - 2))
    members = [BYSTANDER[0], *(f"U0BENCH{number:05d}" for number in range(1, users_needed - 1))]
    with tempfile.TemporaryDirectory(prefix="bench-slack-interactions-") as temp, \
            running_app(Path(temp), fakes, slack, azurite) as app:
        posted = time.monotonic()
        warm_card, *cards = post_cards(app, fakes, slack, args.cards + 1, args.timeout)
        print(f"cards: {args.cards + 1} approval cards in the approvals channel {time.monotonic() - posted:.1f} s "
              "after their work-item events (the app posts about one per second per channel); one for the warm-up")
        run(app, azurite, slack, cards, warm_card, members, args.clicks, args.concurrency, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
