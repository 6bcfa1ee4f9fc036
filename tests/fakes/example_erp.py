"""A fake of the example ERP's small REST API, for the example kind in ``tests/example_erp``.

The API, as its reference would describe it:

- every call carries ``Authorization: Bearer <API token>``; without a known token: 401;
- ``GET /v1/tickets?changed_after=N&limit=M``: tickets whose change counter is above ``N``, in
  counter order, at most ``M`` (and at most the server's own page size) per page, as
  ``{"tickets": [...], "next_page_token": "..." | null}``; ``GET /v1/tickets?page_token=T``
  reads the next page. Every create or update of a ticket takes the next value of one counter
  that only grows, so a reader that keeps the last counter it saw misses nothing;
- ``POST /v1/tickets/{id}/comments`` with ``{"body", "external_id"}``: 201 with the comment; a
  second comment with the same ``external_id`` on the ticket is refused with 409, so a client
  whose answer was lost can post again without writing twice;
- 429 with ``Retry-After`` when throttled (``fail_next``, from the base server).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route

MAX_PAGE_SIZE = 100


@dataclass
class Ticket:
    id: str
    title: str
    status: str
    phone: str
    change: int
    comments: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "phone": self.phone,
                "change": self.change}


class FakeExampleErp(FakeServer):
    service_name = "example-erp"

    def __init__(self, *, max_page_size: int = MAX_PAGE_SIZE, port: int = 0) -> None:
        super().__init__(port=port)
        self.max_page_size = max_page_size
        self.api_token = secrets.token_urlsafe(24)
        self._tickets: dict[str, Ticket] = {}
        self._counter = 0
        self._data = threading.Lock()

    # --- test setup ------------------------------------------------------------------

    def put_ticket(self, ticket_id: str, *, title: str = "", status: str = "open", phone: str = "") -> Ticket:
        """Create or update a ticket; either way it takes the next change counter."""
        with self._data:
            self._counter += 1
            known = self._tickets.get(ticket_id)
            if known is None:
                known = self._tickets[ticket_id] = Ticket(ticket_id, title, status, phone, self._counter)
            else:
                known.title, known.status = title or known.title, status
                known.phone, known.change = phone or known.phone, self._counter
            return known

    def comments(self, ticket_id: str) -> list[dict[str, str]]:
        with self._data:
            return list(self._tickets[ticket_id].comments)

    # --- the API -----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", r"/v1/tickets", self._list),
            route("POST", r"/v1/tickets/(?P<id>[^/]+)/comments", self._comment),
        ]

    def _authorized(self, request: RecordedRequest) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.api_token}"

    def _list(self, request: RecordedRequest, _: re.Match[str]) -> Response:
        if not self._authorized(request):
            return self.error_response(401, "invalid or missing API token")
        try:
            after, limit = self._bounds(request)
        except ValueError as error:
            return self.error_response(400, str(error))
        with self._data:
            newer = sorted((t for t in self._tickets.values() if t.change > after), key=lambda t: t.change)
            page = [ticket.as_json() for ticket in newer[:limit]]
            more = len(newer) > limit
        token = _token(page[-1]["change"], limit) if more else None
        return Response.json(200, {"tickets": page, "next_page_token": token})

    def _bounds(self, request: RecordedRequest) -> tuple[int, int]:
        token = request.query_value("page_token")
        if token is not None:
            return _read_token(token)
        after = int(request.query_value("changed_after") or 0)
        limit = int(request.query_value("limit") or self.max_page_size)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return after, min(limit, self.max_page_size)

    def _comment(self, request: RecordedRequest, found: re.Match[str]) -> Response:
        if not self._authorized(request):
            return self.error_response(401, "invalid or missing API token")
        body = request.json if isinstance(request.json, dict) else {}
        text, external_id = body.get("body"), body.get("external_id")
        if not isinstance(text, str) or not text or not isinstance(external_id, str) or not external_id:
            return self.error_response(400, "body and external_id are required")
        with self._data:
            ticket = self._tickets.get(found["id"])
            if ticket is None:
                return self.error_response(404, f"no ticket {found['id']}")
            if any(comment["external_id"] == external_id for comment in ticket.comments):
                return self.error_response(409, f"a comment with external_id {external_id} exists")
            comment = {"body": text, "external_id": external_id}
            ticket.comments.append(comment)
        return Response.json(201, comment)


def _token(after: int, limit: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([after, limit]).encode()).decode()


def _read_token(token: str) -> tuple[int, int]:
    try:
        after, limit = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(after), int(limit)
    except (ValueError, TypeError) as error:
        raise ValueError("page_token is not one this server gave") from error
