"""Figures beside their goals, and the summary table of ``make bench``.

A benchmark calls ``record(goal, measured)`` for each figure that has a goal (and ``note`` for
one that has none): it prints the figure beside its goal and whether it is met, and, when the
benchmark was given ``--json PATH`` (see ``add_json_argument``), appends it to PATH as one
JSON line: ``{"goal": "ops_per_sms", "detail": "...", "measured": 28.4}``.

``python bench/report.py PATH`` prints the summary table of the figures in PATH: one row per
figure recorded, and a row for each goal no benchmark reported (its benchmark missing or
failed), so a goal never drops out of the table unseen.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Goal:
    key: str
    figure: str
    limit: float
    at_most: bool  # True: met when measured <= limit; False: when measured >= limit
    unit: str
    bench: str  # the benchmark in bench/ that measures it

    def met(self, measured: float) -> bool:
        return measured <= self.limit if self.at_most else measured >= self.limit

    def text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {number(self.limit)}{self.unit}"


GOALS: tuple[Goal, ...] = (
    Goal("ops_per_sms", "storage + queue ops per delivered SMS", 10, True, "", "dynamics_twilio.py"),
    Goal("ops_per_slack_approval", "storage + queue ops per Slack approval", 12, True, "",
         "slack_approvals.py"),
    Goal("cpu_per_sms", "app CPU per SMS, end to end", 10, True, " ms", "dynamics_twilio.py"),
    Goal("first_request", "first request after a cold import", 120, True, " ms", "import_time.py"),
    Goal("answer_p99", "in-process answer p99 at 50 concurrent", 50, True, " ms", "answer_time.py"),
    Goal("slack_rate", "Slack sends per channel, fraction of 1 msg/s over a burst of 30", 0.95, False, "",
         "slack_pacing.py"),
    Goal("slack_429", "Slack answers 429 in that burst", 0, True, "", "slack_pacing.py"),
    Goal("poll_enqueue", "1,100 polled changes enqueued", 5, True, " s", "erp_poll.py"),
)
BY_KEY = {goal.key: goal for goal in GOALS}
NOTE = "note"  # a figure printed for comparison, with no goal of its own

_json_path: Path | None = None


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also append each figure with a goal to PATH as a JSON line (for the summary)")


def write_json_to(path: Path | None) -> None:
    """Where ``record`` and ``note`` append their JSON lines from now on (None: nowhere)."""
    global _json_path
    _json_path = path


def number(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def record(key: str, measured: float, detail: str = "") -> bool:
    """Print one figure beside its goal; True when it is met."""
    goal = BY_KEY[key]
    met = goal.met(measured)
    where = f" ({detail})" if detail else ""
    print(f"[goal] {goal.figure}{where}: {number(measured)}{goal.unit}, goal {goal.text()}: "
          f"{'met' if met else 'NOT met'}", flush=True)
    _append({"goal": key, "detail": detail, "measured": measured})
    return met


def note(figure: str, measured: float, unit: str = "", detail: str = "") -> None:
    """A figure without a goal, carried into the summary for comparison."""
    _append({"goal": NOTE, "figure": figure, "detail": detail, "measured": measured, "unit": unit})


def _append(line: dict[str, object]) -> None:
    if _json_path is not None:
        with _json_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


# --- the summary -------------------------------------------------------------------------------------


def read_figures(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary_rows(figures: Sequence[dict], missing: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, goal, met) per figure, in the order of GOALS, then the notes.

    ``missing`` says, per benchmark file, why it gave no figures (absent, failed).
    """
    rows = []
    for goal in GOALS:
        found = [figure for figure in figures if figure["goal"] == goal.key]
        for figure in found:
            label = goal.figure + (f" ({figure['detail']})" if figure.get("detail") else "")
            measured = float(figure["measured"])
            ok = goal.met(measured) and math.isfinite(measured)
            rows.append((label, f"{number(measured)}{goal.unit}", goal.text(), "met" if ok else "NOT met"))
        if not found:
            why = missing.get(goal.bench, f"not reported by bench/{goal.bench}")
            rows.append((goal.figure, f"- ({why})", goal.text(), "-"))
    for figure in figures:
        if figure["goal"] == NOTE:
            label = figure["figure"] + (f" ({figure['detail']})" if figure.get("detail") else "")
            rows.append((label, f"{number(float(figure['measured']))}{figure.get('unit', '')}", "-", "-"))
    return rows


def print_summary(figures: Sequence[dict], missing: dict[str, str] | None = None) -> None:
    rows = summary_rows(figures, missing or {})
    header = ("figure", "measured", "goal", "met")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    line = "  ".join("-" * width for width in widths)
    print("\nsummary")
    print(line)
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(line)
    goals = [row for row in rows if row[3] != "-"]
    print(f"{sum(row[3] == 'met' for row in goals)} of {len(goals)} measured figures meet their goal; "
          f"{sum(row[3] == '-' and row[2] != '-' for row in rows)} goals not measured", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="the JSON lines the benchmarks appended")
    args = parser.parse_args()
    print_summary(read_figures(args.path))


if __name__ == "__main__":
    sys.exit(main())
