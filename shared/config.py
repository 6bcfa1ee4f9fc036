"""Connections and routing rules: one JSON file, validated once at load into frozen types.

A connection is one ERP (dynamics, syspro, sagex3, qad) or one channel account (twilio,
slack, sendgrid). A rule says: when this ERP connection reports this event and these conditions
hold, send this template over this channel to these recipients.

Validation collects every error of a file, each naming the field path and the reason,
so one run of the loader shows everything to fix. Secrets are never in the file, only
their names (``{"secret": "<name>"}``), read later through ``shared.storage.secrets``.
Nothing is read at import: ``get_config()`` loads the file on first use.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from shared.settings import env_str
from shared.templates import BUILTIN as BUILTIN_TEMPLATES
from shared.templates import Template, TemplateError, placeholders

CONFIG_PATH_SETTING = "CONNECTOR_CONFIG_PATH"

ERP_KINDS: tuple[str, ...] = ("dynamics", "syspro", "sagex3", "qad")
CHANNEL_KINDS: tuple[str, ...] = ("twilio", "slack", "sendgrid")
KINDS: tuple[str, ...] = ERP_KINDS + CHANNEL_KINDS

Channel = Literal["sms", "voice", "slack", "email"]
CHANNELS: tuple[str, ...] = ("sms", "voice", "slack", "email")
# Which kind of connection can carry each channel.
CHANNEL_CONNECTION_KIND: Mapping[str, str] = MappingProxyType(
    {"sms": "twilio", "voice": "twilio", "slack": "slack", "email": "sendgrid"})

Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "exists"]
OPS: tuple[str, ...] = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "exists")

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
DEFAULT_TWILIO_VERIFY_BASE_URL = "https://verify.twilio.com"
DEFAULT_SLACK_API_BASE_URL = "https://slack.com/api/"  # slack_sdk joins method names onto ".../api/"
DEFAULT_SENDGRID_API_BASE_URL = "https://api.sendgrid.com"  # EU regional subusers: https://api.eu.sendgrid.com
DEFAULT_REGION = "US"


class ConfigError(ValueError):
    """The configuration cannot be used; ``errors`` holds one "path: reason" line per problem."""

    def __init__(self, errors: str | Iterable[str], source: str | None = None) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        self.source = source
        super().__init__(self.errors)

    def __str__(self) -> str:
        lines = "\n".join(self.errors)
        if self.source is None:
            return lines
        count = len(self.errors)
        return f"{self.source}: {count} configuration error{'' if count == 1 else 's'}\n{lines}"


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """The name of a secret in Key Vault (or, locally, in the environment)."""

    name: str


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """How often and what to poll; ``overlap_seconds`` re-reads a margin to cover clock skew."""

    entities: tuple[str, ...]
    interval_minutes: int = 10
    overlap_seconds: int = 120
    time_zone: str = "UTC"  # the ERP's local time zone, for date-only or zone-less stamps

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True, kw_only=True)
class Connection:
    """What every connection has; ``kind`` is fixed per subclass."""

    kind: ClassVar[str] = ""
    name: str
    ca_bundle: str | None = None  # PEM file for a private CA

    @property
    def is_erp(self) -> bool:
        return self.kind in ERP_KINDS


@dataclass(frozen=True, kw_only=True)
class DynamicsConnection(Connection):
    kind: ClassVar[str] = "dynamics"
    environment_url: str
    tenant_id: str
    client_id: str
    client_secret: SecretRef
    authority: str = DEFAULT_AUTHORITY
    default_region: str = DEFAULT_REGION
    legal_entities: tuple[str, ...] = ()
    poll: PollSettings | None = None  # OData fallback when Business Events are not set up


@dataclass(frozen=True, kw_only=True)
class TwilioConnection(Connection):
    kind: ClassVar[str] = "twilio"
    account_sid: str
    api_key_sid: str
    api_key_secret: SecretRef
    auth_token: SecretRef  # the key Twilio signs webhooks with (X-Twilio-Signature)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    verify_service_sid: str | None = None
    api_base_url: str = DEFAULT_TWILIO_API_BASE_URL
    verify_base_url: str = DEFAULT_TWILIO_VERIFY_BASE_URL
    default_region: str = DEFAULT_REGION


@dataclass(frozen=True, kw_only=True)
class SlackConnection(Connection):
    kind: ClassVar[str] = "slack"
    bot_token: SecretRef
    signing_secret: SecretRef
    api_base_url: str = DEFAULT_SLACK_API_BASE_URL
    default_channel: str | None = None


SysproApi = Literal["enet", "odata"]
SYSPRO_APIS: tuple[str, ...] = ("enet", "odata")


@dataclass(frozen=True, kw_only=True)
class SendGridConnection(Connection):
    kind: ClassVar[str] = "sendgrid"
    api_key: SecretRef  # a key with the Mail Send permission
    from_email: str  # a verified sender of the SendGrid account
    from_name: str | None = None
    api_base_url: str = DEFAULT_SENDGRID_API_BASE_URL
    # The Signed Event Webhook's verification key (base64 DER, as SendGrid shows it): public, not a secret.
    event_webhook_public_key: str | None = None


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


QAD_AUTH_MODES: tuple[str, ...] = ("session", "oauth")


# The browses a QAD connection reads, whose ids it may override ("browses": {name: id}).
QAD_BROWSES: tuple[str, ...] = ("receipts", "invoices", "purchase_orders", "suppliers")


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

    def browse_id(self, name: str, default: str) -> str:
        return dict(self.browses).get(name, default)


@dataclass(frozen=True)
class Condition:
    """``record[field] <op> value``; plain data, evaluated by the router, never eval'd."""

    field: str
    op: Op
    value: Any  # str, int, float, bool, None, or a tuple of those for in / not_in


@dataclass(frozen=True)
class Recipient:
    """A fixed address (``value``) or the name of the record field that holds one (``field``)."""

    value: str | None = None
    field: str | None = None

    @property
    def is_lookup(self) -> bool:
        return self.field is not None


@dataclass(frozen=True, kw_only=True)
class Rule:
    id: str
    source: str
    channel: Channel
    via: str
    to: tuple[Recipient, ...]
    template: str
    event: str | None = None  # None matches every event of the source
    when: tuple[Condition, ...] = ()  # all must hold
    verify: bool = False  # demand a Verify one-time passcode before acting on the answer
    priority: int = 100  # lower numbers first
    # Slack approvals: Approve needs a Verify code (sent by SMS through verify_via) when the
    # record's amount is above verify_above, or unknown.
    verify_above: float | None = None
    verify_via: str | None = None
    verify_amount_field: str = "amount"
    verify_phone_field: str | None = None  # the approver's phone in the record; None: their Slack profile


C = TypeVar("C", bound=Connection)


@dataclass(frozen=True)
class AppConfig:
    connections: Mapping[str, Connection]
    rules: tuple[Rule, ...] = ()
    templates: Mapping[str, Template] = field(default_factory=dict)  # built-ins, then the file's

    def __post_init__(self) -> None:
        # Read-only views, so a loaded configuration cannot be changed behind the cache's back.
        object.__setattr__(self, "connections", MappingProxyType(dict(self.connections)))
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "templates", MappingProxyType({**BUILTIN_TEMPLATES, **self.templates}))

    def template(self, name: str) -> Template:
        return self.templates[name]

    def connection(self, name: str) -> Connection:
        try:
            return self.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise KeyError(f"no connection named {name!r} in the configuration (known: {known})") from None

    def connection_of(self, name: str, cls: type[C]) -> C:
        """``connection(name)``, checked to be of the given class (e.g. ``TwilioConnection``)."""
        found = self.connection(name)
        if not isinstance(found, cls):
            raise TypeError(f"connection {name!r} is a {found.kind} connection, not {cls.kind}")
        return found

    def rules_for(self, source: str) -> tuple[Rule, ...]:
        """The rules of one ERP connection, lowest priority number first, then in file order."""
        return tuple(sorted((rule for rule in self.rules if rule.source == source), key=lambda rule: rule.priority))


# --- field parsers -----------------------------------------------------------------------
# A parser takes the raw JSON value and returns the typed value, or raises _Invalid.
# Problems are (relative path, reason) pairs, so nested objects report full paths.

Problem = tuple[str, str]
Parser = Callable[[Any], Any]


class _Invalid(Exception):
    def __init__(self, reason: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(reason)
        self.problems: list[Problem] = problems if problems is not None else [("", reason)]


def _under(prefix: str, problems: Iterable[Problem]) -> list[Problem]:
    return [(prefix + path, reason) for path, reason in problems]


def _render(prefix: str, problems: Iterable[Problem]) -> list[str]:
    return [f"{prefix}{path}: {reason}" for path, reason in problems]


_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
_NAME_RULE = "must be 1-40 lowercase letters, digits or hyphens, starting with a letter"
_SECRET_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_SECRET_REF_REASON = 'must be a secret reference {"secret": "<name>"}'
_URL_REASON = "must be an https URL (http only for loopback hosts)"
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_E164_REASON = "must be an E.164 phone number such as +14155550123"
# Channel id (C…, G…, D…) or user id for a DM, or a channel name with or without '#'.
_SLACK_TARGET = re.compile(r"#?\w[\w.-]{0,79}")
_SLACK_TARGET_REASON = "must be a Slack channel id or name such as C0123ABCD or #ap-approvals"
# One plain address (no display name): a local part without spaces or brackets, a dotted domain.
EMAIL_ADDRESS = re.compile(
    r"[^@\s<>()\[\],;:\"]{1,64}@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_EMAIL_REASON = "must be an email address such as ap@contoso.com"


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _Invalid(_NAME_RULE)
    return value


def _matching(pattern: str, reason: str) -> Parser:
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise _Invalid(reason)
        return value

    return parse


def _sid(prefix: str) -> Parser:
    return _matching(prefix + r"[0-9a-fA-F]{32}", f"must be '{prefix}' followed by 32 hex digits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _integer(value: Any) -> int:
    if not _is_int(value):
        raise _Invalid("must be a whole number")
    return value


def _int_between(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if not _is_int(value) or not low <= value <= high:
            raise _Invalid(f"must be a whole number from {low} to {high}")
        return value

    return parse


def _non_negative_number(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise _Invalid("must be a number of at least 0")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _one_of(choices: tuple[str, ...]) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _list_of(item: Parser, *, allow_empty: bool = False) -> Parser:
    def parse(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise _Invalid("must be a list" if allow_empty else "must be a non-empty list")
        items: list[Any] = []
        problems: list[Problem] = []
        for index, raw in enumerate(value):
            try:
                items.append(item(raw))
            except _Invalid as exc:
                problems += _under(f"[{index}]", exc.problems)
        if problems:
            raise _Invalid(problems=problems)
        return tuple(items)

    return parse


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(*, trailing_slash: bool = False) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(_URL_REASON)
        text = value.strip()
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise _Invalid(_URL_REASON) from None
        host = parts.hostname
        if not host or not (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))):
            raise _Invalid(_URL_REASON)
        if parts.username or parts.password:
            raise _Invalid("must not hold credentials; name a secret in the credential field instead")
        if parts.query or parts.fragment:
            raise _Invalid("must be a base URL, without query or fragment")
        base = text.rstrip("/")
        return base + "/" if trailing_slash else base

    return parse


def _secret_ref(value: Any) -> SecretRef:
    # Never echo the value: a plain string here is most likely the secret itself.
    if isinstance(value, str):
        raise _Invalid(f"{_SECRET_REF_REASON}, not a value")
    if not isinstance(value, dict) or set(value) != {"secret"}:
        raise _Invalid(_SECRET_REF_REASON)
    name = value["secret"]
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        raise _Invalid("secret name must be 1-127 letters, digits or hyphens (Key Vault rules)")
    return SecretRef(name)


def _time_zone(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("must be an IANA time zone name such as 'America/Chicago'")
    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):  # not found, not a normalized key, a folder like "America"
        raise _Invalid(f"unknown time zone {value!r}; use an IANA name such as 'America/Chicago'") from None
    return value


def _object_of(cls: type, parsers: Mapping[str, Parser]) -> Parser:
    def parse(value: Any) -> Any:
        values, problems = _read_fields(value, cls, parsers)
        if problems:
            raise _Invalid(problems=problems)
        return cls(**values)

    return parse


def _read_fields(raw: Any, cls: type, parsers: Mapping[str, Parser]) -> tuple[dict[str, Any], list[Problem]]:
    """Parse the fields of one JSON object for dataclass ``cls``: the values that parsed, and the problems.

    A field is required when the dataclass gives it no default; absent optional fields
    are left out so the dataclass default applies.
    """
    if not isinstance(raw, dict):
        return {}, [("", "must be an object")]
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in raw.items():
        parse = parsers.get(key)
        if parse is None:
            problems.append((f".{key}", "unknown field"))
            continue
        try:
            values[key] = parse(value)
        except _Invalid as exc:
            problems += _under(f".{key}", exc.problems)
    for key in _required_fields(cls):
        if key in parsers and key not in raw:
            problems.append((f".{key}", "is required"))
    return values, problems


def _required_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


# --- connections -------------------------------------------------------------------------

_region = _matching(r"[A-Z]{2}", "must be an ISO 3166 alpha-2 country code such as 'US'")
_poll = _object_of(
    PollSettings,
    {
        "interval_minutes": _int_between(1, 1440),
        "entities": _list_of(_text),
        "overlap_seconds": _int_between(0, 3600),
        "time_zone": _time_zone,
    },
)
_COMMON_PARSERS: Mapping[str, Parser] = {"kind": _text, "ca_bundle": _text}


def _valid_zones() -> set[str]:
    from zoneinfo import available_timezones

    return available_timezones()


def _poll_entity_problems(kind: str) -> Callable[[Mapping[str, Any]], list[Problem]]:
    """Whether each entity named under ``poll.entities`` is one the kind's adapter can poll."""

    def problems(raw: Mapping[str, Any]) -> list[Problem]:
        from shared.erp.polling import polled_entities

        poll = raw.get("poll")
        entities = poll.get("entities") if isinstance(poll, dict) else None
        if not isinstance(entities, list):
            return []  # reported by the field parser
        found: list[Problem] = []
        if kind == "dynamics" and poll.get("time_zone", "UTC") in _valid_zones() - {"UTC"}:
            found.append((".poll.time_zone", "F&O OData date-times are UTC; leave time_zone out or set it to UTC"))
        try:
            known = polled_entities(kind)
        except ModuleNotFoundError:
            return [*found, (".poll", f"{kind} connections cannot be polled in this version")]
        names = ", ".join(known)
        return [*found, *((f".poll.entities[{index}]", f"cannot poll {name!r}; entities that can be polled: {names}")
                         for index, name in enumerate(entities) if isinstance(name, str) and name not in known)]

    return problems


def _event_public_key(value: Any) -> str:
    """SendGrid's verification key: base64 DER of an ECDSA P-256 public key (PEM armour is taken off)."""
    from shared.channels.sendgrid.signature import InvalidPublicKey, public_key_text

    try:
        return public_key_text(value)
    except InvalidPublicKey as exc:
        raise _Invalid(str(exc)) from None


def _syspro_problems(raw: Mapping[str, Any]) -> list[Problem]:
    found = _poll_entity_problems("syspro")(raw)
    if raw.get("api") == "odata":
        found += [(f".{name}", "is required when api is odata") for name in ("odata_url", "odata_password")
                  if name not in raw]
    return found


def _twilio_sender_problems(raw: Mapping[str, Any]) -> list[Problem]:
    if "from_number" in raw or "messaging_service_sid" in raw:
        return []
    return [(".from_number", "is required unless messaging_service_sid is given")]


def _qad_value(value: Any) -> str:
    # Values travel inside browse filters, where a comma separates the parts.
    text = _text(value)
    if "," in text:
        raise _Invalid("must not contain a comma")
    return text


def _qad_browses(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _Invalid('must be an object of browse ids, e.g. {"receipts": "urn:browse:mfg:..."}')
    problems: list[Problem] = []
    for name, browse_id in value.items():
        if not isinstance(browse_id, str) or not browse_id.strip():
            problems.append((f".{name}", "must be a non-empty browse id"))
    if problems:
        raise _Invalid(problems=problems)
    return tuple(sorted(value.items()))


_qxtend = _object_of(
    QxtendSettings,
    {
        "url": _url(),
        "receiver": _text,
        "username": _text,
        "password": _secret_ref,
        "version": _text,
        "comment_type": _matching(r"\S{0,20}", "must be a comment type code: no spaces, at most 20 characters"),
        "language": _text,
    },
)


def _qad_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """Entities the adapter can poll, browse names it knows, and client credentials only for oauth."""
    found = _poll_entity_problems("qad")(raw)
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


def _sagex3_published(value: Any) -> SageX3Published:
    # "class" is a keyword in Python, so this object is read by hand rather than by _object_of.
    if not isinstance(value, dict):
        raise _Invalid("must be an object")
    allowed = ("class", "representation")
    problems: list[Problem] = [(f".{name}", "unknown field") for name in value if name not in allowed]
    parsed: dict[str, str] = {}
    for name in allowed:
        if name not in value:
            problems.append((f".{name}", "is required"))
            continue
        try:
            parsed[name] = _text(value[name])
        except _Invalid as exc:
            problems += _under(f".{name}", exc.problems)
    if problems:
        raise _Invalid(problems=problems)
    return SageX3Published(parsed["class"], parsed["representation"])


_sagex3_note_target = _object_of(
    SageX3NoteTarget, {"public_name": _text, "key": _text, "group": _text, "field": _text}
)


def _named_objects(kind: str, names_attribute: str, item: Parser) -> Parser:
    """An object whose keys must be among the adapter's ``names_attribute`` and whose values parse with ``item``."""

    def parse(value: Any) -> Mapping[str, Any]:
        from shared.erp.polling import adapter

        if not isinstance(value, dict):
            raise _Invalid("must be an object")
        known: tuple[str, ...] = tuple(getattr(adapter(kind), names_attribute))
        parsed: dict[str, Any] = {}
        problems: list[Problem] = []
        for name, body in value.items():
            if name not in known:
                problems.append((f".{name}", f"unknown name; one of {', '.join(known)}"))
                continue
            try:
                parsed[name] = item(body)
            except _Invalid as exc:
                problems += _under(f".{name}", exc.problems)
        if problems:
            raise _Invalid(problems=problems)
        return MappingProxyType(parsed)

    return parse


def _sagex3_credential_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """REST reads need the user's password; GraphQL reads need the connected application's id and secret."""
    api = raw.get("api", "rest")
    needed = ("password",) if api == "rest" else ("client_id", "client_secret") if api == "graphql" else ()
    return [(f".{name}", f"is required when api is {api}") for name in needed if name not in raw]


Check = Callable[[Mapping[str, Any]], list[Problem]]


def _all_problems(*checks: Check) -> Check:
    def problems(raw: Mapping[str, Any]) -> list[Problem]:
        return [problem for check in checks for problem in check(raw)]

    return problems


@dataclass(frozen=True)
class _KindSpec:
    cls: type[Connection]
    parsers: Mapping[str, Parser]
    check: Callable[[Mapping[str, Any]], list[Problem]] | None = None


_KIND_SPECS: Mapping[str, _KindSpec] = {
    "dynamics": _KindSpec(
        DynamicsConnection,
        {
            "environment_url": _url(),
            "tenant_id": _text,
            "client_id": _text,
            "client_secret": _secret_ref,
            "authority": _url(),
            "default_region": _region,
            "legal_entities": _list_of(_text, allow_empty=True),
            "poll": _poll,
        },
        _poll_entity_problems("dynamics"),
    ),
    "twilio": _KindSpec(
        TwilioConnection,
        {
            "account_sid": _sid("AC"),
            "api_key_sid": _sid("SK"),
            "api_key_secret": _secret_ref,
            "auth_token": _secret_ref,
            "from_number": _matching(_E164.pattern, _E164_REASON),
            "messaging_service_sid": _sid("MG"),
            "verify_service_sid": _sid("VA"),
            "api_base_url": _url(),
            "verify_base_url": _url(),
            "default_region": _region,
        },
        _twilio_sender_problems,
    ),
    "slack": _KindSpec(
        SlackConnection,
        {
            "bot_token": _secret_ref,
            "signing_secret": _secret_ref,
            "api_base_url": _url(trailing_slash=True),
            "default_channel": _matching(_SLACK_TARGET.pattern, _SLACK_TARGET_REASON),
        },
    ),
    "sendgrid": _KindSpec(
        SendGridConnection,
        {
            "api_key": _secret_ref,
            "from_email": _matching(EMAIL_ADDRESS.pattern, _EMAIL_REASON),
            "from_name": _text,
            "api_base_url": _url(),
            "event_webhook_public_key": _event_public_key,
        },
    ),
    "syspro": _KindSpec(
        SysproConnection,
        {
            "base_url": _url(),
            "operator": _text,
            "password": _secret_ref,
            "company_id": _text,
            "company_password": _secret_ref,
            "poll": _poll,
            "api": _one_of(SYSPRO_APIS),
            "odata_url": _url(),
            "odata_password": _secret_ref,
            "default_region": _region,
        },
        _syspro_problems,
    ),
    "sagex3": _KindSpec(
        SageX3Connection,
        {
            "base_url": _url(),
            "folder": _text,
            "username": _text,
            "poll": _poll,
            "api": _one_of(("rest", "graphql")),
            "password": _secret_ref,
            "client_id": _text,
            "client_secret": _secret_ref,
            "token_lifetime_seconds": _int_between(30, 86400),
            "token_audience": _url(),
            "timeout_seconds": _int_between(1, 300),
            "default_region": _region,
            "due_window_days": _int_between(0, 90),
            "delivery_window_days": _int_between(0, 90),
            "approval_lookback_days": _int_between(1, 90),
            "soap_pool_alias": _text,
            "soap_language": _matching(r"[A-Z]{3}", "must be an X3 language code such as ENG"),
            "representations": _named_objects("sagex3", "rest_sources", _sagex3_published),
            "notes": _named_objects("sagex3", "note_entities", _sagex3_note_target),
        },
        _all_problems(_poll_entity_problems("sagex3"), _sagex3_credential_problems),
    ),
    "qad": _KindSpec(
        QadConnection,
        {
            "base_url": _url(),
            "domain": _qad_value,
            "username": _text,
            "password": _secret_ref,
            "poll": _poll,
            "auth": _one_of(QAD_AUTH_MODES),
            "client_id": _text,
            "client_secret": _secret_ref,
            "browses": _qad_browses,
            "page_size": _int_between(1, 5000),
            "default_region": _region,
            "qxtend": _qxtend,
        },
        _qad_problems,
    ),
}


def _declared_kind(body: Any) -> str | None:
    kind = body.get("kind") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) and kind in _KIND_SPECS else None


def _build_connection(name: str, body: Any) -> Connection:
    if not isinstance(body, dict):
        raise _Invalid("must be an object")
    if "kind" not in body:
        raise _Invalid(problems=[(".kind", f"is required: one of {', '.join(KINDS)}")])
    spec = _KIND_SPECS.get(body["kind"]) if isinstance(body["kind"], str) else None
    if spec is None:
        # The other fields depend on the kind, so there is nothing more to check.
        raise _Invalid(problems=[(".kind", f"must be one of {', '.join(KINDS)}")])
    values, problems = _read_fields(body, spec.cls, {**_COMMON_PARSERS, **spec.parsers})
    if spec.check is not None:
        problems += spec.check(body)
    if problems:
        raise _Invalid(problems=problems)
    values.pop("kind")
    return spec.cls(name=name, **values)


@dataclass
class _Connections:
    """Connections that validated, and the kind each name in the file declares (None when unusable)."""

    built: dict[str, Connection]
    declared: dict[str, str | None]


def _parse_connections(raw: Any, errors: list[str]) -> _Connections:
    found = _Connections({}, {})
    if not isinstance(raw, dict):
        errors.append("connections: must be an object of named connections")
        return found
    for name, body in raw.items():
        path = f"connections.{name}"
        if not _NAME.fullmatch(name):
            errors.append(f"{path}: connection name {_NAME_RULE}")
        found.declared[name] = _declared_kind(body)
        try:
            found.built[name] = _build_connection(name, body)
        except _Invalid as exc:
            errors += _render(path, exc.problems)
    return found


# --- rules -------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def _condition_value(value: Any) -> Any:
    if isinstance(value, list):
        if not all(isinstance(item, _SCALARS) for item in value):
            raise _Invalid("list items must be strings, numbers, booleans or null")
        return tuple(value)
    if not isinstance(value, _SCALARS):
        raise _Invalid("must be a string, number, boolean, null or a list of those")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _value_problem(op: str, value: Any) -> str | None:
    """Why ``value`` does not suit ``op``, or None when it does."""
    if op in ("in", "not_in"):
        return None if isinstance(value, tuple) and value else f"'{op}' needs a non-empty list"
    if isinstance(value, tuple):
        return f"'{op}' needs a single value, not a list"
    if op in ("gt", "ge", "lt", "le"):
        return None if _is_number(value) or _is_iso_date(value) else f"'{op}' needs a number or an ISO 8601 date"
    if op == "exists":
        return None if isinstance(value, bool) else "'exists' needs true or false"
    if op == "contains":
        return None if isinstance(value, str) or _is_number(value) else "'contains' needs a string or a number"
    return None


_CONDITION_PARSERS: Mapping[str, Parser] = {"field": _text, "op": _one_of(OPS), "value": _condition_value}


def _condition(raw: Any) -> Condition:
    values, problems = _read_fields(raw, Condition, _CONDITION_PARSERS)
    if not problems:
        reason = _value_problem(values["op"], values["value"])
        if reason:
            problems.append((".value", reason))
    if problems:
        raise _Invalid(problems=problems)
    return Condition(**values)


def _recipient(raw: Any) -> Recipient:
    if isinstance(raw, str) and raw.strip():
        return Recipient(value=raw)
    if isinstance(raw, dict) and set(raw) == {"field"}:
        try:
            return Recipient(field=_text(raw["field"]))
        except _Invalid as exc:
            raise _Invalid(problems=_under(".field", exc.problems)) from None
    raise _Invalid('must be an address string or {"field": "<record field>"}')


_RULE_PARSERS: Mapping[str, Parser] = {
    "id": _name,
    "source": _text,
    "event": _text,
    "when": _list_of(_condition, allow_empty=True),
    "channel": _one_of(CHANNELS),
    "via": _text,
    "to": _list_of(_recipient),
    "template": _text,
    "verify": _boolean,
    "priority": _integer,
    "verify_above": _non_negative_number,
    "verify_via": _text,
    "verify_amount_field": _text,
    "verify_phone_field": _text,
}
_APPROVAL_CODE_FIELDS = ("verify_above", "verify_via", "verify_amount_field", "verify_phone_field")


def _source_problems(source: str, found: _Connections) -> list[Problem]:
    if source not in found.declared:
        return [(".source", f"unknown connection {source!r}")]
    kind = found.declared[source]
    if kind is not None and kind not in ERP_KINDS:
        return [(".source", f"{source!r} is a {kind} connection; a source must be one of {', '.join(ERP_KINDS)}")]
    return []


def _via_problems(via: str, channel: str | None, found: _Connections) -> list[Problem]:
    if via not in found.declared:
        return [(".via", f"unknown connection {via!r}")]
    kind, needed = found.declared[via], CHANNEL_CONNECTION_KIND.get(channel or "")
    if kind is not None and needed is not None and kind != needed:
        return [(".via", f"channel {channel!r} needs a {needed} connection; {via!r} is a {kind} connection")]
    return []


def _verify_problems(via: str, found: _Connections, path: str = ".verify",
                     needs: str = "needs a twilio connection with verify_service_sid as via") -> list[Problem]:
    if found.declared.get(via) is None:
        return []  # unknown or broken connection: reported on its own
    connection = found.built.get(via)
    if connection is None and found.declared[via] == "twilio":
        return []  # a twilio connection with errors of its own; cannot tell yet
    if isinstance(connection, TwilioConnection) and connection.verify_service_sid:
        return []
    return [(path, f"{needs}; {via!r} has none")]


def _approval_code_problems(values: Mapping[str, Any], written: Iterable[str], found: _Connections) -> list[Problem]:
    """verify_above and verify_via go together, on slack rules only, via a Verify service.

    ``written`` are the rule's field names as in the file (a field that did not parse is
    reported on its own, not as missing).
    """
    given = [name for name in _APPROVAL_CODE_FIELDS if name in written]
    if not given:
        return []
    if values.get("channel") not in (None, "slack"):
        return [(f".{given[0]}", "only slack rules ask for a code on Approve; sms and voice rules use verify")]
    problems = [(f".{needed}", f"is required with {given[0]}")
                for needed in ("verify_above", "verify_via") if needed not in written]
    via = values.get("verify_via")
    if via is not None:
        if via not in found.declared:
            problems.append((".verify_via", f"unknown connection {via!r}"))
        else:
            problems += _verify_problems(via, found, ".verify_via",
                                         "must name a twilio connection with verify_service_sid")
    return problems


_RECIPIENT_FORMS: Mapping[str, tuple[re.Pattern[str], str]] = {
    "slack": (_SLACK_TARGET, _SLACK_TARGET_REASON), "email": (EMAIL_ADDRESS, _EMAIL_REASON)}


def _recipient_problems(channel: str, recipients: tuple[Recipient, ...]) -> list[Problem]:
    pattern, reason = _RECIPIENT_FORMS.get(channel, (_E164, _E164_REASON))
    return [
        (f".to[{index}]", reason)
        for index, recipient in enumerate(recipients)
        if recipient.value is not None and not pattern.fullmatch(recipient.value)
    ]


def _rule_problems(values: Mapping[str, Any], written: Iterable[str], found: _Connections) -> list[Problem]:
    """Checks that look beyond one field: references to connections, recipients for the channel."""
    problems: list[Problem] = []
    channel, via = values.get("channel"), values.get("via")
    if "source" in values:
        problems += _source_problems(values["source"], found)
    if via is not None:
        problems += _via_problems(via, channel, found)
        if values.get("verify"):
            problems += _verify_problems(via, found)
    if channel is not None and "to" in values:
        problems += _recipient_problems(channel, values["to"])
    problems += _approval_code_problems(values, written, found)
    return problems


def _parse_rules(raw: Any, found: _Connections, errors: list[str]) -> list[Rule]:
    if not isinstance(raw, list):
        errors.append("rules: must be a list")
        return []
    rules: list[Rule] = []
    first_index: dict[str, int] = {}
    for index, body in enumerate(raw):
        values, problems = _read_fields(body, Rule, _RULE_PARSERS)
        problems += _rule_problems(values, body if isinstance(body, dict) else (), found)
        rule_id = values.get("id")
        if rule_id in first_index:
            problems.append((".id", f"duplicate rule id {rule_id!r} (first used by rules[{first_index[rule_id]}])"))
        elif rule_id is not None:
            first_index[rule_id] = index
        if problems:
            errors += _render(f"rules[{index}]", problems)
        else:
            rules.append(Rule(**values))
    return rules


# --- templates ---------------------------------------------------------------------------


def _template_text(value: Any) -> str:
    text = _text(value)
    try:
        placeholders(text)
    except TemplateError as exc:
        raise _Invalid(str(exc)) from None
    return text


_template = _object_of(Template, {"sms": _template_text, "voice": _template_text, "gather": _boolean,
                                  "subject": _template_text, "email": _template_text})


def _parse_templates(raw: Any, errors: list[str]) -> dict[str, Template]:
    if not isinstance(raw, dict):
        errors.append("templates: must be an object of named templates")
        return {}
    templates: dict[str, Template] = {}
    for name, body in raw.items():
        if not _NAME.fullmatch(name):
            errors.append(f"templates.{name}: template name {_NAME_RULE}")
            continue
        try:
            templates[name] = _template(body)
        except _Invalid as exc:
            errors += _render(f"templates.{name}", exc.problems)
    return templates


def _template_problems(rules: list[Rule], templates: Mapping[str, Template]) -> list[str]:
    """Each rule names a known template that has text for its channel (Slack cards need none;
    an email without text of its own sends the SMS text)."""
    problems = []
    for index, rule in enumerate(rules):
        template = templates.get(rule.template)
        if template is None:
            known = ", ".join(sorted(templates))
            problems.append(f"rules[{index}].template: unknown template {rule.template!r} (known: {known})")
        elif rule.channel in ("sms", "voice") and not getattr(template, rule.channel):
            problems.append(f"rules[{index}].template: template {rule.template!r} has no {rule.channel} text")
        elif rule.channel == "email" and not (template.email or template.sms):
            problems.append(f"rules[{index}].template: template {rule.template!r} has no email (or sms) text")
    return problems


# --- loading -----------------------------------------------------------------------------

_TOP_LEVEL_FIELDS = ("connections", "rules", "templates", "$schema")


def config_from_dict(data: Any, *, source: str | None = None) -> AppConfig:
    """Validate a parsed configuration; raise ``ConfigError`` with every problem found."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): must be a JSON object with connections and rules", source)
    errors = [f"{key}: unknown field" for key in data if key not in _TOP_LEVEL_FIELDS]
    if "connections" not in data:
        errors.append("connections: is required")
    found = _parse_connections(data.get("connections", {}), errors)
    rules = _parse_rules(data.get("rules", []), found, errors)
    templates = _parse_templates(data.get("templates", {}), errors)
    errors += _template_problems(rules, {**BUILTIN_TEMPLATES, **templates})
    if errors:
        raise ConfigError(errors, source)
    return AppConfig(connections=found.built, rules=tuple(rules), templates=templates)


def _collecting_duplicates(duplicates: list[str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    # json keeps the last of two equal keys without a word; a repeated connection name would vanish.
    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    return build


def load_config(path: str | Path) -> AppConfig:
    """Read and validate the JSON configuration file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM some Windows editors add
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
    duplicates: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=_collecting_duplicates(duplicates))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    errors = [f"{key}: duplicate key in a JSON object (the later one would win)" for key in duplicates]
    try:
        config = config_from_dict(data, source=str(path))
    except ConfigError as exc:
        raise ConfigError(errors + exc.errors, str(path)) from None
    if errors:
        raise ConfigError(errors, str(path))
    return config


def app_root() -> Path:
    """The folder that holds the ``shared`` package (the repository, or the deployed app)."""
    return Path(__file__).resolve().parent.parent


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The file named by ``CONNECTOR_CONFIG_PATH``; a relative path is taken from the app root."""
    raw = env_str(CONFIG_PATH_SETTING, env=env)
    if not raw:
        raise ConfigError(
            f"{CONFIG_PATH_SETTING}: not set; give the path of the connections and rules JSON file, "
            "absolute or relative to the app root (e.g. config/connections.json)"
        )
    path = Path(raw)
    return path if path.is_absolute() else app_root() / path


_config: AppConfig | None = None
_config_lock = threading.Lock()


def get_config() -> AppConfig:
    """The process-wide configuration, loaded on first use and kept."""
    global _config
    with _config_lock:
        if _config is None:
            _config = load_config(config_path())
        return _config


def reset_config() -> None:
    """Forget the loaded configuration, so the next ``get_config()`` reads the file again (tests)."""
    global _config
    with _config_lock:
        _config = None
