"""CPU per storage call, by transport: the Table and Queue SDK clients built as the app builds them, once on
azure-core's requests transport and once on the app's kept-alive http.client transport
(``shared/storage/keepalive.py``), against an Azurite of their own on free ports.

For each transport and call (table upsert and get, queue put, get and delete): ``--calls`` calls one
after the other from one thread, after a warm-up, timed by this process's CPU clock (Azurite's CPU is
not counted). Both transports run in alternating rounds (``--rounds``) so a busy machine weighs on both
alike; the figure is the median round. Printed: ms of CPU per call per transport and the saving.

Then, on the app's transport, the same calls under the logging the Functions Python worker sets up: the root
logger at Debug, and a handler that formats every line it is given (the worker formats each one and sends it
to the host, which filters by ``host.json`` only then). Once with the libraries' loggers left at Debug, once at
the Warning the app sets when it loads (``LIBRARY_LOG_LEVEL``), in alternating rounds.
"""

from __future__ import annotations

import argparse
import logging
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

from bench.harness import BenchError, machine, run_measured, stopped_with  # noqa: E402
from devhost.azurite import start_azurite  # noqa: E402
from shared.storage.tables import BOUNDED_CALLS  # noqa: E402
from shared.storage.transport import client_options, storage_client_options  # noqa: E402

CALLS = ("table upsert", "table get", "queue put", "queue get", "queue delete")
TRANSPORTS = ("requests", "http.client")


def clients(connection_string: str, endpoints: dict[str, str], transport: str) -> tuple[Any, Any]:
    """A table client and a queue client with the app's options, on ``transport``."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    name = f"bench{uuid.uuid4().hex[:12]}"
    built: list[Any] = []
    for service in ("table", "queue"):
        if transport == "http.client":  # as the app builds them
            options = storage_client_options(endpoints[service], **BOUNDED_CALLS)
            if "transport" not in options:
                raise BenchError("a proxy applies to Azurite's address here: the app keeps the requests transport")
        else:  # as they were built before, on azure-core's default transport
            options = {**BOUNDED_CALLS, **client_options(endpoints[service])}
        factory = TableServiceClient if service == "table" else QueueServiceClient
        built.append(factory.from_connection_string(connection_string, **options))
    tables, queues = built
    table = tables.create_table_if_not_exists(name)
    queue = queues.get_queue_client(name)
    queue.create_queue()
    return table, queue


def one_round(table: Any, queue: Any, calls: int) -> dict[str, float]:
    """ms of CPU per call for each kind of call, ``calls`` of each."""
    keys = [uuid.uuid4().hex for _ in range(calls)]
    received: list[Any] = []
    steps: dict[str, Callable[[int], None]] = {
        "table upsert": lambda i: table.upsert_entity({"PartitionKey": "p", "RowKey": keys[i], "Value": i}),
        "table get": lambda i: table.get_entity("p", keys[i]),
        "queue put": lambda i: queue.send_message(f"message {i}"),
        "queue get": lambda i: received.append(queue.receive_message(visibility_timeout=60)),
        "queue delete": lambda i: queue.delete_message(received[i]),
    }
    figures = {}
    for name in CALLS:
        started = time.process_time()
        for i in range(calls):
            steps[name](i)
        figures[name] = (time.process_time() - started) * 1000 / calls
    return figures


def measure(stack: ExitStack, calls: int, rounds: int) -> int:
    azurite = stopped_with(stack, start_azurite())
    endpoints = {"table": f"http://127.0.0.1:{azurite.table_port}/devstoreaccount1",
                 "queue": f"http://127.0.0.1:{azurite.queue_port}/devstoreaccount1"}
    print(f"setup: {machine()}, Azurite in memory; {calls} calls of each kind per round, {rounds} rounds")
    pairs = {transport: clients(azurite.connection_string, endpoints, transport) for transport in TRANSPORTS}
    for table, queue in pairs.values():
        one_round(table, queue, 20)  # warm-up: connections open, code paths loaded
    rounds_by: dict[str, list[dict[str, float]]] = {transport: [] for transport in TRANSPORTS}
    for _ in range(rounds):
        for transport, (table, queue) in pairs.items():
            rounds_by[transport].append(one_round(table, queue, calls))
    print_saving(rounds_by)
    under_worker_logging(*pairs["http.client"], calls, rounds)
    return 0


def print_saving(rounds_by: dict[str, list[dict[str, float]]]) -> None:
    """A table of the median round's CPU per call, the first way (``rounds_by``'s first key) beside the second,
    and what the second saves."""
    (first, first_rounds), (second, second_rounds) = rounds_by.items()
    median = [{name: statistics.median(r[name] for r in found) for name in CALLS}
              for found in (first_rounds, second_rounds)]
    widths = (len(first) + 1, len(second) + 1)
    print(f"{'CPU per call, ms':<16} {first:>{widths[0]}} {second:>{widths[1]}} {'saved':>7}")
    for name in (*CALLS, "mean"):
        before, after = (statistics.mean(m.values()) if name == "mean" else m[name] for m in median)
        print(f"{name:<16} {before:{widths[0]}.3f} {after:{widths[1]}.3f} {(1 - after / before) * 100:6.0f}%")


class _FormatsEveryLine(logging.Handler):
    """What the worker's handler costs at least: each line formatted."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def under_worker_logging(table: Any, queue: Any, calls: int, rounds: int) -> None:
    from shared.logs import LIBRARY_LOGGERS, quiet_library_loggers

    root, handler = logging.getLogger(), _FormatsEveryLine()
    libraries = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(logger, logger.level) for logger in (root, *libraries)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    by_level: dict[str, list[dict[str, float]]] = {"libs Debug": [], "libs Warning": []}
    try:
        for _ in range(rounds):
            for library in libraries:
                library.setLevel(logging.DEBUG)
            by_level["libs Debug"].append(one_round(table, queue, calls))
            quiet_library_loggers({})
            by_level["libs Warning"].append(one_round(table, queue, calls))
    finally:
        root.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)
    print("under the Functions worker's logging (root at Debug, every line formatted), http.client transport:")
    print_saving(by_level)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls of each kind per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per transport, alternating (default 5)")
    args = parser.parse_args()
    return run_measured(lambda stack: measure(stack, args.calls, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
