"""What Application Insights receives from the deployed code: one invoice event, followed across
functions by its custom dimensions, against a fake ingestion endpoint.

The app runs under the local host with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` pointing at the
fake, on an Azurite of its own (an app sharing the e2e Azurite would take the other's messages).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from devhost.azurite import start_azurite
from tests.e2e.conftest import FAST_HOST_JSON, FUNCTION_KEY, app_config, app_values, prepare_dynamics
from tests.e2e.test_dynamics_to_twilio import invoice_event, new_phone, record_of
from tests.fakes.appinsights import FakeAppInsights, Telemetry
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.twilio import FakeTwilio, TwilioCredentials
from tests.support.app import local_app
from tests.support.waiting import wait_for


@dataclass
class TelemetryStack:
    base_url: str
    appinsights: FakeAppInsights
    twilio: FakeTwilio
    twilio_creds: TwilioCredentials

    def post_event(self, body: dict) -> str:
        answer = requests.post(f"{self.base_url}/api/dynamics/events/contoso-fo", json=body,
                               headers={"x-functions-key": FUNCTION_KEY}, timeout=10)
        assert answer.status_code == 202, answer.text
        [correlation_id] = answer.json()["correlation_ids"]
        return correlation_id

    def lines(self, correlation_id: str) -> list[Telemetry]:
        """Everything received about one ERP change, in the order it was logged."""
        found = [item for item in self.appinsights.items() if item.properties.get("correlation_id") == correlation_id]
        return sorted(found, key=lambda item: str(item.raw.get("time")))

    def steps(self, correlation_id: str) -> list[str]:
        return [line.properties["step"] for line in self.lines(correlation_id) if "step" in line.properties]


@pytest.fixture(scope="module")
def telemetry_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelemetryStack]:
    folder = tmp_path_factory.mktemp("telemetry")
    azurite = start_azurite()
    servers = [FakeEntra().start(), FakeTwilio().start(), FakeAppInsights().start()]
    entra, twilio, appinsights = servers
    dynamics = FakeDynamics(entra).start()
    servers.append(dynamics)
    prepare_dynamics(entra, dynamics)
    creds = twilio.add_test_account()
    values = app_values(azurite.connection_string, "t" + uuid.uuid4().hex[:10], creds) | {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": appinsights.connection_string,
        # The exporter's calls home (SDK statistics, remote configuration) would leave the machine.
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",  # export batches every 200 ms instead of 5 s
        "TMPDIR": str(folder),  # the exporter's retry files
    }
    try:
        with local_app(folder, config=app_config(dynamics, entra, twilio, creds), values=values,
                       host_json=FAST_HOST_JSON) as app:
            yield TelemetryStack(app.base_url, appinsights, twilio, creds)
    finally:
        for server in servers:
            server.stop()
        azurite.stop()


def test_one_invoice_is_followed_across_functions_by_its_dimensions(telemetry_stack: TelemetryStack) -> None:
    stack, phone = telemetry_stack, new_phone()
    correlation_id = stack.post_event(invoice_event("INV-OBS-1", phone))
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS at Twilio")
    # Delivered once the app has recorded its send, as a handset's receipt comes after Twilio's answer.
    wait_for(lambda: "sent" in stack.steps(correlation_id), what="the send recorded")
    stack.twilio.advance_message(message.sid, "delivered")
    reply = stack.twilio.inbound_sms_params(phone, stack.twilio_creds.phone_number, f"Paid. Call me on {phone}")
    stack.twilio.send_status_callback(f"{stack.base_url}/api/twilio/inbound/twilio-main", reply)
    wait_for(lambda: {"status", "reply"} <= set(stack.steps(correlation_id)), what="delivery and reply exported")

    lines, record = stack.lines(correlation_id), record_of("INV-OBS-1")
    steps = stack.steps(correlation_id)
    assert steps[:4] == ["received", "enriched", "routed", "sent"]
    assert {line.properties["function_name"] for line in lines} >= {"consume_erp_events", "consume_callbacks"}
    assert {line.operation_id for line in lines} == {correlation_id}  # one operation in Application Insights
    assert all(line.properties["erp_record"] == record for line in lines if "step" in line.properties)
    by_step = {line.properties["step"]: line.properties for line in lines if "step" in line.properties}
    job_id = by_step["routed"]["job_id"]
    assert by_step["sent"]["job_id"] == job_id and by_step["status"]["job_id"] == job_id
    # Sent by the function that routed it, with no trip through the notifications queue.
    assert by_step["sent"]["function_name"] == "consume_erp_events"
    assert (by_step["routed"]["channel"], by_step["sent"]["channel"]) == ("sms", "sms")
    assert (by_step["sent"]["status"], by_step["status"]["status"]) == ("queued", "delivered")
    assert all(line.properties["connection"] in ("contoso-fo", "twilio-main") for line in lines)

    digits = phone.lstrip("+")
    for post in stack.appinsights.requests_to("POST /v2"):
        assert digits.encode() not in post.body  # not in a message, a dimension or an exception


def test_a_failed_notification_is_a_line_the_alert_finds(telemetry_stack: TelemetryStack) -> None:
    stack = telemetry_stack
    correlation_id = stack.post_event(invoice_event("INV-OBS-2", "call me maybe"))
    wait_for(lambda: "failed" in stack.steps(correlation_id), what="the failed step exported")
    [failed] = [line for line in stack.lines(correlation_id) if line.properties.get("step") == "failed"]
    assert failed.properties["connection"] == "twilio-main"
    assert failed.properties["erp_record"] == record_of("INV-OBS-2")
    assert "not a phone number" in failed.properties["reason"] and failed.properties["job_id"]
    assert failed.message.startswith("audit step failed: ")


def test_only_the_apps_own_loggers_are_exported(telemetry_stack: TelemetryStack) -> None:
    stack = telemetry_stack
    correlation_id = stack.post_event(invoice_event("INV-OBS-3", new_phone()))
    wait_for(lambda: "sent" in stack.steps(correlation_id), what="the sent step exported")
    # The Azure SDKs' and the local host's lines stay out.
    loggers = {item.properties.get("logger_name", "") for item in stack.appinsights.items()}
    assert all(name.split(".")[0] in ("shared", "function_app") for name in loggers), loggers
