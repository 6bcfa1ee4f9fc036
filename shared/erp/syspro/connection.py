"""A SYSPRO connection: the e.net operator and company, and how polls read tables (e.net or OData)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, PollSettings, SecretRef

SysproApi = Literal["enet", "odata"]
SYSPRO_APIS: tuple[str, ...] = ("enet", "odata")

# What a poll can read (the adapter's entities, kept equal by a test).
ENTITIES: tuple[str, ...] = ("PorMasterHdr", "PorMasterHdr-status", "ApInvoice", "ApInvoice-journal")


@dataclass(frozen=True, kw_only=True)
class SysproConnection(Connection):
    kind: ClassVar[str] = "syspro"
    base_url: str  # e.net REST: https://<host>:<port>/SYSPROWCFService/Rest (logon, queries, notes)
    operator: str
    password: SecretRef
    company_id: str
    poll: PollSettings
    company_password: SecretRef | None = None
    api: SysproApi = "enet"  # how polls read tables: e.net COMFND, or the OData service
    odata_url: str | None = None  # https://<server>/SYSPRO8Odata/SYSPROOData (the company is appended)
    odata_password: SecretRef | None = None  # the operator's OData password (Operator Maintenance)
    default_region: str = DEFAULT_REGION  # for supplier phone numbers written without a country code


@f.described({
    "if": {"properties": {"api": {"const": "odata"}}, "required": ["api"]},
    "then": {"required": ["odata_url", "odata_password"]},
})
def _odata_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    if raw.get("api") != "odata":
        return []
    return [(f".{name}", "is required when api is odata") for name in ("odata_url", "odata_password")
            if name not in raw]


SETTINGS = f.ConnectionSettings(
    SysproConnection,
    {
        "base_url": f.url(),
        "operator": f.text,
        "password": f.secret_ref,
        "company_id": f.text,
        "company_password": f.secret_ref,
        "poll": f.poll,
        "api": f.one_of(SYSPRO_APIS),
        "odata_url": f.url(),
        "odata_password": f.secret_ref,
        "default_region": f.region,
    },
    f.all_problems(f.polled_entity_problems(ENTITIES), _odata_problems),
)
