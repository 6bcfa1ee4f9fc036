"""devhost against real Azurite: HTTP routes and keys, timers, storage queue retries and poison."""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func
import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from devhost.__main__ import CONFIG_PATH_SETTING, load_settings, parse_args
from devhost.azurite import (
    Azurite,
    AzuritePortError,
    free_port,
    parse_azurite_ports,
    running_azurite,
    wait_for_port,
)
from devhost.host import DevHost, HostedFunction, TimerRunner, next_occurrence
from devhost.http_server import MAX_REQUEST_BODY, compile_route, loggable_path
from devhost.queues import QueuePoller
from devhost.settings import (
    HostConfig,
    QueueOptions,
    SettingsFileError,
    apply_local_settings,
    development_storage_connection_string,
    follow_local_port,
    load_host_config,
    parse_timespan,
    read_local_settings,
)
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from tests.conftest import REPO_ROOT
from tests.integration.devhost_app import (
    FAILING_CONNECTION_SETTING,
    QUEUE_FAILING_SETTING,
    QUEUE_OK_SETTING,
    SPIN_BODY,
    SPIN_QUEUE_CPU_SECONDS,
    Calls,
    make_app,
)

TEST_APP = "tests.integration.devhost_app:app"
FUNCTION_KEY = "function-key-for-tests"
MASTER_KEY = "master-key-for-tests"
# Retries one second apart and three attempts, so the poison path takes seconds, not minutes.
FAST_CONFIG = HostConfig(
    route_prefix="api",
    queues=QueueOptions(batch_size=8, max_dequeue_count=3, visibility_timeout=1.0, max_polling_interval=0.5),
)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout:.0f} s")


def devhost_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("devhost-")]


def peek(connection_string: str, queue: str) -> list[str]:
    """Visible message texts of a queue (none if the queue does not exist yet)."""
    with QueueClient.from_connection_string(connection_string, queue) as client:
        try:
            return [message.content for message in client.peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            return []


def message_count(connection_string: str, queue: str) -> int:
    with QueueClient.from_connection_string(connection_string, queue) as client:
        return client.get_queue_properties().approximate_message_count


@dataclass
class Hosted:
    host: DevHost
    calls: Calls
    queue_ok: str
    queue_failing: str
    connection_string: str

    def url(self, path: str) -> str:
        return f"{self.host.base_url}/api/{path}"

    def send(self, queue: str, text: str) -> None:
        bus = StorageQueueBus(StorageSettings(self.connection_string, None, None, None))
        try:
            bus.send_text(queue, text)
        finally:
            bus.close()


@pytest.fixture
def hosted(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosted]:
    suffix = uuid.uuid4().hex[:10]
    queue_ok, queue_failing = f"devhost-ok-{suffix}", f"devhost-fail-{suffix}"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv(FAILING_CONNECTION_SETTING, azurite.connection_string)
    recording = make_app(queue_ok, queue_failing)
    host = DevHost(recording.app, port=0, config=FAST_CONFIG, function_key=FUNCTION_KEY, master_key=MASTER_KEY)
    host.start()
    try:
        yield Hosted(host, recording.calls, queue_ok, queue_failing, azurite.connection_string)
    finally:
        host.stop()
        wait_until(lambda: not devhost_threads(), timeout=5, what="devhost threads stopped")


# --- HTTP -----------------------------------------------------------------------------


def test_anonymous_route_needs_no_key(hosted: Hosted) -> None:
    response = requests.get(hosted.url("ping"), timeout=5)
    assert response.status_code == 200
    assert response.text == "pong"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("place", ["header", "query"])
def test_function_key_opens_function_level_route(hosted: Hosted, place: str) -> None:
    if place == "header":
        response = requests.get(hosted.url("secret/alice"), headers={"x-functions-key": FUNCTION_KEY}, timeout=5)
    else:
        response = requests.get(hosted.url("secret/alice"), params={"code": FUNCTION_KEY}, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"name": "alice"}


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_is_401_with_empty_body(hosted: Hosted, key: str | None) -> None:
    headers = {"x-functions-key": key} if key else {}
    response = requests.get(hosted.url("secret/alice"), headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.content == b""


def test_the_access_log_shows_no_key_given_in_the_query(hosted: Hosted, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="devhost.http")
    for query in (f"code={FUNCTION_KEY}&x=1", f"x=1&c%6Fde={MASTER_KEY}", f"code={FUNCTION_KEY[:5]}"):
        assert requests.get(hosted.url("secret/carol") + "?" + query, timeout=5).status_code in (200, 401)
    wait_until(lambda: len([r for r in caplog.records if r.name == "devhost.http"]) >= 3, what="access log lines")

    lines = [record.getMessage() for record in caplog.records if record.name == "devhost.http"]
    assert any("/api/secret/carol?code=***&x=1 -> 200" in line for line in lines), lines
    assert any("/api/secret/carol?x=1&code=*** -> 200" in line for line in lines), lines
    assert not any(FUNCTION_KEY[:5] in line or MASTER_KEY in line for line in lines), lines
    # A client that sends the name encoded (the host decodes it, so the key is accepted) is masked too.
    assert loggable_path(f"/api/x?c%6Fde={MASTER_KEY}&codes=1") == "/api/x?c%6Fde=***&codes=1"


def test_master_key_opens_function_level_route(hosted: Hosted) -> None:
    response = requests.get(hosted.url("secret/bob"), params={"code": MASTER_KEY}, timeout=5)
    assert response.status_code == 200


def test_admin_route_takes_the_master_key_only(hosted: Hosted) -> None:
    refused = requests.get(hosted.url("ops/thing"), headers={"x-functions-key": FUNCTION_KEY}, timeout=5)
    accepted = requests.get(hosted.url("ops/thing"), headers={"x-functions-key": MASTER_KEY}, timeout=5)
    assert refused.status_code == 401
    assert accepted.status_code == 200
    assert accepted.text == "admin ok"


def test_route_parameters_are_decoded_and_optional_ones_may_be_left_out(hosted: Hosted) -> None:
    named = requests.get(hosted.url("secret/a%20b"), params={"code": FUNCTION_KEY}, timeout=5)
    with_label = requests.get(hosted.url("items/42/red"), timeout=5)
    without_label = requests.get(hosted.url("items/42"), timeout=5)
    assert named.json() == {"name": "a b"}
    assert with_label.json() == {"id": "42", "label": "red"}  # an async function
    assert without_label.json() == {"id": "42"}


def test_post_gets_body_query_and_headers(hosted: Hosted) -> None:
    response = requests.post(
        hosted.url("echo") + "?tag=a&tag=b", json={"x": [1, 2]}, headers={"X-Test": "yes"}, timeout=5
    )
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"body": {"x": [1, 2]}, "params": {"tag": "a,b"}, "header": "yes"}


def test_chunked_request_body_is_read(hosted: Hosted) -> None:
    chunks = (part.encode() for part in ['{"chunked": ', "true}"])
    response = requests.post(hosted.url("echo"), data=chunks, timeout=5)  # a generator is sent chunked
    assert response.status_code == 201
    assert response.json()["body"] == {"chunked": True}


def test_unknown_route_and_wrong_method_are_404_as_in_azure(hosted: Hosted) -> None:
    missing = requests.get(hosted.url("nothing/here"), timeout=5)
    outside_prefix = requests.get(f"{hosted.host.base_url}/ping", timeout=5)
    wrong_method = requests.delete(hosted.url("ping"), timeout=5)
    assert missing.status_code == 404
    assert outside_prefix.status_code == 404
    assert wrong_method.status_code == 404


def test_routes_starting_with_admin_are_refused_as_the_host_does(hosted: Hosted) -> None:
    assert requests.get(hosted.url("admin/thing"), timeout=5).status_code == 404
    [reserved] = [f for f in hosted.host.functions if f.name == "reserved_route"]
    assert reserved.unsupported_reason is not None and "built in routes" in reserved.unsupported_reason


def test_function_exception_is_500(hosted: Hosted) -> None:
    response = requests.get(hosted.url("broken"), timeout=5)
    assert response.status_code == 500
    assert len(response.content) < 200


def test_body_above_the_host_limit_is_413(hosted: Hosted) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", hosted.host.port, timeout=5)
    try:
        connection.putrequest("POST", "/api/echo")
        connection.putheader("Content-Length", str(MAX_REQUEST_BODY + 1))
        connection.endheaders()
        assert connection.getresponse().status == 413
    finally:
        connection.close()


def test_hosting_cpu_is_told_to_the_master_key_only_and_leaves_out_what_the_functions_spend(
    hosted: Hosted,
) -> None:
    url = f"{hosted.host.base_url}/admin/devhost/cpu"
    assert requests.get(url, headers={"x-functions-key": FUNCTION_KEY}, timeout=5).status_code == 401

    def hosting_seconds() -> float:
        answer = requests.get(url, headers={"x-functions-key": MASTER_KEY}, timeout=5)
        assert answer.status_code == 200
        return float(answer.json()["hosting_cpu_seconds"])

    before = hosting_seconds()
    spin = requests.get(hosted.url("spin"), params={"seconds": str(SPIN_QUEUE_CPU_SECONDS)}, timeout=30)
    assert spin.status_code == 200
    hosted.send(hosted.queue_ok, SPIN_BODY)
    wait_until(lambda: hosted.calls.count("queue_bodies") == 1, what="message consumed")
    wait_until(lambda: message_count(hosted.connection_string, hosted.queue_ok) == 0, what="message deleted")
    used = hosting_seconds() - before
    # The host's own work for a request and a message is there; the functions' two spins are not.
    assert 0 < used < SPIN_QUEUE_CPU_SECONDS


# --- timers and queues ----------------------------------------------------------------


def test_timer_fires_on_its_schedule(hosted: Hosted) -> None:
    wait_until(lambda: hosted.calls.count("timer_ticks") >= 2, timeout=3.5, what="two timer runs")
    assert not any(hosted.calls.snapshot("timer_ticks")), "on-time runs are not past due"


def test_timer_runs_on_startup_and_never_overlaps_a_slow_run(caplog: pytest.LogCaptureFixture) -> None:
    running = threading.Semaphore(1)
    overlaps: list[bool] = []
    starts: list[float] = []

    def slow(timer: object) -> None:
        overlapping = not running.acquire(blocking=False)
        overlaps.append(overlapping)
        starts.append(time.monotonic())
        try:
            threading.Event().wait(1.6 if len(starts) == 2 else 0)  # the first scheduled run outlasts a tick
        finally:
            if not overlapping:
                running.release()

    binding = {"type": "timerTrigger", "name": "timer", "schedule": "* * * * * *", "runOnStartup": True}
    stop = threading.Event()
    runner = TimerRunner(HostedFunction("slow", binding, slow), "* * * * * *", stop)
    caplog.set_level("WARNING", logger="devhost.timers")
    runner.start()
    try:
        wait_until(lambda: len(starts) >= 3, timeout=6, what="a run after the slow one")
    finally:
        stop.set()
        runner.join(5)
    assert starts[1] - starts[0] <= 1.5, "the startup run does not delay the schedule"
    assert starts[2] - starts[1] >= 1.6
    assert not any(overlaps)
    assert "skipped" in caplog.text and "still running" in caplog.text


def test_queue_message_reaches_its_trigger_and_is_deleted(hosted: Hosted) -> None:
    hosted.send(hosted.queue_ok, '{"hello": "queue"}')
    wait_until(lambda: hosted.calls.count("queue_bodies") == 1, what="message consumed")
    assert hosted.calls.snapshot("queue_bodies") == ['{"hello": "queue"}']
    assert hosted.calls.snapshot("queue_dequeue_counts") == [1]
    wait_until(lambda: message_count(hosted.connection_string, hosted.queue_ok) == 0, what="message deleted")


def test_failing_message_goes_to_poison_after_max_dequeue_count(hosted: Hosted) -> None:
    hosted.send(hosted.queue_failing, "cannot be handled")
    poison = hosted.queue_failing + "-poison"
    wait_until(lambda: peek(hosted.connection_string, poison), timeout=20, what="message in the poison queue")
    wait_until(lambda: message_count(hosted.connection_string, hosted.queue_failing) == 0, what="original removed")
    assert hosted.calls.snapshot("failing_attempts") == [1, 2, 3]
    # The poison copy keeps the original encoding (base64), as the host's does.
    assert [base64.b64decode(text).decode() for text in peek(hosted.connection_string, poison)] == [
        "cannot be handled"
    ]


def test_message_that_is_not_base64_goes_straight_to_poison(hosted: Hosted) -> None:
    with QueueClient.from_connection_string(hosted.connection_string, hosted.queue_ok) as client:
        with contextlib.suppress(ResourceExistsError):  # the poller may not have created it yet
            client.create_queue()
        client.send_message("this is not base64!")
    poison = hosted.queue_ok + "-poison"
    wait_until(lambda: peek(hosted.connection_string, poison) == ["this is not base64!"], what="poisoned at once")
    assert hosted.calls.count("queue_bodies") == 0


class SlowFunction:
    """A queue function that runs until the test lets it finish, counting how many run at once."""

    def __init__(self) -> None:
        self.finish = threading.Semaphore(0)
        self._lock = threading.Lock()
        self.started: list[str] = []
        self.running = 0
        self.most_at_once = 0

    def __call__(self, msg: func.QueueMessage) -> None:
        with self._lock:
            self.started.append(msg.get_body().decode())
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.finish.acquire(timeout=30)
        finally:
            with self._lock:
                self.running -= 1


FETCH_LINE = re.compile(r"received (\d+) message\(s\) with (\d+) in flight")


def test_a_new_batch_is_fetched_when_the_running_messages_fall_to_new_batch_threshold(
    azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    queue = f"devhost-threshold-{uuid.uuid4().hex[:10]}"
    with QueueClient.from_connection_string(azurite.connection_string, queue) as client:
        client.create_queue()
    bus = StorageQueueBus(StorageSettings(azurite.connection_string, None, None, None))
    try:
        for number in range(12):
            bus.send_text(queue, f"message {number}")
    finally:
        bus.close()
    options = QueueOptions(batch_size=4, new_batch_threshold=2, max_polling_interval=0.5)
    slow = SlowFunction()
    stop = threading.Event()
    binding = {"type": "queueTrigger", "name": "msg", "queueName": queue}
    poller = QueuePoller(HostedFunction("slow", binding, slow), queue, azurite.connection_string, options, stop)
    caplog.set_level("DEBUG", logger="devhost.queues")
    poller.start()
    try:
        wait_until(lambda: len(slow.started) == 4, what="the first batch of batchSize running")
        slow.finish.release(2)  # two finish: as many still run as the threshold allows
        wait_until(lambda: len(slow.started) == 8, what="the next batch fetched at the threshold")
        wait_until(lambda: slow.running == 6, what="batchSize + newBatchThreshold running at once")
        slow.finish.release(12)
        wait_until(lambda: len(slow.started) == 12 and slow.running == 0, what="every message handled")
        wait_until(lambda: message_count(azurite.connection_string, queue) == 0, what="every message deleted")
    finally:
        stop.set()
        slow.finish.release(12)
        poller.join(5)
    fetches = [(int(found[1]), int(found[2])) for found in map(FETCH_LINE.search, caplog.messages) if found]
    assert sum(received for received, _ in fetches) == 12
    assert all(received <= 4 for received, _ in fetches), fetches
    assert all(in_flight <= 2 for _, in_flight in fetches), fetches
    assert slow.most_at_once == 6
    assert sorted(slow.started) == sorted(f"message {number}" for number in range(12))


def test_new_batch_threshold_is_read_from_host_json_and_defaults_to_half_the_batch() -> None:
    assert load_host_config(REPO_ROOT / "host.json").queues.batch_threshold == 8
    assert QueueOptions.from_host_json({"batchSize": 16, "newBatchThreshold": 3}).batch_threshold == 3
    assert QueueOptions.from_host_json({"batchSize": 9}).batch_threshold == 4
    assert QueueOptions().batch_threshold == 8
    with pytest.raises(ValueError, match="newBatchThreshold"):
        QueueOptions.from_host_json({"newBatchThreshold": -1})


def test_service_bus_triggers_are_listed_but_not_run(hosted: Hosted) -> None:
    reasons = {function.name: function.unsupported_reason for function in hosted.host.functions}
    assert reasons["on_service_bus"] == "not run locally: set QUEUE_BACKEND=storage"
    assert reasons["ping"] is None and reasons["record_message"] is None


def test_keys_come_from_settings_or_are_generated() -> None:
    from_settings = DevHost(
        make_app("q-one", "q-two").app,
        config=FAST_CONFIG,
        env={"DEVHOST_FUNCTION_KEY": "fk-from-settings", "DEVHOST_MASTER_KEY": "mk-from-settings"},
    )
    generated = DevHost(make_app("q-one", "q-two").app, config=FAST_CONFIG, env={})
    assert (from_settings.keys.function_key, from_settings.keys.master_key) == ("fk-from-settings", "mk-from-settings")
    assert from_settings.keys.generated == []
    assert len(generated.keys.function_key) >= 32 and generated.keys.function_key != generated.keys.master_key
    assert generated.keys.generated == ["DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY"]


# --- settings and small parts ---------------------------------------------------------


def test_local_settings_values_go_to_env_existing_env_wins_and_storage_expands(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                    "FUNCTIONS_WORKER_RUNTIME": "python",
                    "QUEUE_BACKEND": "storage",
                    "RETRIES": 3,
                },
                "Host": {"LocalHttpPort": 7399},
                "ConnectionStrings": {"Ignored": "x"},
            }
        )
    )
    env = {"QUEUE_BACKEND": "servicebus"}
    settings = read_local_settings(path)
    skipped = apply_local_settings(settings, env)
    assert settings.http_port == 7399
    assert skipped == ["QUEUE_BACKEND"]
    assert env["QUEUE_BACKEND"] == "servicebus"
    assert env["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert env["RETRIES"] == "3"
    assert env["AzureWebJobsStorage"] == development_storage_connection_string()
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;" in env["AzureWebJobsStorage"]
    assert "Ignored" not in env


def test_config_option_sets_an_absolute_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {})  # the settings go to a throwaway environment
    (tmp_path / "local.settings.json").write_text('{"Values": {"QUEUE_BACKEND": "storage"}}')
    (tmp_path / "connections.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    load_settings(parse_args(["--settings", "local.settings.json", "--config", "connections.json"]))
    assert os.environ == {"QUEUE_BACKEND": "storage", CONFIG_PATH_SETTING: str(tmp_path / "connections.json")}
    with pytest.raises(SettingsFileError, match="config file not found"):
        load_settings(parse_args(["--settings", "local.settings.json", "--config", "missing.json"]))



@pytest.mark.parametrize("given", [None, "", "http://127.0.0.1:7071", "http://127.0.0.1:7071/"])
def test_public_base_url_follows_the_port_unless_the_operator_chose_one(given: str | None) -> None:
    env = {} if given is None else {"PUBLIC_BASE_URL": given}
    assert follow_local_port(8085, env) == "http://127.0.0.1:8085"
    assert env["PUBLIC_BASE_URL"] == "http://127.0.0.1:8085"


@pytest.mark.parametrize("chosen", ["https://abc123.ngrok.app", "http://127.0.0.1:9000"])
def test_a_public_base_url_the_operator_chose_is_kept(chosen: str) -> None:
    env = {"PUBLIC_BASE_URL": chosen}
    assert follow_local_port(8085, env) is None
    assert env["PUBLIC_BASE_URL"] == chosen

def test_missing_settings_file_exits_2_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devhost", "--settings", "/nonexistent/local.settings.json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "settings file not found: /nonexistent/local.settings.json" in result.stderr


def test_host_json_queue_settings_are_read() -> None:
    config = load_host_config(REPO_ROOT / "host.json")
    assert config.route_prefix == "api"
    assert config.queues.message_encoding in ("base64", "none")
    assert parse_timespan("00:00:10") == 10
    assert parse_timespan("1.00:00:01.5") == 86401.5
    assert QueueOptions.from_host_json({}).max_polling_interval == 60


def test_route_templates_match_like_the_host() -> None:
    route = compile_route("api", "dynamics/events/{connection}")
    optional = compile_route("api", "items/{id:int}/{label?}")
    catch_all = compile_route("", "files/{*path}")
    assert route.match("/api/dynamics/events/contoso") == {"connection": "contoso"}
    assert route.match("/API/Dynamics/Events/contoso/") == {"connection": "contoso"}
    assert route.match("/api/dynamics/events") is None
    assert optional.match("/api/items/7") == {"id": "7"}
    assert catch_all.match("/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    literal_first = sorted([compile_route("api", "items/{id}"), compile_route("api", "items/new")],
                           key=lambda r: r.precedence)
    assert literal_first[0].match("/api/items/new") == {}


def test_ncrontab_schedules_have_seconds_first() -> None:
    from datetime import UTC, datetime

    start = datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert next_occurrence("0 */5 * * * *", start) == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert next_occurrence("00:00:30", start) == datetime(2026, 1, 1, 0, 0, 30, 500000, tzinfo=UTC)


# --- the command line, end to end ------------------------------------------------------


def test_python_m_devhost_serves_the_app_and_stops_on_sigterm(azurite: Azurite, tmp_path: Path) -> None:
    port = free_port()
    suffix = uuid.uuid4().hex[:10]
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "FUNCTIONS_WORKER_RUNTIME": "python",
                    "AzureWebJobsStorage": azurite.connection_string,
                    FAILING_CONNECTION_SETTING: azurite.connection_string,
                    QUEUE_OK_SETTING: f"devhost-e2e-ok-{suffix}",
                    QUEUE_FAILING_SETTING: f"devhost-e2e-fail-{suffix}",
                    "DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
                },
                "Host": {"LocalHttpPort": port},
            }
        )
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AzureWebJobs", "DEVHOST_"))}
    log_path = tmp_path / "devhost.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--settings", str(settings), "--app", TEST_APP],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=30, process=process)
        ping = requests.get(f"http://127.0.0.1:{port}/api/ping", timeout=5)
        secret = requests.get(f"http://127.0.0.1:{port}/api/secret/e2e", params={"code": FUNCTION_KEY}, timeout=5)
        assert (ping.status_code, ping.text) == (200, "pong")
        assert secret.json() == {"name": "e2e"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    output = log_path.read_text()
    assert "Functions:" in output
    assert "not run locally: set QUEUE_BACKEND=storage" in output
    assert "DEVHOST_MASTER_KEY not set; generated for this run" in output


def test_a_refused_request_with_a_body_does_not_poison_a_kept_alive_connection(hosted: Hosted) -> None:
    with requests.Session() as session:  # one connection, reused
        refused = session.post(hosted.url("secret/bob"), data=b'{"x": 1}' * 100, timeout=5)
        after = session.get(hosted.url("ping"), timeout=5)
    assert refused.status_code == 404  # GET-only route: Azure answers 404
    assert after.status_code == 200 and after.text == "pong"


# --- Azurite's ports --------------------------------------------------------------------


@contextlib.contextmanager
def another_web_server() -> Iterator[int]:
    """Some other program's HTTP server on a free port (answers as BaseHTTP/... Python/...)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_azurite_ports_are_the_first_of_three_or_all_three() -> None:
    assert parse_azurite_ports("20000") == (20000, 20001, 20002)
    assert parse_azurite_ports("20000, 30001,40002") == (20000, 30001, 40002)
    for wrong in ("", "abc", "1,2", "65534", "7,7,8", "0"):
        with pytest.raises(ValueError):
            parse_azurite_ports(wrong)


def test_azurite_ports_can_be_chosen_and_imply_azurite() -> None:
    chosen = parse_args(["--azurite-ports", "20000"])
    assert (chosen.azurite, chosen.azurite_ports) == (True, (20000, 20001, 20002))
    default = parse_args(["--azurite"])
    assert (default.azurite, default.azurite_ports) == (True, (10000, 10001, 10002))
    assert parse_args([]).azurite is False


def test_an_azurite_answering_on_every_port_is_shared_and_free_ports_get_a_new_one(azurite: Azurite) -> None:
    assert running_azurite((azurite.blob_port, azurite.queue_port, azurite.table_port)) is True
    assert running_azurite((free_port(), free_port(), free_port())) is False


def test_a_port_taken_by_another_program_is_never_shared(azurite: Azurite) -> None:
    with another_web_server() as port, pytest.raises(AzuritePortError) as refused:
        running_azurite((azurite.blob_port, port, azurite.table_port))
    assert f"port {port} (Azurite's queue service) is taken by another program" in str(refused.value)


def test_an_azurite_on_ports_of_its_own_choosing_starts_again_on_others_when_one_was_taken_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from devhost import azurite as module

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))  # held, not listening: as a port another process bound since it was picked
        picks = iter([taken.getsockname()[1]])
        monkeypatch.setattr(module, "free_port", lambda: next(picks, None) or free_port())
        started = module.start_azurite()
        try:
            assert taken.getsockname()[1] not in (started.blob_port, started.queue_port, started.table_port)
            assert running_azurite((started.blob_port, started.queue_port, started.table_port)) is True
        finally:
            started.stop()
        with pytest.raises(module.AzuriteExited, match="exited"):  # ports given are not swapped for others
            module.start_azurite(ports=(taken.getsockname()[1], free_port(), free_port()))


def test_only_part_of_an_azurite_is_never_shared(azurite: Azurite) -> None:
    free = free_port()
    expected = f"an Azurite answers on {azurite.blob_port}, {azurite.table_port} but not on {free} (queue)"
    with pytest.raises(AzuritePortError, match=re.escape(expected)):
        running_azurite((azurite.blob_port, free, azurite.table_port))


def test_python_m_devhost_names_the_port_another_program_holds_and_starts_nothing(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {"FUNCTIONS_WORKER_RUNTIME": "python"}}))
    with another_web_server() as port:
        ports = f"{port},{free_port()},{free_port()}"
        result = subprocess.run(
            [sys.executable, "-m", "devhost", "--settings", str(settings), "--app", TEST_APP,
             "--azurite-ports", ports],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} (Azurite's blob service) is taken by another program" in result.stderr
    assert "--azurite-ports" in result.stderr
