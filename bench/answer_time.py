"""In-process answer time of the two busiest HTTP endpoints at 50 concurrent requests.

The trigger functions of ``function_app`` are called in this process, as the Functions worker
calls them, with no HTTP server in between: what is measured is the app's own time to answer,
from the call into the function to its return. Storage is an Azurite this script starts on free
ports; the fake Entra ID, Dynamics, Twilio and Slack of the end-to-end tests are behind the
configuration. Nothing consumes the queues meanwhile unless ``--with-consumers`` is given.

- business events: ``POST /api/dynamics/events/{connection}`` with one valid invoice event each,
  every event a new one (answered 202 once it is on ``erp-events``);
- Slack interactions: ``POST /api/slack/interactions/{connection}`` with a signed button click on a
  card that needs no code, every click a new one (answered 200 once it is on ``callbacks``).

Each endpoint is warmed up first (queues created, clients built, threads started), not measured.
"50 concurrent" is a burst: ``--concurrency`` calls released at once (a barrier), the burst answered
in full before the next one, ``--bursts`` of them per endpoint per round. Requests are made and signed
before the clock starts. The endpoints run in turn, ``--rounds`` times, so noise on a shared machine
spreads over both; the figures are over every round. Printed per endpoint: p50,
p90, p99 and max answer time, the statuses, the CPU the process used per request, beside the goal.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes, the test stack and devhost live in the repository

from bench import report as goals  # noqa: E402
from bench.harness import machine  # noqa: E402

P99_GOAL_MS = goals.BY_KEY["answer_p99"].limit
WARM_UP_BURSTS = 2
PAUSE_SECONDS = 0.05  # between bursts: what one burst leaves running (sockets closing, logs) settles


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


@dataclass
class Endpoint:
    label: str
    function: str
    route: str
    connection: str
    expected: int
    make: Callable[[], Request]
    seconds: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cpu: float = 0.0
    storage_cpu: float = 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def call(functions: dict[str, Callable], endpoint: Endpoint, request: Request) -> tuple[float, int]:
    import azure.functions as func

    http = func.HttpRequest("POST", f"http://127.0.0.1:7071/api/{endpoint.route}", headers=request.headers,
                            params={}, route_params={"connection": endpoint.connection}, body=request.body)
    started = time.perf_counter()
    answer = functions[endpoint.function](http)
    return time.perf_counter() - started, answer.status_code


def process_cpu(pid: int) -> float:
    """CPU seconds another process has used (Linux /proc); 0 where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def run_bursts(functions: dict[str, Callable], endpoint: Endpoint, bursts: int, concurrency: int,
               storage_pid: int) -> None:
    """``bursts`` times, ``concurrency`` calls released at once (a barrier), each burst answered in full
    before the next; added to the endpoint's figures."""
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="caller") as pool:
        for _ in range(bursts):
            requests = [endpoint.make() for _ in range(concurrency)]
            barrier = threading.Barrier(concurrency)

            def released(request: Request, barrier: threading.Barrier = barrier) -> tuple[float, int]:
                barrier.wait()
                return call(functions, endpoint, request)

            cpu_started, storage_started = time.process_time(), process_cpu(storage_pid)
            answers = list(pool.map(released, requests))
            endpoint.cpu += time.process_time() - cpu_started
            endpoint.storage_cpu += process_cpu(storage_pid) - storage_started
            endpoint.seconds += [seconds for seconds, _ in answers]
            endpoint.statuses += Counter(status for _, status in answers)
            time.sleep(PAUSE_SECONDS)


def report(endpoint: Endpoint, concurrency: int) -> None:
    seconds, n = endpoint.seconds, len(endpoint.seconds)
    p99 = percentile(seconds, 0.99) * 1000
    met = "met" if p99 <= P99_GOAL_MS else "NOT met"
    statuses = ", ".join(f"{count} x {status}" for status, count in endpoint.statuses.most_common())
    print(f"[answer] {endpoint.label}: {n} calls in bursts of {concurrency}: p50 {percentile(seconds, 0.5) * 1000:.1f}"
          f" ms, p90 {percentile(seconds, 0.9) * 1000:.1f} ms, p99 {p99:.1f} ms, max {max(seconds) * 1000:.1f} ms; "
          f"goal p99 <= {P99_GOAL_MS:.0f} ms: {met}; CPU per call {endpoint.cpu / n * 1000:.2f} ms in this process, "
          f"{endpoint.storage_cpu / n * 1000:.2f} ms in Azurite; "
          f"answers: {statuses}")
    goals.record("answer_p99", p99, endpoint.label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", type=int, default=10, help="bursts per endpoint per round (default 10)")
    parser.add_argument("--concurrency", type=int, default=50, help="calls released at once per burst (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the endpoints in turn (default 3)")
    parser.add_argument("--with-consumers", action="store_true",
                        help="run the queue consumers in this process meanwhile (as a Functions worker does)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of every calling thread to this file")
    goals.add_json_argument(parser)
    args = parser.parse_args()
    goals.write_json_to(args.json)

    from bench.dynamics_twilio import start_fakes
    from devhost.azurite import start_azurite
    from shared.channels.slack import signature as slack_signature
    from tests.e2e.conftest import (
        APPROVALS_CHANNEL,
        APPROVER,
        SLACK_SIGNING_SECRET,
        app_config,
        app_values,
        prepare_slack,
    )
    from tests.e2e.test_dynamics_to_twilio import invoice_event
    from tests.fakes.slack import FakeSlack

    print(f"setup: {machine()}, Azurite in memory, storage "
          f"queues, bursts of {args.concurrency} calls into the trigger functions in-process "
          f"released at once, {args.bursts} bursts per endpoint per round, {args.rounds} rounds; "
          f"queue consumers {'running' if args.with_consumers else 'off'}")
    azurite = start_azurite()
    fakes = slack = None
    try:
        fakes = start_fakes()
        slack = FakeSlack().start()
        prepare_slack(slack)
        creds = fakes.twilio.add_test_account()
        with tempfile.TemporaryDirectory(prefix="bench-answer-time-") as temp:
            config_path = Path(temp) / "connections.json"
            config = app_config(fakes.dynamics, fakes.entra, fakes.twilio, creds, slack)
            config["connections"]["contoso-fo"].pop("poll", None)
            config_path.write_text(json.dumps(config))
            os.environ.update({"FUNCTIONS_WORKER_RUNTIME": "python", "QUEUE_BACKEND": "storage",
                               "PUBLIC_BASE_URL": "http://127.0.0.1:7071", "CONNECTOR_CONFIG_PATH": str(config_path),
                               **app_values(azurite.connection_string, "a" + uuid.uuid4().hex[:10], creds, slack)})
            import function_app

            functions = {str(f.get_function_name()): f.get_user_function() for f in function_app.app.get_functions()}
            phones = itertools.count(1000)

            def business_event() -> Request:
                event = invoice_event(f"INV-ANS-{uuid.uuid4().hex[:10]}", f"+1415{next(phones) % 10**7:07d}")
                return Request(json.dumps(event).encode(), {"content-type": "application/json"})

            def click() -> Request:
                card = f"1763802000.{uuid.uuid4().int % 10**6:06d}"
                payload = slack.block_actions_payload(APPROVER[0], APPROVALS_CHANNEL, card, "approve", "job")
                body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
                return Request(body.encode(), {"content-type": "application/x-www-form-urlencoded",
                                               **{k.lower(): v for k, v in
                                                  slack_signature.sign(SLACK_SIGNING_SECRET, body).items()}})

            endpoints = [
                Endpoint("POST dynamics/events (business event)", "dynamics_events", "dynamics/events/contoso-fo",
                         "contoso-fo", 202, business_event),
                Endpoint("POST slack/interactions (signed click)", "slack_interactions",
                         "slack/interactions/slack-main", "slack-main", 200, click),
            ]
            pid = azurite.process.pid
            for endpoint in endpoints:
                run_bursts(functions, endpoint, WARM_UP_BURSTS, args.concurrency, pid)
                endpoint.seconds, endpoint.statuses, endpoint.cpu, endpoint.storage_cpu = [], Counter(), 0.0, 0.0
            consumers = _start_consumers(function_app) if args.with_consumers else None
            profiler = _profile_threads() if args.profile else None
            try:
                for _ in range(args.rounds):
                    for endpoint in endpoints:
                        run_bursts(functions, endpoint, args.bursts, args.concurrency, pid)
            finally:
                if consumers is not None:
                    consumers()
                if profiler is not None:
                    profiler(args.profile)
            for endpoint in endpoints:
                report(endpoint, args.concurrency)
            unexpected = [e.label for e in endpoints if set(e.statuses) != {e.expected}]
            if unexpected:
                print(f"unexpected answers from: {', '.join(unexpected)}", file=sys.stderr)
                return 1
    finally:
        if slack is not None:
            slack.stop()
        if fakes is not None:
            fakes.stop()
        azurite.stop()
    return 0


def _start_consumers(function_app: Any) -> Callable[[], None]:
    """The app's queue and timer triggers run by the local host in this process, with the shipped
    host.json, as one Functions worker runs them beside its HTTP triggers; returns its stop."""
    from devhost.host import DevHost

    host = DevHost(function_app.app, port=0).start()
    return host.stop


def _profile_threads() -> Callable[[Path], None]:
    """cProfile every thread started from now on (the trigger runs on threads of its own)."""
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU, not the wait for the GIL or a socket
        with lock:
            profiles.append(profile)
        profile.runcall(original, self)

    threading.Thread.run = profiled  # type: ignore[method-assign]

    def write(path: Path) -> None:
        threading.Thread.run = original  # type: ignore[method-assign]
        with lock:
            stats = pstats.Stats(*profiles) if profiles else None
        if stats is not None:
            stats.dump_stats(str(path))
            print(f"profile of {len(profiles)} threads written to {path}")

    return write


if __name__ == "__main__":
    sys.exit(main())
