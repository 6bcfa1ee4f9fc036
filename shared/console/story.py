"""A record's whole story for the console: find it, then tell its audit trail as a timeline.

An operator searches by what they have at hand: an ERP record key (``contoso-fo|VendorInvoice|usmf|INV-1``),
a correlation id, an ERP document number (``INV-1``) or a masked phone number (``+1******34``, as the
audit and logs show them; a full number is masked first). The first two are direct reads. The last two
cost no write per alert: they scan what the audit already keeps, bounded by days and rows:

- a document number: the ``auditrecords`` index rows whose storage Timestamp (the index row's last
  write: when a process first saw that record with that change) falls within ``SEARCH_DAYS``, at most
  ``SCAN_LIMIT`` rows, keeping the records whose last ``|`` part is the number;
- a phone: the ``routed`` audit steps of the last ``SEARCH_DAYS`` (the one step naming each recipient,
  masked as shown here), at most ``SCAN_LIMIT`` rows.

A record older than the window, or beyond the limit on a busy day, is not found that way; its record
key or correlation id still finds it. The answer says when a scan stopped at its limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.logs import mask_phone
from shared.storage.tables import AuditEntry, Stores

SEARCH_DAYS = 14
SCAN_LIMIT = 5_000
MATCH_LIMIT = 20
TIMELINE_LIMIT = 500

_CORRELATION = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
# A masked number as mask_phone writes it (any run of '*'), or one typed in full.
_MASKED_PHONE = re.compile(r"^\+\d{1,3}\*+\d{0,2}$")
_PHONE = re.compile(r"^\+[\d\s().\-/]{7,20}$")

# Which part of an alert's life each audit step tells, in the order the console shows them.
STAGES: dict[str, str] = {
    **dict.fromkeys(("received", "enriched", "duplicate", "test-event", "no-rule", "ping-received"), "event"),
    **dict.fromkeys(("routed", "no-recipient"), "rule"),
    **dict.fromkeys(("sent", "failed", "suppressed", "expired", "replayed", "retrying", "dead-lettered",
                     "redriven", "unknown", "verify-started", "verify-checked", "verify-approved", "verify-failed",
                     "otp-sent", "otp-wrong", "otp-exhausted", "otp-failed", "no-slack-user", "channel-unresolved",
                     "lookup-unavailable", "adopted", "deferred", "escalated", "escalation-skipped"), "job"),
    "status": "provider",
    **dict.fromkeys(("reply", "acknowledged", "opted-out", "opted-in", "help", "decided", "refused", "click",
                     "otp-approved", "spam-report", "unsubscribed", "resubscribed", "escalation-cancelled"), "answer"),
    **dict.fromkeys(("note-written", "note-failed", "work-item-closed"), "writeback"),
}
# Detail an operator reads in a timeline line; anything else stays in the audit route.
_SHOWN_DETAIL = ("rule", "channel", "to", "status", "provider_id", "error_code", "reason", "event", "decision",
                 "user", "digits", "keyword", "text", "previous_status", "dead_letter", "attempt", "delay", "by", "how",
                 "source", "escalation_step")


@dataclass
class Found:
    """What a search found: the records (and correlation ids) it points at, and how."""

    query: str
    by: str
    records: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    limited: bool = False


def search(stores: Stores, query: str, now: datetime | None = None) -> Found:
    """The records or correlation ids ``query`` names, by the first reading of it that fits."""
    query = query.strip()
    since = (now or datetime.now(UTC)) - timedelta(days=SEARCH_DAYS)
    if "|" in query:
        return Found(query, "record", [query])
    if _CORRELATION.match(query):
        return Found(query, "correlation", correlation_ids=[query])
    if _MASKED_PHONE.match(query) or _PHONE.match(query):
        return _by_phone(stores, query, since)
    return _by_document(stores, query, since)


def _by_document(stores: Stores, number: str, since: datetime) -> Found:
    wanted = number.casefold()
    found = Found(number, "document")
    for record in _bounded(stores.audit.records_since(since), found):
        if record.rpartition("|")[2].casefold() == wanted and record not in found.records:
            found.records.append(record)
            if len(found.records) >= MATCH_LIMIT:
                break
    return found


def phone_pattern(query: str) -> tuple[str, str]:
    """A typed or masked number as (country code with '+', last two digits) to compare masked ones by:
    the run of '*' in between may be of any length."""
    masked = query if "*" in query else mask_phone(query)
    head, _, tail = masked.partition("*")
    return head, tail.lstrip("*")


def _by_phone(stores: Stores, query: str, since: datetime) -> Found:
    head, tail = phone_pattern(query)
    found = Found(query, "phone")
    if not head.startswith("+") or len(tail) != 2:
        return found  # too little of the number to tell one recipient from another
    for entry in _bounded(stores.audit.steps_since("routed", since), found):
        if phone_pattern(str(entry.detail.get("to") or "")) != (head, tail):
            continue
        if entry.record and entry.record not in found.records:
            found.records.append(entry.record)
        elif not entry.record and entry.correlation_id not in found.correlation_ids:
            found.correlation_ids.append(entry.correlation_id)
        if len(found.records) + len(found.correlation_ids) >= MATCH_LIMIT:
            break
    return found


def _bounded(rows: Iterable[Any], found: Found) -> Iterator[Any]:
    """At most ``SCAN_LIMIT`` rows; ``found.limited`` says when there were more."""
    for count, row in enumerate(rows):
        if count >= SCAN_LIMIT:
            found.limited = True
            return
        yield row


def timeline(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    """The trail oldest first, each step with its stage and what an operator needs of it, texts masked."""
    from shared.pipeline.report import masked_texts

    ordered = sorted(entries, key=_told_at(entries))[:TIMELINE_LIMIT]
    return [{"at": entry.at.isoformat(), "stage": STAGES.get(entry.step, "other"), "step": entry.step,
             "correlation_id": entry.correlation_id, "job_id": entry.job_id, "record": entry.record,
             "detail": {name: value for name, value in masked_texts(entry.detail).items()
                        if name in _SHOWN_DETAIL and value not in (None, "")}}
            for entry in ordered]


def _told_at(entries: list[AuditEntry]) -> Callable[[AuditEntry], tuple[datetime, bool]]:
    """When a step comes in the story: its time, except that a provider's status never comes before its
    job's send. Twilio may call back before the sender has audited the send (the callback is applied as
    it arrives), yet the status tells what happened after it."""
    sent = {entry.job_id: entry.at for entry in entries if entry.step == "sent" and entry.job_id}

    def at(entry: AuditEntry) -> tuple[datetime, bool]:
        if STAGES.get(entry.step) == "provider" and entry.job_id in sent:
            return max(entry.at, sent[entry.job_id]), True  # after the send, even at the same instant
        return entry.at, False

    return at


def story(stores: Stores, query: str) -> dict[str, Any]:
    """What the console's Story view shows for ``query``: the matches, and when they come to one
    record or correlation id, its timeline and who was contacted."""
    from shared.pipeline.report import contacts

    found = search(stores, query)
    answer: dict[str, Any] = {"query": found.query, "by": found.by, "records": found.records,
                              "correlation_ids": found.correlation_ids, "limited": found.limited,
                              "search_days": SEARCH_DAYS, "timeline": [], "contacts": []}
    if len(found.records) + len(found.correlation_ids) != 1:
        return answer
    audit = stores.audit
    entries = audit.by_record(found.records[0]) if found.records else audit.by_correlation(found.correlation_ids[0])
    answer["timeline"] = timeline(entries)
    answer["contacts"] = [vars(contact) for contact in contacts(entries)]
    return answer
