"""Operator endpoints under ``/api/ops`` (admin key).

Not ``/api/admin``: the Functions host reserves routes and function names that
start with "admin" for its own API and refuses to load such functions.
"""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func

from shared.telemetry import traced
from shared.triggers.budget import answers_in_time
from shared.triggers.responses import error_response, json_response

bp = func.Blueprint()

# Audit detail fields that hold what a person wrote: personal data, shown only on request.
# Table Storage keeps times from 1601 on; a replay window outside these years finds nothing anyway.
EARLIEST_TIME = datetime(1700, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)


# The fields each write route reads: any other is refused, so a misspelt or unsupported option
# (a "dry_run" on a version without it, say) never acts for real.
REPLAY_FIELDS = frozenset({"job_id", "from", "to", "dry_run"})
REDRIVE_FIELDS = frozenset({"ids", "all", "queue", "connection", "dry_run"})


def unknown_fields(body: dict[str, object], known: frozenset[str]) -> func.HttpResponse | None:
    """A 400 naming the fields of ``body`` outside ``known``, or a ``dry_run`` that is not a boolean; else None."""
    unknown = sorted(str(name) for name in body if name not in known)
    if unknown:
        return error_response(400, "unknown_fields", f"unknown field(s) {', '.join(unknown)}; "
                                                     f"this route reads {', '.join(sorted(known))}")
    if "dry_run" in body and not isinstance(body["dry_run"], bool):
        return error_response(400, "bad_request", "dry_run is true or false")
    return None


def replay_time(value: object) -> datetime:
    """One end of a replay window: an ISO 8601 time within the years storage can compare; else ValueError."""
    from shared.model import parse_utc_time

    if not isinstance(value, str):
        raise ValueError("a time is a string")
    moment = parse_utc_time(value)
    if not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise ValueError(f"{value!r} is outside the years a replay can cover")
    return moment


@bp.function_name("ops_ping")
@bp.route(route="ops/ping", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_ping(req: func.HttpRequest) -> func.HttpResponse:
    """Send a ping through every queue; its audit trail shows which consumers answered."""
    from shared.pipeline.diagnostics import send_pings
    from shared.storage.bus import get_bus

    correlation_id = send_pings(get_bus())
    return json_response({"correlation_id": correlation_id, "audit": f"/api/ops/audit?correlation={correlation_id}"},
                         202)


@bp.function_name("ops_audit")
@bp.route(route="ops/audit", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_audit(req: func.HttpRequest) -> func.HttpResponse:
    """The audit trail of one ERP record (``record=``) or one correlation id (``correlation=``).

    Texts people wrote (SMS replies) are masked unless the operator asks with ``reveal=texts``.
    """
    from shared.storage.tables import get_stores

    record = (req.params.get("record") or "").strip()
    correlation = (req.params.get("correlation") or "").strip()
    if bool(record) == bool(correlation):
        return error_response(400, "bad_request", "give exactly one of the query parameters record, correlation")
    from shared.pipeline.report import contacts, masked_texts

    reveal_texts = (req.params.get("reveal") or "").strip() == "texts"
    audit = get_stores().audit
    entries = audit.by_record(record) if record else audit.by_correlation(correlation)
    return json_response({
        "record": record or None,
        "correlation_id": correlation or None,
        "contacts": [vars(contact) for contact in contacts(entries)],
        "entries": [
            {"at": e.at.isoformat(), "step": e.step, "correlation_id": e.correlation_id,
             "connection": e.connection, "record": e.record, "job_id": e.job_id,
             "detail": dict(e.detail) if reveal_texts else masked_texts(e.detail)}
            for e in entries
        ],
    })


@bp.function_name("ops_replay")
@bp.route(route="ops/replay", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_replay(req: func.HttpRequest) -> func.HttpResponse:
    """``{"job_id": "..."}`` or ``{"from": "<ISO time>", "to": "<ISO time>"}``: send failed jobs again.
    ``"dry_run": true`` only shows what would be sent to whom (masked); unknown fields are refused."""
    from shared.inputs import loads_json
    from shared.pipeline.replay import replay_failed, replay_job
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    try:
        body = loads_json(req.get_body())
    except ValueError:
        return error_response(400, "malformed_json", "the body is not JSON")
    if not isinstance(body, dict) or not (body.get("job_id") or body.get("from")):
        return error_response(400, "bad_request", 'send {"job_id": "..."} or {"from": "<ISO time>", "to": "..."}')
    refused = unknown_fields(body, REPLAY_FIELDS)
    if refused is not None:
        return refused
    stores, bus = get_stores(), get_bus()
    dry_run = body.get("dry_run") is True
    if body.get("job_id"):
        results = [replay_job(stores, bus, str(body["job_id"]), dry_run=dry_run)]
    else:
        try:
            since = replay_time(body["from"])
            until = replay_time(body["to"]) if body.get("to") else None
        except ValueError:
            return error_response(400, "bad_time", "from and to must be ISO 8601 times between the years "
                                                   f"{EARLIEST_TIME.year} and {LATEST_TIME.year}, "
                                                   "e.g. 2026-11-22T08:00:00Z")
        results = replay_failed(stores, bus, since, until, dry_run=dry_run)
    answer: dict[str, object] = {"replayed": sum(r.replayed for r in results),
                                 "jobs": [{"job_id": r.job_id, "replayed": r.replayed, "reason": r.reason,
                                           **({"would_replay": r.would, "preview": r.preview} if dry_run else {})}
                                          for r in results]}
    if dry_run:
        answer |= {"dry_run": True, "would_replay": sum(r.would for r in results)}
    return json_response(answer)


@bp.function_name("ops_deadletters")
@bp.route(route="ops/deadletters", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_deadletters(req: func.HttpRequest) -> func.HttpResponse:
    """Dead letters, oldest first: ``state=open`` (default), ``redriven`` or ``all``. The app keeps its
    own as it makes them; what the host parked is collected every five minutes, or now with
    ``collect=true``. Payloads stay sealed; each entry names its queue, type, record and reason."""
    from shared.pipeline.deadletters import collect, summary
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    state = (req.params.get("state") or "open").strip()
    if state not in ("open", "redriven", "all"):
        return error_response(400, "bad_state", "state is one of open, redriven, all")
    stores = get_stores()
    collected = collect(stores, get_bus()) if (req.params.get("collect") or "").strip() == "true" else 0
    letters = stores.dead_letters.all(None if state == "all" else state)
    return json_response({"collected": collected, "count": len(letters),
                          "dead_letters": [summary(letter) for letter in letters]})


@bp.function_name("ops_deadletter")
@bp.route(route="ops/deadletters/{id}", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_deadletter(req: func.HttpRequest) -> func.HttpResponse:
    """One dead letter."""
    from shared.pipeline.deadletters import summary
    from shared.storage.tables import get_stores

    letter = get_stores().dead_letters.get(req.route_params.get("id", ""))
    if letter is None:
        return error_response(404, "not_found", "no such dead letter")
    return json_response(summary(letter))


@bp.function_name("ops_deadletters_redrive")
@bp.route(route="ops/deadletters/redrive", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_deadletters_redrive(req: func.HttpRequest) -> func.HttpResponse:
    """``{"ids": ["..."]}``, or ``{"all": true}`` narrowed by ``queue`` and ``connection``: send the work
    again. Each job still goes out at most once; an event is processed as new work. ``"dry_run": true``
    only shows what each would do (addresses masked); unknown fields are refused."""
    from shared.inputs import loads_json
    from shared.pipeline.deadletters import redrive, redrive_all
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    try:
        body = loads_json(req.get_body())
    except ValueError:
        return error_response(400, "malformed_json", "the body is not JSON")
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not (body.get("all") is True or (
            isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids))):
        return error_response(400, "bad_request", 'send {"ids": ["<dead letter id>", ...]} or {"all": true}')
    refused = unknown_fields(body, REDRIVE_FIELDS)
    if refused is not None:
        return refused
    queue, connection = body.get("queue"), body.get("connection")
    stores, bus = get_stores(), get_bus()
    dry_run = body.get("dry_run") is True
    if ids:
        results = [redrive(stores, bus, letter_id, dry_run=dry_run) for letter_id in ids]
    else:
        results = redrive_all(stores, bus, queue=queue, connection=connection, dry_run=dry_run)
    answer: dict[str, object] = {
        "redriven": sum(r.redriven for r in results),
        "dead_letters": [{"id": r.id, "redriven": r.redriven, "reason": r.reason,
                          **({"would_redrive": r.would, "preview": r.preview} if dry_run else {})} for r in results]}
    if dry_run:
        answer |= {"dry_run": True, "would_redrive": sum(r.would for r in results)}
    return json_response(answer)


# The doctor's own deadline, within the answer's 4.5 s (budget.ANSWER_SECONDS): a connection still
# being checked then says so, and the answer goes out.
DOCTOR_DEADLINE_SECONDS = 3.5


@bp.function_name("ops_doctor")
@bp.route(route="ops/doctor", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_doctor(req: func.HttpRequest) -> func.HttpResponse:
    """Real round trips to each connection (``connection=`` for one): a pass or a failure per check, with
    the fix to try. Connections are checked at once; secrets appear as the ``keyvault`` entry ``secrets``."""
    from shared.config.loading import get_config
    from shared.doctor.run import UnknownConnection, examine

    connection = (req.params.get("connection") or "").strip() or None
    try:
        report = examine(get_config(), connection=connection, deadline_seconds=DOCTOR_DEADLINE_SECONDS)
    except UnknownConnection:
        return error_response(404, "not_found", f"no connection named {connection!r} in the configuration")
    return json_response(report)


# --- poll health ---------------------------------------------------------------------------------------

POLL_RUN_FIELDS = frozenset({"connection", "entity"})


@bp.function_name("ops_polls")
@bp.route(route="ops/polls", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_polls(req: func.HttpRequest) -> func.HttpResponse:
    """One row per polled connection and entity in the configuration, even before its first poll: last
    attempt and success, watermark, lag, last error, failed runs in a row, next run (shared.pipeline.pollhealth)."""
    from shared.config.loading import get_config
    from shared.pipeline.pollhealth import poll_rows
    from shared.storage.tables import get_stores

    return json_response({"polls": poll_rows(get_config(), get_stores(), datetime.now(UTC))})


@bp.function_name("ops_polls_run")
@bp.route(route="ops/polls/run", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_polls_run(req: func.HttpRequest) -> func.HttpResponse:
    """``{"connection": "...", "entity": "..." (optional)}``: poll now, whatever the backoff; ``202 {"queued": n}``
    with the number of entities queued."""
    from shared.config.loading import get_config
    from shared.inputs import loads_json
    from shared.pipeline.poll import request_poll
    from shared.storage.bus import get_bus

    try:
        body = loads_json(req.get_body())
    except ValueError:
        return error_response(400, "malformed_json", "the body is not JSON")
    usage = 'send {"connection": "<name>"} or {"connection": "<name>", "entity": "<entity>"}'
    if not isinstance(body, dict) or not isinstance(body.get("connection"), str) or set(body) - POLL_RUN_FIELDS:
        return error_response(400, "bad_request", usage)
    entity = body.get("entity")
    if entity is not None and not isinstance(entity, str):
        return error_response(400, "bad_request", usage)
    queued = request_poll(get_config(), get_bus(), body["connection"], entity)
    if queued is None:
        return error_response(404, "not_found", "the configuration polls no such connection or entity")
    return json_response({"queued": queued}, 202)


# --- the operator console: its page and the reads behind its views (shared/console/) -----------------


@bp.function_name("ops_console")
@bp.route(route="ops/console", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_console(req: func.HttpRequest) -> func.HttpResponse:
    """The console page (open it with ``?code=<master key>``; the page keeps the key and drops it from the URL)."""
    from shared.console.page import page

    body, headers = page()
    return func.HttpResponse(body, status_code=200, mimetype="text/html", charset="utf-8", headers=headers)


@bp.function_name("ops_story")
@bp.route(route="ops/story", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_story(req: func.HttpRequest) -> func.HttpResponse:
    """``q=`` a document number, record key, correlation id or masked phone: the matches, and the
    timeline of the one record they come to. Texts people wrote stay masked."""
    from shared.console.story import story
    from shared.storage.tables import get_stores

    query = (req.params.get("q") or "").strip()
    if not query or len(query) > 400:
        return error_response(400, "bad_request", "give q: a document number, record key, correlation id or "
                                                  "masked phone (+1******34), at most 400 characters")
    return json_response(story(get_stores(), query))


@bp.function_name("ops_failures")
@bp.route(route="ops/failures", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_failures(req: func.HttpRequest) -> func.HttpResponse:
    """Jobs that did not reach their recipient (the last days, newest first) and open dead letters."""
    from shared.console.failures import failures
    from shared.storage.tables import get_stores

    return json_response(failures(get_stores()))


@bp.function_name("ops_counters")
@bp.route(route="ops/counters", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@traced
@answers_in_time
def ops_counters(req: func.HttpRequest) -> func.HttpResponse:
    """Queue depths, sends per minute (5 min) and failures per hour (24 h), from bounded reads."""
    from shared.console.counters import counters
    from shared.storage.bus import get_bus
    from shared.storage.tables import get_stores

    return json_response(counters(get_stores(), get_bus()))
