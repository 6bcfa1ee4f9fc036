"""``doctor``: every connection checked against the real systems, each failure with the fix to try."""

from __future__ import annotations

import argparse
import json
import sys


def add(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="check every connection against the real systems (exit 1 on a "
                                                "failure, 2 on a settings or configuration error)")
    doctor.add_argument("--connection", help="check only this connection (and its secrets)")
    doctor.add_argument("--json", action="store_true", help="print the answer of GET /api/ops/doctor")
    doctor.set_defaults(run=run, storage=False)


def run(args: argparse.Namespace) -> int:
    from shared.config.loading import get_config
    from shared.config.model import ConfigError
    from shared.doctor.run import UnknownConnection, examine
    from shared.settings import SettingsError

    try:
        report = examine(get_config(), connection=args.connection)
    except (ConfigError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnknownConnection:
        print(f"error: no connection named {args.connection!r} in the configuration", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else doctor_table(report))
    return 0 if report["ok"] else 1


def doctor_table(report: dict) -> str:
    """The doctor's answer as a table: connection, check, pass/FAIL and detail, each fix on the line below."""
    header = ("CONNECTION", "CHECK", "RESULT")
    rows = [((entry["connection"], check["name"], "pass" if check["ok"] else "FAIL"), check["detail"], check["fix"])
            for entry in report["connections"] for check in entry["checks"]]
    widths = [max(len(cells[column]) for cells in [header, *(row[0] for row in rows)]) for column in range(3)]

    def line(cells: tuple[str, str, str], text: str) -> str:
        return "  ".join([*(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)), text]).rstrip()

    lines = [line(header, "DETAIL")]
    for cells, detail, fix in rows:
        lines.append(line(cells, detail))
        if fix:
            lines.append(line(("", "", ""), f"fix: {fix}"))
    failures = sum(cells[2] == "FAIL" for cells, _, _ in rows)
    lines.append(f"\n{len(rows)} checks, {failures} failed" if failures else f"\n{len(rows)} checks, all passed")
    return "\n".join(lines)
