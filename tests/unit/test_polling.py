"""What every polled ERP adapter relies on from shared.erp.polling."""

from __future__ import annotations

import pytest

from shared.erp.polling import NONE, NUMBER, Page, PolledEntity, number_stamp, phone_or_as_stored, watched_hash


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("(415) 555-0134", "US", "+14155550134"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("ext. 12", "US", "ext. 12"),  # kept as the ERP holds it: the audit shows it, no SMS can go to it
    ("  ", "US", ""),
    (None, "US", ""),
])
def test_supplier_phones_become_e164_where_they_parse(raw: object, region: str, expected: str) -> None:
    assert phone_or_as_stored(raw, region) == expected


def test_counters_read_as_numbers_in_every_form_erps_give_them() -> None:
    assert number_stamp(7) == number_stamp("7") == number_stamp("0x0000000000000007") == 7
    with pytest.raises(ValueError):
        number_stamp("2026-11-22")
    with pytest.raises(ValueError):
        number_stamp(True)


def test_a_watched_hash_changes_with_any_watched_field_only() -> None:
    row = {"status": "0", "total": 10, "note": "a"}
    assert watched_hash(row, ("status", "total")) == watched_hash({**row, "note": "b"}, ("status", "total"))
    assert watched_hash(row, ("status", "total")) != watched_hash({**row, "total": 11}, ("status", "total"))


def read_nothing(client: object, entity: PolledEntity, request: object) -> Page:
    return Page([])


@pytest.mark.parametrize(("options", "message"), [
    ({"cursor": NUMBER}, "cursor_field"),
    ({"cursor": NONE}, "watched"),
    ({"cursor": "sometimes"}, "unknown cursor"),
    ({"cursor": NUMBER, "cursor_field": "n", "page_size": 0}, "page size"),
])
def test_an_entity_declaration_that_cannot_work_is_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolledEntity(name="x", keys=("id",), read=read_nothing, record_entity="X", **options)
