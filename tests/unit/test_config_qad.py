"""QAD connections: session auth by default, browse overrides, QXtend settings, each mistake named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.config.model import ConfigError, SecretRef
from shared.erp.qad.connection import QadConnection

QAD: dict[str, Any] = {
    "kind": "qad",
    "base_url": "https://qad.contoso.example:8443/qad-central",
    "domain": "10USA",
    "username": "mlc@contoso.example",
    "password": {"secret": "qad-main-password"},
    "poll": {"entities": ["GoodsReceipts", "UnmatchedInvoices", "PendingPurchaseOrders"]},
}


def load(**changes: Any) -> QadConnection:
    body = {**copy.deepcopy(QAD), **changes}
    return config_from_dict({"connections": {"qad-main": body}}).connections["qad-main"]  # type: ignore[return-value]


def errors(**changes: Any) -> list[str]:
    body = {**copy.deepcopy(QAD), **changes}
    body = {key: value for key, value in body.items() if value is not None}
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"connections": {"qad-main": body}})
    return caught.value.errors


def test_a_session_connection_needs_only_the_user_its_password_and_the_domain() -> None:
    connection = load()
    assert connection.auth == "session"
    assert connection.username == "mlc@contoso.example" and connection.password == SecretRef("qad-main-password")
    assert connection.domain == "10USA" and connection.page_size == 500 and connection.qxtend is None
    assert connection.browse_id("receipts", "default-id") == "default-id"


@pytest.mark.parametrize(("field", "message"), [
    ("username", "connections.qad-main.username: is required"),
    ("password", "connections.qad-main.password: is required"),
    ("domain", "connections.qad-main.domain: is required"),
    ("poll", "connections.qad-main.poll: is required"),
])
def test_what_session_auth_needs_is_required(field: str, message: str) -> None:
    assert message in errors(**{field: None})


def test_a_password_value_instead_of_a_secret_name_is_refused_without_echoing_it() -> None:
    [problem] = errors(password="hunter2")
    assert problem.startswith("connections.qad-main.password: must be a secret reference")
    assert "hunter2" not in problem


def test_a_domain_with_a_comma_cannot_be_sent_in_a_filter() -> None:
    assert errors(domain="10,USA") == ["connections.qad-main.domain: must not contain a comma"]


def test_browse_ids_can_be_overridden_by_name_and_unknown_names_are_refused() -> None:
    connection = load(browses={"receipts": "urn:browse:mfg:xx_rcpt"})
    assert connection.browse_id("receipts", "default-id") == "urn:browse:mfg:xx_rcpt"
    assert connection.browse_id("invoices", "default-id") == "default-id"
    [problem] = errors(browses={"receipt": "urn:browse:mfg:xx"})
    assert problem.startswith("connections.qad-main.browses.receipt: unknown browse; the browses are receipts,")
    assert errors(browses={"receipts": ""}) == ["connections.qad-main.browses.receipts: must be a non-empty browse id"]


def test_client_credentials_belong_to_oauth_only() -> None:
    assert errors(client_id="app") == ['connections.qad-main.client_id: is used only with "auth": "oauth"']
    assert errors(auth="oauth", client_secret={"secret": "qad-client"}) == [
        "connections.qad-main.client_id: is required with client_secret"]
    assert errors(auth="basic") == ["connections.qad-main.auth: must be one of session, oauth"]
    connection = load(auth="oauth", client_id="app", client_secret={"secret": "qad-client"})
    assert connection.auth == "oauth" and connection.client_secret == SecretRef("qad-client")


def test_qxtend_settings_are_validated_with_their_paths() -> None:
    connection = load(qxtend={"url": "https://qad.contoso.example/qxilive", "receiver": "QADERP",
                              "comment_type": "SMS"})
    assert connection.qxtend is not None
    assert connection.qxtend.url == "https://qad.contoso.example/qxilive" and connection.qxtend.version == "ERP3_1"
    assert connection.qxtend.password is None and connection.qxtend.comment_type == "SMS"
    assert sorted(errors(qxtend={"url": "ftp://qad", "comment_type": "two words"})) == [
        "connections.qad-main.qxtend.comment_type: must be a comment type code: no spaces, at most 20 characters",
        "connections.qad-main.qxtend.receiver: is required",
        "connections.qad-main.qxtend.url: must be an https URL (http only for loopback hosts)",
    ]


def test_unknown_entities_and_fields_and_a_bad_page_size_are_reported_together() -> None:
    found = errors(poll={"entities": ["Receipts"]}, page_size=0, client_secret_name="x")
    assert "connections.qad-main.client_secret_name: unknown field" in found
    assert "connections.qad-main.page_size: must be a whole number from 1 to 5000" in found
    assert any(line.startswith("connections.qad-main.poll.entities[0]: cannot poll 'Receipts'; entities that can "
                               "be polled: GoodsReceipts, UnmatchedInvoices, PendingPurchaseOrders") for line in found)


def test_the_browses_a_connection_may_rename_are_the_ones_the_adapter_reads() -> None:
    from shared.erp.qad.adapter import BROWSES
    from shared.erp.qad.connection import QAD_BROWSES

    assert tuple(BROWSES) == QAD_BROWSES
