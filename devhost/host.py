"""Run a FunctionApp's functions as the Functions host would: HTTP routes, timers, storage queues."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import azure.functions as func
from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.azurite import REPO_ROOT
from devhost.cpu import hosting_cpu
from devhost.functions import FUNCTION_KEY_SETTING, AccessKeys, HostedFunction
from devhost.http_server import HttpServer, RouteTable
from devhost.queues import QueuePoller, storage_connection_string
from devhost.settings import HostConfig, load_host_config, parse_timespan, resolve_setting_references

log = logging.getLogger("devhost")
timer_log = logging.getLogger("devhost.timers")

HTTP_TRIGGER = "httpTrigger"
TIMER_TRIGGER = "timerTrigger"
QUEUE_TRIGGER = "queueTrigger"
SERVICEBUS_TRIGGER = "serviceBusTrigger"
# A timer fired later than this after its scheduled time is reported as past due.
PAST_DUE_TOLERANCE = timedelta(seconds=1)
# Bounds the count of skipped ticks logged after a long run of a very frequent timer.
MAX_SKIPPED_TICKS_COUNTED = 100_000


def plain(value: Any) -> Any:
    """Binding values may be enums (AuthLevel, HttpMethod); the host sees their values."""
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return getattr(value, "value", value)


def _missing_bindings(function: Callable[..., Any], arg_name: str) -> list[str]:
    """Required parameters that devhost cannot fill (output or input bindings)."""
    parameters = inspect.signature(function).parameters.values()
    return [
        parameter.name
        for parameter in parameters
        if parameter.name not in (arg_name, "context")
        and parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _reserved_route_reason(name: str, binding: dict[str, Any]) -> str | None:
    """The Functions host refuses HTTP functions whose name or route starts with "admin"."""
    route = str(binding.get("route") or name)
    if name.lower().startswith("admin") or route.lstrip("/").lower().startswith("admin"):
        return "not run: the specified route conflicts with one or more built in routes (admin)"
    return None


def _unsupported_reason(trigger_type: str, user_function: Callable[..., Any], arg_name: str) -> str | None:
    if trigger_type == SERVICEBUS_TRIGGER:
        return "not run locally: set QUEUE_BACKEND=storage"
    if trigger_type not in (HTTP_TRIGGER, TIMER_TRIGGER, QUEUE_TRIGGER):
        return f"not run locally: devhost has no listener for {trigger_type}"
    missing = _missing_bindings(user_function, arg_name)
    if missing:
        return f"not run locally: needs bindings devhost does not provide ({', '.join(missing)})"
    return None


def discover_functions(app: func.FunctionApp) -> list[HostedFunction]:
    """The app's functions as the worker indexes them (default auth level already applied)."""
    # get_functions() remembers the names it has returned and refuses a second call;
    # forget them so one app object can be hosted again (tests restart hosts).
    if getattr(app, "functions_bindings", None):
        app.functions_bindings = None
    default_auth_level = plain(getattr(app, "auth_level", None)) or "function"
    hosted = []
    for function in app.get_functions():
        trigger, name = function.get_trigger(), function.get_function_name()
        if trigger is None or name is None:  # get_functions() has already refused such a function
            raise ValueError(f"{function.get_user_function()!r}: a function without a trigger or a name")
        binding = {key: plain(value) for key, value in trigger.get_dict_repr().items()}
        if binding.get("type") == HTTP_TRIGGER:
            # get_functions() already applies FunctionApp(http_auth_level=...); this covers older packages.
            binding.setdefault("authLevel", default_auth_level)
        user_function = function.get_user_function()
        reason = _unsupported_reason(str(binding.get("type")), user_function, str(binding.get("name")))
        if binding.get("type") == HTTP_TRIGGER:
            reason = reason or _reserved_route_reason(name, binding)
        hosted.append(HostedFunction(name, binding, user_function, reason))
    return hosted


def load_app(reference: str) -> func.FunctionApp:
    """Import ``module:attribute`` (default attribute ``app``) with the repository root on sys.path."""
    module_name, _, attribute = reference.partition(":")
    for folder in (str(REPO_ROOT), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app")
    if not hasattr(app, "get_functions"):
        raise TypeError(f"{reference} is not an azure.functions.FunctionApp")
    return app


def next_occurrence(schedule: str, after: datetime) -> datetime:
    """The next time a schedule fires after ``after``: NCRONTAB (seconds first) or a TimeSpan."""
    if ":" in schedule:
        return after + timedelta(seconds=parse_timespan(schedule))
    return croniter(schedule, after, second_at_beginning=True).get_next(datetime)


def validate_schedule(schedule: str) -> None:
    if ":" in schedule:
        parse_timespan(schedule)
    elif len(schedule.split()) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
        raise ValueError(f"invalid NCRONTAB schedule (6 fields, seconds first): {schedule!r}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Listener(Protocol):
    """A queue poller or a timer: works in a thread of its own between start and join."""

    def start(self) -> None: ...

    def join(self, timeout: float) -> None: ...


class TimerRunner:
    """Fires one timer function on its schedule in its own thread; runs never overlap."""

    def __init__(self, function: HostedFunction, schedule: str, stop: threading.Event) -> None:
        self.function = function
        self.schedule = schedule
        self.run_on_startup = bool(function.binding.get("runOnStartup"))
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"devhost-timer-{function.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        if self.run_on_startup:
            self._fire(past_due=False, reason="RunOnStartup")
        due = next_occurrence(self.schedule, _utcnow())
        while not self._stop.is_set():
            if self._stop.wait(max((due - _utcnow()).total_seconds(), 0)):
                return
            now = _utcnow()
            if now < due:  # the wait ends on a monotonic clock; recheck the wall clock
                continue
            self._fire(past_due=now - due > PAST_DUE_TOLERANCE, reason=f"Timer fired at {now.isoformat()}")
            due = self._next_due_after_run(due)

    def _fire(self, past_due: bool, reason: str) -> None:
        request = TimerRequest(past_due=past_due)  # the concrete class the worker passes
        # invoke has logged the failure; a failing run must not stop the timer.
        with hosting_cpu.thread(), contextlib.suppress(Exception):
            self.function.invoke(request, reason)

    def _next_due_after_run(self, fired: datetime) -> datetime:
        """The first tick after now; ticks that fell during the run are skipped, not queued up."""
        now = _utcnow()
        due = next_occurrence(self.schedule, fired)
        skipped = 0
        while due <= now and skipped < MAX_SKIPPED_TICKS_COUNTED:
            skipped += 1
            due = next_occurrence(self.schedule, due)
        if skipped:
            timer_log.warning(
                "Timer '%s': skipped %d tick(s) while the previous run was still running", self.function.name, skipped
            )
        return due


class DevHost:
    """Hosts a FunctionApp locally: ``start()``, then ``base_url``; ``stop()`` ends every listener.

    ``port=0`` picks a free port (see ``port`` after start). ``config`` defaults to the
    repository's host.json; tests pass their own for fast queue retries. ``env`` is where
    settings (keys, connection strings, ``%Name%`` references) are read; default os.environ.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        port: int = 7071,
        bind: str = "127.0.0.1",
        config: HostConfig | None = None,
        env: Mapping[str, str] | None = None,
        function_key: str | None = None,
        master_key: str | None = None,
    ) -> None:
        self.config = config or load_host_config()
        self.env = os.environ if env is None else env
        self.keys = AccessKeys.from_settings(self.env, function_key, master_key)
        self.functions = discover_functions(app)
        self._requested_port = port
        self._bind = bind
        self._stop = threading.Event()
        self._server: HttpServer | None = None
        self._timers: list[TimerRunner] = []
        self._pollers: list[QueuePoller] = []
        self._details: dict[str, str] = {}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the host is not started")
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://{self._bind}:{self.port}"

    def start(self) -> DevHost:
        http_functions = self._runnable(HTTP_TRIGGER)
        routes = RouteTable(self.config.route_prefix, http_functions)
        self._server = HttpServer(self._bind, self._requested_port, routes, self.keys)
        for function in http_functions:
            self._details[function.name] = routes.describe(function, self.base_url)
        self._pollers = [poller for poller in map(self._queue_poller, self._runnable(QUEUE_TRIGGER)) if poller]
        self._timers = [timer for timer in map(self._timer_runner, self._runnable(TIMER_TRIGGER)) if timer]
        self._log_startup()
        self._server.start()
        for listener in self._listeners():
            listener.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting work and wait (bounded) for timers and pollers to finish what they run."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._server is not None:
            self._server.stop()
        for listener in self._listeners():
            listener.join(max(deadline - time.monotonic(), 0.1))
        log.info("Host stopped")

    def _listeners(self) -> list[Listener]:
        return [*self._pollers, *self._timers]

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _runnable(self, trigger_type: str) -> list[HostedFunction]:
        return [f for f in self.functions if f.trigger_type == trigger_type and f.unsupported_reason is None]

    def _timer_runner(self, function: HostedFunction) -> TimerRunner | None:
        try:
            schedule = resolve_setting_references(str(function.binding.get("schedule", "")), self.env)
            validate_schedule(schedule)
        except (KeyError, ValueError) as error:
            self._not_running(function, str(error))
            return None
        startup = " (runOnStartup)" if function.binding.get("runOnStartup") else ""
        self._details[function.name] = f"{schedule}{startup}"
        return TimerRunner(function, schedule, self._stop)

    def _queue_poller(self, function: HostedFunction) -> QueuePoller | None:
        connection = str(function.binding.get("connection") or "AzureWebJobsStorage")
        try:
            queue_name = resolve_setting_references(str(function.binding.get("queueName", "")), self.env)
            connection_string = storage_connection_string(connection, self.env)
        except KeyError as error:
            self._not_running(function, str(error.args[0]))
            return None
        self._details[function.name] = f"{queue_name} ({connection})"
        return QueuePoller(function, queue_name, connection_string, self.config.queues, self._stop)

    def _not_running(self, function: HostedFunction, reason: str) -> None:
        function.unsupported_reason = f"not run: {reason}"
        log.error("Function '%s' %s", function.name, function.unsupported_reason)

    def _log_startup(self) -> None:
        rows = [
            (f.name, f.trigger_type, f.unsupported_reason or self._details.get(f.name, ""))
            for f in self.functions
        ]
        lines = ["Functions:"]
        if rows:
            widths = [max(len(row[column]) for row in rows) for column in (0, 1)]
            lines += [f"  {name:<{widths[0]}}  {kind:<{widths[1]}}  {detail}" for name, kind, detail in rows]
        else:
            lines.append("  (none found)")
        for setting in self.keys.generated:
            value = self.keys.function_key if setting == FUNCTION_KEY_SETTING else self.keys.master_key
            lines.append(f"{setting} not set; generated for this run: {value}")
        lines.append(f"Listening on {self.base_url}/{self.config.route_prefix}".rstrip("/"))
        log.info("\n".join(lines))
