"""Figures for one QAD poll over many goods receipts: rows per second and memory, against the fake tenant.

An Azurite of its own (watermarks), the fake QAD tenant in this process filled with
``--receipts`` synthetic ``tr_hist`` receipts (``FakeQad.fill_receipts``: generated when a page
shows them), and the real adapter and poll framework (``poll_entity``). Changes are counted
instead of queued, so the figures are the read side: browse pages, cleaning, supplier look-ups,
change keys. Printed: rows, pages, seconds, rows per second, and the poll's peak Python memory
(tracemalloc) next to a run over a tenth of the rows, which shows that memory does not grow
with the number of rows.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
import uuid
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the fakes and devhost live in the repository

from devhost.azurite import start_azurite  # noqa: E402
from shared.config import QadConnection, config_from_dict  # noqa: E402
from shared.erp import qad  # noqa: E402
from shared.erp.polling import Source  # noqa: E402
from shared.model import Envelope  # noqa: E402
from shared.pipeline.poll import poll_entity  # noqa: E402
from shared.settings import StorageSettings  # noqa: E402
from shared.storage.secrets import EnvSecretProvider  # noqa: E402
from shared.storage.tables import Stores  # noqa: E402
from tests.fakes.qad import DEFAULT_PASSWORD, DEFAULT_USER, FakeQad  # noqa: E402


class CountingBus:
    def __init__(self) -> None:
        self.count = 0

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        self.count += 1

    def dead_letter(self, queue: str, body: object, reason: str) -> None:
        raise RuntimeError(reason)

    def close(self) -> None:
        pass


def connection(fake: FakeQad, name: str, page_size: int) -> QadConnection:
    body = {"kind": "qad", "base_url": fake.tenant_url, "domain": "10USA", "username": DEFAULT_USER,
            "password": {"secret": "qad-bench-password"}, "page_size": page_size,
            "poll": {"entities": [qad.RECEIPTS_ENTITY]}}
    return config_from_dict({"connections": {name: body}}).connections[name]  # type: ignore[return-value]


def poll_receipts(fake: FakeQad, stores: Stores, count: int, page_size: int, *, trace: bool) -> dict[str, float]:
    conn = connection(fake, f"qad-bench-{uuid.uuid4().hex[:6]}", page_size)
    client = qad.QadClient(conn, EnvSecretProvider(env={"qad-bench-password": DEFAULT_PASSWORD}))
    entity = replace(qad.ENTITIES[qad.RECEIPTS_ENTITY], page_size=page_size)

    def poll(bus: CountingBus) -> None:
        cycle = qad.QadCycle(client)
        try:
            poll_entity(conn, conn.poll, Source(cycle, {entity.name: entity}), entity, stores, bus)
        finally:
            cycle.close()

    fake.add_receipt("PO-BASE", 1, "P", 1, supplier="S-1")
    poll(CountingBus())  # the first poll only finds where the tenant stands
    fake.fill_receipts(count, suppliers=tuple(f"S-{n}" for n in range(50)))
    pages_before = len(fake.requests_to("GET /qad-central/api/qracore/browses"))
    bus = CountingBus()
    gc.collect()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    poll(bus)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    client.close()
    if bus.count != count:
        raise RuntimeError(f"{bus.count} changes for {count} receipts")
    pages = len(fake.requests_to("GET /qad-central/api/qracore/browses")) - pages_before
    fake.clear_log()
    return {"rows": count, "pages": pages, "seconds": seconds, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    azurite = start_azurite()
    fake = FakeQad().start()
    stores = Stores.open(StorageSettings(azurite.connection_string, None, None, None), "b" + uuid.uuid4().hex[:10])
    try:
        for n in range(50):
            fake.add_supplier(f"S-{n}", f"Supplier {n}", f"+1415555{n:04d}")
        timed = poll_receipts(fake, stores, args.receipts, args.page_size, trace=False)
        print(f"[qad] one poll of {timed['rows']:,} receipts in {timed['pages']} browse requests "
              f"(page size {args.page_size}): {timed['seconds']:.1f} s, "
              f"{timed['rows'] / timed['seconds']:,.0f} rows/s")
        small = poll_receipts(fake, stores, max(args.receipts // 10, 1), args.page_size, trace=True)
        large = poll_receipts(fake, stores, args.receipts, args.page_size, trace=True)
        print(f"[qad] peak Python memory of the poll (tracemalloc): {small['rows']:,} receipts "
              f"{small['peak'] / 1e6:.1f} MB, {large['rows']:,} receipts {large['peak'] / 1e6:.1f} MB")
    finally:
        stores.close()
        fake.stop()
        azurite.stop()


if __name__ == "__main__":
    main()
