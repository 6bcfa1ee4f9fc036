"""Operator commands against a deployment's storage:

    python -m shared.cli audit --record "contoso-fo|VendorInvoice|usmf|INV-0042"
    python -m shared.cli audit --correlation 3f2a... [--reveal-texts]
    python -m shared.cli replay --job 9c1e...
    python -m shared.cli replay --from 2026-11-22T08:00:00Z [--to 2026-11-22T12:00:00Z]
    python -m shared.cli deadletters list [--all]
    python -m shared.cli deadletters show 5d41402abc4b2a76b9719d911017c592
    python -m shared.cli deadletters redrive 5d41402abc4b2a76b9719d911017c592 [...]
    python -m shared.cli deadletters redrive --all [--queue erp-events] [--connection contoso-fo]
    python -m shared.cli polls [--json]
    python -m shared.cli polls run syspro-main [--entity PorMasterHdr]

Settings come from the environment, or from a local.settings.json given with --settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shared.model import parse_utc_time
from shared.storage.tables import AuditEntry, Stores


def load_settings(path: Path) -> None:
    """Values of a local.settings.json into the environment; variables already set win."""
    values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values") or {}
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def print_trail(entries: list[AuditEntry], reveal_texts: bool = False) -> None:
    from shared.pipeline.report import contacts, masked_texts

    if not entries:
        print("no audit entries")
        return
    for entry in entries:
        shown = entry.detail if reveal_texts else masked_texts(entry.detail)
        detail = " ".join(f"{k}={v}" for k, v in shown.items())
        job = f" job={entry.job_id[:12]}" if entry.job_id else ""
        print(f"{entry.at:%Y-%m-%d %H:%M:%S}  {entry.step:<14}{job}  {detail}")
    summary = contacts(entries)
    if summary:
        print("\ncontacted:")
        for contact in summary:
            why = f"  ({contact.reason})" if contact.reason else ""
            code = f"  error {contact.error_code}" if contact.error_code else ""
            print(f"  {contact.channel:<6} {contact.to:<16} {contact.status:<12} {contact.provider_id}{code}{why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, help="a local.settings.json whose Values to use")
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="show the audit trail of an ERP record or a correlation id")
    which = audit.add_mutually_exclusive_group(required=True)
    which.add_argument("--record")
    which.add_argument("--correlation")
    audit.add_argument("--reveal-texts", action="store_true", help="show what people wrote (SMS replies) unmasked")
    replay = commands.add_parser("replay", help="send failed jobs again (never a delivered one)")
    scope = replay.add_mutually_exclusive_group(required=True)
    scope.add_argument("--job")
    scope.add_argument("--from", dest="since", type=parse_utc_time)
    replay.add_argument("--to", dest="until", type=parse_utc_time)
    add_deadletter_commands(commands)
    add_poll_commands(commands)
    args = parser.parse_args(argv)
    if args.settings:
        if not args.settings.exists():
            parser.error(f"settings file not found: {args.settings}")
        load_settings(args.settings)

    from shared.settings import SettingsError
    from shared.storage.tables import get_stores

    try:
        stores = get_stores()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "audit":
        audit_log = stores.audit
        entries = audit_log.by_record(args.record) if args.record else audit_log.by_correlation(args.correlation)
        print_trail(entries, args.reveal_texts)
        return 0
    if args.command == "deadletters":
        return run_deadletters(args, stores)
    if args.command == "polls":
        return run_polls(args, stores)
    from shared.pipeline.replay import replay_failed, replay_job
    from shared.storage.bus import get_bus

    results = [replay_job(stores, get_bus(), args.job)] if args.job else replay_failed(
        stores, get_bus(), args.since, args.until)
    for result in results:
        print(f"{result.job_id}  {'replayed' if result.replayed else 'skipped '}  {result.reason}")
    print(f"{sum(r.replayed for r in results)} of {len(results)} job(s) replayed")
    return 0


def add_deadletter_commands(commands: argparse._SubParsersAction) -> None:
    deadletters = commands.add_parser("deadletters", help="list, show and redrive dead-lettered work")
    actions = deadletters.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the open dead letters, oldest first (collected from the queues first)")
    listing.add_argument("--all", action="store_true", help="redriven ones too")
    show = actions.add_parser("show", help="one dead letter in full (its payload stays sealed)")
    show.add_argument("id")
    redrive = actions.add_parser("redrive", help="send dead-lettered work again; exactly once still holds")
    redrive.add_argument("ids", nargs="*")
    redrive.add_argument("--all", action="store_true", help="every open dead letter (narrowed by the options below)")
    redrive.add_argument("--queue")
    redrive.add_argument("--connection")


def run_deadletters(args: argparse.Namespace, stores: Stores) -> int:
    from shared.pipeline.deadletters import collect, redrive, redrive_all, summary
    from shared.storage.bus import get_bus

    bus = get_bus()
    collected = collect(stores, bus)
    if args.action == "list":
        letters = stores.dead_letters.all(None if args.all else "open")
        for letter in letters:
            print(f"{letter.id}  {letter.at:%Y-%m-%d %H:%M:%S}  {letter.state:<8}  {letter.queue:<13} "
                  f"{letter.type or '-':<26} {letter.record or letter.key}  {letter.reason}")
        print(f"{len(letters)} dead letter(s){f'; {collected} newly collected' if collected else ''}")
        return 0
    if args.action == "show":
        shown = stores.dead_letters.get(args.id)
        if shown is None:
            print(f"error: no dead letter {args.id}", file=sys.stderr)
            return 1
        print(json.dumps(summary(shown), indent=2))
        return 0
    if not args.ids and not args.all:
        print("error: name the dead letters to redrive, or --all", file=sys.stderr)
        return 2
    results = [redrive(stores, bus, letter_id) for letter_id in args.ids] if args.ids else redrive_all(
        stores, bus, queue=args.queue, connection=args.connection)
    for result in results:
        print(f"{result.id}  {'redriven' if result.redriven else 'skipped '}  {result.reason}")
    print(f"{sum(r.redriven for r in results)} of {len(results)} dead letter(s) redriven")
    return 0 if all(r.redriven for r in results) else 1


def add_poll_commands(commands: argparse._SubParsersAction) -> None:
    polls = commands.add_parser("polls", help="how each polled connection and entity fares; poll one now")
    polls.add_argument("--json", action="store_true", help="the same JSON as GET /api/ops/polls")
    actions = polls.add_subparsers(dest="action")
    run = actions.add_parser("run", help="poll a connection (or one of its entities) now, whatever its backoff")
    run.add_argument("connection")
    run.add_argument("--entity")


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


if __name__ == "__main__":
    sys.exit(main())
