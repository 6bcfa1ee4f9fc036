"""SYSPRO connections: what the adapter needs is checked at load, each error naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config.loading import config_from_dict
from shared.config.model import ConfigError, SecretRef
from shared.erp.syspro.connection import SysproConnection, notes_unavailable


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


ODATA_ONLY = {"api": "odata", "odata_url": "https://erp.example/SYSPRO8Odata/SYSPROOData",
              "odata_password": {"secret": "syspro-main-odata-password"}, "base_url": None, "password": None}


def test_odata_alone_needs_no_enet_fields_and_says_notes_are_unavailable() -> None:
    found = config_from_dict(syspro(**ODATA_ONLY)).connection_of("syspro-main", SysproConnection)

    assert (found.base_url, found.password, found.company_password) == (None, None, None)
    assert notes_unavailable(found) == ("syspro-main reads SYSPRO through OData only, which is read-only; notes are "
                                        "written through e.net, which needs base_url and password")
    with_enet = config_from_dict(syspro(**{**ODATA_ONLY, "base_url": "https://erp.example:31002/SYSPROWCFService/Rest",
                                           "password": {"secret": "syspro-main-operator-password"}}))
    assert notes_unavailable(with_enet.connection_of("syspro-main", SysproConnection)) is None


def test_enet_needs_its_fields_and_odata_takes_both_or_neither() -> None:
    assert errors(syspro(base_url=None, password=None)) == [
        "connections.syspro-main.base_url: is required unless api is odata",
        "connections.syspro-main.password: is required unless api is odata"]
    assert errors(syspro(**{**ODATA_ONLY, "base_url": "https://erp.example:31002/SYSPROWCFService/Rest"})) == [
        "connections.syspro-main.password: is required with base_url (e.net, for notes); or leave both out"]


def test_sessions_are_kept_for_fifteen_minutes_unless_set() -> None:
    assert config_from_dict(syspro()).connection_of("syspro-main", SysproConnection).session_minutes == 15
    five = config_from_dict(syspro(session_minutes=5)).connection_of("syspro-main", SysproConnection)
    assert five.session_minutes == 5
    assert errors(syspro(session_minutes=0)) == ["connections.syspro-main.session_minutes: must be a whole number "
                                                 "from 1 to 240"]


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
