"""``POST /api/dynamics/events/{connection}``: the HTTPS endpoint of Dynamics business events.

Function-key auth: Dynamics sends no signature, so the key in the endpoint URL (kept in
Key Vault on the Dynamics side) is the credential, over TLS.
"""

from __future__ import annotations

import azure.functions as func

from shared.telemetry import traced
from shared.triggers.budget import answers_in_time
from shared.triggers.edge import refusals_answered, refuse_declared_over
from shared.triggers.responses import json_response

bp = func.Blueprint()


@bp.function_name("dynamics_events")
@bp.route(route="dynamics/events/{connection}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_in_time
@refusals_answered
def dynamics_events(req: func.HttpRequest) -> func.HttpResponse:
    from shared.config.loading import get_config
    from shared.pipeline.ingest import MAX_BODY_BYTES, accept_business_events
    from shared.storage.bus import get_bus

    refuse_declared_over(req.headers.get("content-length"), MAX_BODY_BYTES)
    config = get_config()
    connection = req.route_params.get("connection", "")
    accepted = accept_business_events(
        config, connection, req.get_body(), get_bus(),
        lambda correlation_id, event: _record_test_event(connection, correlation_id, event.control_number),
    )
    return json_response({"accepted": len(accepted.correlation_ids), "test_events": accepted.test_events,
                          "correlation_ids": accepted.correlation_ids}, 202 if accepted.correlation_ids else 200)


def _record_test_event(connection: str, correlation_id: str, control_number: int) -> None:
    """The endpoint test Dynamics sends when an endpoint is created: one audit line, nothing more."""
    from shared.storage.tables import get_stores

    get_stores().audit.append(correlation_id, "test-event", connection=connection, control_number=control_number)
