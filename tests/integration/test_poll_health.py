"""Poll health: an ERP that cannot be reached backs off quietly, loses nothing, and recovers.

The sample configuration runs as shipped, except that every ERP address points at a closed local
port; the scheduler ticks (a simulated clock, one tick per slot) and the real queue consumer runs
the poll jobs on the session's Azurite. Then the fake SYSPRO starts on that port and the next run
resumes from the watermark.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partialmethod
from pathlib import Path

import azure.functions as func
import pytest

from shared import cli
from shared.channels.twilio.client import reset_twilio_channels
from shared.config.loading import get_config, reset_config
from shared.erp.dynamics.client import reset_dynamics_clients
from shared.erp.qad.client import reset_qad_clients
from shared.erp.sagex3.client import reset_sagex3_clients
from shared.erp.syspro.client import reset_transports
from shared.http import HttpClient
from shared.model import POLL_JOBS, EnvelopeError
from shared.pipeline.consume import Delivery, consume
from shared.pipeline.poll import schedule_polls
from shared.pipeline.pollhealth import poll_row
from shared.storage.bus import StorageQueueBus, get_bus, read_envelope, reset_bus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import PollStatus, Stores
from shared.triggers import ops
from tests.fakes.syspro import FakeSyspro

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "config" / "connections.sample.json"
SETTINGS = REPO / "local.settings.example.json"
FOREIGN_HIDDEN_SECONDS = 5
ERPS = ("contoso-fo", "qad-main", "sagex3-main", "syspro-main")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample_against(port: int, syspro_port: int, suffix: str) -> dict:
    """The sample configuration with every ERP on ``http(s)://127.0.0.1:port`` (SYSPRO on ``syspro_port``)
    and its names made unique (the session's queues are shared with other tests)."""
    config = json.loads(SAMPLE.read_text())
    local = f"127.0.0.1:{port}"
    connections = config["connections"]
    connections["contoso-fo"].update(environment_url=f"https://{local}", authority=f"https://{local}")
    connections["qad-main"]["base_url"] = f"http://{local}/qad-central"
    connections["qad-main"]["qxtend"]["url"] = f"http://{local}/qxilive"
    connections["sagex3-main"]["base_url"] = f"http://{local}"
    connections["syspro-main"]["base_url"] = f"http://127.0.0.1:{syspro_port}/SYSPROWCFService/Rest"
    config["connections"] = {f"{name}-{suffix}" if name in ERPS else name: value
                             for name, value in connections.items()}
    for rule in config["rules"]:
        rule["source"] = f"{rule['source']}-{suffix}"
    return config


@dataclass
class SampleStack:
    port: int
    syspro_port: int
    suffix: str
    stores: Stores

    def name(self, connection: str) -> str:
        return f"{connection}-{self.suffix}"

    def tick(self, at: datetime) -> list[tuple[str, str]]:
        """One scheduler tick at ``at``, then every poll job it queued run by the consumer; (connection, outcome)."""
        schedule_polls(get_config(), self.stores, get_bus(), at)
        return self.run_poll_jobs()

    def run_poll_jobs(self) -> list[tuple[str, str]]:
        bus = get_bus()
        assert isinstance(bus, StorageQueueBus)
        client = bus._queue(POLL_JOBS)
        outcomes = []
        while batch := list(client.receive_messages(max_messages=32, visibility_timeout=60)):
            for message in batch:
                body = base64.b64decode(message.content)
                if not self._ours(body):
                    client.update_message(message, visibility_timeout=FOREIGN_HIDDEN_SECONDS)
                    continue
                outcome = consume(Delivery(POLL_JOBS, body, message.id, message.dequeue_count), bus)
                outcomes.append((read_envelope(body).connection, outcome))
                client.delete_message(message)
        return outcomes

    def _ours(self, body: bytes) -> bool:
        try:
            return read_envelope(body).connection.endswith(f"-{self.suffix}")
        except EnvelopeError:
            return False


@pytest.fixture
def sample(app_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleStack]:
    port, syspro_port, suffix = closed_port(), closed_port(), uuid.uuid4().hex[:6]
    config_path = tmp_path / "connections.json"
    config_path.write_text(json.dumps(sample_against(port, syspro_port, suffix)))
    for name, value in json.loads(SETTINGS.read_text())["Values"].items():
        if name.endswith(("_SECRET", "_PASSWORD", "_TOKEN")) and not name.startswith("DATA_PROTECTION"):
            monkeypatch.setenv(name, value)  # the sample's secrets, as make run reads them
    monkeypatch.setenv("CONNECTOR_CONFIG_PATH", str(config_path))
    monkeypatch.setattr(HttpClient, "__init__", partialmethod(HttpClient.__init__, sleep=lambda seconds: None))
    monkeypatch.setenv("QUEUE_BACKEND", "storage")
    resets: tuple[Callable[[], None], ...] = (reset_config, reset_bus, reset_secret_provider, reset_twilio_channels,
                                              reset_transports, reset_dynamics_clients, reset_qad_clients,
                                              reset_sagex3_clients)
    for reset in resets:
        reset()
    try:
        yield SampleStack(port, syspro_port, suffix, app_stores)
    finally:
        for reset in resets:
            reset()


START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FAILED_LINE = re.compile(r"poll of (\S+?)/(\S+) failed \((\d+) in a row\): (.*); next try at (\S+) \(in ")


def failed_lines(caplog: pytest.LogCaptureFixture, connection: str) -> list[tuple[str, int, str, str]]:
    """(entity, failures in a row, reason, next try) of each failed-run line about ``connection``."""
    found = []
    for record in caplog.records:
        matched = FAILED_LINE.match(record.getMessage())
        if matched and matched.group(1) == connection:
            found.append((matched.group(2), int(matched.group(3)), matched.group(4), matched.group(5)))
    return found


def test_an_unreachable_erp_backs_off_with_one_line_per_failed_run_and_nothing_dead_lettered(
        sample: SampleStack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    syspro = sample.name("syspro-main")  # every 5 minutes: runs at 0, 5, 15 and 35 (1, 2, 4 intervals apart)
    outcomes = [outcome for minute in range(0, 40, 5) for outcome in sample.tick(START + timedelta(minutes=minute))]

    assert outcomes and {outcome for _, outcome in outcomes} == {"handled"}  # nothing requeued or dead-lettered
    lines = failed_lines(caplog, syspro)
    refused = f"cannot reach http://127.0.0.1:{sample.syspro_port}: connection refused"
    assert lines == [("PorMasterHdr", 1, refused, "2026-12-01T09:05:00Z"),
                     ("PorMasterHdr", 2, refused, "2026-12-01T09:15:00Z"),
                     ("PorMasterHdr", 3, refused, "2026-12-01T09:35:00Z"),
                     ("PorMasterHdr", 4, refused, "2026-12-01T10:15:00Z")]
    for erp, scheme in (("contoso-fo", "https"), ("qad-main", "http"), ("sagex3-main", "http")):
        reasons = {reason for _, _, reason, _ in failed_lines(caplog, sample.name(erp))}
        assert reasons == {f"cannot reach {scheme}://127.0.0.1:{sample.port}: connection refused"}, erp
    ours = [record for record in caplog.records if sample.suffix in record.getMessage()]
    assert not [record for record in ours if record.exc_info], "no traceback"
    assert not [record for record in ours if "dead-letter" in record.getMessage()]
    assert not [letter for letter in sample.stores.dead_letters.all(None) if sample.suffix in letter.connection]

    statuses = sample.stores.polls.of(syspro)
    assert {name: (status.failures, status.last_success) for name, status in statuses.items()} == {
        "PorMasterHdr": (4, None), "ApInvoice": (4, None)}  # stopped at the first entity; the second waits too
    assert statuses["ApInvoice"].last_error == refused
    assert statuses["ApInvoice"].next_run == datetime(2026, 12, 1, 10, 15, tzinfo=UTC)


def test_a_recovered_erp_is_polled_again_from_its_watermark_and_its_backoff_resets(
        sample: SampleStack, caplog: pytest.LogCaptureFixture) -> None:
    syspro = sample.name("syspro-main")
    erp = FakeSyspro(port=sample.syspro_port)
    erp.add_operator("MLCONNECT", "replace-with-the-syspro-operator-password")
    erp.add_company("EDU1")
    erp.add_supplier("S1", "Supplier One", "+14155550142")
    erp.add_purchase_order("PO-1", "S1")
    erp.start()
    try:
        sample.tick(START)  # the first poll only records where SYSPRO stands
        baseline = sample.stores.watermarks.get(syspro, "PorMasterHdr")
        assert isinstance(baseline, int)
        erp.stop()
        erp.add_purchase_order("PO-2", "S1")  # changed while SYSPRO cannot be reached
        for minute in (5, 10, 15):  # refused at 09:05 (next at 09:10) and 09:10 (next at 09:20); 09:15 skipped
            sample.tick(START + timedelta(minutes=minute))
        assert [line[1] for line in failed_lines(caplog, syspro) if line[0] == "PorMasterHdr"] == [1, 2]
        assert sample.stores.watermarks.get(syspro, "PorMasterHdr") == baseline  # nothing moved, nothing lost

        erp.start()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            sample.tick(START + timedelta(minutes=20))
        polled = [record.getMessage() for record in caplog.records
                  if record.getMessage().startswith(f"polled {syspro}/PorMasterHdr")]
        assert len(polled) == 1 and polled[0].endswith(": 1 change(s)")  # PO-2, read from the watermark
        status = sample.stores.polls.of(syspro)["PorMasterHdr"]
        assert (status.failures, status.last_error) == (0, None)
        assert status.last_success is not None and status.next_run == datetime(2026, 12, 1, 9, 25, tzinfo=UTC)
    finally:
        erp.stop()


def test_an_erp_that_answers_but_fails_is_retried_from_the_queue_as_before_and_its_status_says_why(
        sample: SampleStack) -> None:
    syspro = sample.name("syspro-main")
    erp = FakeSyspro(port=sample.syspro_port)
    erp.add_operator("MLCONNECT", "replace-with-the-syspro-operator-password")
    erp.add_company("EDU1")
    erp.start()
    try:
        erp.fail_next(10, status=500)  # every try of the logon, inline retries included
        assert (syspro, "requeued") in sample.tick(START)
        status = sample.stores.polls.of(syspro)["PorMasterHdr"]
        assert (status.failures, status.last_error) == (1, "HttpFailure (HTTP 500)")
    finally:
        erp.stop()


# --- what operators see: GET /api/ops/polls, POST /api/ops/polls/run, python -m shared.cli polls ---------------


def call(function: object, method: str, body: object = None) -> tuple[int, dict]:
    """An ops route's answer to a request, in process (the route's function as the host calls it)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    request = func.HttpRequest(method, "http://127.0.0.1:7071/api/ops/polls", headers={}, params={}, body=raw)
    answer = function._function.get_user_function()(request)  # type: ignore[attr-defined]
    return answer.status_code, json.loads(answer.get_body())


SAMPLE_POLLS = [(connection, entity) for connection, settings in json.loads(SAMPLE.read_text())["connections"].items()
                if "poll" in settings for entity in settings["poll"]["entities"]]


def test_the_polls_route_lists_every_polled_entity_and_how_its_polls_fare(sample: SampleStack) -> None:
    status, answer = call(ops.ops_polls, "GET")
    assert status == 200
    rows = [row for row in answer["polls"] if row["connection"].endswith(sample.suffix)]
    assert [(row["connection"].removesuffix(f"-{sample.suffix}"), row["entity"]) for row in rows] == SAMPLE_POLLS
    assert {(row["last_attempt"], row["last_success"], row["watermark"], row["lag_seconds"], row["last_error"],
             row["failures"]) for row in rows} == {(None, None, None, None, None, 0)}  # before the first poll
    assert all(row["next_run"].endswith("Z") for row in rows)

    sample.tick(START)
    syspro = {row["entity"]: row for row in call(ops.ops_polls, "GET")[1]["polls"]
              if row["connection"] == sample.name("syspro-main")}
    assert syspro["PorMasterHdr"]["kind"] == "syspro" and syspro["PorMasterHdr"]["failures"] == 1
    refused = f"cannot reach http://127.0.0.1:{sample.syspro_port}: connection refused"
    assert syspro["ApInvoice"]["last_error"] == refused
    assert syspro["ApInvoice"]["last_success"] is None and syspro["ApInvoice"]["last_attempt"] is not None
    assert syspro["ApInvoice"]["next_run"] >= "2026-12-01T09:05:00Z"


def test_poll_now_runs_at_once_whatever_the_backoff_and_refuses_what_the_configuration_does_not_poll(
        sample: SampleStack, caplog: pytest.LogCaptureFixture) -> None:
    syspro = sample.name("syspro-main")
    sample.tick(START)
    sample.tick(START + timedelta(minutes=5))  # two failures: the scheduler waits until 09:15
    sample.tick(START + timedelta(minutes=10))
    assert len(failed_lines(caplog, syspro)) == 2

    assert call(ops.ops_polls_run, "POST", {"connection": syspro, "entity": "ApInvoice"}) == (202, {"queued": 1})
    assert sample.run_poll_jobs() == [(syspro, "handled")]
    assert [(entity, failures) for entity, failures, _, _ in failed_lines(caplog, syspro)][-1] == ("ApInvoice", 3)
    assert call(ops.ops_polls_run, "POST", {"connection": syspro}) == (202, {"queued": 2})
    assert sample.run_poll_jobs() == [(syspro, "handled")]

    assert call(ops.ops_polls_run, "POST", {"connection": "nowhere"})[0] == 404
    assert call(ops.ops_polls_run, "POST", {"connection": syspro, "entity": "Nope"})[0] == 404
    assert call(ops.ops_polls_run, "POST", {"connection": "twilio-main"})[0] == 404  # not polled
    assert call(ops.ops_polls_run, "POST", {"connection": syspro, "now": True})[0] == 400
    assert call(ops.ops_polls_run, "POST", {"entity": "ApInvoice"})[0] == 400
    assert call(ops.ops_polls_run, "POST", b"{not json")[0] == 400


def test_the_cli_prints_the_polls_as_a_table_or_as_the_routes_json_and_polls_now(
        sample: SampleStack, capsys: pytest.CaptureFixture[str]) -> None:
    syspro = sample.name("syspro-main")
    sample.tick(START)
    assert cli.main(["polls", "--json"]) == 0
    rows = {(row["connection"], row["entity"]): row for row in json.loads(capsys.readouterr().out)["polls"]}
    row = rows[(syspro, "PorMasterHdr")]
    assert set(row) == {"connection", "kind", "entity", "last_success", "last_attempt", "watermark", "lag_seconds",
                        "last_error", "failures", "next_run"}
    assert (row["kind"], row["failures"], row["last_success"]) == ("syspro", 1, None)

    assert cli.main(["polls"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["CONNECTION", "KIND", "ENTITY"]
    line = next(line for line in table if line.startswith(f"{syspro} ") and "PorMasterHdr" in line)
    assert line.split()[1:4] == ["syspro", "PorMasterHdr", "-"] and "connection refused" in line

    assert cli.main(["polls", "run", syspro, "--entity", "PorMasterHdr"]) == 0
    assert "1 entity" in capsys.readouterr().out
    assert sample.run_poll_jobs() == [(syspro, "handled")]
    assert cli.main(["polls", "run", "nowhere"]) == 1


def test_lag_is_counted_from_a_time_watermark_else_from_the_last_success() -> None:
    from shared.config.loading import config_from_dict

    config = config_from_dict(json.loads(SAMPLE.read_text()))
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    fo, syspro = config.connections["contoso-fo"], config.connections["syspro-main"]
    read = PollStatus("contoso-fo", "VendorInvoiceHeaders", last_success=now - timedelta(minutes=1))
    row = poll_row(fo, fo.poll, read, now - timedelta(minutes=16), now)  # type: ignore[attr-defined]
    assert (row["watermark"], row["lag_seconds"]) == ("2026-12-01T11:44:00Z", 960.0)
    counted = PollStatus("syspro-main", "ApInvoice", last_success=now - timedelta(minutes=3), failures=0)
    row = poll_row(syspro, syspro.poll, counted, 4711, now)  # type: ignore[attr-defined]
    assert (row["watermark"], row["lag_seconds"]) == ("4711", 180.0)
    assert row["next_run"] == "2026-12-01T12:05:00Z"
