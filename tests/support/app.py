"""The real function_app under the local host, in a process of its own, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost.azurite import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
# The key that seals phone numbers and messages in the tables of every app under test.
TEST_DATA_PROTECTION_KEY = "dGVzdC1vbmx5IGRhdGEgcHJvdGVjdGlvbiBrZXkgMzI="
STOP_TIMEOUT = 10.0


@dataclass
class LocalApp:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    settings_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def local_app(folder: Path, *, config: Mapping[str, Any] | Path, values: Mapping[str, str],
              host_json: Mapping[str, Any] | None = None) -> Iterator[LocalApp]:
    """Start ``python -m devhost`` with these settings; stop it (SIGTERM) on the way out.

    ``values`` go into local.settings.json after the defaults (storage queues, the app's own
    address as PUBLIC_BASE_URL). Raises AssertionError when the host does not stop in time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if isinstance(config, Path):
        config_path = config
    else:
        config_path = folder / f"connections.{port}.json"
        config_path.write_text(json.dumps(config))
    settings_path = folder / f"local.settings.{port}.json"
    settings_path.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FUNCTIONS_WORKER_RUNTIME": "python", "QUEUE_BACKEND": "storage", "PUBLIC_BASE_URL": base_url, **values,
    }}))
    command = [sys.executable, "-m", "devhost", "--settings", str(settings_path), "--config", str(config_path),
               "--port", str(port)]
    if host_json is not None:
        host_path = folder / f"host.{port}.json"
        host_path.write_text(json.dumps(host_json))
        command += ["--host-json", str(host_path)]
    log_path = folder / f"devhost.{port}.log"
    # The settings file decides; a variable of the test process would win over it (as with Core Tools).
    env = {k: v for k, v in os.environ.items() if k not in ("QUEUE_BACKEND", "AzureWebJobsStorage")}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        try:
            wait_for_port(port, timeout=30, process=process)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"devhost did not start ({exc}):\n{log_path.read_text(errors='replace')}") from None
        yield LocalApp(base_url, process, log_path, settings_path)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise AssertionError(f"devhost did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM") from None
