"""SYSPRO connections: what the adapter needs is checked at load, each error naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.config.model import ConfigError, SecretRef
from shared.erp.syspro.connection import SysproConnection


def syspro(**fields: Any) -> dict[str, Any]:
    body = {"kind": "syspro", "base_url": "https://erp.example:31002/SYSPROWCFService/Rest", "operator": "ADMIN",
            "password": {"secret": "syspro-main-operator-password"}, "company_id": "EDU1",
            "poll": {"entities": ["PorMasterHdr", "ApInvoice"]}, **fields}
    return {"connections": {"syspro-main": {k: v for k, v in body.items() if v is not None}}}


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return caught.value.errors


def test_defaults() -> None:
    connection = config_from_dict(syspro()).connection_of("syspro-main", SysproConnection)
    assert (connection.api, connection.odata_url, connection.odata_password, connection.default_region,
            connection.company_password) == ("enet", None, None, "US", None)


def test_odata_needs_its_url_and_password() -> None:
    assert errors(syspro(api="odata")) == [
        "connections.syspro-main.odata_url: is required when api is odata",
        "connections.syspro-main.odata_password: is required when api is odata"]
    connection = config_from_dict(syspro(api="odata", odata_url="https://erp.example/SYSPRO8Odata/SYSPROOData/",
                                         odata_password={"secret": "syspro-main-odata-password"}))
    found = connection.connection_of("syspro-main", SysproConnection)
    assert found.odata_url == "https://erp.example/SYSPRO8Odata/SYSPROOData"
    assert found.odata_password == SecretRef("syspro-main-odata-password")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"api": "soap"}, "connections.syspro-main.api: must be one of enet, odata"),
    ({"odata_url": "http://erp.example/odata"}, "connections.syspro-main.odata_url: must be an https URL"),
    ({"odata_password": "plain-text"}, "connections.syspro-main.odata_password: must be a secret reference"),
    ({"default_region": "usa"}, "connections.syspro-main.default_region: must be an ISO 3166 alpha-2"),
    ({"poll": None}, "connections.syspro-main.poll: is required"),
    ({"poll": {"entities": ["PorMasterHdr", "PurchaseOrders"]}},
     "connections.syspro-main.poll.entities[1]: cannot poll 'PurchaseOrders'; entities that can be polled: "
     "PorMasterHdr, PorMasterHdr-status, ApInvoice, ApInvoice-journal"),
])
def test_mistakes_name_their_field(fields: dict[str, Any], expected: str) -> None:
    assert any(line.startswith(expected) for line in errors(syspro(**fields))), errors(syspro(**fields))
