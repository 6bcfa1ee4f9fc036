"""``GET /api/health``: anonymous liveness and readiness for probes and operators."""

from __future__ import annotations

import azure.functions as func

from shared.telemetry import traced
from shared.triggers.budget import answers_in_time
from shared.triggers.responses import json_response

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_in_time
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.health import health_report

    report, healthy = health_report()
    return json_response(report, 200 if healthy else 503)
