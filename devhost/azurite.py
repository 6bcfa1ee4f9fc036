"""Start and stop Azurite (the Azure Storage emulator from npm) for local runs and tests."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Azurite's services in the order of its ports (and of its connection string's endpoints).
SERVICES = ("blob", "queue", "table")
# What a running Azurite (another checkout's, or an older release) answers as: "Server: Azurite-Queue/3.35.0".
SERVER_PREFIX = "Azurite-"
CHOOSE_PORTS_HINT = "choose other ports with --azurite-ports (make run AZURITE_PORTS=...)"


class AzuritePortError(Exception):
    """Azurite's ports are taken by something else, or by part of an Azurite; the message says which."""


def parse_azurite_ports(text: str) -> tuple[int, int, int]:
    """``20000`` (blob, then queue and table on the next two ports) or ``20000,20001,20002``."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts) or len(parts) not in (1, 3):
        raise ValueError(f"expected a port (the first of three) or three ports separated by commas, not {text!r}")
    ports = [int(parts[0]) + offset for offset in range(3)] if len(parts) == 1 else [int(part) for part in parts]
    if not all(0 < port < 65536 for port in ports) or len(set(ports)) != 3:
        raise ValueError(f"Azurite needs three different ports between 1 and 65535, not {text!r}")
    return ports[0], ports[1], ports[2]


def server_on(port: int, timeout: float = 2.0) -> str | None:
    """The ``Server`` header of what listens on 127.0.0.1:port ("" when it says none or is no HTTP
    server); None when nothing listens there."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.connect()
    except OSError:
        return None
    try:
        connection.request("GET", "/")
        return connection.getresponse().getheader("Server") or ""
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        connection.close()


def running_azurite(ports: tuple[int, int, int]) -> bool:
    """True when an Azurite answers on all three ports (to be shared), False when none listens.

    Anything between (a port taken by another program, or only part of an Azurite there) raises
    AzuritePortError naming the port and what to do: sharing it would send the app's data
    elsewhere, and starting Azurite there would fail.
    """
    servers = {port: server_on(port) for port in ports}
    for service, port in zip(SERVICES, ports, strict=True):
        server = servers[port]
        if server is not None and not server.lower().startswith(f"{SERVER_PREFIX}{service}".lower()):
            seen = f"answers as {server!r}" if server else "does not answer as Azurite"
            raise AzuritePortError(
                f"port {port} (Azurite's {service} service) is taken by another program ({seen}): "
                f"stop it or {CHOOSE_PORTS_HINT}"
            )
    listening = [port for port in ports if servers[port] is not None]
    if listening and len(listening) < len(ports):
        missing = ", ".join(f"{port} ({service})" for service, port in zip(SERVICES, ports, strict=True)
                            if servers[port] is None)
        raise AzuritePortError(
            f"an Azurite answers on {', '.join(map(str, listening))} but not on {missing}: "
            f"stop that Azurite or {CHOOSE_PORTS_HINT}"
        )
    return bool(listening)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessExited(RuntimeError):
    """The process that was to listen on a port stopped first."""


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Poll until something accepts connections on 127.0.0.1:port (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ProcessExited(f"exited with {process.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def azurite_executable() -> str:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise FileNotFoundError("Azurite is not installed: run `npm ci` in the repository root")


@dataclass
class Azurite:
    """A running Azurite process with its own ports."""

    process: subprocess.Popen
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        host = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={host}:{self.blob_port}/{ACCOUNT_NAME};"
            f"QueueEndpoint={host}:{self.queue_port}/{ACCOUNT_NAME};"
            f"TableEndpoint={host}:{self.table_port}/{ACCOUNT_NAME};"
        )

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


# Free ports are picked, then bound by Azurite: another process may take one in between.
START_ATTEMPTS = 3


def start_azurite(
    location: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    log_path: Path | None = None,
) -> Azurite:
    """Start Azurite: in memory (tests) or persisted under ``location`` (local runs). On ports of its own
    choosing, an Azurite that exits while starting (a port taken meanwhile) is started again on others."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_azurite(location, ports or (free_port(), free_port(), free_port()), log_path)
        except AzuriteExited:
            if ports is not None or attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class AzuriteExited(RuntimeError):
    """Azurite stopped before it listened on its ports (one of them taken, say)."""


def _start_azurite(location: Path | None, ports: tuple[int, int, int], log_path: Path | None) -> Azurite:
    blob, queue, table = ports
    args = [
        azurite_executable(),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        "--blobHost", "127.0.0.1", "--blobPort", str(blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(table),
    ]
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(location)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    azurite = Azurite(process, blob, queue, table)
    try:
        for port in (queue, table):
            wait_for_port(port, process=process)
    except ProcessExited as exc:
        azurite.stop()
        raise AzuriteExited(f"Azurite {exc}") from None
    except BaseException:
        azurite.stop()
        raise
    return azurite
