"""A SYSPRO connection: the e.net operator and company, and how polls read tables (e.net or OData).

With ``api: "odata"`` the e.net fields (``base_url``, ``password``, ``company_password``) may be
left out: polls then need only the OData service, and replies cannot be written back as notes
(notes go through e.net, OData is read-only); ``notes_unavailable`` says why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, OutcomeNotes, PollSettings, SecretRef

SysproApi = Literal["enet", "odata"]
SYSPRO_APIS: tuple[str, ...] = ("enet", "odata")

# SYSPRO's e.net idle timeout is not documented (our reference confirms no figure): a session
# unused this long is logged on anew before its next call, kept below the timeouts seen in practice.
DEFAULT_SESSION_MINUTES = 15

# What a poll can read (the adapter's entities, kept equal by a test).
ENTITIES: tuple[str, ...] = ("PorMasterHdr", "PorMasterHdr-status", "ApInvoice", "ApInvoice-journal")


@dataclass(frozen=True, kw_only=True)
class SysproConnection(Connection):
    kind: ClassVar[str] = "syspro"
    operator: str
    company_id: str
    poll: PollSettings
    # e.net REST: https://<host>:<port>/SYSPROWCFService/Rest (logon, queries, notes); optional with OData
    base_url: str | None = None
    password: SecretRef | None = None  # the operator's e.net password; optional with OData
    company_password: SecretRef | None = None
    api: SysproApi = "enet"  # how polls read tables: e.net COMFND, or the OData service
    # One e.net session per process is kept across polls; unused this long, it is logged on anew
    session_minutes: int = DEFAULT_SESSION_MINUTES
    odata_url: str | None = None  # https://<server>/SYSPRO8Odata/SYSPROOData (the company is appended)
    odata_password: SecretRef | None = None  # the operator's OData password (Operator Maintenance)
    default_region: str = DEFAULT_REGION  # for supplier phone numbers written without a country code
    outcome_notes: OutcomeNotes | None = None  # delivery, call and reply outcomes as notes on the record


def has_enet(connection: SysproConnection) -> bool:
    """Whether the connection can log on to e.net (polls over e.net, and every note)."""
    return bool(connection.base_url) and connection.password is not None


def notes_unavailable(connection: SysproConnection) -> str | None:
    """Why replies cannot be written back to this connection's records; None when they can."""
    if has_enet(connection):
        return None
    return (f"{connection.name} reads SYSPRO through OData only, which is read-only; notes are written through "
            "e.net, which needs base_url and password")


_ENET_FIELDS = ("base_url", "password")


@f.described({
    "if": {"properties": {"api": {"const": "odata"}}, "required": ["api"]},
    "then": {"required": ["odata_url", "odata_password"],
             "dependentRequired": {"base_url": ["password"], "password": ["base_url"]}},
    "else": {"required": list(_ENET_FIELDS)},
})
def _api_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    if raw.get("api") != "odata":
        return [(f".{name}", "is required unless api is odata") for name in _ENET_FIELDS if name not in raw]
    problems = [(f".{name}", "is required when api is odata") for name in ("odata_url", "odata_password")
                if name not in raw]
    given = [name for name in _ENET_FIELDS if name in raw]
    if len(given) == 1:  # half of e.net would be a connection that cannot write the notes it seems to allow
        missing = next(name for name in _ENET_FIELDS if name not in raw)
        problems.append((f".{missing}", f"is required with {given[0]} (e.net, for notes); or leave both out"))
    return problems


SETTINGS = f.ConnectionSettings(
    SysproConnection,
    {
        "base_url": f.url(),
        "operator": f.text,
        "password": f.secret_ref,
        "company_id": f.text,
        "company_password": f.secret_ref,
        "poll": f.poll,
        "outcome_notes": f.outcome_notes,
        "api": f.one_of(SYSPRO_APIS),
        "odata_url": f.url(),
        "odata_password": f.secret_ref,
        "default_region": f.region,
        "session_minutes": f.int_between(1, 240),
    },
    f.all_problems(f.polled_entity_problems(ENTITIES), _api_problems),
)
