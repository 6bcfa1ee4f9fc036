"""Telemetry: every log line names the work in hand, and reaches Application Insights with it.

Dimensions: a context variable holds the dimensions of the work in hand (connection,
correlation id, job id, ERP record, channel, status, step, reason, function name). The queue
consumer sets them once per message from its envelope, the HTTP triggers once per request,
and code deeper down adds what it learns (``bind``, or ``scope`` for a few lines). A
``DimensionsFilter`` copies them onto each log record as attributes under stable names, so
every ``log.info(...)`` carries them without naming them.

Export: through the Functions host, the ``extra`` attributes of Python log records are
dropped; only the text arrives. So the app exports its own loggers (``shared``,
``function_app``) with the Azure Monitor OpenTelemetry distro, where each attribute becomes a
custom dimension (``traces.customDimensions``). It is configured on the first invocation,
never at import (cold start), and only when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set;
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` makes the exporter sign in with the managed
identity. Each line's operation id is derived from its correlation id, so Application
Insights shows the lines of one ERP change, across functions, as one operation.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from shared.logs import custom_attributes, scrub
from shared.settings import env_str

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
# The app's own loggers; the Azure SDKs' request logging stays out of the export.
EXPORTED_LOGGERS: tuple[str, ...] = ("shared", "function_app")
# Dimension names as they appear on log records and in customDimensions.
DIMENSIONS: tuple[str, ...] = (
    "connection", "correlation_id", "job_id", "erp_record", "channel", "status", "step", "reason", "function_name",
)
MAX_DIMENSION_LENGTH = 1024
# The distro's instrumentations, all off: outbound calls must not grow trace headers, and
# only log lines are exported.
_INSTRUMENTATIONS = ("azure_sdk", "django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "requests", "urllib",
                     "urllib3")
# Semantic-convention attributes the exporter turns into exception telemetry.
_EXCEPTION_TYPE = "exception.type"
_EXCEPTION_MESSAGE = "exception.message"
_EXCEPTION_STACKTRACE = "exception.stacktrace"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_dimensions: ContextVar[Mapping[str, str]] = ContextVar("telemetry_dimensions", default=_EMPTY)


# --- dimensions --------------------------------------------------------------------------------


def dimensions() -> Mapping[str, str]:
    """The dimensions of the work in hand."""
    return _dimensions.get()


def _cleaned(values: Mapping[str, object]) -> dict[str, str]:
    """Known names only; empty values left out (an outer value stays); text fit for export."""
    unknown = sorted(set(values) - set(DIMENSIONS))
    if unknown:
        raise ValueError(f"unknown telemetry dimension(s): {', '.join(unknown)}")
    return {name: scrub(str(value))[:MAX_DIMENSION_LENGTH] for name, value in values.items()
            if value is not None and value != ""}


def bind(**values: object) -> None:
    """Add dimensions to the work in hand, until its scope ends."""
    _dimensions.set(MappingProxyType({**_dimensions.get(), **_cleaned(values)}))


@contextmanager
def scope(**values: object) -> Iterator[None]:
    """Dimensions for the lines logged inside the block, on top of the outer ones."""
    outer = _dimensions.get()
    inner = MappingProxyType({**outer, **_cleaned(values)})
    token = _dimensions.set(inner)
    operation = _enter_operation(inner.get("correlation_id")) \
        if inner.get("correlation_id") != outer.get("correlation_id") else None
    try:
        yield
    finally:
        _leave_operation(operation)
        _dimensions.reset(token)


@contextmanager
def invocation(function: str, **values: object) -> Iterator[None]:
    """One function run: export configured, dimensions from scratch, a crash logged with them.

    From scratch, because the worker's threads serve one invocation after another.
    """
    configure_export()
    token = _dimensions.set(_EMPTY)
    # Lines of a run that names no ERP change still share an operation id of their own (drawn only when exported).
    operation = _enter_operation(secrets.token_hex(16) if _exporting.is_set() else None)
    try:
        with scope(function_name=function, **values):
            try:
                yield
            except Exception as exc:
                # The exporter shows this text as the exception's message.
                log.exception("%s failed: %s: %s", function, type(exc).__name__, exc)
                raise
    finally:
        _leave_operation(operation)
        _dimensions.reset(token)


def traced(function: Callable[P, R]) -> Callable[P, R]:
    """Run a trigger function inside ``invocation``, with the connection its route names."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with invocation(function.__name__, connection=_route_connection([*args, *kwargs.values()])):
            return function(*args, **kwargs)

    return run


def _route_connection(arguments: list[Any]) -> str | None:
    for argument in arguments:
        route_params = getattr(argument, "route_params", None)
        if isinstance(route_params, Mapping):
            return route_params.get("connection")
    return None


class DimensionsFilter(logging.Filter):
    """Copies the dimensions of the work in hand onto each record (an explicit ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _dimensions.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def install_dimensions(handler: logging.Handler) -> None:
    """Put one ``DimensionsFilter`` on ``handler``; calling it twice is harmless."""
    if not any(isinstance(f, DimensionsFilter) for f in handler.filters):
        handler.addFilter(DimensionsFilter())


# --- operations: one ERP change, one operation id -------------------------------------------------


def _trace_id(correlation_id: str) -> int:
    """A correlation id of 32 hex digits is the trace id itself; any other is hashed to one."""
    try:
        value = int(correlation_id, 16) if len(correlation_id) == 32 else 0
    except ValueError:
        value = 0
    return value or int.from_bytes(hashlib.sha256(correlation_id.encode("utf-8")).digest()[:16], "big") or 1


def _enter_operation(correlation_id: str | None) -> object | None:
    """Make ``correlation_id`` the operation id of the lines logged until ``_leave_operation``."""
    if correlation_id is None or not _exporting.is_set():
        return None
    from opentelemetry import context, trace

    span_context = trace.SpanContext(trace_id=_trace_id(correlation_id), span_id=secrets.randbits(63) | 1,
                                     is_remote=False, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))


def _leave_operation(token: object | None) -> None:
    if token is not None:
        from opentelemetry import context

        context.detach(token)  # type: ignore[arg-type]


# --- export ----------------------------------------------------------------------------------------

_configure_lock = threading.Lock()
_configured = threading.Event()  # decided, either way: the once-guard
_exporting = threading.Event()


def configure_export() -> bool:
    """Export the app's loggers to Application Insights, once per process; True when on.

    Nothing happens (and nothing is imported) without ``APPLICATIONINSIGHTS_CONNECTION_STRING``.
    A failure to configure leaves export off with a warning; it never fails the invocation.
    """
    if _configured.is_set():
        return _exporting.is_set()
    with _configure_lock:
        if not _configured.is_set():
            connection_string = env_str(CONNECTION_STRING_SETTING)
            try:
                if connection_string:
                    _start_export(connection_string)
                    _exporting.set()
            except Exception as exc:  # noqa: BLE001 - telemetry must never take the app down
                log.warning("log export to Application Insights is off: %s: %s", exc.__class__.__name__, exc)
            finally:
                _configured.set()
    return _exporting.is_set()


def _start_export(connection_string: str) -> None:
    # The Functions resource detector names the app (cloud_RoleName); the distro's default
    # detectors include one that probes the VM metadata endpoint.
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
    from azure.monitor.opentelemetry import configure_azure_monitor

    first = logging.getLogger(EXPORTED_LOGGERS[0])
    before = set(first.handlers)
    configure_azure_monitor(
        connection_string=connection_string,
        logger_name=EXPORTED_LOGGERS[0],
        disable_tracing=True,
        disable_metrics=True,
        enable_live_metrics=False,
        enable_performance_counters=False,
        instrumentation_options={name: {"enabled": False} for name in _INSTRUMENTATIONS},
    )
    added = [handler for handler in first.handlers if handler not in before]
    if not added:
        raise RuntimeError("the Azure Monitor distro added no log handler")
    for exporter in added:
        first.removeHandler(exporter)
        export = ExportHandler(exporter)
        for name in EXPORTED_LOGGERS:
            _attach(logging.getLogger(name), export)


def _attach(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # audit steps are Information lines


class ExportHandler(logging.Handler):
    """Hands the exporter a copy of each record with its dimensions, redacted and masked.

    A copy, because the exporter would read the exception from ``exc_info`` unredacted, and
    the record itself goes on to the other handlers (the host's), which need ``exc_info``.
    """

    def __init__(self, exporter: logging.Handler) -> None:
        super().__init__()
        self.exporter = exporter
        install_dimensions(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.exporter.handle(export_copy(record))

    def flush(self) -> None:
        self.exporter.flush()


def export_copy(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` as it may leave the process: text and attributes scrubbed, the exception as text."""
    exported = copy.copy(record)
    exported.msg, exported.args = scrub(record.getMessage()), None
    for name, value in custom_attributes(record).items():
        if isinstance(value, str):
            setattr(exported, name, scrub(value))
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        setattr(exported, _EXCEPTION_TYPE, type(error).__name__)
        setattr(exported, _EXCEPTION_MESSAGE, scrub(str(error)))
        setattr(exported, _EXCEPTION_STACKTRACE, scrub(text))
    exported.exc_info, exported.exc_text = None, None
    return exported

