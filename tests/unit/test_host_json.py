"""host.json as this app needs it: Service Bus settlement and locks, logging and sampling."""

from __future__ import annotations

import json

from devhost.settings import load_host_config, parse_timespan
from tests.conftest import REPO_ROOT

HOST_JSON = REPO_ROOT / "host.json"


def host() -> dict:
    return json.loads(HOST_JSON.read_text(encoding="utf-8"))


def test_the_host_settles_service_bus_messages_and_locks_outlast_a_run() -> None:
    service_bus = host()["extensions"]["serviceBus"]
    # The consumer returns after handling, requeueing or dead-lettering a copy, and raises to be retried.
    assert service_bus["autoCompleteMessages"] is True
    assert parse_timespan(service_bus["maxAutoLockRenewalDuration"]) >= parse_timespan(host()["functionTimeout"])
    assert 1 <= service_bus["maxConcurrentCalls"] <= 32


def test_requests_exceptions_and_traces_are_never_sampled() -> None:
    sampling = host()["logging"]["applicationInsights"]["samplingSettings"]
    assert {"Request", "Exception", "Trace"} <= set(sampling["excludedTypes"].split(";"))


def test_function_lines_are_stored_once_and_function_runs_always() -> None:
    levels = host()["logging"]["logLevel"]
    # The app exports its own Information lines with their dimensions (shared/telemetry.py); the
    # host forwards the rest of what the functions log, warnings and errors.
    assert levels["Function"] == "Warning"
    assert levels["Host.Results"] == "Information"  # the requests table: one row per run


def test_the_local_host_reads_it() -> None:
    config = load_host_config(HOST_JSON)
    assert config.route_prefix == "api" and config.queues.max_dequeue_count == 5
