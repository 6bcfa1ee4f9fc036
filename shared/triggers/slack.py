"""``POST /api/slack/interactions/{connection}``: Slack button clicks and code modals.

Slack wants an answer within 3 seconds: the request is verified (X-Slack-Signature over
the raw body, 5-minute window; forged or stale: 401, nothing happens), queued, and
answered at once. A retry of the same click (X-Slack-Retry-Num) is acknowledged and
filtered by the click's key behind the queue.

Two things cannot wait for the queue (``shared.pipeline.slack_codes``): an Approve that
needs a one-time code opens its modal here, since the click's trigger_id expires in 3 s;
a submitted code is checked here, since only this answer can keep the modal open for
another try. A Reject opens its reason modal here for the same reason, and a submitted reason
is queued here (``shared.pipeline.slack_reasons``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.telemetry import bind, traced
from shared.triggers.budget import answers_in_time
from shared.triggers.edge import refusals_answered

if TYPE_CHECKING:
    from shared.pipeline.webhooks import SlackRequest

bp = func.Blueprint()


def _accepted(req: func.HttpRequest) -> SlackRequest:
    """The Slack connection and raw body of a genuine Slack request; Refused otherwise."""
    from shared.config.loading import get_config
    from shared.pipeline.webhooks import accept_slack_request

    return accept_slack_request(get_config(), req.route_params.get("connection", ""), req.get_body(), req.headers)


@bp.function_name("slack_events")
@bp.route(route="slack/events/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def slack_events(req: func.HttpRequest) -> func.HttpResponse:
    """Events API: the url_verification challenge is echoed; callbacks are queued once per event_id."""
    from shared.inputs import loads_json
    from shared.model import CALLBACKS, SLACK_EVENT, Envelope
    from shared.pipeline.slack_clicks import shape_problem
    from shared.pipeline.webhooks import Refused
    from shared.storage.bus import get_bus
    from shared.triggers.responses import json_response

    accepted = _accepted(req)
    connection, body = accepted.connection, accepted.body
    try:
        event = loads_json(body)
    except ValueError:
        raise Refused(400, "malformed_json", "the body is not JSON") from None
    problem = shape_problem(event, {"type": str, "event_id": str, "event": dict}, "body")
    if not isinstance(event, dict) or problem:
        raise Refused(400, "malformed_json", problem or "the body is not a JSON object")
    if event.get("type") == "url_verification":
        return json_response({"challenge": str(event.get("challenge", ""))})
    if event.get("type") == "event_callback" and event.get("event_id"):
        envelope = Envelope(SLACK_EVENT, connection.name, str(event["event_id"]), {"event": event.get("event") or {}})
        bind(correlation_id=envelope.correlation_id)
        get_bus().send(CALLBACKS, envelope)
    return func.HttpResponse(status_code=200)


@bp.function_name("slack_interactions")
@bp.route(route="slack/interactions/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def slack_interactions(req: func.HttpRequest) -> func.HttpResponse:
    # What a plain click needs only: the code steps (slack_codes) and the work behind the queue are
    # imported by the clicks that use them, so a cold instance answers its first click sooner.
    from shared.model import CALLBACKS
    from shared.pipeline.slack_clicks import (
        asks_for_code,
        asks_for_reason,
        envelope_for_click,
        is_code_submission,
        is_reason_submission,
        parse_interaction,
    )
    from shared.pipeline.webhooks import Refused
    from shared.storage.bus import get_bus
    from shared.triggers.responses import json_response

    accepted = _accepted(req)
    connection, body = accepted.connection, accepted.body
    try:
        payload = parse_interaction(body)
    except ValueError as exc:  # UnicodeDecodeError too
        raise Refused(400, "bad_payload", f"the body holds no Slack payload: {exc}") from None
    if payload.get("type") == "block_actions" and payload.get("actions"):
        view_id = None
        if asks_for_code(payload):
            from shared.pipeline.slack_codes import open_code_modal

            view_id = open_code_modal(connection, payload)
        elif asks_for_reason(payload):
            from shared.pipeline.slack_reasons import open_reason_modal

            view_id = open_reason_modal(connection, payload)
        envelope = envelope_for_click(connection.name, payload, view_id)
        bind(correlation_id=envelope.correlation_id)
        get_bus().send(CALLBACKS, envelope)
    elif is_code_submission(payload):
        from shared.pipeline.slack_codes import answer_code

        return json_response(answer_code(connection, payload))
    elif is_reason_submission(payload):
        from shared.pipeline.slack_reasons import accept_reason

        return json_response(accept_reason(connection, payload))
    return func.HttpResponse(status_code=200)
