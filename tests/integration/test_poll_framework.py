"""The poll framework's rules, whatever the ERP: cursors, baselines, snapshots, paging, time zones, leases.

The source here is an in-memory ERP table read one page at a time, as an adapter would
read its ERP; the stores are real (Azurite).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.config.model import PollSettings
from shared.erp.polling import (
    NONE,
    NUMBER,
    TIME,
    Page,
    PageRequest,
    PolledEntity,
    Source,
    local_bound,
    number_stamp,
    time_stamp,
)
from shared.erp.syspro.connection import SysproConnection
from shared.pipeline.pacing import WaitForSlot
from shared.pipeline.poll import PagingError, poll_cycle, poll_entity
from shared.storage.tables import Stores
from tests.integration.test_poll import RecordingBus

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CHICAGO = ZoneInfo("America/Chicago")


@dataclass
class Table:
    """An ERP table read in (stamp, key) order, a page at a time, keyset-paged like COMFND."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    requests: list[PageRequest] = field(default_factory=list)
    repeat_token: bool = False

    def read(self, client: Any, entity: PolledEntity, request: PageRequest) -> Page:
        self.requests.append(request)

        def order(row: dict[str, Any]) -> tuple:
            stamp = row.get(entity.cursor_field, "")
            return (number_stamp(stamp) if entity.cursor == NUMBER else str(stamp), row["id"])

        ordered = sorted(self.rows, key=order)
        if entity.cursor == TIME:
            ordered = [row for row in ordered if str(row["stamp"]) >= str(request.since)]
        elif entity.cursor == NUMBER and request.since is not None:
            ordered = [row for row in ordered if number_stamp(row["counter"]) > request.since]
        if request.token is not None:
            last = json.loads(request.token)
            ordered = [row for row in ordered if list(order(row)) > last]
        page = ordered[:request.size]
        more = len(ordered) > request.size
        token = json.dumps(order(page[-1])) if more else None
        if self.repeat_token and more and request.token is not None:
            token = request.token  # a server that hands back the page it was asked for
        return Page(page, token)


def entity(table: Table, cursor: str, **options: Any) -> PolledEntity:
    cursor_field = {"time": "stamp", "number": "counter", "none": ""}[cursor]
    return PolledEntity(name=options.pop("name", "Things"), keys=("id",), cursor=cursor, cursor_field=cursor_field,
                        read=table.read, record_entity="Thing", page_size=options.pop("page_size", 2), **options)


def connection(zone: str = "UTC", interval: int = 10, overlap: int = 120) -> SysproConnection:
    from shared.config.model import SecretRef

    return SysproConnection(name=f"erp-{uuid.uuid4().hex[:6]}", base_url="https://erp.example", operator="OP",
                            password=SecretRef("p"), company_id="C",
                            poll=PollSettings(entities=("Things",), interval_minutes=interval,
                                              overlap_seconds=overlap, time_zone=zone))


def sent_keys(bus: RecordingBus) -> list[str]:
    return [envelope.key for _, envelope in bus.sent]


def run(conn: SysproConnection, polled: PolledEntity, stores: Stores, now: datetime = START) -> list[str]:
    bus = RecordingBus()
    poll_entity(conn, conn.poll, Source(None, {polled.name: polled}), polled, stores, bus, now=now)
    return sent_keys(bus)


# --- number cursor ---------------------------------------------------------------------------------


def test_a_counter_starts_from_where_the_erp_stands_then_reports_each_new_row_once(stores: Stores) -> None:
    table = Table([{"id": f"H{i}", "counter": f"0x{i:016X}"} for i in range(1, 6)])
    conn, polled = connection(), entity(table, NUMBER)
    assert run(conn, polled, stores) == []  # history is not news
    assert stores.watermarks.get(conn.name, "Things") == 5

    table.rows += [{"id": "N1", "counter": "0x0000000000000007"}, {"id": "N2", "counter": 6}]
    first_request = len(table.requests)
    assert [key.split("|")[2] for key in run(conn, polled, stores)] == ["N2", "N1"]
    assert table.requests[first_request].since == 5  # strictly after the watermark, no overlap
    assert run(conn, polled, stores) == []  # nothing new: nothing sent
    assert stores.watermarks.get(conn.name, "Things") == 7


def test_a_counter_whose_first_poll_finds_nothing_reports_the_first_row_that_appears(stores: Stores) -> None:
    table = Table()
    conn, polled = connection(), entity(table, NUMBER)
    assert run(conn, polled, stores) == []
    table.rows.append({"id": "FIRST", "counter": 1})
    assert [key.split("|")[2] for key in run(conn, polled, stores)] == ["FIRST"]


# --- time cursor -----------------------------------------------------------------------------------


def test_ten_overlapping_polls_with_equal_stamps_across_page_edges_miss_nothing(stores: Stores) -> None:
    table = Table()
    conn, polled = connection(overlap=300), entity(table, TIME, page_size=2)
    seen: list[str] = []
    expected: set[str] = set()
    for poll_number in range(10):
        now = START + timedelta(minutes=poll_number)
        stamp = (now - timedelta(seconds=30)).replace(tzinfo=None).isoformat()
        # Three rows share a stamp each minute, so every page edge falls inside a run of equal stamps.
        batch = [{"id": f"R{poll_number}-{n}", "stamp": stamp} for n in range(3)]
        table.rows += batch
        expected |= {row["id"] for row in batch}
        seen += run(conn, polled, stores, now=now)
    unique = set(seen)
    # Every row reached the queue; rows re-read inside the overlap come back under the same key.
    assert {key.split("|")[2] for key in unique} == expected
    assert len(unique) == len(expected)


def test_stamps_without_a_zone_are_read_in_the_erps_time_zone(stores: Stores) -> None:
    table = Table([{"id": "A", "stamp": "2026-11-22T05:50:00"}])  # Chicago: 11:50 UTC
    conn, polled = connection(zone="America/Chicago", overlap=0), entity(table, TIME)
    stores.watermarks.advance(conn.name, "Things", START - timedelta(minutes=15))
    [key] = run(conn, polled, stores)
    assert key.endswith("|2026-11-22T11:50:00+00:00")
    assert table.requests[0].since == datetime(2026, 11, 22, 5, 45)  # 11:45 UTC, as Chicago wall time


def test_a_date_only_stamp_rereads_its_whole_day() -> None:
    moment = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # still the 21st in Chicago
    assert local_bound(moment, CHICAGO, date_only=True) == date(2026, 11, 21)
    assert time_stamp("2026-11-21", CHICAGO, date_only=True) == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def test_the_watermark_never_passes_the_polls_own_start(stores: Stores) -> None:
    table = Table([{"id": "late", "stamp": (START + timedelta(minutes=5)).replace(tzinfo=None).isoformat()}])
    conn, polled = connection(), entity(table, TIME)
    run(conn, polled, stores)
    assert stores.watermarks.get(conn.name, "Things") == START


# --- no cursor -----------------------------------------------------------------------------------


def test_records_without_a_stamp_alert_when_their_watched_fields_change(stores: Stores) -> None:
    table = Table([{"id": "PO1", "status": "0"}, {"id": "PO2", "status": "0"}, {"id": "PO3", "status": "4"}])
    conn, polled = connection(), entity(table, NONE, watched=("status",))
    assert run(conn, polled, stores) == []  # the first pass records where things stand
    assert run(conn, polled, stores) == []

    table.rows[0]["status"] = "4"
    table.rows.append({"id": "PO4", "status": "0"})
    first = run(conn, polled, stores)
    assert [key.split("|")[2] for key in first] == ["PO1", "PO4"]

    table.rows[0]["status"] = "0"  # back to what it was two changes ago: still a change
    again = run(conn, polled, stores)
    assert [key.split("|")[2] for key in again] == ["PO1"]
    assert again[0] not in first


def test_a_window_entity_alerts_on_its_first_poll(stores: Stores) -> None:
    table = Table([{"id": "INV1", "due": "2026-11-24"}])
    conn, polled = connection(), entity(table, NONE, watched=("due",), baseline=False)
    assert len(run(conn, polled, stores)) == 1
    assert run(conn, polled, stores) == []


# --- page context ----------------------------------------------------------------------------------


def with_page_context(polled: PolledEntity, table: Table, asked: list[str]) -> PolledEntity:
    """The entity reading ``table`` with each page's row ids as its context, and fields that show it."""

    def read(client: Any, entity: PolledEntity, request: PageRequest) -> Page:
        page = table.read(client, entity, request)
        return Page(page.rows, page.next_token, context=[row["id"] for row in page.rows])

    def fields(row: Mapping[str, Any], context: Any) -> dict[str, Any]:
        asked.append(row["id"])
        return {**row, "page": context}

    return PolledEntity(**{**polled.__dict__, "read": read, "fields": fields})


def sent_pages(bus: RecordingBus) -> dict[str, list[str]]:
    return {envelope.payload["fields"]["id"]: envelope.payload["fields"]["page"]  # type: ignore[attr-defined]
            for _, envelope in bus.sent}


def test_each_record_is_made_with_its_own_pages_context_and_only_when_sent_on(stores: Stores) -> None:
    table, asked = Table([{"id": f"H{i}", "counter": i} for i in range(1, 4)]), []
    conn = connection()
    polled = with_page_context(entity(table, NUMBER, page_size=2), table, asked)
    assert run(conn, polled, stores) == [] and asked == []  # a baseline sends nothing, so looks nothing up

    table.rows += [{"id": f"N{i}", "counter": 3 + i} for i in range(1, 4)]
    bus = RecordingBus()
    poll_entity(conn, conn.poll, Source(None, {polled.name: polled}), polled, stores, bus, now=START)
    assert sent_pages(bus) == {"N1": ["N1", "N2"], "N2": ["N1", "N2"], "N3": ["N3"]}


def test_a_snapshot_poll_makes_only_changed_records_with_their_pages_context(stores: Stores) -> None:
    table, asked = Table([{"id": f"PO{i}", "status": "0"} for i in range(1, 5)]), []
    conn = connection()
    polled = with_page_context(entity(table, NONE, watched=("status",), page_size=2), table, asked)
    assert run(conn, polled, stores) == [] and asked == []

    table.rows[1]["status"] = table.rows[2]["status"] = "4"
    bus = RecordingBus()
    poll_entity(conn, conn.poll, Source(None, {polled.name: polled}), polled, stores, bus, now=START)
    assert sent_pages(bus) == {"PO2": ["PO1", "PO2"], "PO3": ["PO3", "PO4"]}
    assert asked == ["PO2", "PO3"]  # unchanged records are never made into records


# --- paging and leases ---------------------------------------------------------------------------


def test_a_page_token_that_comes_back_is_an_error_not_a_loop(stores: Stores) -> None:
    table = Table([{"id": f"X{i}", "counter": i} for i in range(10)], repeat_token=True)
    conn, polled = connection(), entity(table, NUMBER, baseline=False)
    with pytest.raises(PagingError, match="came back"):
        run(conn, polled, stores)
    assert len(table.requests) == 2
    assert stores.watermarks.get(conn.name, "Things") is None  # nothing read counts until a poll completes


def test_a_failed_poll_leaves_the_watermark_so_the_next_one_resumes(stores: Stores) -> None:
    rows = [{"id": f"X{i}", "counter": i} for i in range(1, 8)]
    table = Table(rows)
    conn, polled = connection(), entity(table, NUMBER, baseline=False)
    failing = PolledEntity(**{**polled.__dict__, "read": failing_on_page(3, table.read)})
    with pytest.raises(ConnectionError):
        run(conn, failing, stores)
    assert stores.watermarks.get(conn.name, "Things") is None
    keys = run(conn, polled, stores)
    assert len(keys) == 7 and stores.watermarks.get(conn.name, "Things") == 7


def failing_on_page(number: int, read: Any) -> Any:
    calls = {"n": 0}

    def wrapped(client: Any, entity: PolledEntity, request: PageRequest) -> Page:
        calls["n"] += 1
        if calls["n"] == number:
            raise ConnectionError("page 3 failed")
        return read(client, entity, request)

    return wrapped


def test_an_exclusive_source_waits_while_another_poll_holds_its_lease(stores: Stores) -> None:
    table = Table([{"id": "A", "counter": 1}])
    conn, polled = connection(), entity(table, NUMBER)
    lease = f"syspro|{uuid.uuid4().hex}"
    source = Source(None, {"Things": polled}, exclusive=lease)
    assert stores.leases.acquire(lease, "someone-else", 120) is None
    with pytest.raises(WaitForSlot):
        poll_cycle(conn, conn.poll, source, ["Things"], stores, RecordingBus(), now=START)
    assert table.requests == []  # not a single call while the other poll holds the account
    stores.leases.release(lease, "someone-else")
    poll_cycle(conn, conn.poll, source, ["Things"], stores, RecordingBus(), now=START)
    assert len(table.requests) == 1
    assert stores.leases.acquire(lease, "next", 1) is None  # released at the end


def test_a_cycle_reads_entities_in_the_adapters_order(stores: Stores) -> None:
    order: list[str] = []

    def reader(name: str) -> Any:
        def read(client: Any, entity: PolledEntity, request: PageRequest) -> Page:
            order.append(name)
            return Page([])
        return read

    entities: Mapping[str, PolledEntity] = {
        name: PolledEntity(name=name, keys=("id",), cursor=NUMBER, cursor_field="n", read=reader(name),
                           record_entity=name)
        for name in ("receipts", "invoices", "orders")
    }
    conn = connection()
    poll_cycle(conn, conn.poll, Source(None, entities), ["orders", "receipts", "invoices"], stores, RecordingBus())
    assert order == ["receipts", "invoices", "orders"]


class LeaseClock:
    """Epoch seconds that move only when the test's ERP says a read took that long."""

    def __init__(self) -> None:
        self.now = START.timestamp()

    def __call__(self) -> float:
        return self.now


def slow_pages(read: Any, clock: LeaseClock, seconds: float, during: Any = None) -> Any:
    """Each page read takes ``seconds`` of lease time; ``during(page number)`` runs inside the read."""
    pages = {"n": 0}

    def wrapped(client: Any, entity: PolledEntity, request: PageRequest) -> Page:
        pages["n"] += 1
        clock.now += seconds
        if during is not None:
            during(pages["n"])
        return read(client, entity, request)

    return wrapped


def leased_stores(stores: Stores, clock: LeaseClock) -> Stores:
    from dataclasses import replace

    from shared.storage.tables import LeaseStore

    return replace(stores, leases=LeaseStore(stores.tables, clock))


def test_an_entity_read_for_longer_than_the_lease_keeps_it(stores: Stores) -> None:
    from shared.pipeline.poll import LEASE_SECONDS

    clock, lease = LeaseClock(), f"syspro|{uuid.uuid4().hex}"
    leased = leased_stores(stores, clock)
    rival_got_it: list[int] = []

    def rival(page: int) -> None:  # another instance asks for the account while the pages come in
        if leased.leases.acquire(lease, "rival", LEASE_SECONDS) is None:
            rival_got_it.append(page)

    table = Table([{"id": f"X{i}", "counter": i} for i in range(1, 21)])
    conn, polled = connection(), entity(table, NUMBER, baseline=False)
    slow = PolledEntity(**{**polled.__dict__, "read": slow_pages(table.read, clock, LEASE_SECONDS / 3, rival)})
    bus = RecordingBus()
    counts = poll_cycle(conn, conn.poll, Source(None, {"Things": slow}, exclusive=lease), ["Things"], leased, bus,
                        now=START)
    assert len(table.requests) == 10 and clock.now - START.timestamp() > 3 * LEASE_SECONDS  # outlasted it
    assert rival_got_it == []
    assert counts == {"Things": 20} and stores.watermarks.get(conn.name, "Things") == 20


def test_a_poll_whose_lease_was_taken_over_does_not_move_the_watermark(stores: Stores) -> None:
    from shared.pipeline.poll import LEASE_SECONDS, LeaseLost

    clock, lease = LeaseClock(), f"syspro|{uuid.uuid4().hex}"
    leased = leased_stores(stores, clock)

    def takeover(page: int) -> None:  # an instance whose clock runs ahead sees our lease as lapsed
        assert leased.leases.acquire(lease, "rival", LEASE_SECONDS, now=clock.now + 2 * LEASE_SECONDS) is None

    table = Table([{"id": f"X{i}", "counter": i} for i in range(1, 4)])
    conn, polled = connection(), entity(table, NUMBER, baseline=False, page_size=10)
    slow = PolledEntity(**{**polled.__dict__, "read": slow_pages(table.read, clock, 1, takeover)})
    with pytest.raises(LeaseLost, match="took over"):
        poll_cycle(conn, conn.poll, Source(None, {"Things": slow}, exclusive=lease), ["Things"], leased,
                   RecordingBus(), now=START)
    assert stores.watermarks.get(conn.name, "Things") is None
    # The rival's lease is untouched by our stop; once it is released, the next poll reads everything.
    assert leased.leases.acquire(lease, "third", 1) is not None
    leased.leases.release(lease, "rival")
    assert poll_cycle(conn, conn.poll, Source(None, {"Things": polled}, exclusive=lease), ["Things"], leased,
                      RecordingBus(), now=START) == {"Things": 3}
    assert stores.watermarks.get(conn.name, "Things") == 3


def test_a_snapshot_poll_that_lost_its_lease_mid_read_writes_no_more_snapshots(stores: Stores) -> None:
    from shared.pipeline.poll import LEASE_SECONDS, LeaseLost
    from shared.storage.tables import SNAPSHOTS

    clock, lease = LeaseClock(), f"syspro|{uuid.uuid4().hex}"
    leased = leased_stores(stores, clock)

    def takeover(page: int) -> None:  # our instance stalled past the lease; another one took the account
        if page == 2:
            assert leased.leases.acquire(lease, "rival", LEASE_SECONDS) is None

    table = Table([{"id": f"X{i}", "status": "open"} for i in range(6)])
    conn, polled = connection(), entity(table, NONE, watched=("status",))
    slow = PolledEntity(**{**polled.__dict__, "read": slow_pages(table.read, clock, LEASE_SECONDS + 1, takeover)})
    with pytest.raises(LeaseLost):
        poll_cycle(conn, conn.poll, Source(None, {"Things": slow}, exclusive=lease), ["Things"], leased,
                   RecordingBus(), now=START)
    assert stores.watermarks.get(conn.name, "Things") is None
    # The first page was acted on under a renewed lease; nothing of the page read after the takeover.
    assert sorted(row["Key"] for row in stores.tables.table(SNAPSHOTS).list_entities()) == ["X0", "X1"]
