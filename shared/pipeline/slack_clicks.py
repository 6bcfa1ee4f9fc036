"""What the Slack endpoints read from a request before answering, and the click they queue.

Kept apart from ``slack_flow`` (the work behind the queue: jobs, pacing, decisions, tables) so
that the interactions endpoint answers a cold instance's first click without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.model import SLACK_INTERACTION, Envelope


def click_key(payload: dict[str, Any]) -> str:
    container = payload.get("container") or {}
    action = (payload.get("actions") or [{}])[0]
    return "|".join(str(part) for part in (container.get("channel_id"), container.get("message_ts"),
                                            action.get("action_id"), (payload.get("user") or {}).get("id")))


def envelope_for_click(connection: str, payload: dict[str, Any], view_id: str | None = None) -> Envelope:
    """The queued click. A click that asks for a code carries the modal opened for it (``view_id``,
    "" when it could not be opened) and is keyed by its trigger too: each such click is a new
    attempt (a fresh code after an expired one), while Slack's retry of one click stays one."""
    if view_id is None:
        return Envelope(SLACK_INTERACTION, connection, click_key(payload), {"payload": payload})
    key = f"{click_key(payload)}|{payload.get('trigger_id', '')}"
    return Envelope(SLACK_INTERACTION, connection, key, {"payload": payload, "view_id": view_id})


# The shapes Slack gives the interaction fields read here and behind the queue: a type, or
# for an object the shapes of its fields ("*": every field), for an array that of its items.
_INTERACTION_SHAPE: dict[str, Any] = {
    "type": str, "trigger_id": str, "user": {"id": str}, "message": {"text": str},
    "container": {"channel_id": str, "message_ts": str},
    "actions": [{"action_id": str}],
    "view": {"id": str, "callback_id": str, "private_metadata": str, "state": {"values": {"*": {"*": dict}}}},
}
_SHAPE_NAMES: dict[type, str] = {str: "a string", dict: "an object", list: "an array"}


def parse_interaction(body: bytes) -> dict[str, Any]:
    """The ``payload`` form field as Slack sends it; ValueError naming what is not."""
    from urllib.parse import parse_qs

    from shared.inputs import loads_json

    form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    raw = (form.get("payload") or [""])[0]
    payload = loads_json(raw)
    problem = shape_problem(payload, _INTERACTION_SHAPE, "payload")
    if problem:
        raise ValueError(problem)
    return payload


def shape_problem(value: Any, shape: Any, path: str, *, optional: bool = True) -> str | None:
    """Where ``value`` differs from ``shape`` (absent and null fields pass, null items do not), or None."""
    if value is None and optional:
        return None
    if isinstance(shape, type):
        return None if isinstance(value, shape) else f"{path}: must be {_SHAPE_NAMES[shape]}"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{path}: must be an array"
        items = enumerate(value)
        return next((p for i, item in items if (p := shape_problem(item, shape[0], f"{path}[{i}]", optional=False))),
                    None)
    if not isinstance(value, dict):
        return f"{path}: must be an object"
    fields = ((name, shape["*"]) for name in value) if "*" in shape else shape.items()
    return next((p for name, inner in fields if (p := shape_problem(value.get(name), inner, f"{path}.{name}"))), None)


# Which clicks cannot wait for the queue (shared.pipeline.slack_codes): told apart without importing it.


def asks_for_code(click: Mapping[str, Any]) -> bool:
    """An Approve click on a card whose approval needs a code."""
    from shared.channels.slack.client import APPROVE_ACTION_ID, CODE_VALUE_SUFFIX

    action = (click.get("actions") or [{}])[0]
    return (click.get("type") == "block_actions" and action.get("action_id") == APPROVE_ACTION_ID
            and str(action.get("value", "")).endswith(CODE_VALUE_SUFFIX))


def is_code_submission(payload: Mapping[str, Any]) -> bool:
    from shared.channels.slack.client import CODE_CALLBACK_ID

    return payload.get("type") == "view_submission" and (payload.get("view") or {}).get("callback_id") == (
        CODE_CALLBACK_ID)


def asks_for_reason(click: Mapping[str, Any]) -> bool:
    """A Reject click on a card whose rejection asks for a reason: it opens the reason modal while Slack waits."""
    from shared.channels.slack.client import REASON_VALUE_SUFFIX, REJECT_ACTION_ID

    action = (click.get("actions") or [{}])[0]
    return (click.get("type") == "block_actions" and action.get("action_id") == REJECT_ACTION_ID
            and str(action.get("value", "")).endswith(REASON_VALUE_SUFFIX))


def is_reason_submission(payload: Mapping[str, Any]) -> bool:
    from shared.channels.slack.client import REASON_CALLBACK_ID

    return payload.get("type") == "view_submission" and (payload.get("view") or {}).get("callback_id") == (
        REASON_CALLBACK_ID)
