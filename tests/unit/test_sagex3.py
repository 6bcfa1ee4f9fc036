"""Sage X3 pieces without a server: values, filters, the connected-app token, notes, config, templates."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest

from shared.config.loading import config_from_dict
from shared.config.model import ConfigError
from shared.erp.polling import Note
from shared.erp.sagex3.adapter import clean_value, later_stamp, note_line
from shared.erp.sagex3.client import (
    GRAPHQL_NODES,
    Term,
    TokenMinter,
    graphql_filter,
    graphql_order,
    graphql_row,
    hs256_jwt,
    rest_where,
    x3_datetime_text,
)
from shared.erp.sagex3.connection import SageX3Connection, SageX3NoteTarget, SageX3Published
from shared.templates import BUILTIN, render, sms_segments

SECRET = "connected-app-secret-0123456789abcdef"

CONNECTION: dict[str, Any] = {
    "kind": "sagex3", "base_url": "https://x3.example.com:8124", "folder": "SEED", "username": "WS",
    "password": {"secret": "x3-password"}, "poll": {"entities": ["PORDER", "PINVOICE-due"]},
}


def load(**changes: Any) -> SageX3Connection:
    body = {**copy.deepcopy(CONNECTION), **changes}
    body = {name: value for name, value in body.items() if value is not None}
    return config_from_dict({"connections": {"x3": body}}).connection_of("x3", SageX3Connection)


def errors(**changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(**changes)
    return caught.value.errors


# --- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "meant"), [
    (" ", ""), ("", ""), ("ABC", "ABC"), ("1753-01-01", None), ("1900-01-01", None), ("1900-01-02", "1900-01-02"),
    ("1753-01-01T00:00:00Z", None), ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"), (3, 3), (None, None),
])
def test_x3_quirks_are_undone(raw: Any, meant: Any) -> None:
    assert clean_value(raw) == meant


def test_the_change_stamp_is_the_later_of_header_and_lines() -> None:
    row = {"UPDDATTIM": "2026-11-22T10:00:00Z", "lines": [{"UPDDATTIM": "2026-11-22T10:05:00Z"},
                                                         {"UPDDATTIM": None}]}
    assert later_stamp(row, UTC) == "2026-11-22T10:05:00Z"
    assert later_stamp({"UPDDATTIM": None, "CREDATTIM": "2026-11-22T09:00:00Z"}, UTC) == "2026-11-22T09:00:00Z"


# --- filters ---------------------------------------------------------------------------------------


def test_date_times_carry_z_only_when_the_erp_zone_is_utc() -> None:
    moment = datetime(2026, 11, 22, 10, 45, 19, 123456)
    assert x3_datetime_text(moment, zone_is_utc=True) == "2026-11-22T10:45:19Z"
    assert x3_datetime_text(moment, zone_is_utc=False) == "2026-11-22T10:45:19"


def test_rest_where_uses_x3_literals() -> None:
    terms = [Term("UPDDATTIM", "ge", datetime(2026, 11, 22, 10, 45, 19)), Term("BPSNUM", "eq", "O'NEIL"),
             Term("STRDUDDAT", "ge", date(2026, 11, 22)), Term("APPFLG", "eq", 3)]
    assert rest_where(terms, zone_is_utc=True) == (
        "UPDDATTIM ge @2026-11-22T10:45:19Z@ and BPSNUM eq 'O''NEIL' and STRDUDDAT ge @2026-11-22@ and APPFLG eq 3")


def test_graphql_filters_and_rows_translate_names_and_local_menus() -> None:
    node = GRAPHQL_NODES["PORDER"]
    text = graphql_filter(node, [Term("APPFLG", "eq", 3), Term("BPSNUM", "eq", "it's"),
                                 Term("UPDDATTIM", "ge", datetime(2026, 11, 22, 10))], zone_is_utc=True)
    assert text == ("{signatureStatus:{_eq:'totally'},orderFromSupplier:{code:{code:{_eq:'it\\'s'}}},"
                    "updateDateTime:{_gte:'2026-11-22T10:00:00Z'}}")
    assert graphql_order(GRAPHQL_NODES["PORDERQ"], ["EXTRCPDAT", "POHNUM"]) == (
        "{expectedReceiptDate:1,purchaseOrder:{id:1}}")
    row = graphql_row(node, {"id": "PO1", "signatureStatus": "partly", "orderFromSupplier": {"code": {"code": "S1"}},
                             "purchaseOrderLines": {"query": {"edges": [{"node": {"lineNumber": 1}}]}}})
    assert row["POHNUM"] == "PO1" and row["APPFLG"] == 2 and row["BPSNUM"] == "S1" and row["CUR"] is None
    assert row["lines"] == [{"POPLIN": 1, "UPDDATTIM": None}]


# --- the connected application's token -------------------------------------------------------------


def test_the_hand_made_jwt_is_what_pyjwt_accepts() -> None:
    minted = hs256_jwt({"iss": "app", "sub": "WS", "aud": "https://x3/xtrem/api", "iat": 1, "exp": 4_000_000_000},
                       SECRET)
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="https://x3/xtrem/api")
    assert claims == {"iss": "app", "sub": "WS", "aud": "https://x3/xtrem/api", "iat": 1, "exp": 4_000_000_000}
    assert jwt.get_unverified_header(minted) == {"alg": "HS256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(minted, SECRET + "x", algorithms=["HS256"], audience="https://x3/xtrem/api")


def test_the_token_is_renewed_before_it_expires_and_once_per_refusal() -> None:
    now = [1000.0]
    reads = []

    def secret() -> str:
        reads.append(1)
        return SECRET

    minter = TokenMinter(client_id="app", user="WS", audience="https://x3/xtrem/api", secret=secret, lifetime=300,
                         clock=lambda: now[0])
    first = minter.token()
    claims = jwt.decode(first, SECRET, algorithms=["HS256"], audience="https://x3/xtrem/api",
                        options={"verify_exp": False, "verify_iat": False})  # the test's clock is not today's
    assert (claims["iat"], claims["exp"]) == (1000, 1300)
    now[0] = 1239.0
    assert minter.token() == first  # 61 s left: still good
    now[0] = 1240.0
    second = minter.token()  # 60 s left: renewed before it can expire in flight
    assert second != first
    assert minter.renew(refused=first) == second  # another thread renewed already
    third = minter.renew(refused=second)
    assert third != second and len(reads) == 3


# --- notes -----------------------------------------------------------------------------------------


def test_a_note_line_is_timestamped_in_the_erp_zone_and_names_its_reference() -> None:
    note = Note("PORDER", "PO1", "Delivery\nmoved to Friday", datetime(2026, 11, 22, 9, 15, tzinfo=UTC),
                "+1******0123", "SM0001")
    assert note_line(note, ZoneInfo("Europe/Paris")) == (
        "2026-11-22 10:15 CET SMS from +1******0123: Delivery moved to Friday [SM0001]")


# --- configuration ---------------------------------------------------------------------------------


def test_a_rest_connection_loads_with_defaults() -> None:
    connection = load()
    assert connection.api == "rest" and connection.due_window_days == 3 and connection.timeout_seconds == 30
    assert connection.representations == {} and connection.notes == {}


def test_overrides_of_representations_and_note_targets() -> None:
    connection = load(representations={"PORDER": {"class": "YPOH", "representation": "YPOHALL"}},
                      notes={"PORDER": {"public_name": "ZPOH", "key": "POHNUM", "group": "G1", "field": "ZTXT"}})
    assert connection.representations["PORDER"] == SageX3Published("YPOH", "YPOHALL")
    assert connection.notes["PORDER"] == SageX3NoteTarget("ZPOH", "POHNUM", "G1", "ZTXT")


def test_each_api_names_what_it_needs() -> None:
    assert errors(password=None) == ["connections.x3.password: is required when api is rest"]
    assert errors(api="graphql") == ["connections.x3.client_id: is required when api is graphql",
                                      "connections.x3.client_secret: is required when api is graphql"]
    graphql = load(api="graphql", password=None, client_id="app", client_secret={"secret": "x3-app"})
    assert graphql.client_id == "app" and graphql.password is None
    assert errors(api="soap") == ["connections.x3.api: must be one of rest, graphql"]


def test_unknown_names_and_bad_values_are_reported_by_path() -> None:
    found = errors(representations={"POHEADER": {"class": "X", "representation": "Y"},
                                    "PORDER": {"class": "X", "klass": "Y"}},
                   notes={"GACCDUDATE": {}}, due_window_days=400, soap_language="en",
                   poll={"entities": ["PORDER", "POHEADER"]})
    assert "connections.x3.representations.POHEADER: unknown name; one of PORDER, PORDERQ, PINVOICE, PAYMENTH, " \
           "BPSUPPLIER, BPADDRESS, CONTACT" in found
    assert "connections.x3.representations.PORDER.klass: unknown field" in found
    assert "connections.x3.representations.PORDER.representation: is required" in found
    assert ("connections.x3.notes.GACCDUDATE: unknown name; one of PORDER, PINVOICE, PAYMENTH, BPSUPPLIER, "
            "BPCUSTOMER") in found
    assert "connections.x3.due_window_days: must be a whole number from 0 to 90" in found
    assert "connections.x3.soap_language: must be an X3 language code such as ENG" in found
    assert any(line.startswith("connections.x3.poll.entities[1]: cannot poll 'POHEADER'") for line in found)


# --- templates -------------------------------------------------------------------------------------

RECORD = {"document": "POH-US011-2026-000123", "supplier_name": "Consolidated Industrial Supplies Incorporated",
          "amount": 123456.78, "currency": "USD", "due_date": "2026-11-25", "days_left": 3, "item": "BMS-001-XL",
          "supplier_document": "SUP-INV-2026-000987", "reference": "CHQ-0001234"}


@pytest.mark.parametrize("name", [name for name in BUILTIN if name.startswith("sagex3-")])
def test_sagex3_templates_fit_one_gsm_segment_and_have_a_voice(name: str) -> None:
    template = BUILTIN[name]
    sms = render(template.sms, RECORD)
    assert "{" not in sms and sms_segments(sms).encoding == "GSM-7" and sms_segments(sms).count == 1, sms
    assert render(template.voice, RECORD)
