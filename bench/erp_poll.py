"""Figures for one poll of many changed records, per polled ERP: records per second, peak memory, enqueueing.

For SYSPRO (``ApInvoice``, by ``TimeStamp``), Sage X3 (``PINVOICE`` over REST, by
``UPDDATTIM``) and QAD (``GoodsReceipts``, by ``tr_trnbr``): the real adapter and the real
poll framework (``poll_entity``, with the adapter's own source and a watermark in an Azurite
of its own) read ``--records`` (100,000) changed records that the ERP's fake makes on demand
from their index. Counter cursors get a first poll that only finds where the ERP stands; the
Sage X3 watermark is set just before its records, as the previous poll would have left it.
Every measurement uses a fresh fake and a new connection.

Printed per ERP: the timed poll (records, pages read, page size, seconds, records per second),
then the poll's peak Python memory (tracemalloc, the poll only) at a tenth of the records and
at all of them: close figures show that memory does not grow with the number of records.
Then the enqueue: a poll of ``--enqueue-records`` (1,100) changes onto the real ``erp-events``
queue in Azurite through the app's storage-queue bus, each page sent with one ``send_many``
(concurrent puts), beside the same poll with each change put on its own, one after another (as
polls enqueued before batches). The two are run in turn, ``--rounds`` times each, and the median
of each is printed with changes per second and the goal (1,100 changes enqueued in 5 s or less).
Every message is counted on the queue, and the queue is emptied after each round.

What the figures include and leave out:

- In the read-side figures changes are counted, not sent: no queue is written, so they are the
  read side (pages, cleaning, supplier look-ups, change keys). The watermark is read and written
  in Azurite once per poll. The enqueue figures are the whole poll, reads and puts.
- Payloads are sealed before they are queued, as in the app, under a test-only key.
- The SYSPRO and QAD fakes run in this process: their own time (answering, making the rows)
  is part of the seconds, and their allocations part of the peak. They hold nothing per row;
  the QAD fake keeps its request log (about 2 kB a page).
- A QAD poll cycle keeps two caches (PO lines received, suppliers) of at most
  ``qad.CYCLE_CACHE_LIMIT`` (20,000) entries each: its peak rises until they are full, then stays.
- The Sage X3 fake runs in a process of its own (``python -m tests.fakes.sagex3``) because it
  keeps the sorted list of the rows a query matches, which would count as the poll's memory;
  each page still waits for its answer, so its time is part of the seconds.
- Loopback HTTP: no network latency. tracemalloc sees Python allocations only.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes and devhost live in the repository

from bench import report as goals  # noqa: E402
from devhost.azurite import start_azurite  # noqa: E402
from shared.config.loading import config_from_dict  # noqa: E402
from shared.erp.polling import Page, PageRequest, PolledEntity, Source  # noqa: E402
from shared.erp.qad import adapter as qad  # noqa: E402
from shared.erp.qad.client import QadClient  # noqa: E402
from shared.erp.qad.connection import QadConnection  # noqa: E402
from shared.erp.sagex3 import adapter as sagex3  # noqa: E402
from shared.erp.sagex3.client import SageX3Api  # noqa: E402
from shared.erp.sagex3.connection import SageX3Connection  # noqa: E402
from shared.erp.syspro import adapter as syspro  # noqa: E402
from shared.erp.syspro.connection import SysproConnection  # noqa: E402
from shared.http import HttpClient  # noqa: E402
from shared.model import ERP_EVENTS, Envelope  # noqa: E402
from shared.pipeline.poll import poll_entity  # noqa: E402
from shared.settings import StorageSettings  # noqa: E402
from shared.storage.bus import MessageBus, StorageQueueBus  # noqa: E402
from shared.storage.secrets import EnvSecretProvider  # noqa: E402
from shared.storage.tables import Stores  # noqa: E402
from tests.fakes.qad import DEFAULT_PASSWORD as QAD_PASSWORD  # noqa: E402
from tests.fakes.qad import DEFAULT_USER as QAD_USER  # noqa: E402
from tests.fakes.qad import FakeQad  # noqa: E402
from tests.fakes.syspro import FakeSyspro  # noqa: E402
from tests.support.app import TEST_DATA_PROTECTION_KEY  # noqa: E402

os.environ.setdefault("DATA_PROTECTION_KEY", TEST_DATA_PROTECTION_KEY)  # payloads are sealed as in the app

SYSPRO_PASSWORD = "syspro-bench-password"
X3_USER, X3_PASSWORD = "admin", "x3-password"  # what ``python -m tests.fakes.sagex3`` accepts
X3_ROWS_PER_SECOND = 100  # records sharing each UPDDATTIM second, as a mass update writes them
ENQUEUE_GOAL_RECORDS, ENQUEUE_GOAL_SECONDS = 1_100, goals.BY_KEY["poll_enqueue"].limit
SECRETS = EnvSecretProvider(env={"syspro-bench": SYSPRO_PASSWORD, "x3-bench": X3_PASSWORD,
                                 "qad-bench": QAD_PASSWORD})


class CountingBus:
    """Counts the changes a poll would enqueue, keeping none of them."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        self.count += 1

    def send_many(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        self.count += len(envelopes)

    def dead_letter(self, queue: str, body: object, reason: str) -> None:
        raise RuntimeError(reason)

    def close(self) -> None:
        pass


class OneAtATime:
    """The storage-queue bus as polls used it before batches: each change put on its own, in turn."""

    def __init__(self, bus: StorageQueueBus) -> None:
        self.bus = bus

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        self.bus.send(queue, envelope, delay_seconds)

    def send_many(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.bus.send(queue, envelope)

    def dead_letter(self, queue: str, body: object, reason: str) -> None:
        raise RuntimeError(reason)

    def close(self) -> None:
        pass


class PageCounter:
    """Counts the pages the framework reads through an entity."""

    def __init__(self) -> None:
        self.pages = 0

    def entity(self, entity: PolledEntity, page_size: int | None) -> PolledEntity:
        read = entity.read

        def counted(client: Any, polled: PolledEntity, request: PageRequest) -> Page:
            self.pages += 1
            return read(client, polled, request)

        return replace(entity, page_size=page_size or entity.page_size, read=counted)


@dataclass
class Target:
    """A connection whose fake holds the records to poll, its watermark standing just before them."""

    connection: SysproConnection | SageX3Connection | QadConnection
    entity: PolledEntity
    open_source: Callable[[], Source]
    close: Callable[[], None]


def poll_once(target: Target, stores: Stores, bus: MessageBus | CountingBus | OneAtATime) -> None:
    source = target.open_source()
    try:
        poll_entity(target.connection, target.connection.poll, source, target.entity, stores, bus)
    finally:
        source.close()


@contextmanager
def closed_on_failure(target: Target) -> Iterator[None]:
    try:
        yield
    except BaseException:
        target.close()
        raise


def connection(name: str, body: dict[str, Any]) -> Any:
    return config_from_dict({"connections": {name: body}}).connections[name]


def bench_name(erp: str) -> str:
    return f"{erp}-bench-{uuid.uuid4().hex[:6]}"


# --- one set-up per ERP ---------------------------------------------------------------------------


def syspro_target(stores: Stores, records: int, page_size: int | None, pages: PageCounter) -> Target:
    fake = FakeSyspro().start()
    fake.keep_log = False  # its request log would count as the poll's memory
    fake.add_operator("ADMIN", SYSPRO_PASSWORD)
    fake.add_company("EDU1")
    fake.add_supplier("S1", "Acme Supplies", "(415) 555-0123")
    fake.add_invoice("S1", "OLD-1", "1.00")  # the history the first poll finds
    conn = connection(bench_name("syspro"), {
        "kind": "syspro", "base_url": fake.rest_url, "operator": "ADMIN", "password": {"secret": "syspro-bench"},
        "company_id": "EDU1", "poll": {"entities": ["ApInvoice"]}})
    http = HttpClient()

    def close() -> None:
        http.close()
        fake.stop()

    target = Target(conn, pages.entity(syspro.ENTITIES["ApInvoice"], page_size),
                    lambda: syspro.open_source(conn, secrets=SECRETS, http=http), close)
    with closed_on_failure(target):
        poll_once(target, stores, CountingBus())  # the first poll only finds where SYSPRO stands
        fake.add_synthetic_invoices(records, supplier="S1")
    return target


def sagex3_target(stores: Stores, records: int, page_size: int | None, pages: PageCounter) -> Target:
    watermark = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    fake, base_url = start_sagex3_fake(records, first_stamp=watermark + timedelta(seconds=1))
    conn = connection(bench_name("sagex3"), {
        "kind": "sagex3", "base_url": base_url, "folder": "SEED", "username": X3_USER,
        "password": {"secret": "x3-bench"}, "poll": {"entities": ["PINVOICE"]}})
    api = SageX3Api(conn, SECRETS)
    entity = pages.entity(sagex3.ENTITIES["PINVOICE"], page_size)

    def close() -> None:
        api.close()
        fake.stdin.close()  # type: ignore[union-attr]  # the fake stops when its input closes
        fake.wait(timeout=10)

    target = Target(conn, entity, lambda: Source(sagex3.SageX3Session(api, conn), {entity.name: entity}), close)
    with closed_on_failure(target):
        stores.watermarks.advance(conn.name, entity.name, watermark)  # as the previous poll left it
    return target


def start_sagex3_fake(records: int, first_stamp: datetime) -> tuple[subprocess.Popen[str], str]:
    """The fake Sage X3 in a process of its own, ``records`` invoices stamped from ``first_stamp``; its URL."""
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.sagex3", "--table", "PINVOICE", "--rows", str(records),
         "--start", first_stamp.isoformat(), "--per-second", str(X3_ROWS_PER_SECOND)],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    base_url = fake.stdout.readline().strip() if fake.stdout else ""
    if not base_url:
        fake.kill()
        fake.wait(timeout=10)
        raise RuntimeError(f"the fake Sage X3 did not start (exit status {fake.returncode})")
    return fake, base_url


def qad_target(stores: Stores, records: int, page_size: int | None, pages: PageCounter) -> Target:
    fake = FakeQad().start()
    suppliers = tuple(f"S-{n}" for n in range(50))
    for n, code in enumerate(suppliers):
        fake.add_supplier(code, f"Supplier {n}", f"+1415555{n:04d}")
    fake.add_receipt("PO-BASE", 1, "P", 1, supplier="S-1")  # the history the first poll finds
    conn = connection(bench_name("qad"), {
        "kind": "qad", "base_url": fake.tenant_url, "domain": "10USA", "username": QAD_USER,
        "password": {"secret": "qad-bench"}, "poll": {"entities": [qad.RECEIPTS_ENTITY]}})
    client = QadClient(conn, SECRETS)
    entity = pages.entity(replace(qad.ENTITIES[qad.RECEIPTS_ENTITY], page_size=conn.page_size), page_size)

    def open_source() -> Source:
        cycle = qad.QadCycle(client)
        return Source(cycle, {entity.name: entity}, close=cycle.close)

    def close() -> None:
        client.close()
        fake.stop()

    target = Target(conn, entity, open_source, close)
    with closed_on_failure(target):
        poll_once(target, stores, CountingBus())  # the first poll only finds where QAD stands
        fake.fill_receipts(records, suppliers=suppliers)
    return target


SetUp = Callable[[Stores, int, int | None, PageCounter], Target]
ERPS: dict[str, tuple[str, SetUp]] = {
    "syspro": ("ApInvoice", syspro_target),
    "sagex3": ("PINVOICE", sagex3_target),
    "qad": (qad.RECEIPTS_ENTITY, qad_target),
}


# --- measuring --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    records: int
    pages: int
    page_size: int
    seconds: float
    peak: int  # bytes; 0 when not traced


def measure(set_up: SetUp, stores: Stores, records: int, page_size: int | None, *, trace: bool) -> Figures:
    """Poll ``records`` changed records once; time it, or (``trace``) take its peak Python memory."""
    pages = PageCounter()
    target = set_up(stores, records, page_size, pages)
    bus = CountingBus()
    try:
        pages.pages = 0
        gc.collect()
        if trace:
            tracemalloc.start()
        try:
            started = time.perf_counter()
            poll_once(target, stores, bus)
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] if trace else 0
        finally:
            if trace:
                tracemalloc.stop()
    finally:
        target.close()
    if bus.count != records:
        raise RuntimeError(f"{target.connection.name}: {bus.count:,} changes counted for {records:,} records")
    return Figures(records, pages.pages, target.entity.page_size, seconds, peak)


def enqueue_seconds(set_up: SetUp, stores: Stores, bus: StorageQueueBus | OneAtATime, records: int,
                    page_size: int | None) -> float:
    """One poll of ``records`` changes onto erp-events in Azurite, timed; every one counted on the queue."""
    queue = (bus.bus if isinstance(bus, OneAtATime) else bus)._queue(ERP_EVENTS)
    queue.clear_messages()
    target = set_up(stores, records, page_size, PageCounter())
    try:
        gc.collect()
        started = time.perf_counter()
        poll_once(target, stores, bus)
        seconds = time.perf_counter() - started
    finally:
        target.close()
    enqueued = queue.get_queue_properties().approximate_message_count  # exact on Azurite
    queue.clear_messages()
    if enqueued != records:
        raise RuntimeError(f"{target.connection.name}: {enqueued:,} changes on the queue for {records:,} records")
    return seconds


def timed_round(erp: str, run: Callable[[], float]) -> float:
    """One round's seconds; a round in which Azurite, busy on this shared machine, let a send outlast the
    app's read timeout is run once more, and the line says so (the app itself would poll again)."""
    from azure.core.exceptions import ServiceResponseError

    try:
        return run()
    except ServiceResponseError as exc:
        print(f"[{erp}] a round ran again: a send outlasted the app's read timeout ({type(exc).__name__})",
              flush=True)
        return run()


def report_enqueue(erp: str, entity: str, set_up: SetUp, stores: Stores, bus: StorageQueueBus, records: int,
                   page_size: int | None, rounds: int) -> None:
    batched: list[float] = []
    one_by_one: list[float] = []
    for _ in range(rounds):  # in turn, so both see the same load on a shared machine
        one_by_one.append(timed_round(erp, lambda: enqueue_seconds(set_up, stores, OneAtATime(bus), records,
                                                                   page_size)))
        batched.append(timed_round(erp, lambda: enqueue_seconds(set_up, stores, bus, records, page_size)))
    for how, seconds in (("a page per send_many", statistics.median(batched)),
                         ("one put at a time (before)", statistics.median(one_by_one))):
        scaled = seconds * ENQUEUE_GOAL_RECORDS / records
        print(f"[{erp}] {entity}: enqueue, {how}: {records:,} changes in {seconds:.2f} s, "
              f"{records / seconds:,.0f} changes/s; {ENQUEUE_GOAL_RECORDS:,} changes in {scaled:.2f} s "
              f"(goal <= {ENQUEUE_GOAL_SECONDS:.0f} s; median of {rounds})", flush=True)
    goals.record("poll_enqueue", statistics.median(batched) * ENQUEUE_GOAL_RECORDS / records,
                  f"{erp} {entity}, median of {rounds}")


def report(erp: str, entity: str, set_up: SetUp, stores: Stores, records: int, page_size: int | None) -> None:
    timed = measure(set_up, stores, records, page_size, trace=False)
    print(f"[{erp}] {entity}: one poll of {timed.records:,} changed records in {timed.pages:,} pages of "
          f"{timed.page_size:,}: {timed.seconds:.1f} s, {timed.records / timed.seconds:,.0f} records/s", flush=True)
    small = measure(set_up, stores, max(records // 10, 1), page_size, trace=True)
    large = measure(set_up, stores, records, page_size, trace=True)
    print(f"[{erp}] {entity}: peak Python memory of the poll (tracemalloc): {small.records:,} records "
          f"{small.peak / 1e6:.1f} MB, {large.records:,} records {large.peak / 1e6:.1f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000,
                        help="changed records per poll (default 100000); 0 leaves the read-side figures out")
    parser.add_argument("--erp", action="append", choices=tuple(ERPS),
                        help="an ERP to measure; repeatable (default: all)")
    parser.add_argument("--page-size", type=int, default=None,
                        help="rows per page (default: each adapter's own)")
    parser.add_argument("--enqueue-records", type=int, default=ENQUEUE_GOAL_RECORDS,
                        help=f"changes per enqueue poll (default {ENQUEUE_GOAL_RECORDS}); 0 leaves the enqueue out")
    parser.add_argument("--rounds", type=int, default=3, help="enqueue polls of each kind, in turn (default 3)")
    goals.add_json_argument(parser)
    args = parser.parse_args()
    goals.write_json_to(args.json)
    azurite = start_azurite()
    settings = StorageSettings(azurite.connection_string, None, None, None)
    stores = Stores.open(settings, "b" + uuid.uuid4().hex[:10])
    bus = StorageQueueBus(settings)
    try:
        for erp in args.erp or list(ERPS):
            entity, set_up = ERPS[erp]
            if args.records > 0:
                report(erp, entity, set_up, stores, args.records, args.page_size)
            if args.enqueue_records > 0:
                report_enqueue(erp, entity, set_up, stores, bus, args.enqueue_records, args.page_size, args.rounds)
    finally:
        bus.close()
        stores.close()
        azurite.stop()


if __name__ == "__main__":
    main()
