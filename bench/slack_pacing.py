"""Figures for Slack pacing: a burst of approval cards to one channel, at Slack's rate and without a 429.

Slack allows about one chat.postMessage per second per channel. The fake Slack enforces it
strictly (a post less than ``post_interval``, 1.0 s, after the last one accepted on its
channel is answered 429), so every 429 counted here is one a real workspace could have sent.

Everything runs on 127.0.0.1 and is started here: an Azurite of its own on free ports, the
fake Entra ID, Dynamics, Twilio and Slack (in this process), and the real function_app under
``python -m devhost`` in a subprocess with the shipped ``host.json`` (2 s maximum queue
polling, batchSize 16, newBatchThreshold 8), as in production. ``--fast-polling`` runs the
burst a second time with the end-to-end tests' 0.1 s polling, for comparison.

One card to another channel warms the app up first (tables, queues, the Entra token, the
sessions), unmeasured. Then ``--cards`` work-item events go in as one batch of Business
Events, each routed to one card in the paced channel. Printed, beside the goals:

- achieved rate / allowed rate: (cards - 1) over the time from the first accepted post to the
  last, by the fake Slack's clock, divided by Slack's one per second;
- answers 429: posts the fake refused on that channel;
- the closest two accepted posts, and the time from the burst to the last card.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes, the test stack and devhost live in the repository

import requests  # noqa: E402

from bench import report as goals  # noqa: E402
from bench.dynamics_twilio import App, Fakes, start_fakes, wait_until  # noqa: E402
from bench.harness import BenchError, machine, run_measured, stopped_with  # noqa: E402
from devhost.azurite import Azurite, start_azurite  # noqa: E402
from tests.e2e.conftest import (  # noqa: E402
    APPROVALS_CHANNEL,
    APPROVER,
    FAST_HOST_JSON,
    FUNCTION_KEY,
    PACED_CHANNEL,
    app_config,
    app_values,
    prepare_slack,
)
from tests.e2e.test_slack_approvals import review_event, work_item_event  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.support.app import local_app  # noqa: E402

SHIPPED_HOST_JSON = REPO_ROOT / "host.json"
SHIPPED_LABEL = "[shipped host.json]"
PACED_EVENT = "Workflow_BulkNotice_000001_Notice_WorkItem"  # the end-to-end rule that posts to the paced channel
POST = "POST /api/chat.postMessage"
GOAL_RATE = goals.BY_KEY["slack_rate"].limit
GOAL_429 = int(goals.BY_KEY["slack_429"].limit)
REQUEST_TIMEOUT = 30.0
_work_items = itertools.count(1)


@contextmanager
def running_app(folder: Path, fakes: Fakes, slack: FakeSlack, azurite: Azurite,
                host_json: Mapping[str, Any]) -> Iterator[App]:
    creds = fakes.twilio.add_test_account()
    config = app_config(fakes.dynamics, fakes.entra, fakes.twilio, creds, slack)
    config["connections"]["contoso-fo"].pop("poll", None)  # no scheduled poll inside the measured burst
    values = app_values(azurite.connection_string, "p" + uuid.uuid4().hex[:10], creds, slack)
    with local_app(folder, config=config, values=values, host_json=host_json) as app:
        yield App(**vars(app))


def post_events(app: App, body: Any) -> None:
    answer = requests.post(f"{app.base_url}/api/dynamics/events/contoso-fo", json=body,
                           headers={"x-functions-key": FUNCTION_KEY}, timeout=REQUEST_TIMEOUT)
    if answer.status_code != 202:
        raise BenchError(f"the events were answered {answer.status_code}: {answer.text[:200]}")


def warm_up(app: App, fakes: Fakes, slack: FakeSlack, timeout: float) -> None:
    work_item = f"WI-PACE-WARM-{next(_work_items)}"
    fakes.dynamics.add_work_item(work_item)
    post_events(app, work_item_event(work_item))
    wait_until(app, lambda: any(work_item in m.text for m in slack.messages(APPROVALS_CHANNEL)), timeout,
               "the warm-up card")


def paced_posts(slack: FakeSlack) -> int:
    return sum(1 for r in slack.requests_to(POST) if PACED_CHANNEL in r.body.decode(errors="replace"))


def burst(app: App, fakes: Fakes, slack: FakeSlack, cards: int, timeout: float, label: str) -> None:
    work_items = [f"WI-PACE-{next(_work_items):04d}" for _ in range(cards)]
    for work_item in work_items:
        fakes.dynamics.add_work_item(work_item)
    before_cards, before_posts = len(slack.messages(PACED_CHANNEL)), paced_posts(slack)
    started = time.monotonic()
    post_events(app, [review_event(item, APPROVER[1], PACED_EVENT) for item in work_items])
    wait_until(app, lambda: len(slack.messages(PACED_CHANNEL)) - before_cards >= cards, timeout,
               f"{cards} cards in the paced channel")
    finished = time.monotonic()
    times = slack.post_times(PACED_CHANNEL)[before_cards:]
    refused = paced_posts(slack) - before_posts - cards
    span = times[-1] - times[0]
    allowed = 1.0 / slack.post_interval
    achieved = (len(times) - 1) / span / allowed if span > 0 else float("inf")
    closest = min(later - earlier for earlier, later in itertools.pairwise(times))
    print(f"{label} {cards} cards to one channel: achieved / allowed rate {achieved:.3f} (goal >= {GOAL_RATE}): "
          f"{len(times) - 1} intervals in {span:.2f} s, Slack allows {allowed:.0f}/s per channel; "
          f"answers 429: {refused} (goal {GOAL_429})")
    print(f"{label} closest two posts {closest:.3f} s apart (the fake refuses under {slack.post_interval:.3f} s); "
          f"last card {finished - started:.1f} s after the burst was posted, the first "
          f"{times[0] - started:.1f} s after")
    if label == SHIPPED_LABEL:  # the goals are for the shipped host.json; other runs are for comparison
        goals.record("slack_rate", achieved, label)
        goals.record("slack_429", refused, label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=30, help="cards in the burst (default 30)")
    parser.add_argument("--timeout", type=float, default=180.0, help="longest wait for any one step, s (default 180)")
    parser.add_argument("--fast-polling", action="store_true",
                        help="run the burst again with 0.1 s queue polling, for comparison")
    goals.add_json_argument(parser)
    args = parser.parse_args()
    goals.write_json_to(args.json)
    if args.cards < 2:
        parser.error("--cards must be at least 2")

    shipped = json.loads(SHIPPED_HOST_JSON.read_text())
    runs: list[tuple[str, Mapping[str, Any]]] = [(SHIPPED_LABEL, shipped)]
    if args.fast_polling:
        runs.append(("[0.1 s polling]", FAST_HOST_JSON))
    queues = shipped["extensions"]["queues"]
    print(f"setup: {machine()}, Azurite in memory, app under "
          f"devhost with storage queues; shipped host.json: maxPollingInterval {queues['maxPollingInterval']}, "
          f"batchSize {queues['batchSize']}, newBatchThreshold {queues['newBatchThreshold']}")
    return run_measured(lambda started_here: measure(args, runs, started_here))


def measure(args: argparse.Namespace, runs: list[tuple[str, Mapping[str, Any]]], started_here: ExitStack) -> None:
    azurite = stopped_with(started_here, start_azurite())
    fakes = stopped_with(started_here, start_fakes())
    for label, host_json in runs:
        with FakeSlack() as slack, tempfile.TemporaryDirectory(prefix="bench-slack-pacing-") as temp:
            prepare_slack(slack)
            with running_app(Path(temp), fakes, slack, azurite, host_json) as app:
                warm_up(app, fakes, slack, args.timeout)
                burst(app, fakes, slack, args.cards, args.timeout, label)


if __name__ == "__main__":
    sys.exit(main())
