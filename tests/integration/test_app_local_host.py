"""The real function_app under the local host, on Azurite: what an operator sees first."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from devhost.azurite import Azurite, free_port
from shared.model import ERP_EVENTS, Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus, poison_queue
from tests.support.app import LocalApp, local_app
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = REPO_ROOT / "config" / "connections.sample.json"
FUNCTION_KEY = "e2e-function-key"
MASTER_KEY = "e2e-master-key"
SECRET_VALUE = "e2e-very-secret-auth-token-value"


class RunningApp(LocalApp):
    def get(self, route: str, **kwargs: object) -> requests.Response:
        return requests.get(f"{self.base_url}/api/{route}", timeout=10, **kwargs)

    def post(self, route: str, **kwargs: object) -> requests.Response:
        return requests.post(f"{self.base_url}/api/{route}", timeout=10, **kwargs)


@contextmanager
def running_app(folder: Path, azurite: Azurite, config: Path, **values: str) -> Iterator[RunningApp]:
    settings = {"AzureWebJobsStorage": azurite.connection_string, "STORAGE_TABLE_PREFIX": "e" + uuid.uuid4().hex[:10],
                "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
                "TWILIO_AUTH_TOKEN": SECRET_VALUE, **values}
    with local_app(folder, config=config, values=settings) as app:
        yield RunningApp(**vars(app))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[RunningApp]:
    with running_app(tmp_path_factory.mktemp("app"), azurite, SAMPLE_CONFIG) as running:
        yield running


def test_health_answers_ok_without_secrets(app: RunningApp) -> None:
    response = app.get("health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    sample = json.loads(SAMPLE_CONFIG.read_text())
    assert body["config"] == {"loaded": True, "connections": len(sample["connections"]), "rules": len(sample["rules"])}
    assert body["storage"]["reachable"] is True
    assert body["version"]
    assert SECRET_VALUE not in response.text


def test_a_ping_crosses_every_queue_and_its_consumer(app: RunningApp) -> None:
    sent = app.post("ops/ping", headers={"x-functions-key": MASTER_KEY})
    assert sent.status_code == 202
    correlation_id = sent.json()["correlation_id"]

    def pings_received() -> list[dict]:
        trail = app.get("ops/audit", params={"correlation": correlation_id},
                        headers={"x-functions-key": MASTER_KEY}).json()["entries"]
        return trail if len(trail) == 4 else []

    trail = wait_for(pings_received)
    assert sorted(entry["detail"]["queue"] for entry in trail) == [
        "callbacks", "erp-events", "notifications", "poll-jobs",
    ]
    assert {entry["step"] for entry in trail} == {"ping-received"}


def test_ops_routes_need_the_master_key(app: RunningApp) -> None:
    assert app.post("ops/ping").status_code == 401
    assert app.post("ops/ping", headers={"x-functions-key": "wrong"}).status_code == 401
    assert app.post("ops/ping", headers={"x-functions-key": FUNCTION_KEY}).status_code == 401
    assert app.get("ops/audit", params={"record": "x", "code": FUNCTION_KEY}).status_code == 401


def test_audit_query_needs_exactly_one_filter(app: RunningApp) -> None:
    response = app.get("ops/audit", headers={"x-functions-key": MASTER_KEY})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_an_unknown_message_is_dead_lettered_with_its_reason(app: RunningApp, azurite: Azurite) -> None:
    bus = StorageQueueBus(StorageSettings(azurite.connection_string, None, None, None))
    marker = uuid.uuid4().hex
    bus.send(ERP_EVENTS, Envelope("no.such.type", "contoso-fo", marker, {}))
    poison = bus._queue(poison_queue(ERP_EVENTS))

    def dead_letter() -> dict | None:
        for message in poison.peek_messages(max_messages=32):
            body = json.loads(base64.b64decode(message.content))
            if marker in body["body"]:
                return body
        return None

    dead = wait_for(dead_letter)
    assert dead["dead_letter_reason"] == "unknown message type 'no.such.type' on queue 'erp-events'"
    bus.close()


def test_health_is_degraded_when_the_configuration_does_not_load(tmp_path: Path, azurite: Azurite) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"connections": {"x": {"kind": "nope"}}}')
    with running_app(tmp_path, azurite, broken) as running:
        response = running.get("health")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded"
        assert response.json()["config"]["loaded"] is False
        assert "connections.x.kind" in running.log()  # the reason is in the log, not the public answer


def test_health_is_degraded_when_storage_is_unreachable(tmp_path: Path, azurite: Azurite) -> None:
    dead_port = free_port()
    unreachable = azurite.connection_string.replace(f":{azurite.table_port}/", f":{dead_port}/")
    with running_app(tmp_path, azurite, SAMPLE_CONFIG, AzureWebJobsStorage=unreachable) as running:
        response = running.get("health")
        assert response.status_code == 503
        assert response.json()["storage"]["reachable"] is False



def post_signed_status(running: RunningApp, signed_for: str) -> int:
    """Twilio posting a delivery status to the callback URL ``signed_for``, at the app's real port."""
    from shared.channels.twilio.signature import sign

    route = f"twilio/status/twilio-main?job={uuid.uuid4().hex}"
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "MessageStatus": "delivered",
              "AccountSid": "AC00000000000000000000000000000000"}
    headers = sign(SECRET_VALUE, f"{signed_for}/api/{route}", params)
    return running.post(route, data=params, headers=headers).status_code


def test_callbacks_signed_for_the_port_served_are_taken_when_the_settings_keep_the_example_address(
        tmp_path: Path, azurite: Azurite) -> None:
    # local.settings.example.json names the default port: run on another one, as `make run PORT=...` does.
    with running_app(tmp_path, azurite, SAMPLE_CONFIG, PUBLIC_BASE_URL="http://127.0.0.1:7071") as running:
        assert post_signed_status(running, running.base_url) == 204
        assert post_signed_status(running, "http://127.0.0.1:7071") == 403
        assert f"PUBLIC_BASE_URL follows the local port: {running.base_url}" in running.log()


def test_an_address_the_operator_chose_is_kept_whatever_the_port(tmp_path: Path, azurite: Azurite) -> None:
    tunnel = "https://connector-tunnel.example.com"
    with running_app(tmp_path, azurite, SAMPLE_CONFIG, PUBLIC_BASE_URL=tunnel) as running:
        assert post_signed_status(running, tunnel) == 204
        assert post_signed_status(running, running.base_url) == 403


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that takes connections and never answers: storage that hangs rather than refuses."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in held:
            connection.close()
        listener.close()


BUSINESS_EVENT = {"BusinessEventId": "VendorInvoicePostedBusinessEvent", "ControlNumber": 5637159001,
                  "LegalEntity": "usmf", "InvoiceId": "INV-DOWN-1", "InvoiceAccount": "US-104"}
# The event Dynamics sends when an endpoint is created: answered after an audit line in the tables.
TEST_EVENT = {"BusinessEventId": "BusinessEventsTestEndpointContract", "ControlNumber": -9223372036854775808,
              "EventId": "X", "MajorVersion": 0}
# Requests whose answer needs storage: queues for an event, tables for the test event and the audit.
NEEDS_STORAGE = {
    "business event": ("POST", "dynamics/events/contoso-fo", {"x-functions-key": FUNCTION_KEY}, BUSINESS_EVENT),
    "endpoint test event": ("POST", "dynamics/events/contoso-fo", {"x-functions-key": FUNCTION_KEY}, TEST_EVENT),
    "ops audit": ("GET", "ops/audit?record=contoso-fo%7CVendorInvoice%7Cusmf%7CINV-1", {"x-functions-key": MASTER_KEY},
                  None),
}


@pytest.fixture(scope="module", params=["refusing", "silent"])
def app_without_storage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                        azurite: Azurite) -> Iterator[RunningApp]:
    """The app whose storage refuses connections, or takes them and never answers."""
    with contextlib.ExitStack() as stack:
        port = free_port() if request.param == "refusing" else stack.enter_context(silent_server())
        down = azurite.connection_string
        for live in (azurite.queue_port, azurite.table_port):
            down = down.replace(f":{live}/", f":{port}/")
        yield stack.enter_context(running_app(tmp_path_factory.mktemp("down"), azurite, SAMPLE_CONFIG,
                                              AzureWebJobsStorage=down))


@pytest.mark.parametrize("what", list(NEEDS_STORAGE))
def test_with_storage_down_the_app_answers_503_within_five_seconds(app_without_storage: RunningApp,
                                                                   what: str) -> None:
    method, route, headers, body = NEEDS_STORAGE[what]
    # Dynamics gives up after 10 s: the answer must come well before, and say "try again".
    response = requests.request(method, f"{app_without_storage.base_url}/api/{route}", json=body, headers=headers,
                                timeout=5)
    assert response.status_code == 503
    assert response.json()["error"] in ("queue_unavailable", "unavailable")
    assert response.headers.get("Retry-After") or response.json()["error"] == "queue_unavailable"
