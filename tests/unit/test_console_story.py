"""How the console reads what an operator types into its search."""

from __future__ import annotations

from shared.console.story import STAGES, phone_pattern, search


def test_a_masked_number_matches_whatever_its_run_of_stars_and_a_full_number_is_masked_first() -> None:
    assert phone_pattern("+1******34") == phone_pattern("+1*******34") == ("+1", "34")
    assert phone_pattern("+14155550134") == ("+1", "34")
    assert phone_pattern("+447700900123") == ("+44", "23")


def test_record_keys_and_correlation_ids_are_read_directly_without_a_scan() -> None:
    no_storage = None  # neither reading may touch storage
    record = search(no_storage, " contoso-fo|VendorInvoice|usmf|INV-1 ")  # type: ignore[arg-type]
    assert (record.by, record.records) == ("record", ["contoso-fo|VendorInvoice|usmf|INV-1"])
    correlation = search(no_storage, "3f2a9c1e0b5d4e6f8a7b6c5d4e3f2a1b")  # type: ignore[arg-type]
    assert (correlation.by, correlation.correlation_ids) == ("correlation", ["3f2a9c1e0b5d4e6f8a7b6c5d4e3f2a1b"])


def test_every_step_of_an_alerts_life_has_a_stage() -> None:
    assert [STAGES[s] for s in ("received", "routed", "sent", "status", "reply", "note-written")] == [
        "event", "rule", "job", "provider", "answer", "writeback"]


def test_a_status_twilio_sent_before_the_send_was_audited_comes_after_the_send() -> None:
    from datetime import UTC, datetime, timedelta

    from shared.console.story import timeline
    from shared.storage.tables import AuditEntry

    start = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    entries = [AuditEntry("c1", "received", start), AuditEntry("c1", "routed", start + timedelta(milliseconds=5)),
               # The callback is applied as it arrives, a few milliseconds before the sender audits its send.
               AuditEntry("c1", "status", start + timedelta(milliseconds=40), job_id="j1", detail={"status": "sent"}),
               AuditEntry("c1", "sent", start + timedelta(milliseconds=42), job_id="j1"),
               AuditEntry("c1", "status", start + timedelta(seconds=3), job_id="j1", detail={"status": "delivered"}),
               AuditEntry("c1", "reply", start + timedelta(seconds=60))]
    told = timeline(entries)
    assert [(e["step"], e["detail"].get("status")) for e in told] == [
        ("received", None), ("routed", None), ("sent", None), ("status", "sent"), ("status", "delivered"),
        ("reply", None)]
    assert told[3]["at"] == entries[2].at.isoformat()  # each step keeps its own time
