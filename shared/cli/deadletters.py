"""``deadletters``: list, show and redrive dead-lettered work (exactly once still holds)."""

from __future__ import annotations

import argparse
import json
import sys

from shared.cli.shown import outcome_word, preview_line
from shared.storage.tables import Stores


def add(commands: argparse._SubParsersAction) -> None:
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
    deadletters.set_defaults(run=run, storage=True)


def run(args: argparse.Namespace, stores: Stores) -> int:
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
