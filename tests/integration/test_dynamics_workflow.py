"""Workflow writeback: Validate the work item, then Complete it with the decision."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.erp.dynamics.client import DynamicsClient, complete_work_item, work_item_is_open
from shared.http import HttpFailure
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.integration.test_dynamics_client import (
    CLIENT_ID,
    SECRET_NAME,
    SECRET_VALUE,
    TENANT,
    connection_for,
    secrets_with,
)


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
    assert dynamics.completions == [{"WorkflowWorkitemInstanceID": "WI-0007", "outcome": "Approve",
                                     "comment": "Approved in Slack by ana@contoso.example"}]
    assert work_item_is_open(client, "WI-0007") is False
    [complete] = [r for r in dynamics.requests if r.path.endswith(".Complete")]
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
    assert len([r for r in dynamics.requests if r.path.endswith(".Complete")]) == 1  # no blind retry


def test_the_work_item_is_named_by_the_parameter_microsoft_documents(fo: tuple) -> None:
    dynamics, client = fo
    dynamics.add_work_item("WI-0010")
    complete_work_item(client, "WI-0010", "Reject", "Rejected in Slack by ana@contoso.example: wrong VAT")
    [complete] = [r for r in dynamics.requests if r.method == "POST"]
    assert complete.path == "/data/WorkflowWorkItems/Microsoft.Dynamics.DataEntities.Complete"
    assert complete.json == {"WorkflowWorkitemInstanceID": "WI-0010", "outcome": "Reject",
                             "comment": "Rejected in Slack by ana@contoso.example: wrong VAT"}


def test_a_parameter_name_in_another_case_is_refused_as_odata_does(fo: tuple) -> None:
    dynamics, client = fo
    dynamics.add_work_item("WI-0011")
    with pytest.raises(HttpFailure, match="workflowWorkItemInstanceId"):
        client.run_action("WorkflowWorkItems", "Complete", {"workflowWorkItemInstanceId": "WI-0011", "outcome": "x"})
    assert dynamics.work_item_state("WI-0011") == "open"


def test_an_environment_that_names_the_actions_otherwise_is_set_up_in_the_connection() -> None:
    from shared.config.loading import config_from_dict
    from shared.erp.dynamics.connection import DynamicsConnection

    entra = FakeEntra().start()
    dynamics = FakeDynamics(entra).start()
    entra.register_client(TENANT, CLIENT_ID, SECRET_VALUE)
    dynamics.rename_work_item_action("Complete", "CompleteWorkItem")
    raw = {"kind": "dynamics", "environment_url": dynamics.environment_url, "tenant_id": TENANT,
           "client_id": CLIENT_ID, "client_secret": {"secret": SECRET_NAME}, "authority": entra.authority,
           "ca_bundle": str(entra.ca_pem_path), "workflow": {"complete_action": "CompleteWorkItem"}}
    config = config_from_dict({"connections": {"contoso-fo": raw}, "rules": []})
    connection = config.connections["contoso-fo"]
    assert isinstance(connection, DynamicsConnection)
    client = DynamicsClient(connection, secrets_with())
    try:
        dynamics.add_work_item("WI-0012")
        assert work_item_is_open(client, "WI-0012") is True  # Validate keeps Microsoft's name
        complete_work_item(client, "WI-0012", "Approve", "Approved in Slack by ana@contoso.example")
        assert dynamics.work_item_state("WI-0012") == "completed"
        assert [r.path.rsplit(".", 1)[-1] for r in dynamics.requests if r.method == "POST"] == [
            "Validate", "CompleteWorkItem"]
    finally:
        client.close()
        dynamics.stop()
        entra.stop()
