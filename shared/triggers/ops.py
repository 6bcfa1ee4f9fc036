"""Operator endpoints under ``/api/ops`` (admin key).

Not ``/api/admin``: the Functions host reserves routes and function names that
start with "admin" for its own API and refuses to load such functions.
"""

from __future__ import annotations

import azure.functions as func

from shared.triggers.responses import error_response, json_response

bp = func.Blueprint()


@bp.function_name("ops_ping")
@bp.route(route="ops/ping", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def ops_ping(req: func.HttpRequest) -> func.HttpResponse:
    """Send a ping through every queue; its audit trail shows which consumers answered."""
    from shared.pipeline.diagnostics import send_pings
    from shared.storage.bus import get_bus

    correlation_id = send_pings(get_bus())
    return json_response({"correlation_id": correlation_id, "audit": f"/api/ops/audit?correlation={correlation_id}"},
                         202)


@bp.function_name("ops_audit")
@bp.route(route="ops/audit", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def ops_audit(req: func.HttpRequest) -> func.HttpResponse:
    """The audit trail of one ERP record (``record=``) or one correlation id (``correlation=``)."""
    from shared.storage.tables import get_stores

    record = (req.params.get("record") or "").strip()
    correlation = (req.params.get("correlation") or "").strip()
    if bool(record) == bool(correlation):
        return error_response(400, "bad_request", "give exactly one of the query parameters record, correlation")
    audit = get_stores().audit
    entries = audit.by_record(record) if record else audit.by_correlation(correlation)
    return json_response({
        "record": record or None,
        "correlation_id": correlation or None,
        "entries": [
            {"at": e.at.isoformat(), "step": e.step, "correlation_id": e.correlation_id,
             "connection": e.connection, "record": e.record, "job_id": e.job_id, "detail": dict(e.detail)}
            for e in entries
        ],
    })
