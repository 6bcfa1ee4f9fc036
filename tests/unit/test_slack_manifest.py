"""docs/slack-app-manifest.yaml grants what the code's Slack calls need and points at the app's real routes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from shared.channels.slack.client import METHOD_SCOPES
from tests.support.openapi import require_spec
from tests.support.routes import registered_http_routes

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / "docs" / "slack-app-manifest.yaml"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
SLACK_CODE = [REPO_ROOT / "shared" / "channels" / "slack" / "client.py",
              *sorted((REPO_ROOT / "shared" / "pipeline").glob("slack_*.py"))]
# Slack's Web API spec still names the bot's write scope as it was before granular bot scopes.
SPEC_SCOPE_NAMES = {"chat:write:bot": "chat:write"}


def parse_yaml_subset(text: str) -> dict[str, Any]:
    """The block YAML the manifest is written in: mappings, lists of scalars, comments. Enough here
    (PyYAML is not a dependency of the app)."""
    root: dict[str, Any] = {}
    # (indent, container) of the open blocks; a key with nothing after its colon opens one.
    stack: list[tuple[int, Any]] = [(-1, root)]
    pending: tuple[int, dict[str, Any], str] | None = None
    for raw in text.splitlines():
        line = re.sub(r"\s+#.*$", "", raw).rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        content = line.strip()
        if pending is not None:
            parent_indent, parent, key = pending
            parent[key] = [] if content.startswith("- ") else {}
            stack.append((parent_indent, parent[key]))
            pending = None
        while indent <= stack[-1][0] and len(stack) > 1:
            stack.pop()
        container = stack[-1][1]
        if content.startswith("- "):
            container.append(content[2:].strip().strip('"'))
            continue
        key, _, value = content.partition(":")
        value = value.strip()
        if value:
            container[key] = value.strip('"')
        else:
            container[key] = None  # replaced when its block follows; None if it stays empty
            pending = (indent, container, key)
    return root


def manifest() -> dict[str, Any]:
    return parse_yaml_subset(MANIFEST.read_text(encoding="utf-8"))


def empty_blocks(node: Any, path: str = "") -> list[str]:
    if node in (None, [], {}, "[]", "{}", ""):
        return [path or "(root)"]
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in empty_blocks(value, f"{path}.{key}".lstrip("."))]
    return []


def methods_the_code_calls() -> set[str]:
    called: set[str] = set()
    for path in SLACK_CODE:
        text = path.read_text(encoding="utf-8")
        called.update(re.findall(r'_call\(\s*"([a-z]+\.[A-Za-z]+)"', text))
        # slack_sdk's method names, should a call bypass _call: client.chat_postMessage(...) -> chat.postMessage
        called.update(f"{group}.{method}" for group, method in
                      re.findall(r"\bclient\.(chat|conversations|views|users|auth|reactions|files)_(\w+)\(", text))
    return called


def test_every_slack_method_the_code_calls_has_its_scopes_listed() -> None:
    called = methods_the_code_calls()
    assert {"chat.postMessage", "users.lookupByEmail", "conversations.open", "users.info"} <= called
    assert called == set(METHOD_SCOPES), "keep METHOD_SCOPES in shared/channels/slack/client.py in step"


def test_the_listed_scopes_are_those_slack_names_for_each_method() -> None:
    spec = require_spec("slack/slack_web_openapi_v2.json")
    for method, scopes in METHOD_SCOPES.items():
        operation = next(iter(spec["paths"][f"/{method}"].values()))
        allowed = {SPEC_SCOPE_NAMES.get(scope, scope) for entry in operation.get("security", [])
                   for scope in entry.get("slackAuth", []) if scope != "none"}
        assert set(scopes) <= allowed, f"{method}: {scopes} not among {sorted(allowed)}"
        assert bool(scopes) == bool(allowed), f"{method}: Slack names {sorted(allowed)}"


def test_the_manifest_grants_every_scope_the_code_needs_and_no_other() -> None:
    granted = set(manifest()["oauth_config"]["scopes"]["bot"])
    needed = {scope for scopes in METHOD_SCOPES.values() for scope in scopes}
    assert needed - granted == set(), "add these bot scopes to docs/slack-app-manifest.yaml"
    assert granted - needed == set(), "the manifest asks for scopes no call needs"


def test_the_manifest_has_no_empty_block_and_its_urls_are_the_apps_routes() -> None:
    document = manifest()
    assert empty_blocks(document) == []
    served = {route.path for route in registered_http_routes() if route.method == "POST"}
    settings = document["settings"]
    for url in (settings["interactivity"]["request_url"], settings["event_subscriptions"]["request_url"]):
        path = url.removeprefix("https://<app-host>").replace("<connection>", "{connection}")
        assert path in served, f"{url} is not a route the app serves"
    assert set(settings["event_subscriptions"]["bot_events"]) == {"app_uninstalled", "tokens_revoked"}


def test_the_operations_guide_points_at_the_manifest_and_names_every_scope() -> None:
    guide = OPERATIONS.read_text(encoding="utf-8")
    assert "(slack-app-manifest.yaml)" in guide  # a link, not only a name
    section = guide[guide.index("## 7. Install the Slack app"):]
    section = section[:section.index("\n## ", 1)]
    needed = {scope for scopes in METHOD_SCOPES.values() for scope in scopes}
    assert {scope for scope in needed if f"`{scope}`" not in section} == set()
    assert "/api/slack/events/" in section
