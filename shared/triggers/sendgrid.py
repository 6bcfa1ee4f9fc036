"""``POST /api/sendgrid/events/{connection}``: the SendGrid Event Webhook.

The post is verified (ECDSA signature over the timestamp and the raw body, with the
connection's verification key, and a timestamp window: forged or stale get 401 and nothing
happens), each event is queued on ``callbacks``, and the answer is immediate. SendGrid
posts again what is not answered 2xx; the repeats are filtered by ``sg_event_id``.
"""

from __future__ import annotations

import azure.functions as func

from shared.telemetry import traced
from shared.triggers.budget import answers_in_time
from shared.triggers.edge import refusals_answered, refuse_declared_over
from shared.triggers.responses import json_response

bp = func.Blueprint()


@bp.function_name("sendgrid_events")
@bp.route(route="sendgrid/events/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def sendgrid_events(req: func.HttpRequest) -> func.HttpResponse:
    from shared.config.loading import get_config
    from shared.pipeline.email_flow import MAX_EVENT_BYTES, accept_events
    from shared.storage.bus import get_bus

    refuse_declared_over(req.headers.get("content-length"), MAX_EVENT_BYTES)
    config = get_config()
    queued = accept_events(config, req.route_params.get("connection", ""), req.get_body(), req.headers, get_bus())
    return json_response({"queued": queued}, 200)
