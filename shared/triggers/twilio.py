"""Twilio webhooks: delivery status, inbound SMS, key presses; and the Verify code check.

Each checks X-Twilio-Signature (403 and nothing changes when it does not match), queues
the work on ``callbacks`` and answers at once.
"""

from __future__ import annotations

import azure.functions as func

from shared.telemetry import bind, traced
from shared.triggers.budget import answers_in_time
from shared.triggers.responses import error_response, json_response

bp = func.Blueprint()

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
THANKS_TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Thank you. '
                "The alert is acknowledged.</Say></Response>")


def _verified(req: func.HttpRequest, route: str) -> dict[str, str] | func.HttpResponse:
    """The parameters of a genuine webhook, or the answer that refuses it."""
    from shared.config.loading import get_config
    from shared.config.model import ConfigError
    from shared.pipeline.webhooks import WebhookError, read_webhook

    connection = req.route_params.get("connection", "")
    try:
        webhook = read_webhook(get_config(), connection, route.format(connection=connection), req.url,
                               req.get_body(), req.headers.get("x-twilio-signature"))
    except ConfigError:
        return error_response(503, "not_configured", "the connector's configuration does not load; see its log")
    except WebhookError as exc:
        return error_response(exc.status, exc.code, exc.message)
    return webhook.single_values()


def _enqueue(req: func.HttpRequest, message_type: str, params: dict[str, str], required: tuple[str, ...],
             extra: dict | None = None, key_fields: tuple[str, ...] | None = None) -> func.HttpResponse | None:
    """Queue a verified webhook on ``callbacks``; an error answer when a required field is missing.

    The message's key (its MessageId) is made of ``key_fields`` (default: the required ones).
    """
    from shared.model import CALLBACKS, Envelope
    from shared.storage.bus import get_bus

    missing = [name for name in required if not params.get(name)]
    if missing:
        return error_response(400, "missing_fields", f"missing parameter(s): {', '.join(missing)}")
    key = req.headers.get("i-twilio-idempotency-token") or "|".join(params[name] for name in key_fields or required)
    connection = req.route_params.get("connection", "")
    envelope = Envelope(message_type, connection, key, {"params": params, **(extra or {})})
    bind(correlation_id=envelope.correlation_id, job_id=(extra or {}).get("job_id"))
    get_bus().send(CALLBACKS, envelope)
    return None


@bp.function_name("twilio_status")
@bp.route(route="twilio/status/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
def twilio_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.model import TWILIO_STATUS

    params = _verified(req, "api/twilio/status/{connection}")
    if isinstance(params, func.HttpResponse):
        return params
    required = ("CallSid", "CallStatus") if "CallSid" in params else ("MessageSid", "MessageStatus")
    # ?job= was part of the signed URL: the job it names is as genuine as the parameters.
    job = {"job_id": req.params["job"]} if req.params.get("job") else None
    return _enqueue(req, TWILIO_STATUS, params, required, job) or func.HttpResponse(status_code=204)


@bp.function_name("twilio_inbound")
@bp.route(route="twilio/inbound/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
def twilio_inbound(req: func.HttpRequest) -> func.HttpResponse:
    from shared.model import TWILIO_INBOUND

    params = _verified(req, "api/twilio/inbound/{connection}")
    if isinstance(params, func.HttpResponse):
        return params
    # Keyed by the MessageSid alone: a key is a MessageId, seen by tools that show no personal data.
    refused = _enqueue(req, TWILIO_INBOUND, params, ("MessageSid", "From"), key_fields=("MessageSid",))
    return refused or func.HttpResponse(EMPTY_TWIML, mimetype="text/xml", charset="utf-8")


@bp.function_name("twilio_gather")
@bp.route(route="twilio/gather/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
def twilio_gather(req: func.HttpRequest) -> func.HttpResponse:
    from shared.model import TWILIO_GATHER

    job_id = req.params.get("job", "")
    if not job_id:
        return error_response(400, "missing_fields", "missing query parameter: job")
    params = _verified(req, "api/twilio/gather/{connection}")
    if isinstance(params, func.HttpResponse):
        return params
    refused = _enqueue(req, TWILIO_GATHER, params, ("CallSid",), {"job_id": job_id})
    return refused or func.HttpResponse(THANKS_TWIML, mimetype="text/xml", charset="utf-8")


@bp.function_name("twilio_verify_check")
@bp.route(route="twilio/verify/{connection}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_in_time
def twilio_verify_check(req: func.HttpRequest) -> func.HttpResponse:
    """``{"to": "+1...", "code": "123456"}``: check a code collected elsewhere; act only on approved."""
    from shared.channels.twilio.client import twilio_channel
    from shared.channels.twilio.connection import TwilioConnection
    from shared.config.loading import get_config
    from shared.config.model import ConfigError
    from shared.phones import InvalidNumber, normalize_number
    from shared.pipeline.verify import check_gate
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    try:
        config = get_config()
    except ConfigError:
        return error_response(503, "not_configured", "the connector's configuration does not load; see its log")
    connection = config.connections.get(req.route_params.get("connection", ""))
    if not isinstance(connection, TwilioConnection):
        return error_response(404, "unknown_connection", "no such Twilio connection")
    from shared.inputs import loads_json

    try:
        body = loads_json(req.get_body())
    except ValueError:
        return error_response(400, "malformed_json", "the body is not JSON")
    if not isinstance(body, dict) or not body.get("to") or not str(body.get("code", "")).isdigit():
        return error_response(400, "missing_fields", 'send {"to": "<phone number>", "code": "<digits>"}')
    try:
        number = normalize_number(str(body["to"]), connection.default_region)
    except InvalidNumber as exc:
        return error_response(400, "invalid_number", str(exc))
    status = check_gate(get_stores(), get_bus(), twilio_channel(connection), connection.name, number,
                        str(body["code"]))
    if status == "no-gate":
        return error_response(404, "no_verification", "nothing waits for a code from that number")
    return json_response({"status": status}, 200)
