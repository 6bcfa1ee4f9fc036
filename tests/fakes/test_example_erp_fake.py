"""The fake example ERP answers as its API says: bearer auth, counter-ordered pages, comments once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.fakes.example_erp import FakeExampleErp


@pytest.fixture
def fake() -> Iterator[FakeExampleErp]:
    server = FakeExampleErp(max_page_size=2).start()
    yield server
    server.stop()
    assert not server.handler_errors


def get(fake: FakeExampleErp, token: str | None = None, **params: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or fake.api_token}"}
    return requests.get(f"{fake.base_url}/v1/tickets", params=params, headers=headers, timeout=5)


def test_a_call_without_the_api_token_is_refused(fake: FakeExampleErp) -> None:
    assert get(fake, token="wrong").status_code == 401
    assert requests.get(f"{fake.base_url}/v1/tickets", timeout=5).status_code == 401


def test_changes_are_read_after_a_counter_in_pages_and_an_update_moves_a_ticket_to_the_end(
        fake: FakeExampleErp) -> None:
    for ticket in ("A", "B", "C"):
        fake.put_ticket(ticket, title=ticket)
    fake.put_ticket("A", status="closed")
    first = get(fake, changed_after=1, limit=10).json()  # the server's own page size wins
    assert [(t["id"], t["change"]) for t in first["tickets"]] == [("B", 2), ("C", 3)]
    second = get(fake, page_token=first["next_page_token"]).json()
    assert [(t["id"], t["status"], t["change"]) for t in second["tickets"]] == [("A", "closed", 4)]
    assert second["next_page_token"] is None
    assert get(fake, changed_after=4).json() == {"tickets": [], "next_page_token": None}


def test_a_comment_with_a_known_external_id_is_refused_with_409(fake: FakeExampleErp) -> None:
    fake.put_ticket("A")
    url, headers = f"{fake.base_url}/v1/tickets/A/comments", {"Authorization": f"Bearer {fake.api_token}"}
    comment = {"body": "on my way", "external_id": "SM1"}
    assert requests.post(url, json=comment, headers=headers, timeout=5).status_code == 201
    assert requests.post(url, json=comment, headers=headers, timeout=5).status_code == 409
    assert fake.comments("A") == [comment]
