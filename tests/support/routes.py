"""The HTTP routes the FunctionApp registers, read from a fresh interpreter as the worker indexes them."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUTE_PREFIX = "api"  # host.json extensions.http.routePrefix

_PROBE = """
import json, function_app
routes = []
for function in function_app.app.get_functions():
    trigger = function.get_trigger().get_dict_repr()
    if trigger["type"] == "httpTrigger":
        routes.append({"route": trigger["route"],
                       "methods": [getattr(m, "value", str(m)) for m in trigger.get("methods") or []],
                       "auth": str(getattr(trigger.get("authLevel"), "value", trigger.get("authLevel") or ""))})
print(json.dumps(routes))
"""


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str  # "/api/slack/events/{connection}"
    auth_level: str  # anonymous, function, admin


@functools.cache
def registered_http_routes() -> tuple[HttpRoute, ...]:
    """Every (method, path) the app serves; the queue backend does not change HTTP routes."""
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    routes = json.loads(out.stdout.strip().splitlines()[-1])
    return tuple(
        HttpRoute(method.upper(), f"/{ROUTE_PREFIX}/{route['route'].strip('/')}", route["auth"].lower())
        for route in routes for method in route["methods"]
    )
