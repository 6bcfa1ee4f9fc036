"""The example ERP's REST API: tickets changed after a counter, page by page, and comments on a ticket.

Every call goes through ``shared.http.HttpClient``: bounded timeouts, 429 and 5xx retried with
``Retry-After`` honoured (a long wait goes back to the queue as ``RetryLater``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.clients import PerConnection
from shared.http import HttpClient, HttpFailure, RetryPolicy
from shared.outcomes import PermanentFailure
from tests.example_erp.connection import ExampleConnection

if TYPE_CHECKING:
    from shared.storage.secrets import SecretProvider

CONFLICT = 409


class ExampleClient:
    def __init__(self, connection: ExampleConnection, secrets: SecretProvider, http: HttpClient | None = None) -> None:
        self.connection = connection
        self._secrets = secrets
        self.http = http or HttpClient(RetryPolicy(max_attempts=3, read_timeout=10.0),
                                       verify=connection.ca_bundle or True)

    def _headers(self) -> dict[str, str]:
        token = self._secrets.get(self.connection.api_token.name).reveal()
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def changed_tickets(self, after: int | None, token: str | None, limit: int) -> tuple[list[Mapping[str, Any]],
                                                                                         str | None]:
        """One page of tickets changed after ``after`` (or the page ``token`` names), and the next token."""
        params: dict[str, Any] = {"page_token": token} if token else {"changed_after": after or 0, "limit": limit}
        answer = self.http.get(f"{self.connection.base_url}/v1/tickets", params=params, headers=self._headers())
        body = answer.json()
        tickets = body.get("tickets") if isinstance(body, dict) else None
        if not isinstance(tickets, list):
            raise PermanentFailure("the example ERP answered a ticket list without 'tickets'")
        return tickets, body.get("next_page_token")

    def add_comment(self, ticket_id: str, text: str, external_id: str) -> bool:
        """Comment on a ticket; False when a comment with this ``external_id`` was already there."""
        from urllib.parse import quote

        url = f"{self.connection.base_url}/v1/tickets/{quote(ticket_id, safe='')}/comments"
        try:
            self.http.post(url, json={"body": text, "external_id": external_id}, headers=self._headers())
        except HttpFailure as failure:
            if failure.status == CONFLICT:
                return False  # written before: its answer was lost, or the reply came twice
            raise
        return True

    def close(self) -> None:
        self.http.close()


def _new_client(connection: ExampleConnection) -> ExampleClient:
    from shared.storage.secrets import get_secret_provider

    return ExampleClient(connection, get_secret_provider())


_clients: PerConnection[ExampleClient] = PerConnection(_new_client)


def example_client(connection: ExampleConnection) -> ExampleClient:
    """The process-wide client of this connection."""
    return _clients.get(connection)


def reset_example_clients() -> None:
    _clients.reset()
