"""``audit``: the trail of an ERP record or a correlation id, and who was contacted."""

from __future__ import annotations

import argparse

from shared.storage.tables import AuditEntry, Stores


def add(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="show the audit trail of an ERP record or a correlation id")
    which = audit.add_mutually_exclusive_group(required=True)
    which.add_argument("--record")
    which.add_argument("--correlation")
    audit.add_argument("--reveal-texts", action="store_true", help="show what people wrote (SMS replies) unmasked")
    audit.set_defaults(run=run, storage=True)


def run(args: argparse.Namespace, stores: Stores) -> int:
    entries = stores.audit.by_record(args.record) if args.record else stores.audit.by_correlation(args.correlation)
    print_trail(entries, args.reveal_texts)
    return 0


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
