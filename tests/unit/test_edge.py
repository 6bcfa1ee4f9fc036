"""The edge: a refusal raised anywhere in a trigger becomes its one JSON answer, in one place."""

from __future__ import annotations

import json

import azure.functions as func

from shared.config.model import ConfigError
from shared.pipeline.webhooks import Refused
from shared.triggers.edge import refusals_answered, refuse_declared_over


def request(headers: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/x", headers=headers or {}, body=b"{}")


def test_a_refusal_is_answered_with_its_status_code_and_reason() -> None:
    @refusals_answered
    def trigger(req: func.HttpRequest) -> func.HttpResponse:
        raise Refused(403, "forbidden", "X-Twilio-Signature does not match")

    answer = trigger(request())

    assert answer.status_code == 403 and answer.mimetype == "application/json"
    assert json.loads(answer.get_body()) == {"error": "forbidden", "message": "X-Twilio-Signature does not match"}


def test_a_configuration_that_does_not_load_is_503_and_an_accepted_request_keeps_its_answer() -> None:
    @refusals_answered
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise ConfigError(["connections.x.kind: unknown"])

    @refusals_answered
    def fine(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(status_code=204)

    assert broken(request()).status_code == 503
    assert json.loads(broken(request()).get_body())["error"] == "not_configured"
    assert fine(request()).status_code == 204


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    @refusals_answered
    def trigger(req: func.HttpRequest) -> func.HttpResponse:
        refuse_declared_over(req.headers.get("content-length"), 10)
        return func.HttpResponse(status_code=200)

    assert trigger(request({"content-length": "11"})).status_code == 413
    assert trigger(request({"content-length": "10"})).status_code == 200
    assert trigger(request({"content-length": "junk"})).status_code == 200
