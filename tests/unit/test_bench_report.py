"""The benchmark summary: every goal keeps a row, and met or not follows the goal's direction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import report


@pytest.fixture
def figures_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "figures.jsonl"
    report.write_json_to(path)
    yield path
    report.write_json_to(None)


def rows_by_figure(path: Path, missing: dict[str, str] | None = None) -> dict[str, tuple[str, str, str, str]]:
    return {row[0]: row for row in report.summary_rows(report.read_figures(path), missing or {})}


def test_recorded_figures_reach_the_summary_beside_their_goals(figures_file: Path) -> None:
    assert report.record("ops_per_sms", 22.2, "shipped host.json") is False
    assert report.record("slack_rate", 0.97) is True
    assert report.record("slack_429", 0) is True
    report.note("SMS per second, one app process", 26.0)
    rows = rows_by_figure(figures_file)
    assert rows["storage + queue ops per delivered SMS (shipped host.json)"][1:] == ("22.20", "<= 10", "NOT met")
    assert rows["Slack sends per channel, fraction of 1 msg/s over a burst of 30"][1:] == ("0.97", ">= 0.95", "met")
    assert rows["Slack answers 429 in that burst"][3] == "met"
    assert rows["SMS per second, one app process"][2:] == ("-", "-")


def test_a_goal_without_a_figure_keeps_its_row_and_says_why(figures_file: Path) -> None:
    report.record("first_request", 300.0, "business events")
    rows = rows_by_figure(figures_file, {"answer_time.py": "bench/answer_time.py not in this checkout"})
    assert rows["in-process answer p99 at 50 concurrent"][1:] == (
        "- (bench/answer_time.py not in this checkout)", "<= 50 ms", "-")
    assert rows["1,100 polled changes enqueued"][1] == "- (not reported by bench/erp_poll.py)"
    assert {goal.figure for goal in report.GOALS} <= {label.split(" (")[0] for label in rows}
