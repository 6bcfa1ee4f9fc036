"""``consent``: earlier opt-ins and opt-outs imported from CSV; the registry exported for auditors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.storage.tables import Stores


def add(commands: argparse._SubParsersAction) -> None:
    consent = commands.add_parser("consent", help="import earlier opt-ins and opt-outs; export the consent registry")
    actions = consent.add_subparsers(dest="action", required=True)
    imported = actions.add_parser("import", help="a CSV file: number,purpose,channel,status[,at] with a header row")
    imported.add_argument("path", type=Path)
    imported.add_argument("--connection", action="append",
                          help="the Twilio connection it is for (repeatable); default: every one in the configuration")
    exported = actions.add_parser("export", help="every opt-in and opt-out, oldest first; numbers masked")
    exported.add_argument("--csv", action="store_true", help="as CSV with a header row, instead of a table")
    exported.add_argument("--reveal", action="store_true", help="the numbers in full (an auditor may need them)")
    exported.add_argument("--connection", help="one Twilio connection only")
    consent.set_defaults(run=run, storage=True)


def run(args: argparse.Namespace, stores: Stores) -> int:
    if args.action == "export":
        return export_consent(stores, args.csv, args.reveal, args.connection)
    return import_consent(stores, args.path, args.connection)


def import_consent(stores: Stores, path: Path, connections: list[str] | None) -> int:
    from shared.pipeline.consent import IMPORT_SOURCE, ImportResult, import_facts, read_import

    if not path.exists():
        print(f"error: {path}: file not found", file=sys.stderr)
        return 2
    targets = connections or twilio_connections()
    if not targets:
        print("error: no Twilio connection to import for: name one with --connection", file=sys.stderr)
        return 2
    with path.open(encoding="utf-8-sig", newline="") as lines:
        facts, problems = read_import(lines, f"{IMPORT_SOURCE}:{path.name}")
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        print(f"nothing imported: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    result = import_facts(stores, targets, facts, ImportResult())
    print(f"{result.recorded} consent record(s) imported for {', '.join(targets)}"
          f"{f'; {result.older} older than what the registry holds, kept as it was' if result.older else ''}")
    return 0


def twilio_connections() -> list[str]:
    from shared.channels.twilio.connection import TwilioConnection
    from shared.config.loading import get_config

    return sorted(name for name, connection in get_config().connections.items()
                  if isinstance(connection, TwilioConnection))


def export_consent(stores: Stores, as_csv: bool, reveal: bool, connection: str | None) -> int:
    import csv

    from shared.pipeline.consent import EXPORT_COLUMNS, export_rows

    rows = export_rows(stores, reveal, connection)
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    count = 0
    for row in rows:
        print(f"{row['at'][:19]}  {row['connection']:<16} {row['number']:<16} {row['channel']:<5} "
              f"{row['purpose']:<16} {row['status']:<9} {row['source']}")
        count += 1
    print(f"{count} consent record(s)")
    return 0
