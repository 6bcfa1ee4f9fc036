"""The benchmarks' harness: what a run started is stopped however it ends, and its exit status says how."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from bench.harness import BenchError, run_measured, stopped_with


class Service:
    def __init__(self, name: str, stopped: list[str]) -> None:
        self.name, self._stopped = name, stopped

    def stop(self) -> None:
        self._stopped.append(self.name)


def test_a_run_that_measures_stops_what_it_started_last_first_and_exits_0(capsys: pytest.CaptureFixture) -> None:
    stopped: list[str] = []

    def measure(started_here: ExitStack) -> None:
        stopped_with(started_here, Service("azurite", stopped))
        stopped_with(started_here, Service("fakes", stopped))

    assert run_measured(measure) == 0
    assert stopped == ["fakes", "azurite"]
    assert "run time:" in capsys.readouterr().out


def test_a_run_that_cannot_produce_its_figure_says_why_stops_everything_and_exits_1(
        capsys: pytest.CaptureFixture) -> None:
    stopped: list[str] = []

    def measure(started_here: ExitStack) -> None:
        stopped_with(started_here, Service("azurite", stopped))
        raise BenchError("200 SMS at the fake Twilio: not within 60 s")

    assert run_measured(measure) == 1
    assert stopped == ["azurite"]
    assert "bench failed: 200 SMS at the fake Twilio" in capsys.readouterr().err


def test_an_interrupted_run_stops_everything_and_exits_130() -> None:
    stopped: list[str] = []

    def measure(started_here: ExitStack) -> None:
        stopped_with(started_here, Service("azurite", stopped))
        raise KeyboardInterrupt

    assert run_measured(measure) == 130
    assert stopped == ["azurite"]


def test_a_failure_that_is_not_named_is_not_taken_for_a_missing_figure() -> None:
    def measure(started_here: ExitStack) -> None:
        raise TimeoutError("a step took too long")

    with pytest.raises(TimeoutError):
        run_measured(measure)
    assert run_measured(measure, failures=(BenchError, TimeoutError)) == 1
