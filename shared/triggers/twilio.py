"""Twilio webhooks: delivery status, inbound SMS, key presses, voice messages; and the Verify code check.

Each checks X-Twilio-Signature (403 and nothing changes when it does not match), queues
the work on ``callbacks`` and answers at once. A delivery status whose URL names its job is
applied to that job here instead, and queued only when that fails or storage is slow.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid

import azure.functions as func

from shared.outcomes import describe
from shared.telemetry import bind, traced
from shared.triggers.budget import answers_in_time
from shared.triggers.edge import refusals_answered
from shared.triggers.responses import json_response

bp = func.Blueprint()
log = logging.getLogger(__name__)

# Of the answer's budget (``budget.ANSWER_SECONDS``), what applying a status callback may take
# before it is queued instead; the rest is left for the queueing.
APPLY_SECONDS = 2.0
# Status callbacks applied at once; past that they are queued, so that slow storage holds few threads.
MAX_APPLYING = 8
_applying = threading.BoundedSemaphore(MAX_APPLYING)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Longest voice message recorded, in seconds (Twilio transcribes recordings of up to two minutes).
VOICE_MESSAGE_SECONDS = 120
NO_MESSAGES_TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry, messages cannot be taken '
                     "at this number.</Say><Hangup/></Response>")
THANKS_TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Thank you. '
                "The alert is acknowledged.</Say></Response>")


def _verified(req: func.HttpRequest, route: str) -> dict[str, str]:
    """The parameters of a genuine webhook; Refused otherwise."""
    from shared.config.loading import get_config
    from shared.pipeline.webhooks import accept_twilio_webhook

    connection = req.route_params.get("connection", "")
    webhook = accept_twilio_webhook(get_config(), connection, route.format(connection=connection), req.url,
                                    req.get_body(), req.headers)
    return webhook.single_values()


def _enqueue(req: func.HttpRequest, message_type: str, params: dict[str, str], required: tuple[str, ...],
             extra: dict | None = None, key_fields: tuple[str, ...] | None = None) -> None:
    """Queue a verified webhook on ``callbacks``; Refused (400) when a required field is missing.

    The message's key (its MessageId) is made of ``key_fields`` (default: the required ones).
    """
    from shared.model import CALLBACKS, Envelope
    from shared.pipeline.webhooks import Refused
    from shared.storage.bus import get_bus

    missing = [name for name in required if not params.get(name)]
    if missing:
        raise Refused(400, "missing_fields", f"missing parameter(s): {', '.join(missing)}")
    key = req.headers.get("i-twilio-idempotency-token") or "|".join(params[name] for name in key_fields or required)
    connection = req.route_params.get("connection", "")
    envelope = Envelope(message_type, connection, key, {"params": params, **(extra or {})})
    bind(correlation_id=envelope.correlation_id, job_id=(extra or {}).get("job_id"))
    get_bus().send(CALLBACKS, envelope)


@bp.function_name("twilio_status")
@bp.route(route="twilio/status/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def twilio_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.model import TWILIO_STATUS

    params = _verified(req, "api/twilio/status/{connection}")
    required = ("CallSid", "CallStatus") if "CallSid" in params else ("MessageSid", "MessageStatus")
    # ?job= was part of the signed URL: the job it names is as genuine as the parameters.
    job = {"job_id": req.params["job"]} if req.params.get("job") else None
    if job and all(params.get(name) for name in required) and _applied_in_time(req, params, job["job_id"]):
        return func.HttpResponse(status_code=204)
    _enqueue(req, TWILIO_STATUS, params, required, job)
    return func.HttpResponse(status_code=204)


def _applied_in_time(req: func.HttpRequest, params: dict[str, str], job_id: str) -> bool:
    """Apply a status callback to the job its URL names, here and now: a job read and one conditional
    update instead of a queue round trip. False (and the caller queues it) when that fails or takes
    longer than ``APPLY_SECONDS``; a slow run that finishes later changes nothing the queued one
    does not, since a status only moves forward."""
    from shared.pipeline.callbacks import apply_status
    from shared.storage.tables import get_stores

    if not _applying.acquire(blocking=False):
        return False  # storage is already holding as many runs as allowed: queue it
    connection = req.route_params.get("connection", "")
    correlation_id = uuid.uuid4().hex
    bind(correlation_id=correlation_id, job_id=job_id)
    outcome: dict[str, BaseException | None] = {}
    done = threading.Event()

    def apply() -> None:
        try:
            apply_status(get_stores(), connection, params, job_id, correlation_id)
            outcome["error"] = None
        except Exception as error:  # noqa: BLE001 - the queue takes over whatever went wrong
            outcome["error"] = error
        finally:
            _applying.release()
            done.set()

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(apply,), name="twilio-status-apply", daemon=True).start()
    if not done.wait(APPLY_SECONDS):
        log.warning("a status callback for job %s took over %.1f s to apply; queued", job_id, APPLY_SECONDS)
        return False
    error = outcome.get("error")
    if error is not None:
        log.info("a status callback for job %s is queued: %s", job_id, describe(error))
        return False
    return True


@bp.function_name("twilio_inbound")
@bp.route(route="twilio/inbound/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def twilio_inbound(req: func.HttpRequest) -> func.HttpResponse:
    from shared.model import TWILIO_INBOUND

    params = _verified(req, "api/twilio/inbound/{connection}")
    # Keyed by the MessageSid alone: a key is a MessageId, seen by tools that show no personal data.
    _enqueue(req, TWILIO_INBOUND, params, ("MessageSid", "From"), key_fields=("MessageSid",))
    return func.HttpResponse(EMPTY_TWIML, mimetype="text/xml", charset="utf-8")


@bp.function_name("twilio_gather")
@bp.route(route="twilio/gather/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def twilio_gather(req: func.HttpRequest) -> func.HttpResponse:
    from shared.model import TWILIO_GATHER
    from shared.pipeline.webhooks import Refused

    job_id = req.params.get("job", "")
    if not job_id:
        raise Refused(400, "missing_fields", "missing query parameter: job")
    params = _verified(req, "api/twilio/gather/{connection}")
    _enqueue(req, TWILIO_GATHER, params, ("CallSid",), {"job_id": job_id})
    return func.HttpResponse(THANKS_TWIML, mimetype="text/xml", charset="utf-8")


@bp.function_name("twilio_voice")
@bp.route(route="twilio/voice/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def twilio_voice(req: func.HttpRequest) -> func.HttpResponse:
    """A call to the number: record a message, which Twilio transcribes and posts to the transcription route."""
    from xml.sax.saxutils import quoteattr

    from shared.channels.twilio.webhooks import TRANSCRIPTION_ROUTE, VOICE_ROUTE
    from shared.settings import public_url

    _verified(req, VOICE_ROUTE)
    connection = req.route_params.get("connection", "")
    callback = public_url(TRANSCRIPTION_ROUTE.format(connection=connection))
    if callback is None:  # Twilio could not reach us with the transcription: take no message
        return func.HttpResponse(NO_MESSAGES_TWIML, mimetype="text/xml", charset="utf-8")
    twiml = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Please leave your message after the tone.</Say>'
             f'<Record transcribe="true" transcribeCallback={quoteattr(callback)} '
             f'maxLength="{VOICE_MESSAGE_SECONDS}" playBeep="true"/></Response>')
    return func.HttpResponse(twiml, mimetype="text/xml", charset="utf-8")


@bp.function_name("twilio_transcription")
@bp.route(route="twilio/transcription/{connection}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
@refusals_answered
def twilio_transcription(req: func.HttpRequest) -> func.HttpResponse:
    """Twilio's transcription of a recorded message: queued, to be noted on the record the caller was last sent."""
    from shared.channels.twilio.webhooks import TRANSCRIPTION_ROUTE
    from shared.model import TWILIO_VOICE_MESSAGE

    params = _verified(req, TRANSCRIPTION_ROUTE)
    # Keyed by the RecordingSid alone: one recording is one message, and a key holds no personal data.
    _enqueue(req, TWILIO_VOICE_MESSAGE, params, ("RecordingSid", "From"), key_fields=("RecordingSid",))
    return func.HttpResponse(status_code=204)


@bp.function_name("twilio_verify_check")
@bp.route(route="twilio/verify/{connection}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_in_time
@refusals_answered
def twilio_verify_check(req: func.HttpRequest) -> func.HttpResponse:
    """``{"to": "+1...", "code": "123456"}``: check a code collected elsewhere; act only on approved."""
    from shared.channels.twilio.client import twilio_channel
    from shared.config.loading import get_config
    from shared.pipeline.verify import check_gate
    from shared.pipeline.webhooks import Refused, accept_code_check
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    check = accept_code_check(get_config(), req.route_params.get("connection", ""), req.get_body())
    status = check_gate(get_stores(), get_bus(), twilio_channel(check.connection), check.connection.name,
                        check.number, check.code)
    if status == "no-gate":
        raise Refused(404, "no_verification", "nothing waits for a code from that number")
    return json_response({"status": status}, 200)
