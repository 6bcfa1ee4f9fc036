"""``validate``: a configuration file checked as the app loads it, without settings or storage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_CONFIG_PROBLEMS = 1
EXIT_CONFIG_UNREADABLE = 2


def add(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser(
        "validate", help="check a configuration file as the app loads it; every problem with its path")
    validate.add_argument("path", type=Path, help="the connections and rules file (JSON)")
    validate.set_defaults(run=run, reads_settings=False)


def run(args: argparse.Namespace) -> int:
    """0 when the app would load the file; 1 with every problem listed; 2 when it is no readable JSON."""
    from shared.config.loading import load_config
    from shared.config.model import ConfigError

    path: Path = args.path
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
