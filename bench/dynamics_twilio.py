"""Figures for the Dynamics -> Twilio flow: the whole app against Azurite and the fake services.

Everything runs on 127.0.0.1 and is started here: an Azurite of its own on free ports, the
fake Entra ID, Dynamics and Twilio (in this process), and the real function_app under
``python -m devhost`` in a subprocess with the shipped ``host.json`` (the one at the repository
root: queues polled at most every 2 s when idle, batchSize 16, newBatchThreshold 8).

In the order printed:

- [storage] Storage and queue operations per delivered SMS. The app's storage goes through
  a counting proxy in front of Azurite's table and queue ports; ``--sms`` SMS go through the
  full cycle (business event, SMS at Twilio, the signed "sent" and "delivered" callbacks
  Twilio sends for a From number) until the job is delivered. ``--trace`` also lists every
  storage request of one SMS.
- [throughput] End-to-end SMS per second of the one app process: ``--events`` distinct invoice
  events posted by ``--concurrency`` clients, timed from the first post until the fake Twilio
  holds them all; then each SMS's "sent" and "delivered" callbacks, and the app's CPU time per
  SMS over the whole cycle (read from /proc, so the fakes and clients in this process are not
  counted), and how much of it devhost spent as the stand-in for the Functions host (measured
  in its own threads; in Azure it is the host's process, not the worker's). Then the business
  events endpoint's answer time: ``--posts`` posts from ``--concurrency`` threads.
- [fast polling] The same end-to-end figures with the end-to-end tests' host.json (queues
  polled every 0.1 s), for comparison; ``--no-fast-polling`` leaves it out.

The throughput figures come from further starts of the app that talk to Azurite directly,
so the proxy costs them nothing. Each app start is warmed up first (tables and queues
created, Entra token fetched, connections open) and the warm-up is not measured. The figures
with a goal are printed beside it (``bench/report.py``); ``--json PATH`` also appends them there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes, the test stack and devhost live in the repository

import requests  # noqa: E402

from bench import report  # noqa: E402
from bench.harness import BenchError, machine, run_measured, stopped_with  # noqa: E402
from bench.storage_proxy import CountingProxy, Key, TraceLine, total, wait_idle  # noqa: E402
from devhost.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite, start_azurite  # noqa: E402
from tests.e2e.conftest import (  # noqa: E402
    FAST_HOST_JSON,
    FUNCTION_KEY,
    MASTER_KEY,
    app_config,
    app_values,
    prepare_dynamics,
)
from tests.e2e.test_dynamics_to_twilio import invoice_event, record_of  # noqa: E402
from tests.fakes.dynamics import FakeDynamics  # noqa: E402
from tests.fakes.entra import FakeEntra  # noqa: E402
from tests.fakes.twilio import FakeTwilio  # noqa: E402
from tests.support.app import LocalApp, local_app  # noqa: E402

T = TypeVar("T")
WARM_UP_EVENTS = 3
DYNAMICS_RETRIES = 3  # Dynamics sends a business event up to 3 more times, 1 s apart
SENDER_RATE = 100.0  # SMS per second of the benchmark's sender: a short code's rate
# When an SMS's reconciliation follow-up comes due: after both callbacks of the counted cycle are applied.
RECONCILE_AFTER_MINUTES = 0.2
# The SMS whose storage operations are counted are posted by this many clients: enough to
# batch queue reads, below the local host's listen backlog (5), which refuses bursts.
STORAGE_POSTERS = 4
BASELINE_POSTS = 20
AMOUNT = 950.0  # at most 10000: the invoice-sms rule fires, not the call rule
CALLBACK_STATUSES = ("sent", "delivered")  # what Twilio calls back for a From-number SMS created "queued"
QUEUES = ("erp-events", "notifications", "callbacks")
SHIPPED_HOST_JSON = REPO_ROOT / "host.json"
SHIPPED_LABEL, FAST_LABEL = "[throughput]", "[fast polling]"
POLLED_QUEUES = 4  # devhost polls every queue-triggered function's queue: poll-jobs too
_phones = itertools.count(1000)
_invoices = itertools.count(1)


@dataclass(frozen=True)
class Event:
    invoice_id: str
    phone: str
    body: dict

    @property
    def record(self) -> str:
        return record_of(self.invoice_id)


def new_events(count: int) -> list[Event]:
    events = []
    for _ in range(count):
        invoice_id, phone = f"INV-BENCH-{next(_invoices):05d}", f"+1415555{next(_phones):04d}"
        events.append(Event(invoice_id, phone, invoice_event(invoice_id, phone, amount=AMOUNT)))
    return events


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Fakes:
    entra: FakeEntra
    dynamics: FakeDynamics
    twilio: FakeTwilio

    def stop(self) -> None:
        for server in (self.twilio, self.dynamics, self.entra):
            server.stop()


def start_fakes() -> Fakes:
    # As the end-to-end stack sets them up: one Entra app, one vendor, one Twilio account.
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    twilio = FakeTwilio().start()
    prepare_dynamics(entra, dynamics)
    return Fakes(entra, dynamics, twilio)


def storage_connection_string(azurite: Azurite, queue_endpoint: str, table_endpoint: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{ACCOUNT_NAME};"
            f"QueueEndpoint={queue_endpoint}/{ACCOUNT_NAME};TableEndpoint={table_endpoint}/{ACCOUNT_NAME};")


class App(LocalApp):
    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the app exited with {self.process.returncode}; its log:\n{tail(self.log_path)}")

    def hosting_cpu(self) -> float:
        """CPU seconds devhost has spent as the Functions host (its HTTP server, polling, settling), measured
        in its own threads less what the functions ran there; in Azure that is the host's process, not the worker's."""
        answer = requests.get(f"{self.base_url}/admin/devhost/cpu", headers={"x-functions-key": MASTER_KEY}, timeout=10)
        answer.raise_for_status()
        return float(answer.json()["hosting_cpu_seconds"])

    def audit(self, record: str) -> dict:
        answer = requests.get(f"{self.base_url}/api/ops/audit", params={"record": record},
                              headers={"x-functions-key": MASTER_KEY}, timeout=10)
        answer.raise_for_status()
        return answer.json()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def shipped_host_json() -> dict[str, Any]:
    """The host.json at the repository root, as deployed."""
    return json.loads(SHIPPED_HOST_JSON.read_text(encoding="utf-8-sig"))


def queue_settings(host_json: dict[str, Any]) -> str:
    queues = host_json.get("extensions", {}).get("queues", {})
    names = ("maxPollingInterval", "visibilityTimeout", "batchSize", "newBatchThreshold")
    return ", ".join(f"{name} {queues[name]}" for name in names if name in queues)


@contextmanager
def running_app(folder: Path, fakes: Fakes, storage: str, table_prefix: str,
                host_json: dict[str, Any] | None = None) -> Iterator[App]:
    """The app under devhost, as the end-to-end stack starts it, with ``storage`` as AzureWebJobsStorage.

    ``host_json`` None: the shipped host.json, as deployed.
    """
    creds = fakes.twilio.add_test_account()
    config = app_config(fakes.dynamics, fakes.entra, fakes.twilio, creds)
    # Business events only: a scheduled poll firing inside a measured window would blur the counts.
    config["connections"]["contoso-fo"].pop("poll", None)
    # The throughput measured is the app's, not one long code's (paced at 1 SMS/s by default): the
    # sender is given a short code's rate, so pacing never holds the burst back.
    config["connections"]["twilio-main"]["sends_per_second"] = SENDER_RATE
    # Each SMS sent schedules its reconciliation follow-up (30 minutes later by default): here it comes
    # due within the run, so what it costs is counted with the rest.
    config["connections"]["twilio-main"]["reconcile_after_minutes"] = RECONCILE_AFTER_MINUTES
    with local_app(folder, config=config, values=app_values(storage, table_prefix, creds),
                   host_json=shipped_host_json() if host_json is None else host_json) as app:
        yield App(**vars(app))


# --- driving it ----------------------------------------------------------------------------------


def wait_until(app: App, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.check_alive()
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise BenchError(f"{what}: not within {timeout:.0f} s; the app's log ends:\n{tail(app.log_path)}")


@dataclass(frozen=True)
class Post:
    event: Event
    sent_at: float  # time.monotonic() of the first attempt, the clock of the fakes' request log
    seconds: float  # the last attempt's answer time
    status: int  # the last attempt's; 0: no answer
    error: str = ""
    attempts: int = 1


def post_all(app: App, events: Sequence[Event], concurrency: int, retries: int = 0) -> list[Post]:
    """Post each event from ``concurrency`` threads, each with its own session.

    With ``retries``, a post that got no answer or a 5xx is sent again 1 s later, as Dynamics
    does (3 more tries, 1 s apart); the same ControlNumber makes a repeat harmless.
    """
    url = f"{app.base_url}/api/dynamics/events/contoso-fo"
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def attempt(event: Event) -> tuple[float, int, str]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers["x-functions-key"] = FUNCTION_KEY
            with lock:
                sessions.append(session)
        started = time.monotonic()
        try:
            status, error = session.post(url, json=event.body, timeout=30).status_code, ""
        except requests.RequestException as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
        return time.monotonic() - started, status, error

    def post(event: Event) -> Post:
        first = time.monotonic()
        for tries in range(1, retries + 2):
            seconds, status, error = attempt(event)
            if status == 202 or (status and status < 500) or tries > retries:
                return Post(event, first, seconds, status, error, tries)
            time.sleep(1.0)
        raise AssertionError("unreachable")

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(post, events))
    finally:
        for session in sessions:
            session.close()


def sms_requests(fakes: Fakes, phones: set[str]) -> dict[str, float]:
    """Phone number -> when the fake Twilio received the request that created its SMS."""
    created = {}
    for request in fakes.twilio.requests_to("POST /2010-04-01/Accounts/"):
        to = request.form_value("To")
        if request.path.endswith("/Messages.json") and not request.scripted and to in phones:
            created.setdefault(to, request.at)
    return created


def messages_for(fakes: Fakes, events: Sequence[Event]) -> dict[str, str]:
    """Phone number -> MessageSid, for the events whose SMS the fake Twilio holds."""
    phones = {event.phone for event in events}
    return {message.to: message.sid for message in fakes.twilio.messages() if message.to in phones}


def send_callbacks(fakes: Fakes, sids: Sequence[str], statuses: Sequence[str] = CALLBACK_STATUSES) -> None:
    """Each message's status callbacks, signed by the fake Twilio, one status after the other."""
    for status in statuses:
        for sid in sids:
            answer = fakes.twilio.advance_message(sid, status)
            if answer is None or answer.status_code != 204:
                code = None if answer is None else answer.status_code
                raise BenchError(f"the status callback {status} for {sid} was answered {code}")


def delivered(app: App, event: Event) -> bool:
    return any(contact["status"] == "delivered" for contact in app.audit(event.record)["contacts"])


def require_accepted(posts: Sequence[Post]) -> None:
    if any(post.status != 202 for post in posts):
        raise BenchError(f"business events not accepted: {failures(posts)}")


def full_cycle(app: App, fakes: Fakes, azurite: Azurite, events: Sequence[Event], timeout: float) -> None:
    """Events in, SMS out, callbacks back, until the audit shows every SMS delivered and every queue is
    empty (the SMS's reconciliation follow-ups came due and were settled)."""
    require_accepted(post_all(app, events, min(len(events), STORAGE_POSTERS), DYNAMICS_RETRIES))
    sids = wait_until(app, lambda: (found := messages_for(fakes, events)) and len(found) == len(events) and found,
                      timeout, f"{len(events)} SMS at the fake Twilio")
    send_callbacks(fakes, list(sids.values()))
    for event in events:
        wait_until(app, lambda event=event: delivered(app, event), timeout, f"{event.record} delivered")
    wait_until(app, lambda: all(queued(azurite, queue) == 0 for queue in QUEUES), timeout, "every queue drained")


# --- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))  # round: 0.99 * 500 is 495.00000000000006
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def per(count: float, sms: int) -> str:
    return f"{count / sms:.2f}"


TABLE_ORDER = ("insert", "upsert", "update", "read", "query", "delete", "batch", "other")
QUEUE_ORDER = ("put", "get", "delete", "update", "peek", "other")


def summary(counts: Counter[Key], service: str, order: Sequence[str], sms: int) -> str:
    parts = [f"{per(total(counts, service, kinds=[kind]), sms)} {kind}" for kind in order
             if total(counts, service, kinds=[kind])]
    return ", ".join(parts) or "none"


def breakdown(counts: Counter[Key], sms: int) -> list[str]:
    """One line per (service, table or queue, kind, status), per SMS; empty polls left out."""
    rows = [(key, n) for key, n in counts.items() if key.kind != "poll"]
    lines = []
    for key, n in sorted(rows, key=lambda row: (row[0].service, row[0].resource, row[0].kind, row[0].status)):
        status = "" if 200 <= key.status < 300 else f"  (answered {key.status})"
        lines.append(f"      {key.service:<5} {key.resource or '-':<14} {key.kind:<7} {per(n, sms):>6}{status}")
    return lines


def counted_cycle(app: App, fakes: Fakes, proxies: Sequence[CountingProxy], events: Sequence[Event],
                  timeout: float) -> tuple[Counter[Key], Counter[Key], Counter[Key]]:
    """The full cycle of ``events``, told apart by what the proxies see: no audit reads inside it.

    Returns the counts at the end of each stage: after every notification was settled
    (SMS sent, job updated, message deleted), after every callback was, and after every
    SMS's reconciliation follow-up came due and was settled.
    """
    queue_proxy, table_proxy = proxies

    def snapshot() -> Counter[Key]:
        return queue_proxy.snapshot() + table_proxy.snapshot()

    def deletes(queue: str) -> int:
        return total(queue_proxy.snapshot(), "queue", queue, kinds=["delete"])

    def puts(queue: str) -> int:
        return total(queue_proxy.snapshot(), "queue", queue, kinds=["put"])

    count = len(events)
    before = {queue: deletes(queue) for queue in QUEUES}
    puts_before = puts("notifications")

    def notifications_settled(but: int) -> bool:
        """Every message put on notifications since the start is deleted (taken, or cancelled), ``but`` apart:
        whether an SMS went through that queue or was sent by the stage that routed it."""
        return deletes("notifications") - before["notifications"] >= puts("notifications") - puts_before - but
    require_accepted(post_all(app, events, min(count, STORAGE_POSTERS), DYNAMICS_RETRIES))
    sids = wait_until(app, lambda: (found := messages_for(fakes, events)) and len(found) == count and found,
                      timeout, f"{count} SMS at the fake Twilio")
    # Each SMS leaves its reconciliation follow-up on the queue, not yet due.
    wait_until(app, lambda: deletes("erp-events") - before["erp-events"] >= count and notifications_settled(count),
               timeout, "every notification settled")
    wait_idle(proxies, quiet=0.5, timeout=timeout)
    stage_one = snapshot()
    # Twilio reports "delivered" seconds after "sent", so each status is handled before the next
    # is sent; back to back, both land in one queue batch and race for the job's ETag.
    def settled(sent: int) -> bool:
        # A callback that names its job is applied in the webhook (one job update), one that could
        # not be is queued: each has updated its job, and nothing is left on the callbacks queue.
        counts = snapshot()

        def since_stage_one(service: str, resource: str, kind: str) -> int:
            return total(counts, service, resource, kinds=[kind]) - total(stage_one, service, resource, kinds=[kind])

        queued = since_stage_one("queue", "callbacks", "put")
        # A status step is written with its job's update in one transaction (a batch, of no one table).
        updated = since_stage_one("table", "jobs", "update") + since_stage_one("table", "", "batch")
        return updated >= count * sent and deletes("callbacks") - before["callbacks"] >= queued

    for sent, status in enumerate(CALLBACK_STATUSES, start=1):
        send_callbacks(fakes, list(sids.values()), [status])
        wait_until(app, lambda sent=sent: settled(sent), timeout, f"every {status} callback settled")
    wait_idle(proxies, quiet=0.5, timeout=timeout)
    stage_two = snapshot()
    wait_until(app, lambda: notifications_settled(0), timeout, "every reconciliation follow-up settled")
    wait_idle(proxies, quiet=0.5, timeout=timeout)
    return stage_one, stage_two, snapshot()


def check_delivered(app: App, events: Sequence[Event]) -> int:
    # Read after a counted window: the audit reads are this script's, not the app's work.
    done = sum(delivered(app, event) for event in events)
    if done != len(events):
        raise BenchError(f"only {done} of {len(events)} SMS show delivered in the audit")
    return done


def storage_figure(app: App, fakes: Fakes, proxies: Sequence[CountingProxy], sms: int, timeout: float,
                   trace: bool) -> None:
    queue_proxy, table_proxy = proxies
    warm = queue_proxy.snapshot() + table_proxy.snapshot()
    refused = total(Counter({k: n for k, n in warm.items() if k.status == 403}))
    errors = queue_proxy.upstream_errors + table_proxy.upstream_errors
    print(f"storage proxy check: the warm-up sent {total(warm, 'table')} table and {total(warm, 'queue')} queue "
          f"requests through the proxy, signed for {ACCOUNT_NAME}: {refused} refused (403), {errors} upstream errors")
    if refused or errors or not total(warm, "table", kinds=["insert"]):
        raise BenchError("storage requests do not pass through the proxy; the figures would be wrong")

    for proxy in proxies:
        proxy.reset()
    events = new_events(sms)
    started = time.monotonic()
    stage_one, callbacks_done, both = counted_cycle(app, fakes, proxies, events, timeout)
    window = time.monotonic() - started
    stage_two, stage_three = callbacks_done - stage_one, both - callbacks_done
    received = queue_proxy.messages_received()
    done = check_delivered(app, events)

    polls = total(both, "queue", kinds=["poll"])
    gets = total(both, "queue", kinds=["get"])
    print(f"storage per delivered SMS: {per(total(both, 'table'), sms)} table operations "
          f"({summary(both, 'table', TABLE_ORDER, sms)})")
    print(f"storage per delivered SMS: {per(total(both, 'queue', exclude=['poll']), sms)} queue operations "
          f"without the host's empty polls ({summary(both, 'queue', QUEUE_ORDER, sms)}); "
          f"{sum(received.values()) / max(gets, 1):.2f} messages per non-empty get")
    print(f"storage host polling (not counted above): {polls} empty gets of {POLLED_QUEUES} queues in the "
          f"{window:.1f} s window = {polls / window:.0f}/s, {per(polls, sms)} per SMS at this pace "
          "(set by maxPollingInterval and the window's length, not by the app)")
    print(f"storage checked: {done}/{sms} SMS delivered in the audit (read after the counted window)")
    report.record("ops_per_sms", total(both, exclude=["poll"]) / sms,
                  f"{total(both, 'table') / sms:.1f} table + {total(both, 'queue', exclude=['poll']) / sms:.1f} queue, "
                  "empty polls apart")
    for title, counts in (("event post -> SMS at Twilio (ingest, erp-events, notifications)", stage_one),
                          (f"callbacks {' + '.join(CALLBACK_STATUSES)} -> job delivered (callbacks)", stage_two),
                          ("its reconciliation follow-up, due once the job is final (notifications)", stage_three)):
        print(f"  per SMS, {title}: {per(total(counts, 'table'), sms)} table, "
              f"{per(total(counts, 'queue', exclude=['poll']), sms)} queue operations")
        for line in breakdown(counts, sms):
            print(line)
    if trace:
        print_trace(app, fakes, proxies, timeout)


def print_trace(app: App, fakes: Fakes, proxies: Sequence[CountingProxy], timeout: float) -> None:
    """Every storage request of one more SMS, in order (empty polls left out)."""
    events = new_events(1)
    for proxy in proxies:
        proxy.start_trace()
    started = time.monotonic()
    try:
        counted_cycle(app, fakes, proxies, events, timeout)
    finally:
        lines: list[TraceLine] = sorted((line for proxy in proxies for line in proxy.stop_trace()),
                                        key=lambda line: line.at)
    check_delivered(app, events)
    print("  trace of one more SMS, every storage request but the empty polls:")
    for line in lines:
        key = line.key
        print(f"    +{(line.at - started) * 1000:7.1f} ms  {key.service:<5} {key.resource or '-':<14} "
              f"{key.kind:<7} {key.status}  {line.method} {line.path}")


def end_to_end_figure(app: App, fakes: Fakes, azurite: Azurite, events_count: int, concurrency: int,
                      timeout: float, label: str) -> None:
    """Events in, SMS out, both callbacks back: the rate, the latency and the app's CPU per SMS."""
    events = new_events(events_count)
    phones = {event.phone for event in events}
    cpu = CpuClock({"app": app.process.pid, "Azurite": azurite.process.pid})
    hosting_before = app.hosting_cpu()
    posts = post_all(app, events, concurrency, DYNAMICS_RETRIES)
    posted = time.monotonic()
    accepted = sum(post.status == 202 for post in posts)
    wait_until(app, lambda: len(sms_requests(fakes, phones)) >= accepted, timeout,
               f"{accepted} SMS at the fake Twilio")
    to_sms = cpu.used("app")
    created = sms_requests(fakes, phones)
    if not created:
        raise BenchError(f"no SMS reached the fake Twilio; posts not accepted: {failures(posts)}")
    first_post = min(post.sent_at for post in posts)
    last_sms = max(created.values())
    rate = len(created) / (last_sms - first_post)
    latencies = [created[post.event.phone] - post.sent_at for post in posts if post.event.phone in created]
    retried = sum(post.attempts > 1 for post in posts)
    print(f"{label} end-to-end: {len(created)}/{events_count} SMS at the fake Twilio {last_sms - first_post:.2f} s "
          f"after the first post = {rate:.1f} SMS/s from one app process")
    print(f"{label} end-to-end posting: {events_count} posts from {concurrency} threads took "
          f"{posted - first_post:.2f} s; {retried} sent again after no answer (as Dynamics retries); "
          f"not accepted: {failures(posts)}")
    print(f"{label} end-to-end latency, first post -> SMS request at Twilio: p50 {ms(percentile(latencies, 0.5))}, "
          f"p99 {ms(percentile(latencies, 0.99))}, max {ms(max(latencies))}")
    sent = [event for event in events if event.phone in created]
    send_callbacks(fakes, list(messages_for(fakes, sent).values()))
    wait_until(app, lambda: all(queued(azurite, queue) == 0 for queue in QUEUES), timeout, "every queue drained")
    cpu_per_sms = cpu.used("app") / len(sent) * 1000
    hosting_per_sms = (app.hosting_cpu() - hosting_before) / len(sent) * 1000
    print(f"{label} end-to-end CPU time, first post -> both callbacks of every SMS applied: {cpu.report()}; "
          f"app {cpu_per_sms:.1f} ms per SMS, of which {to_sms / len(sent) * 1000:.1f} ms up to the SMS at Twilio")
    print(f"{label} end-to-end CPU time of the app process's {cpu_per_sms:.1f} ms per SMS: devhost's hosting "
          f"{hosting_per_sms:.1f} ms (its HTTP server, queue polling and message settling, measured in its threads "
          f"less the functions' own runs: the Functions host's process in Azure), the functions "
          f"{cpu_per_sms - hosting_per_sms:.1f} ms (what a Functions worker would spend)")
    check_delivered(app, sent)  # after the CPU was read: the audit reads are this script's
    record_end_to_end(label, rate, cpu_per_sms, hosting_per_sms)


def record_end_to_end(label: str, rate: float, cpu_per_sms: float, hosting_per_sms: float) -> None:
    if label == SHIPPED_LABEL:
        report.record("cpu_per_sms", cpu_per_sms, "event, SMS, 2 callbacks")
        report.note("SMS per second, one app process", rate, detail="shipped host.json")
        report.note("of the app CPU per SMS, devhost's hosting", hosting_per_sms, " ms", detail="shipped host.json")
    else:
        report.note("app CPU per SMS, end to end", cpu_per_sms, " ms", detail=label.strip("[]"))
        report.note("SMS per second, one app process", rate, detail=label.strip("[]"))
        report.note("of the app CPU per SMS, devhost's hosting", hosting_per_sms, " ms", detail=label.strip("[]"))


def queued(azurite: Azurite, queue: str) -> int:
    """Messages on ``queue``, hidden ones included (exact on Azurite); read here, not by the app."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    with QueueClient.from_connection_string(azurite.connection_string, queue) as client:
        try:
            return client.get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            return 0


def failures(posts: Sequence[Post]) -> str:
    """What went wrong with the posts that got no 202, counted by status or by error."""
    reasons = Counter(_reason(post) for post in posts if post.status != 202)
    return ", ".join(f"{n} x {reason}" for reason, n in reasons.most_common()) or "none"


def _reason(post: Post) -> str:
    if post.status:
        return f"HTTP {post.status}"
    if "reset by peer" in post.error:
        return "connection reset, no answer"
    return post.error.split(":")[0] + ", no answer"


def endpoint_figure(app: App, posts_count: int, concurrency: int) -> None:
    alone = [post.seconds for post in post_all(app, new_events(BASELINE_POSTS), 1) if post.status == 202]
    if alone:
        print(f"endpoint answer time, 1 client, {len(alone)} posts one after the other, the queues busy with "
              "them meanwhile (for comparison): "
              f"p50 {ms(percentile(alone, 0.5))}, max {ms(max(alone))}")
    events = new_events(posts_count)
    started = time.monotonic()
    posts = post_all(app, events, concurrency)
    elapsed = time.monotonic() - started
    answered = [post.seconds for post in posts if post.status]
    accepted = sum(post.status == 202 for post in posts)
    print(f"endpoint: {posts_count} posts from {concurrency} threads in {elapsed:.2f} s "
          f"({posts_count / elapsed:.0f} posts/s), no retries: {accepted} answered 202; other: {failures(posts)}")
    if answered:
        print(f"endpoint answer time, {concurrency} concurrent posts, over the {len(answered)} answered: "
              f"p50 {ms(percentile(answered, 0.5))}, p90 {ms(percentile(answered, 0.9))}, "
              f"p99 {ms(percentile(answered, 0.99))}, max {ms(max(answered))}")


class CpuClock:
    """CPU seconds used since creation by this process and by child processes (Linux /proc)."""

    def __init__(self, children: dict[str, int]) -> None:
        self.children = children
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._now()

    def _now(self) -> dict[str, float | None]:
        times = os.times()
        now: dict[str, float | None] = {"this process (fakes, clients)": times.user + times.system}
        for name, pid in self.children.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                now[name] = (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime
            except (OSError, IndexError, ValueError):
                now[name] = None
        return now

    def used(self, name: str) -> float:
        begin, end = self.start.get(name), self._now().get(name)
        return 0.0 if begin is None or end is None else end - begin

    def report(self) -> str:
        end = self._now()
        parts = [f"{name} {end[name] - begin:.1f} s" for name, begin in self.start.items()
                 if begin is not None and end.get(name) is not None]
        return ", ".join(parts) + f" (of {os.cpu_count()} cores)"


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200, help="events for the end-to-end rate (default 200)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent posting clients (default 50)")
    parser.add_argument("--posts", type=int, default=500, help="posts for the endpoint answer time (default 500)")
    parser.add_argument("--sms", type=int, default=20, help="SMS for the storage operation counts (default 20)")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for any one step, s (default 60)")
    parser.add_argument("--trace", action="store_true", help="also list every storage request of one SMS")
    parser.add_argument("--no-fast-polling", action="store_true",
                        help="leave out the end-to-end figures with the tests' 0.1 s queue polling")
    report.add_json_argument(parser)
    args = parser.parse_args()
    if min(args.events, args.concurrency, args.posts, args.sms) < 1:
        parser.error("--events, --concurrency, --posts and --sms must be at least 1")
    report.write_json_to(args.json)

    print(f"setup: {machine()}, Azurite in memory, "
          f"app under devhost with storage queues and the shipped host.json ({queue_settings(shipped_host_json())})")
    print(f"setup: events {args.events}, concurrency {args.concurrency}, posts {args.posts}, sms {args.sms}; "
          f"each app start warmed up with {WARM_UP_EVENTS} full SMS cycles first (tables and queues created, "
          "Entra token fetched, connections open), not measured")
    return run_measured(lambda started_here: measure(args, started_here))


def measure(args: argparse.Namespace, started_here: ExitStack) -> None:
    azurite = stopped_with(started_here, start_azurite())
    fakes = stopped_with(started_here, start_fakes())
    folder = Path(started_here.enter_context(tempfile.TemporaryDirectory(prefix="bench-dynamics-twilio-")))
    with ExitStack() as counting:
        prefix = "b" + uuid.uuid4().hex[:10]
        proxies = [stopped_with(counting, CountingProxy("queue", azurite.queue_port).start()),
                   stopped_with(counting, CountingProxy("table", azurite.table_port, table_prefix=prefix).start())]
        storage = storage_connection_string(azurite, proxies[0].endpoint, proxies[1].endpoint)
        with running_app(folder / "proxied", fakes, storage, prefix) as app:
            print(f"[storage] app -> counting proxy -> Azurite; {args.sms} SMS posted by {STORAGE_POSTERS} "
                  f"clients: event post -> SMS -> callbacks {', then '.join(CALLBACK_STATUSES)}, each status "
                  "handled before the next is sent -> delivered")
            full_cycle(app, fakes, azurite, new_events(WARM_UP_EVENTS), args.timeout)
            wait_idle(proxies, quiet=0.5, timeout=args.timeout)
            storage_figure(app, fakes, proxies, args.sms, args.timeout, args.trace)

    direct = storage_connection_string(azurite, f"http://127.0.0.1:{azurite.queue_port}",
                                       f"http://127.0.0.1:{azurite.table_port}")
    with running_app(folder / "direct", fakes, direct, "b" + uuid.uuid4().hex[:10]) as app:
        print("[throughput] app -> Azurite directly, shipped host.json")
        full_cycle(app, fakes, azurite, new_events(WARM_UP_EVENTS), args.timeout)
        end_to_end_figure(app, fakes, azurite, args.events, args.concurrency, args.timeout, SHIPPED_LABEL)
        endpoint_figure(app, args.posts, args.concurrency)
    if not args.no_fast_polling:
        with running_app(folder / "fast", fakes, direct, "b" + uuid.uuid4().hex[:10], FAST_HOST_JSON) as app:
            print(f"{FAST_LABEL} app -> Azurite directly, the end-to-end tests' host.json "
                  f"({queue_settings(FAST_HOST_JSON)}), for comparison only")
            full_cycle(app, fakes, azurite, new_events(WARM_UP_EVENTS), args.timeout)
            end_to_end_figure(app, fakes, azurite, args.events, args.concurrency, args.timeout, FAST_LABEL)


if __name__ == "__main__":
    sys.exit(main())
