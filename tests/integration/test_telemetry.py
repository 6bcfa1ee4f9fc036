"""Log lines of queued work carry its dimensions, audit steps log one line each, and the export
sends them to Application Insights as custom dimensions (a fake ingestion endpoint on loopback)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

from shared import telemetry
from shared.model import NOTIFICATION, TWILIO_INBOUND, Envelope
from shared.pipeline import registry
from shared.pipeline.consume import Delivery, consume, envelope_dimensions
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import Stores
from tests.conftest import REPO_ROOT
from tests.fakes.appinsights import FakeAppInsights
from tests.support.logs import ListHandler

PHONE = "+14155550123"
RECORD = "contoso-fo|VendorInvoice|usmf|INV-0042"


def dimensions_of(record: logging.LogRecord) -> dict[str, str]:
    return {name: getattr(record, name) for name in telemetry.DIMENSIONS if hasattr(record, name)}


def test_a_line_logged_while_a_notification_is_handled_carries_its_dimensions(
    captured: ListHandler, bus: StorageQueueBus
) -> None:
    queue = "q-" + uuid.uuid4().hex[:12]
    registry.handles(queue, "test.logs")(lambda _: logging.getLogger("shared.pipeline.test").info("sending"))
    payload = {"job_id": "job-7", "record": RECORD, "channel": "sms", "to": PHONE, "text": f"call {PHONE}"}
    envelope = Envelope("test.logs", "twilio-main", f"job-7|{PHONE}", payload, "corr-7")

    assert consume(Delivery(queue, envelope.to_json().encode(), "m-1", 1), bus) == "handled"

    [record] = [r for r in captured.records if r.getMessage() == "sending"]
    assert dimensions_of(record) == {"connection": "twilio-main", "correlation_id": "corr-7", "job_id": "job-7",
                                     "erp_record": RECORD, "channel": "sms"}
    assert dict(telemetry.dimensions()) == {}  # nothing left for the next message on this thread


def test_an_envelope_never_lends_a_phone_number_to_the_dimensions() -> None:
    inbound = Envelope(TWILIO_INBOUND, "twilio-main", f"SM123|{PHONE}", {"params": {"From": PHONE}})
    notification = Envelope(NOTIFICATION, "twilio-main", "job-1", {"job_id": "job-1", "to": PHONE, "channel": "sms"})

    for envelope in (inbound, notification):
        assert PHONE not in json.dumps(envelope_dimensions(envelope))


def test_a_requeue_and_a_dead_letter_are_logged_with_step_and_reason(
    captured: ListHandler, bus: StorageQueueBus
) -> None:
    from shared.http import RetryLater

    queue = "q-" + uuid.uuid4().hex[:12]

    def busy(_: Envelope) -> None:
        raise RetryLater(0, "HTTP 429")

    registry.handles(queue, "test.busy")(busy)
    envelope = Envelope("test.busy", "contoso-fo", "k-1", {}, "corr-8")
    assert consume(Delivery(queue, envelope.to_json().encode(), "m-1", 1), bus, attempts_allowed=2) == "requeued"
    last = Envelope("test.busy", "contoso-fo", "k-1", {}, "corr-8", attempt=1)
    assert consume(Delivery(queue, last.to_json().encode(), "m-2", 1), bus, attempts_allowed=2) == "dead-lettered"

    steps = [dimensions_of(r) for r in captured.records if hasattr(r, "step")]
    assert {"step": "requeued", "reason": "HTTP 429", "connection": "contoso-fo", "correlation_id": "corr-8"} in steps
    [dead] = [s for s in steps if s["step"] == "dead-lettered"]
    assert dead["correlation_id"] == "corr-8" and dead["reason"] == "gave up after 2 attempts: HTTP 429"


def test_each_audit_step_logs_one_line_with_its_dimensions(captured: ListHandler, stores: Stores) -> None:
    with telemetry.scope(function_name="consume_notifications", correlation_id="corr-9"):
        stores.audit.append("corr-9", "failed", connection="twilio-main", record=RECORD, job_id="job-9",
                            reason=f"'{PHONE}x' is not a valid phone number", to="+1*******23", channel="sms",
                            status="failed")
    [line] = [r for r in captured.records if getattr(r, "step", None) == "failed"]
    assert dimensions_of(line) == {
        "function_name": "consume_notifications", "correlation_id": "corr-9", "step": "failed",
        "connection": "twilio-main", "erp_record": RECORD, "job_id": "job-9", "channel": "sms", "status": "failed",
        "reason": "'+1*******23x' is not a valid phone number",
    }
    assert PHONE not in line.getMessage() and line.levelno == logging.INFO
    assert [e.step for e in stores.audit.by_record(RECORD)] == ["failed"]  # the row as before


# --- export ----------------------------------------------------------------------------------------

EXPORT_PROBE = """
import json, logging, socket, sys

refused = []
_connect, _resolve = socket.socket.connect, socket.getaddrinfo
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def connect(self, address):
    if isinstance(address, tuple) and address[0] not in LOOPBACK:
        refused.append(str(address))
        raise OSError("only loopback in this test")
    return _connect(self, address)


def resolve(host, *args, **kwargs):
    if host not in LOOPBACK:
        refused.append(str(host))
        raise OSError("only loopback in this test")
    return _resolve(host, *args, **kwargs)


socket.socket.connect, socket.getaddrinfo = connect, resolve

import function_app  # as the host loads the app
import requests
from shared import telemetry
from shared.model import Envelope
from shared.pipeline import registry
from shared.pipeline.consume import Delivery, consume, envelope_dimensions


class NoBus:
    def send(self, *args): raise AssertionError("nothing is sent")
    def dead_letter(self, *args): raise AssertionError("nothing is dead-lettered")


def handler(envelope):
    logging.getLogger("shared.pipeline.deliver").info("sending to %s", "+14155550123")
    logging.getLogger("function_app").info("a line of the app module")
    logging.getLogger("azure.core.pipeline.policies").warning("an Azure SDK line")
    logging.getLogger("elsewhere").warning("a line of another library")
    requests.get(sys.argv[1] + "/outbound", timeout=5)
    try:
        raise ValueError("no route to +14155550123")
    except ValueError:
        logging.getLogger("shared.pipeline.deliver").exception("the send broke")


registry.handles("notifications", "test.export")(handler)
envelope = Envelope("test.export", "twilio-main", "k", {"job_id": "job-5", "record": sys.argv[2], "channel": "sms",
                                                        "to": "+14155550123"}, sys.argv[3])
with telemetry.invocation("consume_notifications"):
    consume(Delivery("notifications", envelope.to_json().encode(), "m-1", 1), NoBus())
for name in telemetry.EXPORTED_LOGGERS:
    for handler in logging.getLogger(name).handlers:
        handler.flush()
from opentelemetry._logs import get_logger_provider
get_logger_provider().force_flush()
handlers = {name or "root": [type(h).__name__ for h in logging.getLogger(name).handlers]
            for name in ("", "shared", "function_app", "azure")}
print(json.dumps({"refused": refused, "handlers": handlers}))
"""


def export_env(fake: FakeAppInsights, tmp_path: Path) -> dict[str, str]:
    """The app's settings for export to the fake; the exporter's calls home (SDK statistics, remote
    configuration) are switched off, as they would leave the machine."""
    return {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "QUEUE_BACKEND": "storage",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": fake.connection_string,
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true"}


def test_log_lines_reach_the_ingestion_endpoint_with_their_dimensions(tmp_path: Path) -> None:
    correlation_id = uuid.uuid4().hex
    with FakeAppInsights() as fake:
        out = subprocess.run([sys.executable, "-c", EXPORT_PROBE, fake.base_url, RECORD, correlation_id],
                             cwd=REPO_ROOT, env=export_env(fake, tmp_path), capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        items, posts = fake.items(), fake.requests_to("POST /v2")
        [outbound] = fake.requests_to("GET /outbound")

    assert result["refused"] == []  # nothing but the fake ingestion endpoint was called
    assert result["handlers"] == {"root": [], "shared": ["ExportHandler"], "function_app": ["ExportHandler"],
                                  "azure": []}
    by_message = {item.message: item for item in items}
    sending = by_message["sending to +1*******23"]
    assert {name: sending.properties.get(name) for name in
            ("function_name", "connection", "correlation_id", "job_id", "erp_record", "channel")} == {
        "function_name": "consume_notifications", "connection": "twilio-main", "correlation_id": correlation_id,
        "job_id": "job-5", "erp_record": RECORD, "channel": "sms"}
    assert sending.properties["logger_name"] == "shared.pipeline.deliver"
    assert sending.operation_id == correlation_id  # one ERP change, one operation
    assert sending.ikey == fake.instrumentation_key
    assert by_message["a line of the app module"].properties["correlation_id"] == correlation_id
    assert not {"an Azure SDK line", "a line of another library"} & set(by_message)
    [error] = fake.exceptions()
    assert error.message == "the send broke" and error.properties["job_id"] == "job-5"
    assert "ValueError" in json.dumps(error.raw)
    assert all(b"+14155550123" not in post.body for post in posts)
    assert "traceparent" not in outbound.headers  # instrumentations off: outbound calls unchanged
