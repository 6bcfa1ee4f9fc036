"""``polls``: how each polled connection and entity fares; one polled now, past its backoff."""

from __future__ import annotations

import argparse
import json
import sys

from shared.storage.tables import Stores


def add(commands: argparse._SubParsersAction) -> None:
    polls = commands.add_parser("polls", help="how each polled connection and entity fares; poll one now")
    polls.add_argument("--json", action="store_true", help="the same JSON as GET /api/ops/polls")
    actions = polls.add_subparsers(dest="action")
    run = actions.add_parser("run", help="poll a connection (or one of its entities) now, whatever its backoff")
    run.add_argument("connection")
    run.add_argument("--entity")
    polls.set_defaults(run=run_polls, storage=True)


def run_polls(args: argparse.Namespace, stores: Stores) -> int:
    from datetime import UTC, datetime

    from shared.config.loading import get_config
    from shared.config.model import ConfigError

    try:
        config = get_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "run":
        from shared.pipeline.poll import request_poll
        from shared.storage.bus import get_bus

        queued = request_poll(config, get_bus(), args.connection, args.entity)
        if queued is None:
            print(f"error: the configuration polls no {args.connection!r}"
                  f"{f' entity {args.entity!r}' if args.entity else ''}", file=sys.stderr)
            return 1
        print(f"{queued} entit{'y' if queued == 1 else 'ies'} of {args.connection} queued to poll now")
        return 0
    from shared.pipeline.pollhealth import poll_rows

    rows = poll_rows(config, stores, datetime.now(UTC))
    if args.json:
        print(json.dumps({"polls": rows}, indent=2))
        return 0
    print_polls(rows)
    return 0


def print_polls(rows: list[dict]) -> None:
    if not rows:
        print("the configuration polls nothing")
        return
    columns = ("connection", "kind", "entity", "last_success", "lag", "failures", "next_run", "last_error")
    table = [[_poll_cell(row, column) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in table)) for i, column in enumerate(columns[:-1])]
    for line in [[column.upper().replace("_", " ") for column in columns], *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])


def _poll_cell(row: dict, column: str) -> str:
    if column == "lag":
        lag = row["lag_seconds"]
        return "-" if lag is None else f"{lag / 60:.0f} min" if lag < 5400 else f"{lag / 3600:.1f} h"
    value = row[column]
    return "-" if value is None else str(value)
