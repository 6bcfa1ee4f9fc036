"""function_app: imports fast with no settings and no network; triggers fit the host's rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: any socket use during the import fails loudly.
PROBE = """
import json, socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network I/O during import")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import function_app
functions = []
for f in function_app.app.get_functions():
    trigger = f.get_trigger().get_dict_repr()
    functions.append({"name": f.get_function_name(), "type": trigger["type"],
                      "route": trigger.get("route"), "queue": trigger.get("queueName"),
                      "connection": trigger.get("connection")})
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("requests", "urllib3", "twilio", "slack_sdk", "phonenumbers")
               or m.startswith(("azure.data", "azure.storage", "azure.servicebus", "azure.identity", "azure.keyvault",
                                "azure.monitor", "opentelemetry")))
print(json.dumps({"functions": functions, "heavy": heavy}))
"""


def indexed(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_imports_with_no_settings_no_network_and_no_sdk_loaded() -> None:
    result = indexed({})
    assert result["heavy"] == []
    names = {f["name"] for f in result["functions"]}
    assert {"health", "ops_ping", "ops_audit"} <= names


def test_queue_triggers_default_to_service_bus() -> None:
    queues = [f for f in indexed({})["functions"] if f["queue"]]
    assert sorted(f["queue"] for f in queues) == ["callbacks", "erp-events", "notifications", "poll-jobs"]
    assert {(f["type"], f["connection"]) for f in queues} == {("serviceBusTrigger", "ServiceBusConnection")}


def test_storage_backend_registers_storage_queue_triggers() -> None:
    queues = [f for f in indexed({"QUEUE_BACKEND": "storage"})["functions"] if f["queue"]]
    assert len(queues) == 4
    assert {(f["type"], f["connection"]) for f in queues} == {("queueTrigger", "AzureWebJobsStorage")}


def test_no_route_or_function_name_starts_with_admin() -> None:
    # The Functions host refuses them: "The specified route conflicts with one or more built in routes."
    for function in indexed({})["functions"]:
        assert not function["name"].lower().startswith("admin"), function
        assert not (function["route"] or "").lower().startswith("admin"), function


def test_function_names_are_unique() -> None:
    names = [f["name"] for f in indexed({"QUEUE_BACKEND": "storage"})["functions"]]
    assert len(names) == len(set(names))
