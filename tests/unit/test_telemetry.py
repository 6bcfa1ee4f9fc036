"""Telemetry dimensions: set per piece of work, copied onto log lines, scrubbed, gone afterwards."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import typing
import uuid

import azure.functions as func
import pytest

from shared import telemetry
from shared.logs import RedactingFilter, register_secret
from tests.conftest import REPO_ROOT
from tests.support.logs import ListHandler

PHONE = "+14155550123"


def log() -> logging.Logger:
    return logging.getLogger("shared.tests.telemetry")


def test_a_scope_adds_dimensions_and_gives_back_the_outer_ones() -> None:
    with telemetry.scope(connection="contoso-fo", correlation_id="c-1"):
        with telemetry.scope(job_id="j-1", connection="twilio-main"):
            assert dict(telemetry.dimensions()) == {"connection": "twilio-main", "correlation_id": "c-1",
                                                    "job_id": "j-1"}
        assert dict(telemetry.dimensions()) == {"connection": "contoso-fo", "correlation_id": "c-1"}
    assert dict(telemetry.dimensions()) == {}


def test_bind_lasts_until_its_scope_ends() -> None:
    with telemetry.scope(correlation_id="c-1"):
        telemetry.bind(job_id="j-1", status="sent")
        assert telemetry.dimensions()["job_id"] == "j-1"
    assert "job_id" not in telemetry.dimensions()


def test_empty_values_leave_the_outer_value_and_unknown_names_are_refused() -> None:
    with telemetry.scope(connection="contoso-fo"), telemetry.scope(connection="", job_id=None):
        assert dict(telemetry.dimensions()) == {"connection": "contoso-fo"}
    with pytest.raises(ValueError, match="unknown telemetry dimension"):
        telemetry.bind(recipient=PHONE)


def test_every_line_carries_the_dimensions_and_an_explicit_extra_wins(captured: ListHandler) -> None:
    with telemetry.scope(connection="contoso-fo", correlation_id="c-1", erp_record="contoso-fo|VendorInvoice|usmf|1"):
        log().info("one")
        log().info("two", extra={"connection": "explicit"})
    log().info("three")
    one, two, three = captured.records
    assert (one.connection, one.correlation_id) == ("contoso-fo", "c-1")
    assert one.erp_record == "contoso-fo|VendorInvoice|usmf|1"
    assert two.connection == "explicit" and two.correlation_id == "c-1"
    assert not hasattr(three, "correlation_id")


def test_phone_numbers_and_secrets_never_reach_a_dimension() -> None:
    secret = "s-" + uuid.uuid4().hex
    register_secret(secret)
    with telemetry.scope(reason=f"'+1 (415) 555-0123' is not a valid phone number; token {secret}",
                         erp_record=f"contoso-fo|Contact|{PHONE}"):
        values = dict(telemetry.dimensions())
    assert values["reason"] == "'+1*******23' is not a valid phone number; token ***"
    assert values["erp_record"] == "contoso-fo|Contact|+1*******23"


def test_redaction_covers_extra_attributes() -> None:
    secret = "s-" + uuid.uuid4().hex
    register_secret(secret)
    record = logging.LogRecord("shared.x", logging.INFO, __file__, 1, "to %s", (PHONE,), None)
    record.reason = f"refused {PHONE} with {secret}"
    RedactingFilter().filter(record)
    assert record.reason == "refused +1*******23 with ***"


def test_the_exported_copy_is_scrubbed_and_carries_the_exception_as_text() -> None:
    secret = "s-" + uuid.uuid4().hex
    register_secret(secret)
    try:
        raise ValueError(f"{PHONE} refused the key {secret}")
    except ValueError:
        record = logging.LogRecord("shared.x", logging.ERROR, __file__, 1, "sending to %s", (PHONE,), sys.exc_info())
    record.channel = "sms"
    exported = telemetry.export_copy(record)
    assert exported.getMessage() == "sending to +1*******23"
    assert exported.exc_info is None and record.exc_info is not None  # the host's handlers still get it
    attributes = vars(exported)
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "+1*******23 refused the key ***"
    assert "Traceback" in attributes["exception.stacktrace"]
    assert not any(PHONE in str(value) or secret in str(value) for value in attributes.values())
    assert exported.channel == "sms"


def test_every_trigger_keeps_its_signature_for_the_worker_and_runs_traced() -> None:
    import function_app

    for function in function_app.app.get_functions():
        user = function.get_user_function()
        parameters = list(inspect.signature(user).parameters)
        assert parameters and set(parameters) <= set(typing.get_type_hints(user)), function.get_function_name()
        if function.get_trigger().get_dict_repr()["type"] in ("httpTrigger", "timerTrigger"):
            assert getattr(user, "__wrapped__", None) is not None, f"{function.get_function_name()} is not traced"
        if function.get_trigger().get_dict_repr()["type"] == "httpTrigger":
            assert getattr(user, "answers_in_time", False), f"{function.get_function_name()} has no answer budget"


def request(connection: str) -> func.HttpRequest:
    return func.HttpRequest("POST", f"http://127.0.0.1/api/x/{connection}", body=b"",
                            route_params={"connection": connection})


def test_a_traced_run_names_its_function_and_connection_and_leaves_nothing_behind() -> None:
    seen: list[dict[str, str]] = []

    @telemetry.traced
    def twilio_inbound(req: func.HttpRequest) -> None:
        telemetry.bind(correlation_id="c-9")
        seen.append(dict(telemetry.dimensions()))

    twilio_inbound(req=request("twilio-main"))
    assert seen == [{"function_name": "twilio_inbound", "connection": "twilio-main", "correlation_id": "c-9"}]
    assert dict(telemetry.dimensions()) == {}


def test_a_run_starts_from_no_dimensions_whatever_its_thread_held() -> None:
    telemetry.bind(job_id="left-over")
    try:
        with telemetry.invocation("health"):
            assert dict(telemetry.dimensions()) == {"function_name": "health"}
        assert telemetry.dimensions()["job_id"] == "left-over"
    finally:
        telemetry._dimensions.set(telemetry._EMPTY)


def test_a_crash_is_logged_with_the_dimensions_and_raised(captured: ListHandler) -> None:
    @telemetry.traced
    def slack_events(req: func.HttpRequest) -> None:
        raise RuntimeError("the bus is down")

    with pytest.raises(RuntimeError):
        slack_events(request("slack-main"))
    [record] = captured.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "slack_events failed: RuntimeError: the bus is down"
    assert (record.function_name, record.connection) == ("slack_events", "slack-main")


PROBE = """
import json, sys
from shared import telemetry
on = telemetry.configure_export()
loaded = sorted(m for m in sys.modules if m.startswith(("azure.monitor", "opentelemetry")))
print(json.dumps({"on": on, "loaded": loaded}))
"""


def test_without_a_connection_string_export_stays_off_and_nothing_is_imported() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"on": False, "loaded": []}
