"""What a loaded configuration is: connections, rules and templates as frozen types.

Nothing here parses: ``fields`` holds the parser kit, each kind's folder its connection
settings, ``rules`` the routing rules and templates, and ``loading`` reads the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from shared.templates import BUILTIN as BUILTIN_TEMPLATES
from shared.templates import Template

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

Channel = str  # a rule channel (sms, voice, slack, email): those the channel kinds in ``shared.kinds`` carry
Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "exists"]
OPS: tuple[str, ...] = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "exists")

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
        from zoneinfo import ZoneInfo  # only the polls need it; a cold start's first request does not

        return ZoneInfo(self.time_zone)


@dataclass(frozen=True, kw_only=True)
class QuietHours:
    """A daily window in the recipient's time zone in which alerts are held until it ends, not dropped."""

    start: str  # local time the window begins, "HH:MM" (e.g. "21:00")
    end: str  # local time it ends, "HH:MM"; earlier than start: the next morning (e.g. "07:00")
    time_zone: str | None = None  # IANA zone of the recipients; a record's own zone field wins; none: UTC


# What can be written back to the ERP record an alert was about, as a note (``outcome_notes``).
OUTCOMES: tuple[str, ...] = ("delivered", "failed", "answered", "reply")


@dataclass(frozen=True, kw_only=True)
class OutcomeNotes:
    """Outcome notes on the ERP record an alert was about: an SMS delivered or failed, a call answered
    (and the key pressed), a reply as the person wrote it; each written once, numbers masked."""

    enabled: bool = True
    on: tuple[str, ...] = OUTCOMES  # which outcomes become notes

    def wants(self, outcome: str) -> bool:
        return self.enabled and outcome in self.on


# The purpose a rule's alerts serve when it names none: consent is given and withdrawn per purpose.
DEFAULT_CATEGORY = "operational"
# The record field that names the recipient's own time zone, when the ERP gives one.
DEFAULT_TIME_ZONE_FIELD = "recipient_time_zone"


@dataclass(frozen=True, kw_only=True)
class Connection:
    """What every connection has; ``kind`` is fixed per subclass (one per folder of ``shared/erp``
    and ``shared/channels``)."""

    kind: ClassVar[str] = ""
    name: str
    ca_bundle: str | None = None  # PEM file for a private CA


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


# What, reached in time, makes an escalation step unnecessary.
ESCALATION_CONDITIONS: tuple[str, ...] = ("delivered", "acknowledged")


@dataclass(frozen=True, kw_only=True)
class EscalationStep:
    """One step of an escalation: a message or call to its recipients, unless the alert got through in time."""

    channel: Channel  # sms or voice
    # Who this step contacts (an on-call list is several entries); left out: the rule's recipients
    to: tuple[Recipient, ...] = ()
    # The Twilio connection it goes through; left out: the rule's via
    via: str | None = None
    # "delivered": skipped once an earlier message or call of the alert reached its recipient;
    # "acknowledged": only someone's acknowledgement stops it (any acknowledgement stops every later step)
    unless: str | None = None
    # Minutes after the previous step's message or call went out (fractions allowed)
    after_minutes: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Escalation:
    """Further steps when an alert is not delivered or not acknowledged in time; the first is the rule's own send."""

    steps: tuple[EscalationStep, ...]


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
    # Minutes after the ERP change within which the alert still helps; a message not sent by then
    # expires instead of arriving late (audited as expired). Left out: no expiry.
    valid_for_minutes: int | None = None
    # Slack approvals: Approve needs a Verify code (sent by SMS through verify_via) when the
    # record's amount is above verify_above, or unknown.
    verify_above: float | None = None
    verify_via: str | None = None
    verify_amount_field: str = "amount"
    verify_phone_field: str | None = None  # the approver's phone in the record; None: their Slack profile
    # The purpose its alerts serve (consent is recorded per number, purpose and channel).
    category: str = DEFAULT_CATEGORY
    # Quiet hours for this rule's alerts (else the via connection's): held to the window's end.
    quiet_hours: QuietHours | None = None
    # Sent at once even inside quiet hours; the audit says so (quiet-hours-overridden).
    critical: bool = False
    # The record field naming the recipient's IANA time zone; it wins over the quiet hours' own zone.
    time_zone_field: str = DEFAULT_TIME_ZONE_FIELD
    # Slack approvals: Reject opens a modal asking why, and the reason goes to Dynamics as the
    # work item's comment; false: Reject decides at once.
    reject_reason: bool = True
    # SMS and calls only: further steps (a call, the next person on call) while nobody acknowledges.
    escalation: Escalation | None = None


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
