"""A QAD connection: the tenant and domain, session or OAuth sign-in, browse ids, and QXtend for notes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, OutcomeNotes, PollSettings, SecretRef

QAD_AUTH_MODES: tuple[str, ...] = ("session", "oauth")
# The browses a QAD connection reads, whose ids it may override ("browses": {name: id}).
QAD_BROWSES: tuple[str, ...] = ("receipts", "invoices", "purchase_orders", "suppliers")
# What a poll can read (the adapter's entities, kept equal by a test).
ENTITIES: tuple[str, ...] = ("GoodsReceipts", "UnmatchedInvoices", "PendingPurchaseOrders")


@dataclass(frozen=True, kw_only=True)
class QxtendSettings:
    """QXtend Inbound, where notes are written: ``{url}/services/QdocWebService``."""

    url: str  # e.g. https://qad.example.com:8443/qxilive
    receiver: str  # the QXtend receiver, sent as wsa:To urn:services-qad-com:<receiver>
    username: str | None = None  # defaults to the connection's username
    password: SecretRef | None = None  # defaults to the connection's password
    version: str = "ERP3_1"  # the QDoc version in the session context
    comment_type: str = ""  # cmt_type of the notes written; blank is QAD's untyped master comment
    language: str | None = None  # cmt_lang; QAD's default when absent


@dataclass(frozen=True, kw_only=True)
class QadConnection(Connection):
    """A QAD EE / Adaptive ERP tenant, read through the Web UI's browses within one domain."""

    kind: ClassVar[str] = "qad"
    base_url: str  # the tenant: https://<host>:<port>/clouderp or /qad-central
    domain: str
    username: str
    password: SecretRef
    poll: PollSettings
    auth: str = "session"  # "session": Web UI login and its cookie; "oauth": {base_url}/oauth/token
    client_id: str | None = None  # oauth only, when the token endpoint wants a client
    client_secret: SecretRef | None = None  # oauth only
    browses: tuple[tuple[str, str], ...] = ()  # browse id per browse name, overriding the defaults
    page_size: int = 500
    default_region: str = DEFAULT_REGION
    qxtend: QxtendSettings | None = None
    outcome_notes: OutcomeNotes | None = None  # delivery, call and reply outcomes as notes on the record

    def browse_id(self, name: str, default: str) -> str:
        return dict(self.browses).get(name, default)


@f.described({"type": "string", "pattern": r"^[^,]*\S[^,]*$"})
def _value(value: Any) -> str:
    # Values travel inside browse filters, where a comma separates the parts.
    text = f.text(value)
    if "," in text:
        raise f.Invalid("must not contain a comma")
    return text


@f.described({
    "description": "The browse id per browse name, over the defaults",
    "type": "object",
    "properties": {name: {"type": "string", "pattern": r"\S"} for name in QAD_BROWSES},
    "additionalProperties": False,
})
def _browses(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise f.Invalid('must be an object of browse ids, e.g. {"receipts": "urn:browse:mfg:..."}')
    problems: list[f.Problem] = []
    for name, browse_id in value.items():
        if not isinstance(browse_id, str) or not browse_id.strip():
            problems.append((f".{name}", "must be a non-empty browse id"))
    if problems:
        raise f.Invalid(problems=problems)
    return tuple(sorted(value.items()))


_qxtend = f.object_of(
    QxtendSettings,
    {
        "url": f.url(),
        "receiver": f.text,
        "username": f.text,
        "password": f.secret_ref,
        "version": f.text,
        "comment_type": f.matching(r"\S{0,20}", "must be a comment type code: no spaces, at most 20 characters"),
        "language": f.text,
    },
)


@f.described({
    "if": {"properties": {"auth": {"const": "oauth"}}, "required": ["auth"]},
    "then": {"dependentRequired": {"client_secret": ["client_id"]}},
    "else": {"properties": {"client_id": False, "client_secret": False}},
})
def _browse_and_auth_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    """Browse names it knows, and client credentials only for oauth."""
    found: list[f.Problem] = []
    browses = raw.get("browses")
    if isinstance(browses, dict):
        known = ", ".join(QAD_BROWSES)
        found += [(f".browses.{name}", f"unknown browse; the browses are {known}")
                  for name in browses if name not in QAD_BROWSES]
    if raw.get("auth", "session") != "oauth":
        found += [(f".{name}", 'is used only with "auth": "oauth"')
                  for name in ("client_id", "client_secret") if name in raw]
    elif "client_secret" in raw and "client_id" not in raw:
        found.append((".client_id", "is required with client_secret"))
    return found


SETTINGS = f.ConnectionSettings(
    QadConnection,
    {
        "base_url": f.url(),
        "domain": _value,
        "username": f.text,
        "password": f.secret_ref,
        "poll": f.poll,
        "outcome_notes": f.outcome_notes,
        "auth": f.one_of(QAD_AUTH_MODES),
        "client_id": f.text,
        "client_secret": f.secret_ref,
        "browses": _browses,
        "page_size": f.int_between(1, 5000),
        "default_region": f.region,
        "qxtend": _qxtend,
    },
    f.all_problems(f.polled_entity_problems(ENTITIES), _browse_and_auth_problems),
)
