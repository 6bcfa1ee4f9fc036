"""A Twilio status callback whose URL names its job moves that job before the webhook answers;
when storage is slow it is queued instead, and applied from the queue once."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import azure.functions as func
import pytest

from devhost.azurite import Azurite, start_azurite
from devhost.host import HostedFunction, discover_functions
from devhost.http_server import RouteTable, query_parameters
from shared.model import CALLBACKS
from shared.storage.bus import StorageQueueBus, read_envelope
from shared.storage.tables import JobRow, LastContact, Stores
from tests.fakes.twilio import FakeTwilio, TwilioCredentials

PUBLIC_BASE_URL = "https://connector.example.com"
RECORD = "fo|VendorInvoice|usmf|HOOK"


@dataclass
class Webhooks:
    status: HostedFunction
    creds: TwilioCredentials
    stores: Stores
    bus: StorageQueueBus
    routes: RouteTable | None = None

    def post_signed(self, route: str, params: dict[str, str], *, token: str | None = None) -> func.HttpResponse:
        """Twilio posting ``params`` to the app's ``route`` (e.g. ``/api/twilio/voice/twilio-main``), signed."""
        from shared.channels.twilio.signature import sign

        assert self.routes is not None
        found, _ = self.routes.find("POST", route)
        assert found is not None
        url = f"{PUBLIC_BASE_URL}{route}"
        headers = {name.lower(): value for name, value in sign(token or self.creds.auth_token, url, params).items()}
        request = func.HttpRequest("POST", f"http://127.0.0.1:7071{route}", headers=headers, params={},
                                   route_params={"connection": route.rsplit("/", 1)[-1]},
                                   body=urlencode(params).encode())
        return found.function.user_function(**{found.function.arg_name: request})

    def post_status(self, job_id: str, sid: str, status: str) -> int:
        """Twilio posting ``status`` of ``sid`` to the callback URL the app gave for ``job_id``."""
        from shared.channels.twilio.signature import sign

        query = urlencode({"job": job_id})
        params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": self.creds.account_sid}
        url = f"{PUBLIC_BASE_URL}/api/twilio/status/twilio-main?{query}"
        headers = {name.lower(): value for name, value in sign(self.creds.auth_token, url, params).items()}
        request = func.HttpRequest("POST", f"http://127.0.0.1:7071/api/twilio/status/twilio-main?{query}",
                                   headers=headers, params=query_parameters(query),
                                   route_params={"connection": "twilio-main"}, body=urlencode(params).encode())
        answer = self.status.user_function(**{self.status.arg_name: request})
        return answer.status_code

    def sent_job(self, sid: str) -> str:
        """A job whose SMS ``sid`` Twilio accepted, linked as the sender links it."""
        job_id = uuid.uuid4().hex
        created = self.stores.jobs.create(job_id, {"status": "queued", "provider_id": sid, "record": RECORD,
                                                   "correlation_id": uuid.uuid4().hex, "channel": "sms"})
        assert created is not None
        self.stores.contacts.remember("twilio-main", "", LastContact(job_id, RECORD, ""), sid=sid)
        return job_id

    def statuses(self, job_id: str) -> list[str]:
        job = self.stores.jobs.get(job_id)
        assert job is not None
        return [entry.detail["status"] for entry in self.stores.audit.by_correlation(job.fields["correlation_id"])
                if entry.step == "status"]


@pytest.fixture(scope="module")
def webhooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhooks]:
    from shared.settings import StorageSettings
    from tests.integration.test_http_fuzz import forget_app_state

    azurite: Azurite = start_azurite()  # of its own: nothing else may consume its callbacks queue
    twilio = FakeTwilio().start()
    creds = twilio.add_test_account()
    config = {"connections": {"twilio-main": {
        "kind": "twilio", "account_sid": creds.account_sid, "api_key_sid": creds.api_key_sid,
        "api_key_secret": {"secret": "twilio-api-key-secret"}, "auth_token": {"secret": "twilio-auth-token"},
        "from_number": creds.phone_number, "api_base_url": twilio.base_url}}, "rules": []}
    config_path = Path(tmp_path_factory.mktemp("hooks")) / "connections.json"
    config_path.write_text(json.dumps(config))
    prefix = "h" + uuid.uuid4().hex[:10]
    values = {"CONNECTOR_CONFIG_PATH": str(config_path), "AzureWebJobsStorage": azurite.connection_string,
              "STORAGE_TABLE_PREFIX": prefix, "QUEUE_BACKEND": "storage", "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
              "TWILIO_API_KEY_SECRET": creds.api_key_secret, "TWILIO_AUTH_TOKEN": creds.auth_token}
    settings = StorageSettings(azurite.connection_string, None, None, None)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        forget_app_state()
        import function_app

        routes = RouteTable("api", discover_functions(function_app.app))
        route, _ = routes.find("POST", "/api/twilio/status/twilio-main")
        assert route is not None
        stores, bus = Stores.open(settings, prefix), StorageQueueBus(settings)
        try:
            yield Webhooks(route.function, creds, stores, bus, routes)
        finally:
            function_app.app.functions_bindings = None
            stores.close()
            bus.close()
            forget_app_state()
            twilio.stop()
            azurite.stop()


def queued_callbacks(bus: StorageQueueBus) -> list[bytes]:
    """The bodies of every message on the callbacks queue, taken off it."""
    taken = []
    for message in bus._queue(CALLBACKS).receive_messages(max_messages=32, visibility_timeout=30):
        taken.append(base64.b64decode(message.content))
        bus._queue(CALLBACKS).delete_message(message)
    return taken


def test_a_callback_naming_its_job_moves_the_job_before_the_answer(webhooks: Webhooks) -> None:
    sid = "SM" + uuid.uuid4().hex
    job_id = webhooks.sent_job(sid)
    for status in ("sent", "delivered", "sent"):  # the late "sent" changes nothing
        assert webhooks.post_status(job_id, sid, status) == 204

    job = webhooks.stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered"
    assert webhooks.statuses(job_id) == ["sent", "delivered"]
    assert queued_callbacks(webhooks.bus) == []


def test_a_callback_is_queued_when_storage_is_slow_and_applied_once(
    webhooks: Webhooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.pipeline.consume import Delivery, consume
    from shared.storage.tables import get_stores
    from shared.triggers import twilio as trigger

    sid = "SM" + uuid.uuid4().hex
    job_id = webhooks.sent_job(sid)
    app_jobs = get_stores().jobs
    slow_read, release = threading.Event(), threading.Event()
    real_get: Callable[[str], JobRow | None] = app_jobs.get

    def get_after_release(wanted: str) -> JobRow | None:
        if wanted == job_id and not slow_read.is_set():
            slow_read.set()
            release.wait(10)  # storage hangs on this one read
        return real_get(wanted)

    monkeypatch.setattr(app_jobs, "get", get_after_release)
    monkeypatch.setattr(trigger, "APPLY_SECONDS", 0.2)
    assert webhooks.post_status(job_id, sid, "delivered") == 204

    job = webhooks.stores.jobs.get(job_id)
    assert slow_read.is_set() and job is not None and job.status == "queued"  # not applied within the answer
    [body] = queued_callbacks(webhooks.bus)
    queued = read_envelope(body)
    assert queued.payload["job_id"] == job_id and queued.payload["params"]["MessageStatus"] == "delivered"
    assert consume(Delivery(CALLBACKS, body, "m1", 1), webhooks.bus) == "handled"
    job = webhooks.stores.jobs.get(job_id)
    assert job is not None and job.status == "delivered"

    release.set()  # the slow run ends after the queued one: it changes nothing more
    for _ in range(trigger.MAX_APPLYING):
        assert trigger._applying.acquire(timeout=10)
    for _ in range(trigger.MAX_APPLYING):
        trigger._applying.release()
    assert webhooks.statuses(job_id) == ["delivered"]


def test_a_call_is_asked_for_a_message_whose_transcription_is_posted_back_signed(webhooks: Webhooks) -> None:
    call = {"CallSid": "CA" + uuid.uuid4().hex, "AccountSid": webhooks.creds.account_sid, "From": "+14155550188",
            "To": webhooks.creds.phone_number, "CallStatus": "ringing", "Direction": "inbound"}
    answer = webhooks.post_signed("/api/twilio/voice/twilio-main", call)

    assert answer.status_code == 200 and answer.mimetype == "text/xml"
    assert (f'<Record transcribe="true" transcribeCallback="{PUBLIC_BASE_URL}/api/twilio/transcription/twilio-main"'
            in answer.get_body().decode())


def test_a_transcription_is_queued_sealed_and_a_forged_one_changes_nothing(webhooks: Webhooks) -> None:
    with FakeTwilio() as twilio:  # builds the parameters Twilio posts
        params = twilio.transcription_params("+14155550188", webhooks.creds.phone_number, "Please call me back",
                                             account_sid=webhooks.creds.account_sid)
    forged = webhooks.post_signed("/api/twilio/transcription/twilio-main", params, token="not-the-auth-token")
    assert forged.status_code == 403 and queued_callbacks(webhooks.bus) == []

    assert webhooks.post_signed("/api/twilio/transcription/twilio-main", params).status_code == 204
    [body] = queued_callbacks(webhooks.bus)
    envelope = read_envelope(body)
    assert envelope.type == "twilio.voice_message" and envelope.key == params["RecordingSid"]
    assert envelope.payload["params"]["TranscriptionText"] == "Please call me back"
    assert b"Please call me back" not in body and b"+14155550188" not in body  # sealed on the queue
