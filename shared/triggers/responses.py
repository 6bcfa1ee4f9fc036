"""JSON answers with one error shape for every HTTP trigger."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":"), default=str),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
    )


def error_response(status: int, error: str, message: str) -> func.HttpResponse:
    """``{"error": "<code>", "message": "<what is wrong>"}`` with the given status."""
    return json_response({"error": error, "message": message}, status)
