"""Workflow writeback: Validate the work item, then Complete it with the decision."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.erp.dynamics.client import DynamicsClient, complete_work_item, work_item_is_open
from shared.http import HttpFailure
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.integration.test_dynamics_client import CLIENT_ID, SECRET_VALUE, TENANT, connection_for, secrets_with


@pytest.fixture
def fo() -> Iterator[tuple[FakeDynamics, DynamicsClient]]:
    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    entra.register_client(TENANT, CLIENT_ID, SECRET_VALUE)
    client = DynamicsClient(connection_for(dynamics, entra), secrets_with())
    yield dynamics, client
    client.close()
    dynamics.stop()
    entra.stop()


def test_an_open_work_item_is_validated_then_completed(fo: tuple) -> None:
    dynamics, client = fo
    dynamics.add_work_item("WI-0007")
    assert work_item_is_open(client, "WI-0007") is True
    complete_work_item(client, "WI-0007", "Approve", "Approved in Slack by ana@contoso.example")
    assert dynamics.completions == [{"workflowWorkItemInstanceId": "WI-0007", "outcome": "Approve",
                                     "comment": "Approved in Slack by ana@contoso.example"}]
    assert work_item_is_open(client, "WI-0007") is False
    [complete] = [r for r in dynamics.requests if r.path.endswith(".complete")]
    assert complete.method == "POST" and complete.headers["Content-Type"].startswith("application/json")
    assert complete.headers["Authorization"].startswith("Bearer ")


def test_a_work_item_completed_elsewhere_is_not_open(fo: tuple) -> None:
    dynamics, client = fo
    dynamics.add_work_item("WI-0008", state="recalled")
    assert work_item_is_open(client, "WI-0008") is False
    with pytest.raises(HttpFailure, match="recalled and cannot be completed"):
        complete_work_item(client, "WI-0008", "Approve", "x")
    assert dynamics.completions == []


def test_a_complete_whose_answer_was_lost_is_not_sent_again(fo: tuple) -> None:
    dynamics, client = fo
    dynamics.add_work_item("WI-0009")
    dynamics.fail_next(1, status=502, match="POST /data/WorkflowWorkItems")
    with pytest.raises(HttpFailure):
        complete_work_item(client, "WI-0009", "Reject", "x")
    assert len([r for r in dynamics.requests if r.path.endswith(".complete")]) == 1  # no blind retry
