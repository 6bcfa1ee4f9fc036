"""A small FunctionApp for devhost's tests: one function per behaviour the host must reproduce.

``make_app`` builds a fresh app per test (unique queue names); the module-level ``app``
is what ``python -m devhost --app tests.integration.devhost_app:app`` loads, with queue
names taken from the settings that local.settings.json puts into the environment.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

import azure.functions as func

QUEUE_OK_SETTING = "DEVHOST_TEST_QUEUE_OK"
QUEUE_FAILING_SETTING = "DEVHOST_TEST_QUEUE_FAILING"
# The failing trigger names its own connection setting, to exercise the ``connection`` lookup.
FAILING_CONNECTION_SETTING = "DevhostTestStorage"
# A queue message with this body makes its function spend this much CPU, as a spin request does.
SPIN_BODY = "spin"
SPIN_QUEUE_CPU_SECONDS = 0.5


def spin_cpu(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


@dataclass
class Calls:
    """What the functions saw, shared with the test thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    timer_ticks: list[bool] = field(default_factory=list)
    queue_bodies: list[str] = field(default_factory=list)
    queue_dequeue_counts: list[int] = field(default_factory=list)
    failing_attempts: list[int] = field(default_factory=list)

    def add(self, name: str, value: object) -> None:
        with self.lock:
            getattr(self, name).append(value)

    def count(self, name: str) -> int:
        with self.lock:
            return len(getattr(self, name))

    def snapshot(self, name: str) -> list:
        with self.lock:
            return list(getattr(self, name))


@dataclass
class RecordingApp:
    app: func.FunctionApp
    calls: Calls


def make_app(queue_ok: str, queue_failing: str) -> RecordingApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    calls = Calls()

    @app.route(route="ping", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    @app.route(route="secret/{name}", methods=["GET"])  # function level, from the app default
    def secret(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"name": req.route_params["name"]}), mimetype="application/json")

    @app.route(route="ops/thing", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    def ops_thing(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin ok")

    @app.route(route="admin/thing", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def reserved_route(req: func.HttpRequest) -> func.HttpResponse:  # the host refuses "admin" routes
        return func.HttpResponse("served a reserved route")

    @app.route(route="echo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        answer = {"body": req.get_json(), "params": dict(req.params), "header": req.headers.get("x-test")}
        return func.HttpResponse(json.dumps(answer), status_code=201, mimetype="application/json")

    @app.route(route="items/{id:int}/{label?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")

    @app.route(route="spin", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def spin(req: func.HttpRequest) -> func.HttpResponse:
        spin_cpu(float(req.params["seconds"]))
        return func.HttpResponse("spun")

    @app.route(route="broken", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("this function always fails")

    @app.timer_trigger(schedule="* * * * * *", arg_name="timer")
    def every_second(timer: func.TimerRequest) -> None:
        calls.add("timer_ticks", timer.past_due)

    @app.queue_trigger(arg_name="msg", queue_name=queue_ok, connection="AzureWebJobsStorage")
    def record_message(msg: func.QueueMessage) -> None:
        calls.add("queue_dequeue_counts", msg.dequeue_count)
        body = msg.get_body().decode("utf-8")
        if body == SPIN_BODY:
            spin_cpu(SPIN_QUEUE_CPU_SECONDS)
        calls.add("queue_bodies", body)

    @app.queue_trigger(arg_name="msg", queue_name=queue_failing, connection=FAILING_CONNECTION_SETTING)
    def always_fails(msg: func.QueueMessage) -> None:
        calls.add("failing_attempts", msg.dequeue_count)
        raise RuntimeError("this queue function always fails")

    @app.service_bus_queue_trigger(arg_name="msg", queue_name="not-here", connection="ServiceBusConnection")
    def on_service_bus(msg: func.ServiceBusMessage) -> None:
        raise AssertionError("devhost must not run Service Bus triggers")

    return RecordingApp(app, calls)


_module_app = make_app(
    os.environ.get(QUEUE_OK_SETTING, "devhost-test-ok"),
    os.environ.get(QUEUE_FAILING_SETTING, "devhost-test-failing"),
)
app = _module_app.app
calls = _module_app.calls
