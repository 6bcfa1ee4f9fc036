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
from shared.triggers.responses import error_response, json_response

bp = func.Blueprint()


@bp.function_name("sendgrid_events")
@bp.route(route="sendgrid/events/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
def sendgrid_events(req: func.HttpRequest) -> func.HttpResponse:
    from shared.channels.sendgrid.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
    from shared.config.loading import get_config
    from shared.config.model import ConfigError
    from shared.inputs import declared_over
    from shared.pipeline.email_flow import MAX_EVENT_BYTES, accept_events
    from shared.pipeline.webhooks import WebhookError
    from shared.storage.bus import get_bus

    if declared_over(req.headers.get("content-length"), MAX_EVENT_BYTES):
        return error_response(413, "too_large", f"at most {MAX_EVENT_BYTES} bytes are accepted")
    try:
        config = get_config()
    except ConfigError:
        return error_response(503, "not_configured", "the connector's configuration does not load; see its log")
    try:
        queued = accept_events(config, req.route_params.get("connection", ""), req.get_body(),
                               req.headers.get(SIGNATURE_HEADER), req.headers.get(TIMESTAMP_HEADER), get_bus())
    except WebhookError as exc:
        return error_response(exc.status, exc.code, exc.message)
    return json_response({"queued": queued}, 200)
