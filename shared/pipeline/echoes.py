"""Our own notes, seen again by a poll: never a new alert.

A note we write to an ERP record (a reply, an alert's outcome) moves the record's change stamp, so
the next poll reads it as changed. What the poll sent last of each record is kept as a digest of its
fields, leaving out the cursor and the fields a note moves (the entity's ``echoes``); a change whose
digest is the one last sent, on a record we noted since, is our own write coming back: it is left out.
Any other change (a field a rule can see, or a record we never wrote to) is news as before. Kept for
connections with ``outcome_notes`` turned on, for their outcome notes and replies alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shared.erp.polling import NONE, PolledEntity, note_writer, notes_unavailable
from shared.model import Envelope
from shared.storage.tables import EchoStore, Stores

log = logging.getLogger(__name__)


def takes_our_notes(connection: Any) -> bool:
    """Whether this connection's polls look out for our own notes: those with outcome notes turned on
    (one read per change polled, and one write per record sent on, is their cost)."""
    wanted = getattr(connection, "outcome_notes", None)
    if wanted is None or not wanted.enabled:
        return False
    return note_writer(connection.kind) is not None and notes_unavailable(connection) is None


def remember_write(stores: Stores, connection: str, record_entity: str, record_key: str) -> None:
    EchoStore(stores.tables).noted(connection, record_entity, record_key)


def fields_digest(fields: Mapping[str, Any], left_out: Sequence[str]) -> str:
    kept = {name: value for name, value in fields.items() if name not in left_out}
    material = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def news_only(stores: Stores, connection: Any, entity: PolledEntity,
              changes: Sequence[Envelope]) -> tuple[list[Envelope], dict[str, str]]:
    """The changes that are news, and the digests to keep once they are enqueued (by record key); our own
    writes coming back are left out. A connection whose records take no notes of ours: all, and nothing kept."""
    if entity.cursor == NONE or not changes or not takes_our_notes(connection):
        return list(changes), {}  # watched fields decide for a poll without a cursor
    echoes = EchoStore(stores.tables)
    left_out = (entity.cursor_field, *entity.echoes)
    news: list[Envelope] = []
    digests: dict[str, str] = {}
    for change in changes:
        payload = change.payload
        key = str(payload.get("record_key", ""))
        digest = fields_digest(payload.get("fields") or {}, left_out)
        known = echoes.get(connection.name, entity.record_entity, key)
        if _our_write(known, digest):
            log.info("%s/%s %s: changed only by our own note; not alerted again", connection.name, entity.name,
                     key)
            continue
        news.append(change)
        if known is None or known.sent != digest:
            digests[key] = digest  # re-reads of what was sent leave "since when" as it was
    return news, digests


def keep_sent(stores: Stores, connection: Any, entity: PolledEntity, digests: Mapping[str, str]) -> None:
    """After the changes are on the queue: what was sent of each record, for the next poll to compare."""
    if digests:
        EchoStore(stores.tables).sent(connection.name, entity.record_entity, digests)


def _our_write(known: Any, digest: str) -> bool:
    if known is None or known.noted_at is None or known.sent != digest:
        return False
    return known.sent_at is None or known.noted_at >= known.sent_at
