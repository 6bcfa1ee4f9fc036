"""Every benchmark in turn, each in a process of its own, then one summary table of the figures and goals.

Each benchmark's own output is shown as it runs; each is given ``--json PATH`` and appends its
figures there (``bench/report.py``). A benchmark that is not in the checkout, or that fails, is
named in the summary beside the goals it would have measured; the exit status is 1 when any
benchmark failed (a goal not met is a figure, not a failure).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.report import print_summary, read_figures  # noqa: E402

# In the order they run: the cheap cold-start probe first, the longest last.
BENCHMARKS = ("import_time.py", "dynamics_twilio.py", "slack_approvals.py", "slack_interactions.py",
              "answer_time.py", "slack_pacing.py", "erp_poll.py")


def run(name: str, json_path: Path) -> str | None:
    """Run one benchmark; None when it ran, else why it gave no figures."""
    path = BENCH / name
    if not path.exists():
        return f"bench/{name} not in this checkout"
    print(f"\n=== bench/{name}", flush=True)
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(path), "--json", str(json_path)], cwd=BENCH.parent, check=False)
    print(f"=== bench/{name}: exit status {result.returncode} after {time.monotonic() - started:.0f} s", flush=True)
    return None if result.returncode == 0 else f"bench/{name} failed, exit status {result.returncode}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this benchmark; repeatable")
    args = parser.parse_args()
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as temp:
        json_path = Path(temp) / "figures.jsonl"
        for name in BENCHMARKS:
            why = run(name, json_path) if not args.only or name in args.only else "not run: --only"
            if why:
                missing[name] = why
        print_summary(read_figures(json_path), missing)
    return 1 if any("failed" in why for why in missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
