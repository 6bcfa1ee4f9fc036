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
PUBLIC_BASE_URL and the Twilio secrets, not storage)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

# Each command module adds its parser and sets ``run``: ``reads_settings=False`` runs it before any
# settings are read, ``storage=False`` without opening storage, else it is ``run(args, stores)``.
# Imported by main, not here: the modules import the package (shared.cli.shown), never the other way.
COMMANDS = ("audit", "replay", "deadletters", "validate", "doctor", "consent", "twilio_webhooks", "polls")


def load_settings(path: Path) -> None:
    """Values of a local.settings.json into the environment; variables already set win."""
    values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values") or {}
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, help="a local.settings.json whose Values to use")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"shared.cli.{name}").add(commands)
    args = parser.parse_args(argv)
    if not getattr(args, "reads_settings", True):
        return int(args.run(args))
    if args.settings:
        if not args.settings.exists():
            parser.error(f"settings file not found: {args.settings}")
        load_settings(args.settings)
    if not getattr(args, "storage", True):
        return int(args.run(args))

    from shared.settings import SettingsError
    from shared.storage.tables import get_stores

    try:
        stores = get_stores()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(args.run(args, stores))
