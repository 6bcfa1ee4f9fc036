"""Audit trails as people ask about them: who was contacted, how, and did it arrive."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.model import status_rank
from shared.storage.tables import AuditEntry

# Audit detail that holds what people wrote (an SMS reply): shown only when an operator asks.
TEXT_FIELDS = frozenset({"text"})
MASK = "***"


def masked_texts(detail: Mapping[str, Any]) -> dict[str, Any]:
    """An audit entry's detail with the texts people wrote shown as ``***``."""
    return {name: MASK if name in TEXT_FIELDS and value else value for name, value in detail.items()}


@dataclass
class Contact:
    job_id: str
    channel: str = ""
    to: str = ""
    status: str = "pending"
    provider_id: str = ""
    error_code: str = ""
    reason: str = ""


def contacts(entries: Iterable[AuditEntry]) -> list[Contact]:
    """One line per job in the trail, with the furthest status it reached."""
    jobs: dict[str, Contact] = {}
    for entry in sorted(entries, key=lambda e: e.at):
        if not entry.job_id:
            continue
        contact = jobs.setdefault(entry.job_id, Contact(entry.job_id))
        detail = entry.detail
        contact.channel = detail.get("channel") or contact.channel
        contact.to = detail.get("to") or contact.to
        contact.provider_id = detail.get("provider_id") or contact.provider_id
        contact.error_code = str(detail.get("error_code") or contact.error_code or "")
        status = detail.get("status") or {"routed": "pending", "replayed": "pending"}.get(entry.step)
        if entry.step == "replayed":
            contact.status = "pending"
        elif status and status_rank(status) >= status_rank(contact.status):
            contact.status = status
        if entry.step in ("failed", "suppressed", "expired"):
            contact.reason = detail.get("reason", "")
    return list(jobs.values())
