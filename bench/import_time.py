"""Cold-start cost: ``import function_app``, and the first request answered after it.

Each sample is a new process with an empty environment but for the app's settings (as the
Functions host imports the app before the first request), so nothing is cached between samples.

- [import] the median time of ``import function_app``.
- [first request] per endpoint, a fresh process that imports the app, indexes its functions as
  the worker does, and calls the trigger's function in-process with a valid request: a Dynamics
  business event (POST /api/dynamics/events/{connection}) and a signed Slack button click
  (POST /api/slack/interactions/{connection}). Storage is an Azurite this script starts on free
  ports, with the fake Entra ID, Dynamics, Twilio and Slack of the end-to-end tests behind the
  configuration. Printed: import, indexing, first call, their sum (the goal's figure), the CPU
  the process used meanwhile (steadier than wall time on a shared machine), and the second call.
  Beside it, how much of the import is ``azure.functions`` (the Functions worker imports it at its
  own start, before it loads the app), and the rest: from the worker's loading of the app to its
  first answer. The goal's figure stays the whole, from process start.

The app's own modules are read as deployed: ``azd`` compiles them to bytecode when it packages the
app (``checked-hash`` .pyc files, the ``prepackage`` hook in ``azure.yaml``), and so does this script,
in a copy of the app's modules in a folder of its own, so the repository gains no ``__pycache__``.
Nothing is written at run time (a deployed package is read-only). The import is also printed without
that bytecode, as from a plain checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes, the test stack and devhost live in the repository

from bench import report  # noqa: E402

FIRST_REQUEST_GOAL_MS = report.BY_KEY["first_request"].limit
PROBE = (
    "import time; t = time.perf_counter(); import function_app; "
    "print(time.perf_counter() - t)"
)
# A fresh interpreter: import the app, index it (the worker does so before any request), call one
# function twice with the request in the file named by argv[1]; print the four times as JSON.
FIRST_REQUEST_PROBE = """
import time
started, cpu_started = time.perf_counter(), time.process_time()
import azure.functions
worker_part = time.perf_counter()
import function_app
imported = time.perf_counter()
functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
indexed = time.perf_counter()
import base64, json, sys
import azure.functions as func
spec = json.loads(open(sys.argv[1]).read())
def call(sent):
    request = func.HttpRequest("POST", spec["url"], headers=sent["headers"], params={},
                               route_params=spec["route_params"], body=base64.b64decode(sent["body"]))
    return functions[spec["function"]](request)
answer = call(spec["calls"][0])
answered, cpu_answered = time.perf_counter(), time.process_time()
again = call(spec["calls"][1])
print(json.dumps({"import": imported - started, "worker_part": worker_part - started,
                  "index": indexed - imported, "first": answered - indexed,
                  "second": time.perf_counter() - answered, "cpu": cpu_answered - cpu_started,
                  "statuses": [answer.status_code, again.status_code]}))
"""


def packaged_copy(folder: Path) -> Path:
    """The app's modules as ``azd`` packages them: copied to ``folder``, with their bytecode."""
    shutil.copy2(REPO_ROOT / "function_app.py", folder / "function_app.py")
    shutil.copytree(REPO_ROOT / "shared", folder / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-f", "--invalidation-mode", "checked-hash",
                    "function_app.py", "shared"], cwd=folder, check=True, capture_output=True)
    return folder


def sample(python: str, app: Path) -> float:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([python, "-c", PROBE], cwd=app, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# --- the first request ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    label: str
    figure: str  # its name in the summary
    function: str
    route: str
    connection: str
    expected: int  # the status of a valid request
    request: Callable[[], tuple[bytes, dict[str, str]]]  # a fresh valid request: body and headers


@dataclass(frozen=True)
class Timing:
    imported: float
    indexed: float
    first: float
    second: float
    cpu: float  # CPU seconds of the process from the import to the first answer: less swayed by other load
    worker_part: float  # of ``imported``: azure.functions, which the Functions worker imports before the app

    @property
    def total(self) -> float:
        return self.imported + self.indexed + self.first

    @property
    def app_part(self) -> float:
        """From the worker's loading of the app to its first answer: the total less azure.functions."""
        return self.total - self.worker_part


def first_request(python: str, folder: Path, values: dict[str, str], endpoint: Endpoint, app: Path) -> Timing:
    """One fresh process: the app imported and called twice with valid requests for ``endpoint``."""
    calls = [endpoint.request() for _ in range(2)]
    spec = {"function": endpoint.function, "url": f"http://127.0.0.1:7071/api/{endpoint.route}",
            "route_params": {"connection": endpoint.connection},
            "calls": [{"body": _b64(body), "headers": {name.lower(): value for name, value in headers.items()}}
                      for body, headers in calls]}
    spec_path = folder / f"request.{uuid.uuid4().hex[:8]}.json"
    spec_path.write_text(json.dumps(spec))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1", **values}
    out = subprocess.run([python, "-c", FIRST_REQUEST_PROBE, str(spec_path)], cwd=app, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the probe for {endpoint.label} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["statuses"] != [endpoint.expected] * 2:
        raise RuntimeError(f"{endpoint.label} answered {result['statuses']}, not {endpoint.expected}:\n"
                           f"{out.stderr[-3000:]}")
    return Timing(result["import"], result["index"], result["first"], result["second"], result["cpu"],
                  result["worker_part"])


def _b64(body: bytes) -> str:
    import base64

    return base64.b64encode(body).decode("ascii")


def median_ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def report_first_requests(label: str, timings: Sequence[Timing], figure: str) -> None:
    totals = sorted(t.total for t in timings)
    met = "met" if statistics.median(totals) * 1000 <= FIRST_REQUEST_GOAL_MS else "NOT met"
    print(f"[first request] {label}: import {median_ms([t.imported for t in timings])} + index "
          f"{median_ms([t.indexed for t in timings])} + first call {median_ms([t.first for t in timings])} = "
          f"{median_ms(totals)} (min {totals[0] * 1000:.1f}, max {totals[-1] * 1000:.1f}); goal "
          f"<= {FIRST_REQUEST_GOAL_MS:.0f} ms: {met}; CPU in that time {median_ms([t.cpu for t in timings])}; "
          f"second call {median_ms([t.second for t in timings])} (medians over {len(timings)} processes)")
    print(f"[first request] {label}: of the import, azure.functions {median_ms([t.worker_part for t in timings])}, "
          f"which the Functions worker imports at its own start, before it loads any app; from the worker's "
          f"loading of the app to the first answer: {median_ms([t.app_part for t in timings])} (not the goal's figure)")
    report.record("first_request", statistics.median(totals) * 1000, figure)


def first_request_figures(python: str, runs: int, app: Path) -> None:
    from bench.dynamics_twilio import start_fakes
    from devhost.azurite import start_azurite
    from shared.channels.slack import signature as slack_signature
    from tests.e2e.conftest import APPROVALS_CHANNEL, APPROVER, SLACK_SIGNING_SECRET, app_config, app_values
    from tests.e2e.test_dynamics_to_twilio import invoice_event
    from tests.fakes.slack import FakeSlack

    azurite = start_azurite()
    fakes = slack = None
    try:
        fakes = start_fakes()
        slack = FakeSlack().start()
        creds = fakes.twilio.add_test_account()
        with tempfile.TemporaryDirectory(prefix="bench-first-request-") as temp:
            folder = Path(temp)
            config_path = folder / "connections.json"
            config_path.write_text(json.dumps(app_config(fakes.dynamics, fakes.entra, fakes.twilio, creds, slack)))
            values = {"FUNCTIONS_WORKER_RUNTIME": "python", "QUEUE_BACKEND": "storage",
                      "PUBLIC_BASE_URL": "http://127.0.0.1:7071", "CONNECTOR_CONFIG_PATH": str(config_path),
                      **app_values(azurite.connection_string, "c" + uuid.uuid4().hex[:10], creds, slack)}
            phones = iter(range(1000, 10000))

            def business_event() -> tuple[bytes, dict[str, str]]:
                body = json.dumps(invoice_event(f"INV-COLD-{uuid.uuid4().hex[:8]}", f"+1415555{next(phones):04d}"))
                return body.encode(), {"content-type": "application/json"}

            def click() -> tuple[bytes, dict[str, str]]:
                # A click on a card that needs no code: verified, queued and answered 200 at once.
                card = f"1763802000.{uuid.uuid4().int % 10**6:06d}"
                payload = slack.block_actions_payload(APPROVER[0], APPROVALS_CHANNEL, card, "approve", "job")
                body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
                return body.encode(), {"content-type": "application/x-www-form-urlencoded",
                                       **slack_signature.sign(SLACK_SIGNING_SECRET, body)}

            endpoints = (
                Endpoint("POST dynamics/events (business event)", "business events", "dynamics_events",
                         "dynamics/events/contoso-fo", "contoso-fo", 202, business_event),
                Endpoint("POST slack/interactions (signed click)", "Slack click", "slack_interactions",
                         "slack/interactions/slack-main", "slack-main", 200, click),
            )
            # Interleaved: each round runs every endpoint once, so machine noise spreads over both.
            timings: dict[str, list[Timing]] = {endpoint.label: [] for endpoint in endpoints}
            for _ in range(runs):
                for endpoint in endpoints:
                    timings[endpoint.label].append(first_request(python, folder, values, endpoint, app))
            for endpoint in endpoints:
                report_first_requests(endpoint.label, timings[endpoint.label], endpoint.figure)
    finally:
        if slack is not None:
            slack.stop()
        if fakes is not None:
            fakes.stop()
        azurite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per figure (default 15)")
    parser.add_argument("--import-only", action="store_true", help="only the import figure, no Azurite")
    report.add_json_argument(parser)
    args = parser.parse_args()
    report.write_json_to(args.json)
    with tempfile.TemporaryDirectory(prefix="bench-packaged-") as packaged:
        app = packaged_copy(Path(packaged))
        for label, folder in (("as packaged, with the app's bytecode", app), ("from source, no bytecode", REPO_ROOT)):
            samples = sorted(sample(sys.executable, folder) for _ in range(args.runs))
            print(f"[import] import function_app, {label}: median {statistics.median(samples) * 1000:.1f} ms, "
                  f"min {samples[0] * 1000:.1f} ms, max {samples[-1] * 1000:.1f} ms over {args.runs} runs")
        if not args.import_only:
            first_request_figures(sys.executable, args.runs, app)


if __name__ == "__main__":
    main()
