"""The consent registry: who may be sent what, per number, purpose (a rule's ``category``) and channel.

Fed by opt-out and opt-in keywords (STOP withdraws, START restores, every purpose on texts and calls: carriers
require it of texts, and a revocation by any reasonable means covers the sender's calls too; HELP changes
nothing), by Twilio's error 21610 on a send (recorded as withdrawn), and by an import
of earlier opt-ins and opt-outs (``python -m shared.cli consent import FILE.csv``). Before each SMS or call
the one row of its number is read (``OptOutStore.consent``): the latest fact about the message's purpose,
or every purpose, on its channel decides; nothing said means consent. A suppressed send is audited with
the source that withdrew consent and when. The export shows auditors the whole registry, numbers masked
unless revealed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.config.model import DEFAULT_CATEGORY
from shared.logs import mask_phone
from shared.model import parse_utc_time
from shared.storage.tables import CONSENT_CHANNELS, EVERY_PURPOSE, GRANTED, WITHDRAWN, ConsentFact, Stores

IMPORT_COLUMNS = ("number", "purpose", "channel", "status")
EXPORT_COLUMNS = ("connection", "number", "channel", "purpose", "status", "source", "at")
IMPORT_SOURCE = "import"
# Words an import file may use for each status.
_STATUSES = {GRANTED: GRANTED, "opt-in": GRANTED, "opted-in": GRANTED, "in": GRANTED,
             WITHDRAWN: WITHDRAWN, "opt-out": WITHDRAWN, "opted-out": WITHDRAWN, "out": WITHDRAWN}


def withdrawal_for(stores: Stores, connection: str, number: str, payload: Mapping[str, Any]) -> ConsentFact | None:
    """The opt-out that stops this notification to ``number``, or None: one read of the registry."""
    purpose = str(payload.get("category") or DEFAULT_CATEGORY)
    return stores.opt_outs.consent(connection, number).withdrawal(str(payload.get("channel") or "sms"), purpose)


def suppression(fact: ConsentFact) -> dict[str, Any]:
    """What a suppressed send's audit says: the reason, which source withdrew consent and when."""
    return {"reason": _reason(fact), "withdrawn_by": fact.source, "withdrawn_at": fact.at.isoformat(),
            "purpose": fact.purpose}


def _reason(fact: ConsentFact) -> str:
    if fact.source == "21610":
        return "Twilio refused an earlier send: the recipient unsubscribed (error 21610)"
    if fact.source.startswith(IMPORT_SOURCE):
        return f"consent withdrawn in imported records ({fact.source}) as of {fact.at.isoformat()}"
    if fact.source.isalpha():  # an opt-out keyword the recipient sent
        return f"the recipient replied {fact.source}"
    return f"consent withdrawn by {fact.source} as of {fact.at.isoformat()}"


# --- import ------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    recorded: int = 0
    older: int = 0  # facts the registry already had a later word on
    problems: list[str] = field(default_factory=list)


def read_import(lines: Iterable[str], source: str, now: datetime | None = None) -> tuple[list[tuple[str, ConsentFact]],
                                                                                         list[str]]:
    """(number, fact) per row of a CSV file with a header row: number,purpose,channel,status[,at]; and one
    problem per row that is not one (with its line number). ``purpose`` is a rule category or * (every
    purpose); ``at`` (ISO 8601, UTC if no zone) defaults to ``now``."""
    from shared.phones import InvalidNumber, normalize_number

    reader = csv.DictReader(lines)
    missing = [name for name in IMPORT_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        wanted = ",".join(IMPORT_COLUMNS)
        return [], [f"line 1: the header needs the columns {wanted}[,at]; missing {', '.join(missing)}"]
    facts, problems = [], []
    for row in reader:
        line = reader.line_num
        try:
            number = normalize_number((row.get("number") or "").strip(), "US")
            facts.append((number, _fact(row, source, now or datetime.now(UTC))))
        except InvalidNumber:
            problems.append(f"line {line}: not a phone number ({mask_phone(row.get('number') or '')})")
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
    return facts, problems


def _fact(row: Mapping[str, str | None], source: str, now: datetime) -> ConsentFact:
    from shared.config.fields import NAME

    purpose, channel = (row.get("purpose") or "").strip(), (row.get("channel") or "").strip().lower()
    status = _STATUSES.get((row.get("status") or "").strip().lower())
    if purpose != EVERY_PURPOSE and not NAME.fullmatch(purpose):
        raise ValueError(f"purpose {purpose!r} is no rule category (lowercase letters, digits, hyphens) nor *")
    if channel not in CONSENT_CHANNELS:
        raise ValueError(f"channel {channel!r}: one of {', '.join(CONSENT_CHANNELS)}")
    if status is None:
        raise ValueError(f"status {row.get('status')!r}: one of {', '.join(_STATUSES)}")
    at_text = (row.get("at") or "").strip()
    at = parse_utc_time(at_text) if at_text else now
    if at > now:  # a date ahead would outrank every later STOP or START
        raise ValueError(f"at {at_text!r} is in the future")
    return ConsentFact(channel, purpose, status, source, at)


def import_facts(stores: Stores, connections: Iterable[str], facts: Iterable[tuple[str, ConsentFact]],
                 result: ImportResult) -> ImportResult:
    """Each fact into the registry of each sending connection, unless it holds a later word on it."""
    targets = list(connections)
    for number, fact in facts:
        for connection in targets:
            if stores.opt_outs.put(connection, number, fact):
                result.recorded += 1
            else:
                result.older += 1
    return result


# --- export ------------------------------------------------------------------------------------


def export_rows(stores: Stores, reveal: bool = False, connection: str | None = None) -> Iterator[dict[str, str]]:
    """One row per fact of the registry, oldest first; numbers masked unless ``reveal``."""
    facts = sorted(stores.opt_outs.every_fact(connection), key=lambda item: item[2].at)
    for name, number, fact in facts:
        yield {"connection": name, "number": number if reveal else mask_phone(number), "channel": fact.channel,
               "purpose": fact.purpose, "status": fact.status, "source": fact.source, "at": fact.at.isoformat()}
