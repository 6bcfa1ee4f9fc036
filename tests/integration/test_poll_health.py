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

import pytest

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
from shared.storage.bus import StorageQueueBus, get_bus, read_envelope, reset_bus
from shared.storage.secrets import reset_secret_provider
from shared.storage.tables import Stores
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

    def tick(self, at: datetime) -> list[str]:
        """One scheduler tick at ``at``, then every poll job it queued run by the consumer; their outcomes."""
        schedule_polls(get_config(), self.stores, get_bus(), at)
        return self.run_poll_jobs()

    def run_poll_jobs(self) -> list[str]:
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
                outcomes.append(consume(Delivery(POLL_JOBS, body, message.id, message.dequeue_count), bus))
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

    assert outcomes and set(outcomes) == {"handled"}  # nothing requeued, nothing dead-lettered
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
