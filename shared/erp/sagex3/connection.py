"""A Sage X3 connection: the Syracuse server and folder, REST or GraphQL reads, SOAP note writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, OutcomeNotes, PollSettings, SecretRef

# What a poll can read (the adapter's entities, kept equal by a test).
ENTITIES: tuple[str, ...] = ("PORDER", "PORDER-approved", "PORDER-delivery", "PINVOICE", "PINVOICE-due", "PAYMENTH")
# The REST classes read, whose representation a connection may override; and the records notes go on.
REST_SOURCES: tuple[str, ...] = ("PORDER", "PORDERQ", "PINVOICE", "PAYMENTH", "BPSUPPLIER", "BPADDRESS", "CONTACT")
NOTE_ENTITIES: tuple[str, ...] = ("PORDER", "PINVOICE", "PAYMENTH", "BPSUPPLIER", "BPCUSTOMER")


@dataclass(frozen=True)
class SageX3Published:
    """A Syracuse REST class and the representation to read it through (``{CLASS}?representation={REP}``)."""

    cls: str
    representation: str


@dataclass(frozen=True)
class SageX3NoteTarget:
    """Where notes go on one kind of record: a SOAP publication, its key, and the text field of a group."""

    public_name: str
    key: str
    group: str
    field: str


@dataclass(frozen=True, kw_only=True)
class SageX3Connection(Connection):
    kind: ClassVar[str] = "sagex3"
    base_url: str  # the Syracuse server, e.g. https://x3.example.com:8124
    folder: str  # the X3 endpoint (folder), e.g. SEED
    username: str  # REST and SOAP: the Basic user; GraphQL: the connected application's user (JWT sub)
    poll: PollSettings
    api: Literal["rest", "graphql"] = "rest"
    password: SecretRef | None = None  # REST reads and SOAP note writes
    client_id: str | None = None  # GraphQL: the connected application (JWT iss)
    client_secret: SecretRef | None = None  # GraphQL: signs the JWT
    token_lifetime_seconds: int = 300
    token_audience: str | None = None  # JWT aud; default: the GraphQL URL
    timeout_seconds: int = 30
    default_region: str = DEFAULT_REGION
    due_window_days: int = 3  # invoices due within this many days alert (once per due date)
    delivery_window_days: int = 0  # purchase order lines expected within this many days alert
    approval_lookback_days: int = 7  # how far back approved purchase orders are compared
    soap_pool_alias: str | None = None  # the SOAP web-service pool; needed to write notes
    soap_language: str = "ENG"
    representations: Mapping[str, SageX3Published] = field(default_factory=dict)  # over the adapter's defaults
    notes: Mapping[str, SageX3NoteTarget] = field(default_factory=dict)  # over the adapter's defaults
    outcome_notes: OutcomeNotes | None = None  # delivery, call and reply outcomes as notes on the record


@f.described({
    "type": "object",
    "properties": {"class": f.schema_of(f.text), "representation": f.schema_of(f.text)},
    "required": ["class", "representation"],
    "additionalProperties": False,
})
def _published(value: Any) -> SageX3Published:
    # "class" is a keyword in Python, so this object is read by hand rather than by object_of.
    if not isinstance(value, dict):
        raise f.Invalid("must be an object")
    allowed = ("class", "representation")
    problems: list[f.Problem] = [(f".{name}", "unknown field") for name in value if name not in allowed]
    parsed: dict[str, str] = {}
    for name in allowed:
        if name not in value:
            problems.append((f".{name}", "is required"))
            continue
        try:
            parsed[name] = f.text(value[name])
        except f.Invalid as exc:
            problems += f.under(f".{name}", exc.problems)
    if problems:
        raise f.Invalid(problems=problems)
    return SageX3Published(parsed["class"], parsed["representation"])


_note_target = f.object_of(SageX3NoteTarget, {"public_name": f.text, "key": f.text, "group": f.text, "field": f.text})


@f.described({
    "if": {"properties": {"api": {"const": "graphql"}}, "required": ["api"]},
    "then": {"required": ["client_id", "client_secret"]},
    "else": {"required": ["password"]},
})
def _credential_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    """REST reads need the user's password; GraphQL reads need the connected application's id and secret."""
    api = raw.get("api", "rest")
    needed = ("password",) if api == "rest" else ("client_id", "client_secret") if api == "graphql" else ()
    return [(f".{name}", f"is required when api is {api}") for name in needed if name not in raw]


SETTINGS = f.ConnectionSettings(
    SageX3Connection,
    {
        "base_url": f.url(),
        "folder": f.text,
        "username": f.text,
        "poll": f.poll,
        "outcome_notes": f.outcome_notes,
        "api": f.one_of(("rest", "graphql")),
        "password": f.secret_ref,
        "client_id": f.text,
        "client_secret": f.secret_ref,
        "token_lifetime_seconds": f.int_between(30, 86400),
        "token_audience": f.url(),
        "timeout_seconds": f.int_between(1, 300),
        "default_region": f.region,
        "due_window_days": f.int_between(0, 90),
        "delivery_window_days": f.int_between(0, 90),
        "approval_lookback_days": f.int_between(1, 90),
        "soap_pool_alias": f.text,
        "soap_language": f.matching(r"[A-Z]{3}", "must be an X3 language code such as ENG"),
        "representations": f.named_objects(REST_SOURCES, _published),
        "notes": f.named_objects(NOTE_ENTITIES, _note_target),
    },
    f.all_problems(f.polled_entity_problems(ENTITIES), _credential_problems),
)
