"""README's "HTTP endpoints" table lists every route the FunctionApp registers, with its auth level, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.routes import registered_http_routes

REPO_ROOT = Path(__file__).resolve().parents[2]
# The table's Auth column: a key the host checks, or a provider's signature the app checks on an anonymous route.
HOST_AUTH = {"function key": "function", "admin": "admin"}


def endpoint_rows() -> dict[tuple[str, str], str]:
    """(method, path) -> auth level of each row of the table; queries (``?job=…``) left out."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## HTTP endpoints"):]
    table = table[:table.index("\n## ", 1)]
    rows: dict[tuple[str, str], str] = {}
    for route, auth in re.findall(r"^\| `([A-Z]+ /[^`]+)` [^|]*\| ([^|]+) \|", table, re.MULTILINE):
        method, path = route.split(" ", 1)
        key = (method, path.split("?", 1)[0])
        assert key not in rows, f"two rows for {route}"
        rows[key] = HOST_AUTH.get(auth.strip(), "anonymous")
    return rows


def test_the_table_reads_as_expected() -> None:
    rows = endpoint_rows()
    assert rows[("POST", "/api/dynamics/events/{connection}")] == "function"
    assert rows[("POST", "/api/twilio/status/{connection}")] == "anonymous"
    assert rows[("GET", "/api/ops/audit")] == "admin"


def test_every_registered_route_has_its_row_and_every_row_a_route() -> None:
    registered = {(route.method, route.path): route.auth_level for route in registered_http_routes()}
    rows = endpoint_rows()
    assert sorted(set(registered) - set(rows)) == [], "add these routes to README.md's HTTP endpoints table"
    assert sorted(set(rows) - set(registered)) == [], "README.md lists routes the app does not register"
    assert {key: rows[key] for key in registered} == registered, "the Auth column disagrees with the route"
