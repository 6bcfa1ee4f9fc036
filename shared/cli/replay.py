"""``replay``: failed jobs sent again (never a delivered one), or a dry run of it."""

from __future__ import annotations

import argparse

from shared.cli.shown import outcome_word, preview_line
from shared.model import parse_utc_time
from shared.storage.tables import Stores


def add(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="send failed jobs again (never a delivered one)")
    scope = replay.add_mutually_exclusive_group(required=True)
    scope.add_argument("--job")
    scope.add_argument("--from", dest="since", type=parse_utc_time)
    replay.add_argument("--to", dest="until", type=parse_utc_time)
    replay.add_argument("--dry-run", action="store_true", help="only show what would be sent to whom (masked)")
    replay.set_defaults(run=run, storage=True)


def run(args: argparse.Namespace, stores: Stores) -> int:
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
