"""HTTP triggers answer within their budget: their own answer, or 503 with Retry-After."""

from __future__ import annotations

import threading

import azure.functions as func
import pytest
import requests

from shared import telemetry
from shared.triggers import budget
from shared.triggers.budget import answers_in_time


@pytest.fixture(autouse=True)
def short_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "ANSWER_SECONDS", 0.3)


def request() -> func.HttpRequest:
    return func.HttpRequest("POST", "http://127.0.0.1/api/x/c", body=b"")


def test_a_trigger_that_answers_in_time_answers_itself_and_sees_the_invocations_dimensions() -> None:
    @answers_in_time
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(telemetry.dimensions().get("connection", ""), status_code=202)

    with telemetry.scope(connection="contoso-fo"):
        answer = echo(request())
    assert (answer.status_code, answer.get_body()) == (202, b"contoso-fo")


def test_a_trigger_that_overstays_is_answered_503_with_retry_after_and_finishes_later() -> None:
    release, finished = threading.Event(), threading.Event()

    @answers_in_time
    def stuck(req: func.HttpRequest) -> func.HttpResponse:
        release.wait(5)
        finished.set()
        return func.HttpResponse(status_code=202)

    answer = stuck(request())
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    release.set()
    assert finished.wait(5)  # the run was not cut off: what it does is keyed, and its repeat is harmless


def test_a_transient_failure_is_503_and_a_bug_is_raised() -> None:
    @answers_in_time
    def unreachable(req: func.HttpRequest) -> func.HttpResponse:
        raise requests.ConnectionError("storage refused the connection")

    @answers_in_time
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise KeyError("connection")

    assert unreachable(request()).status_code == 503
    with pytest.raises(KeyError):
        broken(request())


def test_a_request_that_finds_every_worker_busy_is_answered_503_and_never_runs_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "_workers", budget._Workers(1))
    release, runs = threading.Event(), []

    @answers_in_time
    def stuck(req: func.HttpRequest) -> func.HttpResponse:
        release.wait(5)
        return func.HttpResponse(status_code=202)

    @answers_in_time
    def queued(req: func.HttpRequest) -> func.HttpResponse:
        runs.append(req)
        return func.HttpResponse(status_code=202)

    assert stuck(request()).status_code == 503  # holds the only worker
    answer = queued(request())
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    release.set()
    assert queued(request()).status_code == 202  # the worker is free again and takes new work
    assert len(runs) == 1  # the request answered 503 while it waited (queued first) was dropped, not run late


def test_requests_run_on_a_few_warm_daemon_threads_not_one_new_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "_workers", budget._Workers(4))
    seen: list[threading.Thread] = []

    @answers_in_time
    def where(req: func.HttpRequest) -> func.HttpResponse:
        seen.append(threading.current_thread())
        return func.HttpResponse(status_code=200)

    for _ in range(20):
        assert where(request()).status_code == 200
    assert len(set(seen)) <= 4
    assert all(thread.daemon for thread in seen)  # one that overstays never holds the process up at exit
