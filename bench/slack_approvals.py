"""Storage and queue operations per Slack approval: work item -> card -> the approver's click -> Dynamics.

Everything runs on 127.0.0.1 and is started here: an Azurite of its own on free ports, the
fake Entra ID, Dynamics, Twilio and Slack (in this process), and the real function_app under
``python -m devhost`` in a subprocess with the shipped ``host.json``. The app's storage goes
through the counting proxy (``bench/storage_proxy.py``) in front of Azurite's table and queue
ports, as in ``bench/dynamics_twilio.py``.

One approval, as the end-to-end tests drive it: a Dynamics workflow work-item event is posted,
the app posts an approval card to the approvals channel (Slack paces a channel at about one
message per second, so a burst of cards is spread out by the app), the approver clicks
"approve" (a signed ``block_actions`` request), and the app completes the work item in
Dynamics and updates the card. One approval alone, then ``--approvals`` (10) at once to the
same channel, go through it; the operations are counted per stage (card posted; click ->
writeback and card updated) and per table or queue, the host's empty polls apart, and divided
by the approvals. A warm-up approval is not counted. Each figure is printed beside the goal
(``bench/report.py``); ``--json PATH`` also appends it there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes, the test stack and devhost live in the repository

from bench import report  # noqa: E402
from bench.dynamics_twilio import (  # noqa: E402
    QUEUES,
    Fakes,
    breakdown,
    queue_settings,
    queued,
    shipped_host_json,
    start_fakes,
    storage_connection_string,
    wait_until,
)
from bench.harness import BenchError, machine, run_measured, stopped_with  # noqa: E402
from bench.slack_interactions import App, Click, post_cards, send_all, sign, statuses  # noqa: E402
from bench.storage_proxy import CountingProxy, Key, total, wait_idle  # noqa: E402
from devhost.azurite import Azurite, start_azurite  # noqa: E402
from tests.e2e.conftest import APPROVER, app_config, app_values, prepare_slack  # noqa: E402
from tests.fakes.slack import FakeSlack, SlackMessage  # noqa: E402
from tests.support.app import local_app  # noqa: E402

QUIET_SECONDS = 1.0  # no storage request but empty polls for this long: the stage's work is over


@contextmanager
def running_app(folder: Path, fakes: Fakes, slack: FakeSlack, storage: str, table_prefix: str) -> Iterator[App]:
    """The app under devhost with the Slack connection and the shipped host.json, storage through ``storage``."""
    creds = fakes.twilio.add_test_account()
    config = app_config(fakes.dynamics, fakes.entra, fakes.twilio, creds, slack)
    config["connections"]["contoso-fo"].pop("poll", None)  # no scheduled poll inside a counted window
    values = app_values(storage, table_prefix, creds, slack)
    with local_app(folder, config=config, values=values, host_json=shipped_host_json()) as app:
        yield App(**vars(app))


def settle(app: App, azurite: Azurite, proxies: Sequence[CountingProxy], timeout: float) -> None:
    """Until every queue is empty (read from Azurite directly, not counted) and storage is quiet."""
    wait_until(app, lambda: all(queued(azurite, queue) == 0 for queue in QUEUES), timeout, "every queue drained")
    wait_idle(proxies, quiet=QUIET_SECONDS, timeout=timeout)


def approve_all(app: App, fakes: Fakes, slack: FakeSlack, cards: Sequence[SlackMessage], timeout: float) -> None:
    """The approver clicks "approve" on each card; until each work item is completed and its card updated."""
    completed = len(fakes.dynamics.completions)
    answers, _ = send_all(app, [sign(slack, Click(card.ts, "approve", APPROVER[0])) for card in cards], 1)
    if any(answer.status != 200 for answer in answers):
        raise BenchError(f"clicks not answered 200: {statuses(answers)}")
    wait_until(app, lambda: len(fakes.dynamics.completions) - completed >= len(cards), timeout,
               f"{len(cards)} work items completed in Dynamics")
    wait_until(app, lambda: {card.ts for card in cards} <= {update.ts for update in slack.updates}, timeout,
               f"{len(cards)} cards updated")


def approvals(app: App, fakes: Fakes, slack: FakeSlack, azurite: Azurite, proxies: Sequence[CountingProxy],
              count: int, timeout: float) -> tuple[Counter[Key], Counter[Key]]:
    """``count`` approvals, counted; the counts once the cards are posted, and at the end."""
    def snapshot() -> Counter[Key]:
        return proxies[0].snapshot() + proxies[1].snapshot()

    cards = post_cards(app, fakes, slack, count, timeout)
    settle(app, azurite, proxies, timeout)
    posted = snapshot()
    approve_all(app, fakes, slack, cards, timeout)
    settle(app, azurite, proxies, timeout)
    return posted, snapshot()


def print_figures(label: str, posted: Counter[Key], both: Counter[Key], count: int) -> None:
    clicked = both - posted
    work = total(both, exclude=["poll"])
    print(f"[{label}] storage per approval: {total(both, 'table') / count:.2f} table, "
          f"{total(both, 'queue', exclude=['poll']) / count:.2f} queue operations, the host's empty polls apart "
          f"({total(both, 'queue', kinds=['poll'])} empty gets in the counted window, not counted)")
    for title, counts in (("work-item event -> card posted (ingest, erp-events, notifications)", posted),
                          ("approver's click -> Dynamics completed, card updated (callbacks)", clicked)):
        print(f"  per approval, {title}: {total(counts, 'table') / count:.2f} table, "
              f"{total(counts, 'queue', exclude=['poll']) / count:.2f} queue operations")
        for line in breakdown(counts, count):
            print(line)
    report.record("ops_per_slack_approval", work / count,
                  f"{total(both, 'table') / count:.1f} table + {total(both, 'queue', exclude=['poll']) / count:.1f} "
                  f"queue, {label}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approvals", type=int, default=10,
                        help="approvals counted at once, after the one alone (default 10)")
    parser.add_argument("--timeout", type=float, default=90.0, help="longest wait for any one step, s (default 90)")
    report.add_json_argument(parser)
    args = parser.parse_args()
    if args.approvals < 1:
        parser.error("--approvals must be at least 1")
    report.write_json_to(args.json)
    print(f"setup: {machine()}, Azurite in memory, app under "
          f"devhost with storage queues and the shipped host.json ({queue_settings(shipped_host_json())}); "
          f"one approval alone, then {args.approvals} at once, after a warm-up approval that is not counted")
    return run_measured(lambda started_here: measure(args, started_here), failures=(BenchError, TimeoutError))


def measure(args: argparse.Namespace, started_here: ExitStack) -> None:
    azurite = stopped_with(started_here, start_azurite())
    fakes = stopped_with(started_here, start_fakes())
    slack = stopped_with(started_here, FakeSlack().start())
    prepare_slack(slack)
    prefix = "a" + uuid.uuid4().hex[:10]
    proxies = [stopped_with(started_here, CountingProxy("queue", azurite.queue_port).start()),
               stopped_with(started_here, CountingProxy("table", azurite.table_port, table_prefix=prefix).start())]
    storage = storage_connection_string(azurite, proxies[0].endpoint, proxies[1].endpoint)
    with tempfile.TemporaryDirectory(prefix="bench-slack-approvals-") as temp, \
            running_app(Path(temp), fakes, slack, storage, prefix) as app:
        approvals(app, fakes, slack, azurite, proxies, 1, args.timeout)  # the warm-up
        # Alone, then a burst: cards to one channel wait for its pace, which costs operations of its own.
        for label, count in (("one card alone", 1), (f"{args.approvals} cards to one channel", args.approvals)):
            for proxy in proxies:
                proxy.reset()
            posted, both = approvals(app, fakes, slack, azurite, proxies, count, args.timeout)
            print_figures(label, posted, both, count)


if __name__ == "__main__":
    sys.exit(main())
