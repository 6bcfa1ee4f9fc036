"""Operator commands against a deployment's storage:

    python -m shared.cli audit --record "contoso-fo|VendorInvoice|usmf|INV-0042"
    python -m shared.cli audit --correlation 3f2a... [--reveal-texts]
    python -m shared.cli replay --job 9c1e...
    python -m shared.cli replay --from 2026-11-22T08:00:00Z [--to 2026-11-22T12:00:00Z]
    python -m shared.cli deadletters list [--all]
    python -m shared.cli deadletters show 5d41402abc4b2a76b9719d911017c592
    python -m shared.cli deadletters redrive 5d41402abc4b2a76b9719d911017c592 [...]
    python -m shared.cli deadletters redrive --all [--queue erp-events] [--connection contoso-fo]
    python -m shared.cli validate config/connections.sample.json
    python -m shared.cli consent import opt-ins.csv [--connection twilio-main]
    python -m shared.cli consent export [--csv] [--reveal] [--connection twilio-main]

Settings come from the environment, or from a local.settings.json given with --settings
(validate needs neither settings nor storage).
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
    add_validate_command(commands)
    add_consent_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "validate":
        return run_validate(args.path)
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
    if args.command == "consent":
        return run_consent(args, stores)
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


# --- consent: the registry of opt-ins and opt-outs, imported from CSV and exported for auditors ----------


def add_consent_commands(commands: argparse._SubParsersAction) -> None:
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


def run_consent(args: argparse.Namespace, stores: Stores) -> int:
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


# --- validate: a configuration file checked as the app loads it, without settings or storage --------

EXIT_CONFIG_PROBLEMS = 1
EXIT_CONFIG_UNREADABLE = 2


def add_validate_command(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser(
        "validate", help="check a configuration file as the app loads it; every problem with its path")
    validate.add_argument("path", type=Path, help="the connections and rules file (JSON)")


def run_validate(path: Path) -> int:
    """0 when the app would load ``path``; 1 with every problem listed; 2 when it is no readable JSON."""
    from shared.config.loading import load_config
    from shared.config.model import ConfigError

    unreadable = unreadable_json(path)
    if unreadable:
        print(f"error: {unreadable}", file=sys.stderr)
        return EXIT_CONFIG_UNREADABLE
    try:
        config = load_config(path)
    except ConfigError as exc:
        count = len(exc.errors)
        print(f"{path}: {count} problem{'' if count == 1 else 's'}")
        for problem in exc.errors:
            print(f"  {problem}")
        return EXIT_CONFIG_PROBLEMS
    print(f"{path}: valid ({len(config.connections)} connection(s), {len(config.rules)} rule(s))")
    return 0


def unreadable_json(path: Path) -> str | None:
    """Why ``path`` is no JSON file to check (missing, unreadable, not JSON); None when it is one."""
    try:
        json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return f"{path}: file not found"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path}: cannot read the file ({exc})"
    except json.JSONDecodeError as exc:
        return f"{path}: not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
    return None


if __name__ == "__main__":
    sys.exit(main())
