"""Table stores against a real Azurite: the primitives every stage relies on."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.settings import StorageSettings
from shared.storage.tables import ConcurrencyError, Stores, table_key


def test_fifty_concurrent_claims_of_one_key_have_exactly_one_winner(stores: Stores) -> None:
    start = threading.Barrier(50)

    def claim(_: int) -> bool:
        start.wait()
        return stores.dedup.claim("event|contoso-fo", "5637144576")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(claim, range(50)))
    assert results.count(True) == 1
    assert results.count(False) == 49


def test_claims_are_per_scope_and_key(stores: Stores) -> None:
    assert stores.dedup.claim("event|a", "1") is True
    assert stores.dedup.claim("event|b", "1") is True
    assert stores.dedup.claim("event|a", "2") is True
    assert stores.dedup.claim("event|a", "1") is False


def test_keys_with_forbidden_characters_are_claimed_distinctly(stores: Stores) -> None:
    assert stores.dedup.claim("event", "INV/2024/001#a?b") is True
    assert stores.dedup.claim("event", "INV/2024/001#a?c") is True
    assert stores.dedup.claim("event", "INV/2024/001#a?b") is False


def test_an_owner_may_claim_its_own_key_again_and_no_one_else(stores: Stores) -> None:
    assert stores.dedup.claim("event", "contoso|1", owner="corr-a") is True
    assert stores.dedup.claim("event", "contoso|1", owner="corr-a") is True  # its own retry
    assert stores.dedup.claim("event", "contoso|1", owner="corr-b") is False
    assert stores.dedup.claim("event", "contoso|1") is False


def test_released_claim_can_be_claimed_again(stores: Stores) -> None:
    assert stores.dedup.claim("event", "k") is True
    stores.dedup.release("event", "k")
    assert stores.dedup.claim("event", "k") is True


def test_job_update_with_stale_etag_is_refused(stores: Stores) -> None:
    created = stores.jobs.create("job-1", {"status": "queued", "to": "+1*******23"})
    assert created is not None
    first = stores.jobs.get("job-1")
    second = stores.jobs.get("job-1")
    assert first is not None and second is not None
    updated = stores.jobs.update(first, {"status": "sent", "provider_id": "SM123"})
    with pytest.raises(ConcurrencyError):
        stores.jobs.update(second, {"status": "failed"})
    stored = stores.jobs.get("job-1")
    assert stored is not None
    assert stored.status == "sent"
    assert stored.fields["provider_id"] == "SM123"
    assert stored.etag == updated.etag


def test_creating_an_existing_job_returns_none_and_keeps_it(stores: Stores) -> None:
    assert stores.jobs.create("job-2", {"status": "sent"}) is not None
    assert stores.jobs.create("job-2", {"status": "queued"}) is None
    stored = stores.jobs.get("job-2")
    assert stored is not None and stored.status == "sent"
    assert stores.jobs.get("no-such-job") is None


def test_watermark_never_moves_backwards(stores: Stores) -> None:
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert stores.watermarks.get("syspro-a", "PorMasterHdr") is None
    assert stores.watermarks.advance("syspro-a", "PorMasterHdr", t0) is True
    assert stores.watermarks.advance("syspro-a", "PorMasterHdr", t0 - timedelta(minutes=5)) is False
    assert stores.watermarks.advance("syspro-a", "PorMasterHdr", t0) is False
    assert stores.watermarks.get("syspro-a", "PorMasterHdr") == t0
    assert stores.watermarks.advance("syspro-a", "PorMasterHdr", t0 + timedelta(seconds=1)) is True
    assert stores.watermarks.get("syspro-a", "PorMasterHdr") == t0 + timedelta(seconds=1)


def test_integer_watermarks_compare_as_numbers(stores: Stores) -> None:
    assert stores.watermarks.advance("qad-a", "tr_hist", 9) is True
    assert stores.watermarks.advance("qad-a", "tr_hist", 10) is True  # "10" < "9" as text
    assert stores.watermarks.advance("qad-a", "tr_hist", 9) is False
    assert stores.watermarks.get("qad-a", "tr_hist") == 10


def test_concurrent_watermark_advances_keep_the_largest(stores: Stores) -> None:
    values = list(range(1, 21))
    start = threading.Barrier(len(values))

    def advance(value: int) -> None:
        start.wait()
        stores.watermarks.advance("qad-b", "tr_hist", value)

    with ThreadPoolExecutor(max_workers=len(values)) as pool:
        list(pool.map(advance, values))
    assert stores.watermarks.get("qad-b", "tr_hist") == 20


def test_watermark_refuses_naive_datetimes_and_kind_changes(stores: Stores) -> None:
    with pytest.raises(ValueError, match="time zone"):
        stores.watermarks.advance("x", "e", datetime(2026, 1, 1))
    stores.watermarks.advance("x", "e", 5)
    with pytest.raises(ValueError, match="holds a int"):
        stores.watermarks.advance("x", "e", "abc")


def test_audit_is_queryable_by_record_and_by_correlation(stores: Stores) -> None:
    record = "contoso-fo|VendorInvoice|usmf|INV/0042"
    base = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    stores.audit.append("corr-1", "received", connection="contoso-fo", record=record, at=base)
    stores.audit.append("corr-1", "sent", connection="contoso-fo", record=record, job_id="j1",
                        at=base + timedelta(seconds=2), provider_id="SM1", to="+1*******23")
    stores.audit.append("corr-2", "received", connection="contoso-fo", record=record,
                        at=base + timedelta(seconds=5))
    stores.audit.append("corr-3", "received", connection="contoso-fo", record="other", at=base)

    trail = stores.audit.by_record(record)
    assert [(e.correlation_id, e.step) for e in trail] == [
        ("corr-1", "received"), ("corr-1", "sent"), ("corr-2", "received"),
    ]
    assert trail[1].detail == {"provider_id": "SM1", "to": "+1*******23"}
    assert trail[1].job_id == "j1"
    assert trail[1].at == base + timedelta(seconds=2)
    assert [e.step for e in stores.audit.by_correlation("corr-1")] == ["received", "sent"]
    assert stores.audit.by_record("never-seen") == []


def test_a_batch_of_audit_steps_reads_back_as_appended_one_by_one(stores: Stores) -> None:
    record = "contoso-fo|VendorInvoice|usmf|INV/0043"
    base = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    steps = stores.audit.batch("corr-b")
    steps.append("corr-b", "enriched", connection="contoso-fo", record=record, at=base, reads=2)
    for n in range(120):  # more than one transaction holds
        steps.append("corr-b", "routed", connection="contoso-fo", record=record, job_id=f"j{n}",
                     at=base + timedelta(milliseconds=n + 1), to="+1*******23")
    steps.append("corr-other", "received", record=record, at=base)  # another partition: written at once
    assert [e.step for e in stores.audit.by_correlation("corr-b")] == []
    steps.flush()

    trail = stores.audit.by_record(record)
    assert [(e.correlation_id, e.step) for e in trail[:3]] == [
        ("corr-b", "enriched"), ("corr-other", "received"), ("corr-b", "routed"),
    ]
    assert [e.job_id for e in trail if e.step == "routed"] == [f"j{n}" for n in range(120)]
    assert trail[0].detail == {"reads": 2} and trail[-1].detail == {"to": "+1*******23"}


def test_provider_ids_lead_back_to_their_job(stores: Stores) -> None:
    stores.providers.link("SM0123456789abcdef0123456789abcdef", "job-9", "twilio-main")
    link = stores.providers.lookup("SM0123456789abcdef0123456789abcdef")
    assert link is not None
    assert (link.job_id, link.connection) == ("job-9", "twilio-main")
    assert stores.providers.lookup("SMunknown") is None


def test_table_key_is_stable_and_safe() -> None:
    assert table_key("contoso-fo|5637144576") == "contoso-fo|5637144576"
    hashed = table_key("a/b")
    assert hashed == table_key("a/b") and hashed.startswith("h:") and "/" not in hashed
    assert table_key("x" * 401).startswith("h:")


def test_opt_outs_follow_the_latest_keyword(stores: Stores) -> None:
    assert stores.opt_outs.is_opted_out("twilio-main", "+14155550100") is False
    stores.opt_outs.record("twilio-main", "+14155550100", True, "STOP")
    assert stores.opt_outs.is_opted_out("twilio-main", "+14155550100") is True
    assert stores.opt_outs.is_opted_out("twilio-other", "+14155550100") is False
    stores.opt_outs.record("twilio-main", "+14155550100", False, "START")
    assert stores.opt_outs.is_opted_out("twilio-main", "+14155550100") is False


def test_the_last_contact_of_a_number_is_kept(stores: Stores) -> None:
    from shared.storage.tables import LastContact

    assert stores.contacts.last("twilio-main", "+14155550100") is None
    stores.contacts.remember("twilio-main", "+14155550100", LastContact("j1", "fo|VendorInvoice|usmf|A", "c1"))
    stores.contacts.remember("twilio-main", "+14155550100", LastContact("j2", "fo|VendorInvoice|usmf|B", "c2"))
    assert stores.contacts.last("twilio-main", "+14155550100") == LastContact("j2", "fo|VendorInvoice|usmf|B", "c2")


def test_a_send_links_its_sid_beside_the_numbers_last_contact_in_one_request(
        stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.storage.tables import CONTACTS, LastContact

    requests: list[str] = []
    real_transaction, contacts = stores.tables.transaction, stores.tables.table(CONTACTS)
    real_upsert = contacts.upsert_entity
    monkeypatch.setattr(stores.tables, "transaction",
                        lambda name, operations: requests.append(f"transaction {name}")
                        or real_transaction(name, operations))
    monkeypatch.setattr(contacts, "upsert_entity",
                        lambda entity, **kwargs: requests.append("upsert") or real_upsert(entity, **kwargs))
    sid = "SM" + uuid.uuid4().hex

    stores.contacts.remember("twilio-main", "+14155550177", LastContact("job-7", "fo|VendorInvoice|usmf|L", "c7"),
                             sid=sid)

    assert requests == [f"transaction {CONTACTS}"]  # both rows or neither
    assert stores.contacts.last("twilio-main", "+14155550177") == LastContact("job-7", "fo|VendorInvoice|usmf|L", "c7")
    link = stores.contacts.job_of_sid("twilio-main", sid)
    assert link is not None and (link.provider_id, link.job_id, link.connection) == (sid, "job-7", "twilio-main")
    assert stores.contacts.job_of_sid("twilio-other", sid) is None  # each connection's messages are its own
    stores.contacts.remember("twilio-main", "", LastContact("job-8", "", ""), sid=sid + "x")  # no number: the link
    assert requests[-1] == "upsert" and stores.contacts.job_of_sid("twilio-main", sid + "x") is not None


def test_a_message_linked_in_provider_ids_is_still_found(stores: Stores) -> None:
    sid = "SM" + uuid.uuid4().hex
    stores.providers.link(sid, "job-older", "twilio-main")
    link = stores.contacts.job_of_sid("twilio-main", sid)
    assert link is not None and link.job_id == "job-older"
    assert stores.contacts.job_of_sid("twilio-main", "SMunknown") is None


def test_jobs_are_found_by_status_and_time_window(stores: Stores) -> None:
    from datetime import timedelta

    for job_id, status in (("w1", "failed"), ("w2", "delivered"), ("w3", "undelivered"), ("w4", "no-answer")):
        stores.jobs.create(job_id, {"status": status})
    now = datetime.now(UTC)
    found = stores.jobs.with_status({"failed", "undelivered", "busy", "no-answer", "canceled"},
                                    now - timedelta(minutes=1), now + timedelta(minutes=1))
    assert sorted(job.job_id for job in found) == ["w1", "w3", "w4"]
    assert list(stores.jobs.with_status({"failed"}, now + timedelta(minutes=1), now + timedelta(minutes=2))) == []


# --- data protection --------------------------------------------------------------------------------

PHONE, TEXT = "+14155550123", "Invoice INV-7 from Fabrikam is on hold"


def raw_rows(stores: Stores, table: str) -> str:
    """Every stored value of a table, as one string to search."""
    return repr([dict(row) for row in stores.tables.table(table).list_entities()])


def test_phone_numbers_and_message_texts_never_reach_the_tables_in_clear(stores: Stores) -> None:
    from shared.storage.tables import AUDIT, CONTACTS, GATES, JOBS, OPT_OUTS, Gate, LastContact

    stores.jobs.create("job-sealed", {"to": PHONE, "body": TEXT, "status": "pending"})
    stores.audit.append("corr-sealed", "reply", connection="twilio-main", record="fo|Invoice|7", text=TEXT)
    stores.opt_outs.record("twilio-main", PHONE, True, "STOP")
    stores.contacts.remember("twilio-main", PHONE, LastContact("job-sealed", "fo|Invoice|7", "corr-sealed"))
    stores.gates.open("twilio-main", PHONE, Gate("job-sealed", f'{{"to": "{PHONE}", "body": "{TEXT}"}}'))
    for table in (JOBS, AUDIT, OPT_OUTS, CONTACTS, GATES):
        stored = raw_rows(stores, table)
        assert PHONE not in stored and PHONE[1:] not in stored, table
        assert TEXT not in stored, table

    # ... and everything reads back as it was written.
    job = stores.jobs.get("job-sealed")
    assert job is not None and job.fields["to"] == PHONE and job.fields["body"] == TEXT
    assert stores.audit.by_correlation("corr-sealed")[0].detail["text"] == TEXT
    assert stores.opt_outs.is_opted_out("twilio-main", PHONE) and not stores.opt_outs.is_opted_out("twilio-main",
                                                                                                   "+14155550124")
    assert stores.contacts.last("twilio-main", PHONE) == LastContact("job-sealed", "fo|Invoice|7", "corr-sealed")
    gate = stores.gates.find("twilio-main", PHONE)
    assert gate is not None and PHONE in gate.envelope_json
    assert [row.job_id for row in stores.jobs.with_status(["pending"], datetime.now(UTC) - timedelta(minutes=1),
                                                          datetime.now(UTC) + timedelta(minutes=1))] == ["job-sealed"]


def test_sealed_values_do_not_open_under_another_key(storage_connection_string: str, table_prefix: str) -> None:
    import base64
    import os

    from shared.storage.protect import DataProtectionError, DataProtector

    settings = StorageSettings(storage_connection_string, None, None, None)
    first = Stores.open(settings, table_prefix, DataProtector(os.urandom(32)))
    first.jobs.create("job-key", {"to": PHONE})
    other = Stores.open(settings, table_prefix, DataProtector.from_text(base64.b64encode(os.urandom(32)).decode()))
    with pytest.raises(DataProtectionError, match="key"):
        other.jobs.get("job-key")
    assert other.contacts.last("twilio-main", PHONE) is None  # a keyed hash: another key finds nothing
    first.close()
    other.close()


def test_rows_sealed_under_the_old_key_still_read_after_rotation(storage_connection_string: str,
                                                                  table_prefix: str) -> None:
    import base64
    import os

    from shared.storage.protect import DataProtector, sealed_key_id
    from shared.storage.tables import AUDIT, JOBS, Gate, LastContact
    from tests.support.app import TEST_DATA_PROTECTION_KEY
    from tests.unit.test_protect import FIRST_FORMAT, FIRST_FORMAT_TEXT

    settings = StorageSettings(storage_connection_string, None, None, None)
    old_key, new_key = TEST_DATA_PROTECTION_KEY, base64.b64encode(os.urandom(32)).decode()
    before = Stores.open(settings, table_prefix, DataProtector.from_text(old_key))
    before.jobs.create("job-old", {"to": PHONE, "body": TEXT})
    before.audit.append("corr-old", "reply", connection="twilio-main", text=TEXT)
    before.gates.open("twilio-main", PHONE, Gate("job-old", f'{{"to": "{PHONE}"}}'))
    before.opt_outs.record("twilio-main", PHONE, True, "STOP")
    before.contacts.remember("twilio-main", PHONE, LastContact("job-old", "fo|Invoice|7", "corr-old"))
    # A job written before sealed values named their key.
    before.tables.table(JOBS).create_entity({"PartitionKey": "job-first", "RowKey": "job", "JobId": "job-first",
                                             "Fields": FIRST_FORMAT, "Status": "sent"})

    after = Stores.open(settings, table_prefix, DataProtector.from_text(new_key, previous=old_key))
    old_job, first_job = after.jobs.get("job-old"), after.jobs.get("job-first")
    assert old_job is not None and old_job.fields == {"to": PHONE, "body": TEXT}
    assert first_job is not None and first_job.fields == json.loads(FIRST_FORMAT_TEXT)
    assert after.audit.by_correlation("corr-old")[0].detail["text"] == TEXT
    gate = after.gates.find("twilio-main", PHONE)
    assert gate is not None and PHONE in gate.envelope_json
    assert after.opt_outs.is_opted_out("twilio-main", PHONE)  # found by the same blind index
    assert after.contacts.last("twilio-main", PHONE) == LastContact("job-old", "fo|Invoice|7", "corr-old")

    # New rows, and rows rewritten, are sealed under the new key.
    updated = after.jobs.update(old_job, {"status": "delivered"})
    after.jobs.create("job-new", {"to": PHONE})
    after.audit.append("corr-new", "reply", connection="twilio-main", text=TEXT)
    new_id, old_id = DataProtector.from_text(new_key).key_id, DataProtector.from_text(old_key).key_id
    jobs = {row["JobId"]: row["Fields"] for row in after.tables.table(JOBS).list_entities()}
    assert sealed_key_id(jobs["job-new"]) == sealed_key_id(jobs["job-old"]) == new_id != old_id
    details = {row["CorrelationId"]: row["Detail"] for row in after.tables.table(AUDIT).list_entities()}
    assert sealed_key_id(details["corr-new"]) == new_id and sealed_key_id(details["corr-old"]) == old_id
    assert updated.fields["status"] == "delivered"
    before.close()
    after.close()


def test_a_plain_value_where_a_sealed_one_belongs_is_refused(stores: Stores) -> None:
    from shared.storage.protect import NotSealedError
    from shared.storage.tables import JOBS

    stores.tables.table(JOBS).create_entity({"PartitionKey": "job-plain", "RowKey": "job", "JobId": "job-plain",
                                             "Fields": json.dumps({"to": PHONE}), "Status": "sent"})
    with pytest.raises(NotSealedError, match="plain text"):
        stores.jobs.get("job-plain")
    stores.audit.append("corr-bare", "received")  # a step without detail is stored plain, and reads back
    assert stores.audit.by_correlation("corr-bare")[0].detail == {}
