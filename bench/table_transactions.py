"""CPU per entity-group transaction: the SDK's ``TableClient.submit_transaction`` beside the app's
``shared.storage.batch.submit``, on a table client built as the app builds it (kept-alive ``http.client``
transport), against an Azurite of its own on free ports.

The transactions the app sends: a job's update with its step's insert (2 operations), and the steps of one
ERP change (10 inserts). For reference, the update and the insert as two requests. ``--calls`` of each per
round, after a warm-up, timed by this process's CPU clock (Azurite's CPU is not counted); the ways run in
alternating rounds (``--rounds``) so a busy machine weighs on both alike; the figure is the median round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.harness import machine, run_measured, stopped_with  # noqa: E402
from devhost.azurite import start_azurite  # noqa: E402
from shared.storage.batch import submit  # noqa: E402
from shared.storage.tables import BOUNDED_CALLS  # noqa: E402
from shared.storage.transport import storage_client_options  # noqa: E402

SHAPES = ("update + insert", "10 inserts")
WAYS = ("two requests", "submit_transaction", "batch.submit")


def operations(shape: str, i: int) -> list[Any]:
    """A job's change with its step, or the steps of one change, as the app writes them."""
    from azure.data.tables import UpdateMode

    if shape == "update + insert":
        return [("upsert", {"PartitionKey": "job", "RowKey": "job", "Status": "sent", "Fields": "x" * 300, "N": i},
                 {"mode": UpdateMode.REPLACE}),
                ("create", {"PartitionKey": "job", "RowKey": f"step-{uuid.uuid4().hex}", "Step": "sent",
                            "Detail": "y" * 200})]
    return [("create", {"PartitionKey": f"change-{i}", "RowKey": f"{n:02}-{uuid.uuid4().hex[:8]}", "Step": "routed",
                        "Detail": "y" * 200}) for n in range(10)]


def one_round(table: Any, calls: int) -> dict[tuple[str, str], float]:
    """ms of CPU per transaction for each shape and way, ``calls`` of each."""
    def two_requests(ops: list[Any]) -> None:
        for name, entity, *options in ops:
            if name == "upsert":
                table.upsert_entity(entity, **(options[0] if options else {}))
            else:
                table.create_entity(entity)

    sends: dict[str, Callable[[list[Any]], Any]] = {
        "two requests": two_requests, "submit_transaction": table.submit_transaction,
        "batch.submit": lambda ops: submit(table, ops)}
    figures = {}
    for shape in SHAPES:
        for way in WAYS:
            if way == "two requests" and shape != "update + insert":
                continue
            prepared = [operations(shape, i) for i in range(calls)]
            started = time.process_time()
            for ops in prepared:
                sends[way](ops)
            figures[(shape, way)] = (time.process_time() - started) * 1000 / calls
    return figures


def measure(stack: ExitStack, calls: int, rounds: int) -> int:
    from azure.data.tables import TableServiceClient

    azurite = stopped_with(stack, start_azurite())
    endpoint = f"http://127.0.0.1:{azurite.table_port}/devstoreaccount1"
    print(f"setup: {machine()}, Azurite in memory; {calls} transactions of each kind per round, {rounds} rounds")
    service = TableServiceClient.from_connection_string(azurite.connection_string,
                                                        **storage_client_options(endpoint, **BOUNDED_CALLS))
    table = service.create_table_if_not_exists(f"bench{uuid.uuid4().hex[:12]}")
    one_round(table, 20)  # warm-up: connections open, code paths loaded
    rounds_run = [one_round(table, calls) for _ in range(rounds)]
    median = {key: statistics.median(r[key] for r in rounds_run) for key in rounds_run[0]}
    print(f"{'CPU per transaction, ms':<24} {'two requests':>12} {'submit_transaction':>19} {'batch.submit':>13}"
          f" {'saved':>7}")
    for shape in SHAPES:
        apart = median.get((shape, "two requests"))
        sdk, ours = median[(shape, "submit_transaction")], median[(shape, "batch.submit")]
        print(f"{shape:<24} {f'{apart:.3f}' if apart else '-':>12} {sdk:19.3f} {ours:13.3f} {sdk - ours:7.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="transactions of each kind per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each way in turn (default 5)")
    args = parser.parse_args()
    return run_measured(lambda stack: measure(stack, args.calls, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
