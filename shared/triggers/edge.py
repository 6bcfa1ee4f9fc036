"""The one place where a refused request becomes its HTTP answer.

The accept functions of ``shared.pipeline.webhooks`` (and of ingest and email) raise
``Refused``; a trigger under ``refusals_answered`` lets it rise, and the caller gets
``{"error": <code>, "message": <reason>}`` with its status. A configuration that does not
load is the same for every source: 503, so that the provider sends again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import azure.functions as func

from shared.triggers.responses import error_response

Trigger = Callable[[func.HttpRequest], func.HttpResponse]


def refusals_answered(trigger: Trigger) -> Trigger:
    """``trigger``'s own answer, or the answer to the request it refused."""

    @functools.wraps(trigger)
    def run(req: func.HttpRequest) -> func.HttpResponse:
        from shared.config.model import ConfigError
        from shared.pipeline.webhooks import Refused

        try:
            return trigger(req)
        except Refused as refused:
            return error_response(refused.status, refused.code, refused.message)
        except ConfigError:
            return error_response(503, "not_configured", "the connector's configuration does not load; see its log")

    return run


def refuse_declared_over(content_length: str | None, limit: int) -> None:
    """413 before the body is read when its Content-Length already says it is too large."""
    from shared.inputs import declared_over
    from shared.pipeline.webhooks import Refused

    if declared_over(content_length, limit):
        raise Refused(413, "too_large", f"at most {limit} bytes are accepted")
