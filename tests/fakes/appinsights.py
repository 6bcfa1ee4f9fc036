"""Fake Application Insights ingestion: the ``track`` endpoint the Azure Monitor exporters post to.

Point an exporter at it with the connection string from ``connection_string``
(``InstrumentationKey=...;IngestionEndpoint=http://127.0.0.1:PORT/``). The exporter posts
batches to ``/v2.1/track``: a JSON array of telemetry envelopes (``name``, ``iKey``, ``tags``,
``time``, ``data.baseType`` and ``data.baseData``), possibly gzip-compressed. Each item is
accepted and kept; ``items`` flattens what arrived into ``Telemetry`` records.

Plain HTTP on loopback: the exporter accepts an ``http://`` ingestion endpoint as long as it
signs in with no credential, which is how tests run it.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route

MESSAGE = "MessageData"
EXCEPTION = "ExceptionData"


@dataclass(frozen=True)
class Telemetry:
    """One telemetry item as the ingestion endpoint received it."""

    base_type: str  # MessageData (a trace), ExceptionData, EventData, ...
    message: str  # the trace message, or the first exception's message
    severity: int | None
    properties: Mapping[str, str]  # customDimensions
    tags: Mapping[str, str]  # ai.operation.id, ai.cloud.role, ...
    ikey: str
    raw: Mapping[str, Any]

    @property
    def operation_id(self) -> str:
        return self.tags.get("ai.operation.id", "")


class FakeAppInsights(FakeServer):
    """Accepts every telemetry item posted to ``/v2.1/track`` (or ``/v2/track``) and keeps it."""

    service_name = "appinsights"

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.instrumentation_key = str(uuid.uuid4())
        self._items: list[Telemetry] = []
        self._items_lock = threading.Lock()

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={self.base_url}/"

    def items(self, base_type: str | None = None) -> list[Telemetry]:
        with self._items_lock:
            return [item for item in self._items if base_type is None or item.base_type == base_type]

    def traces(self) -> list[Telemetry]:
        return self.items(MESSAGE)

    def exceptions(self) -> list[Telemetry]:
        return self.items(EXCEPTION)

    def routes(self) -> Sequence[Route]:
        return [route("POST", r"/v2(?:\.1)?/track", self._track_items)]

    def _track_items(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        body = request.body
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            envelopes = _envelopes(body)
        except ValueError as exc:
            return Response.json(400, {"itemsReceived": 0, "itemsAccepted": 0,
                                       "errors": [{"index": 0, "statusCode": 400, "message": str(exc)}]})
        with self._items_lock:
            self._items.extend(_telemetry(envelope) for envelope in envelopes)
        return Response.json(200, {"itemsReceived": len(envelopes), "itemsAccepted": len(envelopes),
                                   "errors": []})


def _envelopes(body: bytes) -> list[dict[str, Any]]:
    """A JSON array of envelopes, or one envelope per line."""
    text = body.decode("utf-8")
    parsed = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                      if line.strip()]
    if not all(isinstance(item, dict) and "data" in item for item in parsed):
        raise ValueError("every item needs a data member")
    return parsed


def _telemetry(envelope: Mapping[str, Any]) -> Telemetry:
    data = envelope.get("data") or {}
    base = data.get("baseData") or {}
    message = base.get("message")
    if message is None and base.get("exceptions"):
        message = base["exceptions"][0].get("message")
    return Telemetry(
        base_type=str(data.get("baseType", "")),
        message=str(message or ""),
        severity=base.get("severityLevel"),
        properties=dict(base.get("properties") or {}),
        tags=dict(envelope.get("tags") or {}),
        ikey=str(envelope.get("iKey", "")),
        raw=envelope,
    )
