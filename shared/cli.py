"""Operator commands against a deployment's storage:

    python -m shared.cli audit --record "contoso-fo|VendorInvoice|usmf|INV-0042"
    python -m shared.cli audit --correlation 3f2a... [--reveal-texts]
    python -m shared.cli replay --job 9c1e... [--dry-run]
    python -m shared.cli replay --from 2026-11-22T08:00:00Z [--to 2026-11-22T12:00:00Z] [--dry-run]
    python -m shared.cli deadletters list [--all]
    python -m shared.cli deadletters show 5d41402abc4b2a76b9719d911017c592
    python -m shared.cli deadletters redrive 5d41402abc4b2a76b9719d911017c592 [...] [--dry-run]
    python -m shared.cli deadletters redrive --all [--queue erp-events] [--connection contoso-fo]
    python -m shared.cli validate config/connections.sample.json
    python -m shared.cli doctor [--connection contoso-fo] [--json]
    python -m shared.cli consent import opt-ins.csv [--connection twilio-main]
    python -m shared.cli consent export [--csv] [--reveal] [--connection twilio-main]
    python -m shared.cli twilio-webhooks [--connection twilio-main] [--dry-run]
    python -m shared.cli polls [--json]
    python -m shared.cli polls run syspro-main [--entity PorMasterHdr]

Settings come from the environment, or from a local.settings.json given with --settings
(validate needs neither settings nor storage; twilio-webhooks needs the configuration,
PUBLIC_BASE_URL and the Twilio secrets, not storage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.model import parse_utc_time
from shared.storage.tables import AuditEntry, Stores

if TYPE_CHECKING:
    from shared.channels.twilio.connection import TwilioConnection
    from shared.channels.twilio.webhooks import NumberWebhooks


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
    replay.add_argument("--dry-run", action="store_true", help="only show what would be sent to whom (masked)")
    add_deadletter_commands(commands)
    add_validate_command(commands)
    add_doctor_command(commands)
    add_consent_commands(commands)
    add_twilio_webhooks_command(commands)
    add_poll_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "validate":
        return run_validate(args.path)
    if args.settings:
        if not args.settings.exists():
            parser.error(f"settings file not found: {args.settings}")
        load_settings(args.settings)
    if args.command == "doctor":
        return run_doctor(args)
    if args.command == "twilio-webhooks":
        return run_twilio_webhooks(args.connection, args.dry_run)

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
    if args.command == "polls":
        return run_polls(args, stores)
    from shared.pipeline.replay import replay_failed, replay_job
    from shared.storage.bus import get_bus

    results = [replay_job(stores, get_bus(), args.job, dry_run=args.dry_run)] if args.job else replay_failed(
        stores, get_bus(), args.since, args.until, dry_run=args.dry_run)
    for result in results:
        print(f"{result.job_id}  {outcome_word(result.replayed, result.would, 'replayed')}  {result.reason}"
              f"{preview_line(result.preview)}")
    done = sum(r.would for r in results) if args.dry_run else sum(r.replayed for r in results)
    print(f"{done} of {len(results)} job(s) {'would be replayed (dry run)' if args.dry_run else 'replayed'}")
    # Nothing matched (no such job, an empty window): say so in the exit status too, for scripts.
    return 0 if any(r.reason != "no such job" for r in results) else 1


def outcome_word(done: bool, would: bool, verb: str) -> str:
    """``replayed``/``redriven``, ``would`` in a dry run, else ``skipped``, padded to one width."""
    return (verb if done else "would" if would else "skipped").ljust(len(verb))


def preview_line(preview: dict[str, object]) -> str:
    """A dry run's preview on the end of its line: channel, masked address, record; empty otherwise."""
    if not preview:
        return ""
    shown = " ".join(f"{name}={preview[name]}" for name in ("channel", "to", "type", "record") if preview.get(name))
    return f"  [{shown}]"


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
    redrive.add_argument("--dry-run", action="store_true", help="only show what each would do (addresses masked)")


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
    dry_run = args.dry_run
    results = [redrive(stores, bus, letter_id, dry_run=dry_run) for letter_id in args.ids] if args.ids else \
        redrive_all(stores, bus, queue=args.queue, connection=args.connection, dry_run=dry_run)
    for result in results:
        print(f"{result.id}  {outcome_word(result.redriven, result.would, 'redriven')}  {result.reason}"
              f"{preview_line(result.preview)}")
    if dry_run:
        print(f"{sum(r.would for r in results)} of {len(results)} dead letter(s) would be redriven (dry run)")
        return 0 if all(r.would for r in results) else 1
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
# --- the connection doctor --------------------------------------------------------------------------


def add_doctor_command(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="check every connection against the real systems (exit 1 on a "
                                                "failure, 2 on a settings or configuration error)")
    doctor.add_argument("--connection", help="check only this connection (and its secrets)")
    doctor.add_argument("--json", action="store_true", help="print the answer of GET /api/ops/doctor")


def run_doctor(args: argparse.Namespace) -> int:
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


# --- twilio-webhooks: each Twilio number's SMS webhook and status callback pointed at the app ---------

EXIT_WEBHOOK_PROBLEMS = 1
EXIT_WEBHOOK_UNUSABLE = 2


def add_twilio_webhooks_command(commands: argparse._SubParsersAction) -> None:
    webhooks = commands.add_parser(
        "twilio-webhooks",
        help="point each Twilio number's incoming SMS webhook and status callback at PUBLIC_BASE_URL")
    webhooks.add_argument("--connection", help="only this Twilio connection (default: every one)")
    webhooks.add_argument("--dry-run", action="store_true", help="show what would change and change nothing")


def run_twilio_webhooks(only: str | None, dry_run: bool) -> int:
    """0 when every number calls the app (or would, with --dry-run); 1 when one could not be set;
    2 without PUBLIC_BASE_URL, a loadable configuration or the named connection."""
    from shared.channels.twilio.connection import TwilioConnection
    from shared.config.loading import get_config
    from shared.config.model import ConfigError

    base_url = os.environ.get("PUBLIC_BASE_URL", "").strip()
    if not base_url:
        print("error: PUBLIC_BASE_URL is not set: the address Twilio should call", file=sys.stderr)
        return EXIT_WEBHOOK_UNUSABLE
    try:
        connections = [connection for connection in get_config().connections.values()
                       if isinstance(connection, TwilioConnection) and only in (None, connection.name)]
    except ConfigError as exc:
        print(f"error: the configuration does not load: {'; '.join(exc.errors)}", file=sys.stderr)
        return EXIT_WEBHOOK_UNUSABLE
    if not connections:
        print(f"error: no Twilio connection{f' named {only!r}' if only else ''} in the configuration", file=sys.stderr)
        return EXIT_WEBHOOK_UNUSABLE
    return max(point_number_at_app(connection, base_url, dry_run) for connection in connections)


def point_number_at_app(connection: TwilioConnection, base_url: str, dry_run: bool) -> int:
    """Set (or with ``dry_run`` show) one connection's number webhooks, printing them before and after."""
    from shared.channels.twilio.client import TwilioChannel, TwilioSendError
    from shared.channels.twilio.webhooks import expected_webhooks
    from shared.logs import mask_phone
    from shared.outcomes import RetryLater
    from shared.storage.secrets import get_secret_provider

    if not connection.from_number:
        print(f"{connection.name}: no from_number; set the incoming-message webhook of its Messaging Service "
              "in the Twilio console (Integration)")
        return EXIT_WEBHOOK_PROBLEMS
    wanted = expected_webhooks(connection.name, base_url)
    channel = TwilioChannel(connection, get_secret_provider())
    try:
        number = channel.find_number(connection.from_number)
        if number is None:
            print(f"{connection.name}: {mask_phone(connection.from_number)} is not a number of account "
                  f"{connection.account_sid}")
            return EXIT_WEBHOOK_PROBLEMS
        print(f"{connection.name}: {mask_phone(number.phone_number)} ({number.sid})")
        print(f"  before: {describe_webhooks(number.webhooks)}")
        if number.webhooks == wanted:
            print("  already calls the app: nothing to change")
        elif dry_run:
            print(f"  would set: {describe_webhooks(wanted)}")
        else:
            print(f"  after:  {describe_webhooks(channel.set_number_webhooks(number.sid, wanted).webhooks)}")
    except (TwilioSendError, RetryLater) as exc:
        print(f"{connection.name}: Twilio did not answer as expected: {exc}")
        return EXIT_WEBHOOK_PROBLEMS
    finally:
        channel.close()
    return 0


def describe_webhooks(webhooks: NumberWebhooks) -> str:
    return (f"SmsUrl={webhooks.sms_url or '(none)'} SmsMethod={webhooks.sms_method or '(none)'} "
            f"StatusCallback={webhooks.status_callback or '(none)'}")
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
