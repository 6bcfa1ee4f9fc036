"""Where the app process's CPU goes in the SMS benchmark's throughput run: a profile of every thread.

The run of ``bench/dynamics_twilio.py`` [throughput] (its own Azurite, the fakes, the app under
devhost with the shipped host.json, a warm-up left out), with the app process profiled by
``bench/profiling/sitecustomize.py``: one cProfile per thread on that thread's CPU clock, merged per
kind of thread. Printed, in profiled seconds and shares (profiling slows Python calls about tenfold,
C code much less, so shares of Python-heavy parts come out high):

- devhost's hosting, the Functions host's work in Azure: its threads less the functions they ran;
- the functions and the threads the app starts, split by what the app's own code calls: the storage
  SDKs (table transactions apart), Twilio's SDK, requests, logging and telemetry, sealing, the rest;
  and the app's own code (its functions' self time);
- the stages: each queue message kind's handler and each HTTP trigger, inclusive.
"""

from __future__ import annotations

import argparse
import marshal
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench import dynamics_twilio as flow  # noqa: E402
from bench.harness import machine, run_measured, stopped_with  # noqa: E402

PROFILING_SITE = REPO_ROOT / "bench" / "profiling"
HOSTING_KINDS = ("message", "request", "poller", "http-accept", "timer")
# Profiling slows the app about tenfold: the follow-ups come due later than in the benchmark (12 s) so
# that, as there, they find their jobs final.
PROFILED_RECONCILE_AFTER_MINUTES = 1.5
Function = tuple[str, int, str]
Stats = dict[Function, tuple[int, int, float, float, dict[Function, tuple[int, int, float, float]]]]
# Where a callee's file lies -> what it is counted as, first match wins.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("/devhost/", "devhost"),
    ("/shared/logs.py", "logging and telemetry"),
    ("/shared/telemetry.py", "logging and telemetry"),
    ("/logging/", "logging and telemetry"),
    ("opentelemetry", "logging and telemetry"),
    ("/shared/storage/protect.py", "sealing"),
    ("/cryptography/", "sealing"),
    ("/shared/storage/keepalive.py", "storage SDKs"),
    ("/azure/data/tables/", "storage SDKs"),
    ("/azure/storage/queue/", "storage SDKs"),
    ("/azure/core/", "storage SDKs"),
    ("/azure/identity/", "Entra ID (azure-identity, msal)"),
    ("/msal/", "Entra ID (azure-identity, msal)"),
    ("/twilio/", "Twilio's SDK"),
    ("/requests/", "requests and urllib3 (Twilio, Dynamics)"),
    ("/urllib3/", "requests and urllib3 (Twilio, Dynamics)"),
    ("/phonenumbers/", "phonenumbers"),
    ("/azure/functions/", "azure.functions"),
)
TRANSACTION = "storage SDKs: table transactions"
# The pipeline's stages; every public function of shared/triggers/ but the wrappers is listed too.
STAGES = ("process_business_event", "deliver_notification", "run_followup", "apply_status", "consume_storage")
WRAPPERS = ("budget.py", "edge.py", "responses.py")


def category(filename: str) -> str:
    """What code in ``filename`` is counted as; "app" for the app's own modules."""
    for part, name in CATEGORIES:
        if part in filename:
            return name
    if "/site-packages/" not in filename and filename.startswith(str(REPO_ROOT)):
        return "app"
    return "other libraries, the standard library, imports"


def load(prefix: Path, kind: str) -> Stats:
    path = Path(f"{prefix}.{kind.replace(' ', '-')}.prof")
    if not path.exists():
        return {}
    with path.open("rb") as source:
        return marshal.load(source)  # written by this benchmark's own app process


def thread_cpu(prefix: Path) -> dict[str, tuple[int, float]]:
    found = {}
    for line in Path(f"{prefix}.threads").read_text(encoding="utf-8").splitlines():
        kind, count, seconds = line.split("\t")
        found[kind] = (int(count), float(seconds))
    return found


def is_app_function(function: Function) -> bool:
    return category(function[0]) in ("app", "logging and telemetry") and "/devhost/" not in function[0]


def functions_run_by_devhost(stats: Stats) -> float:
    """CPU of the app's functions called by devhost's invoke, in the threads devhost runs them in."""
    total = 0.0
    for function, (_, _, _, _, callers) in stats.items():
        if not is_app_function(function) or function[2] in ("info", "exception", "debug", "warning"):
            continue
        for caller, edge in callers.items():
            if caller[2] == "invoke" and caller[0].endswith("devhost/functions.py"):
                total += edge[3]
    return total


def trampolines(stats: Stats) -> set[Function]:
    """Library code the app's code runs through (a context's run, an import): its callees are split instead."""
    return {caller for function, (*_, callers) in stats.items() if category(function[0]) == "app"
            for caller in callers if category(caller[0]) != "app"}


def app_split(stats: Stats) -> dict[str, float]:
    """The app's own code (self time) and what it calls, by category (inclusive)."""
    split: dict[str, float] = defaultdict(float)
    passing = trampolines(stats)
    for function, (_, _, tt, _, callers) in stats.items():
        kind = category(function[0])
        if kind == "app":
            split["the app's own code"] += tt
            continue
        if function in passing:
            continue
        for caller, edge in callers.items():
            if category(caller[0]) == "app":
                is_transaction = function[2] == "submit_transaction" or (
                    function[2] == "wrapper_use_tracer" and caller[2] in ("_update_with_step", "write_all"))
                split[TRANSACTION if is_transaction else kind] += edge[3]
    return split


def pool_split(stats: Stats) -> dict[str, float]:
    """Threads the app starts without its code on top: azure-core's thread pool of a table transaction."""
    own = app_split(stats)
    total = sum(tt for _, _, tt, _, _ in stats.values())
    rest = total - sum(own.values())
    return {**own, "threads' own machinery (thread pools, HTTP workers)": rest}


def stages(stats_by_kind: Iterable[Stats]) -> dict[str, float]:
    """Each queue message kind's handler, the callback applied inline, and each HTTP trigger, inclusive."""
    found: dict[str, float] = defaultdict(float)
    for stats in stats_by_kind:
        for function, (_, _, _, _, callers) in stats.items():
            path, name = function[0], function[2]
            is_stage = name in STAGES or (
                "/shared/triggers/" in path and name.isidentifier() and not name.startswith("_")
                and Path(path).name not in WRAPPERS)
            if not is_stage:
                continue
            # Once per call: the edges from callers outside the function itself (recursion apart).
            outside = sum(edge[3] for caller, edge in callers.items() if caller != function)
            found[f"{name} ({Path(path).name})"] += outside
    return found


def print_report(prefix: Path, sms: int, app_cpu: float) -> None:
    threads = thread_cpu(prefix)
    kinds = sorted({*threads, "main"})
    stats = {kind: load(prefix, kind) for kind in kinds}
    profiled = {kind: sum(tt for _, _, tt, _, _ in stats[kind].values()) for kind in kinds}
    total = sum(profiled.values())
    # The main thread imports the app and waits: start-up, before the measured window.
    start_up = profiled.pop("main", 0.0)
    total -= start_up
    run_by_devhost = {kind: functions_run_by_devhost(stats[kind]) for kind in profiled if kind in HOSTING_KINDS}
    hosting = sum(profiled[kind] - run_by_devhost[kind] for kind in run_by_devhost)
    split: dict[str, float] = defaultdict(float)
    for kind in profiled:
        parts = app_split(stats[kind]) if kind in HOSTING_KINDS else pool_split(stats[kind])
        for name, seconds in parts.items():
            split[name] += seconds

    def line(name: str, seconds: float) -> str:
        return f"  {name:<58} {seconds:7.2f} s {seconds / total:6.1%}   {seconds / sms * 1000:7.2f} ms per SMS"

    print(f"profile: {total:.1f} s of CPU profiled in the app process's threads for {sms} SMS, start-up apart "
          f"({start_up:.1f} s in the main thread); {app_cpu:.1f} s by /proc in the window, profiling included; "
          "threads: " + ", ".join(f"{kind} {n} ({s:.1f} s)" for kind, (n, s) in threads.items()))
    print(line("devhost's hosting (threads less the functions they ran)", hosting))
    print(line("the functions and the app's own threads", total - hosting))
    for name, seconds in sorted(split.items(), key=lambda item: -item[1]):
        if seconds / total >= 0.001:
            print("  " + line(name, seconds))
    print("  stages, inclusive:")
    for name, seconds in sorted(stages(stats.values()).items(), key=lambda item: -item[1]):
        if seconds / total >= 0.001:
            print("  " + line(name, seconds))


def measure(args: argparse.Namespace, started_here: ExitStack) -> None:
    folder = Path(started_here.enter_context(tempfile.TemporaryDirectory(prefix="bench-profile-")))
    prefix = (args.keep or folder) / "profile"
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    # The app process inherits these: the profiler loads at its start-up.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROFILING_SITE), os.environ.get("PYTHONPATH")]))
    os.environ["APP_PROFILE_OUT"] = str(prefix)
    flow.RECONCILE_AFTER_MINUTES = PROFILED_RECONCILE_AFTER_MINUTES
    # The benchmark reads the audit of every SMS after its window: work of this script, not of the flow.
    flow.check_delivered = lambda app, events: len(events)
    azurite = stopped_with(started_here, flow.start_azurite())
    fakes = stopped_with(started_here, flow.start_fakes())
    direct = flow.storage_connection_string(azurite, f"http://127.0.0.1:{azurite.queue_port}",
                                            f"http://127.0.0.1:{azurite.table_port}")
    with flow.running_app(folder / "app", fakes, direct, "b" + uuid.uuid4().hex[:10]) as app:
        flow.full_cycle(app, fakes, azurite, flow.new_events(flow.WARM_UP_EVENTS), args.timeout)
        os.kill(app.process.pid, signal.SIGUSR1)  # the warm-up's requests and messages are left out
        cpu = flow.CpuClock({"app": app.process.pid})
        flow.end_to_end_figure(app, fakes, azurite, args.events, args.concurrency, args.timeout, "[profiled]")
        app_cpu = cpu.used("app")
    deadline = time.monotonic() + 10
    while not Path(f"{prefix}.threads").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    print_report(prefix, args.events, app_cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100, help="events of the profiled run (default 100)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent posting clients (default 50)")
    parser.add_argument("--timeout", type=float, default=180.0, help="longest wait for any one step, s (default 180)")
    parser.add_argument("--keep", type=Path, help="keep the profiles (marshalled pstats, per kind of thread) here")
    parser.add_argument("--report", type=Path, metavar="DIR", help="only print the split of profiles kept in DIR")
    args = parser.parse_args()
    if args.report:
        print_report(args.report / "profile", args.events, float("nan"))
        return 0
    print(f"setup: {machine()}; the app under devhost, profiled per thread")
    return run_measured(lambda started_here: measure(args, started_here))


if __name__ == "__main__":
    sys.exit(main())
