"""Operator commands against a deployment's storage:

    python -m shared.cli audit --record "contoso-fo|VendorInvoice|usmf|INV-0042"
    python -m shared.cli audit --correlation 3f2a...
    python -m shared.cli replay --job 9c1e...
    python -m shared.cli replay --from 2026-11-22T08:00:00Z [--to 2026-11-22T12:00:00Z]

Settings come from the environment, or from a local.settings.json given with --settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shared.model import parse_utc_time
from shared.storage.tables import AuditEntry


def load_settings(path: Path) -> None:
    """Values of a local.settings.json into the environment; variables already set win."""
    values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values") or {}
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def print_trail(entries: list[AuditEntry]) -> None:
    from shared.pipeline.report import contacts

    if not entries:
        print("no audit entries")
        return
    for entry in entries:
        detail = " ".join(f"{k}={v}" for k, v in entry.detail.items())
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
    replay = commands.add_parser("replay", help="send failed jobs again (never a delivered one)")
    scope = replay.add_mutually_exclusive_group(required=True)
    scope.add_argument("--job")
    scope.add_argument("--from", dest="since", type=parse_utc_time)
    replay.add_argument("--to", dest="until", type=parse_utc_time)
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
        print_trail(audit_log.by_record(args.record) if args.record else audit_log.by_correlation(args.correlation))
        return 0
    from shared.pipeline.replay import replay_failed, replay_job
    from shared.storage.bus import get_bus

    results = [replay_job(stores, get_bus(), args.job)] if args.job else replay_failed(
        stores, get_bus(), args.since, args.until)
    for result in results:
        print(f"{result.job_id}  {'replayed' if result.replayed else 'skipped '}  {result.reason}")
    print(f"{sum(r.replayed for r in results)} of {len(results)} job(s) replayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
