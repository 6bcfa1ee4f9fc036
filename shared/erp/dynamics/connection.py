"""A Dynamics 365 F&O connection: the environment, the Entra ID app it signs in as, and an optional poll."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shared.config import fields as f
from shared.config.model import DEFAULT_REGION, Connection, OutcomeNotes, PollSettings, SecretRef

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"

# What the OData poll can read (the adapter's entities, kept equal by a test).
ENTITIES: tuple[str, ...] = ("VendorInvoiceHeaders", "VendInvoiceJourBiEntities", "PurchaseOrderHeadersV2",
                             "VendorPaymentJournalHeaders")


@dataclass(frozen=True, kw_only=True)
class WorkflowSettings:
    """The OData names work items are validated and completed by. Microsoft documents the actions Validate
    and Complete on WorkflowWorkItems and the parameter WorkflowWorkitemInstanceID; OData names are
    case-sensitive, so an environment whose $metadata spells them otherwise sets them here."""

    entity_set: str = "WorkflowWorkItems"
    validate_action: str = "Validate"
    complete_action: str = "Complete"
    work_item_parameter: str = "WorkflowWorkitemInstanceID"
    outcome_parameter: str = "outcome"
    comment_parameter: str = "comment"


@dataclass(frozen=True, kw_only=True)
class AttachmentSettings:
    """Where outcome notes go: a document-attachment entity whose rows of type Note carry a text (F&O's
    document handling, DocuRef: TypeId, Name, Notes, Restriction). Each row names its document by company,
    record kind and key; an environment whose $metadata exposes its attachments otherwise sets the names here."""

    entity_set: str = "DocumentAttachments"
    company_field: str = "dataAreaId"
    entity_field: str = "RefEntity"  # the record kind, e.g. VendorInvoice
    key_field: str = "RefKey"  # the document's key within its company, e.g. the invoice number
    type_field: str = "TypeId"
    note_type: str = "Note"
    name_field: str = "Name"  # carries the outcome's reference, so a note already written is found
    text_field: str = "Notes"
    restriction_field: str = "Restriction"
    restriction: str = "Internal"


# Where a card's "Open in Dynamics 365" goes, per kind of document: F&O's deep-link form, the
# environment with the company (cmp) and the menu item (mi) of the document's list page.
# Placeholders: {environment_url}, {legal_entity} and any record field; values are URL-encoded.
DEFAULT_LINKS: Mapping[str, str] = {
    "VendorInvoice": "{environment_url}/?cmp={legal_entity}&mi=VendInvoiceInfoListPage",
    "LedgerJournal": "{environment_url}/?cmp={legal_entity}&mi=LedgerJournalTable_Daily",
}
DOCUMENT_KINDS: tuple[str, ...] = tuple(DEFAULT_LINKS)


@dataclass(frozen=True, kw_only=True)
class DimensionSettings:
    """How financial dimensions are shown: F&O writes them as one display value, the segments joined
    by the separator in the order of the environment's dimension display format."""

    names: tuple[str, ...] = ()  # the dimension names in display-format order; none: the value as F&O writes it
    separator: str = "-"


WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, kw_only=True)
class SilenceAlarm:
    """An alarm when a legal entity sends no business event for this many business hours (business events
    that stopped: an endpoint deleted, a Key Vault secret rotated, the batch job halted), cleared when one
    comes again. Business hours are the days and the daily window, in the time zone given."""

    business_hours: float  # business hours without an event before the alarm is raised
    days: str = "Mon-Fri"  # business days: a range (Mon-Fri) or a list (Mon,Tue,Thu)
    start: str = "08:00"  # local time the business day begins, HH:MM
    end: str = "18:00"  # local time it ends, HH:MM (later than start)
    time_zone: str = "UTC"  # IANA zone of the business day
    legal_entities: tuple[str, ...] = ()  # the legal entities watched; none: the connection's legal_entities

    def weekdays(self) -> frozenset[int]:
        """The business days as weekday numbers (Monday 0)."""
        found: set[int] = set()
        for part in self.days.split(","):
            first, _, last = part.strip().partition("-")
            low, high = WEEKDAYS.index(first.strip()), WEEKDAYS.index((last or first).strip())
            found.update(range(low, high + 1) if low <= high else [*range(low, 7), *range(0, high + 1)])
        return frozenset(found)


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
    workflow: WorkflowSettings = WorkflowSettings()  # the OData names of the work-item actions
    links: Mapping[str, str] = field(default_factory=dict)  # URL form per document kind, over DEFAULT_LINKS
    dimensions: DimensionSettings = DimensionSettings()
    attachments: AttachmentSettings = AttachmentSettings()  # where outcome notes are written
    outcome_notes: OutcomeNotes | None = None  # delivery, call and reply outcomes as notes on the record
    silence_alarm: SilenceAlarm | None = None  # an alarm when a legal entity's business events stop

    def watched_legal_entities(self) -> tuple[str, ...]:
        """The legal entities the silence alarm watches (none without one)."""
        if self.silence_alarm is None:
            return ()
        return self.silence_alarm.legal_entities or self.legal_entities

    def link_form(self, document_kind: str) -> str:
        """The deep-link form of a kind of document: the connection's own, else the default ("" for none)."""
        return self.links.get(document_kind) or DEFAULT_LINKS.get(document_kind, "")


@f.described({"properties": {"poll": {"properties": {"time_zone": {
    "const": "UTC", "description": "F&O OData date-times are UTC"}}}}})
def _utc_only(raw: Mapping[str, Any]) -> list[f.Problem]:
    poll = raw.get("poll")
    zone = poll.get("time_zone", "UTC") if isinstance(poll, dict) else "UTC"
    # A time_zone that is no text is the time_zone field's own problem.
    if not isinstance(zone, str) or zone == "UTC":
        return []
    # Only a zone other than UTC needs the list of known zones, which is read from disk (milliseconds).
    from zoneinfo import available_timezones

    if zone in available_timezones():
        return [(".poll.time_zone", "F&O OData date-times are UTC; leave time_zone out or set it to UTC")]
    return []


_odata_name = f.matching(r"[A-Za-z_][A-Za-z0-9_]*", "must be an OData name (letters, digits, underscores)")
_workflow = f.object_of(WorkflowSettings, {name: _odata_name for name in (
    "entity_set", "validate_action", "complete_action", "work_item_parameter", "outcome_parameter",
    "comment_parameter")})

@f.described({"type": "string", "pattern": "^(\\{environment_url\\}|https://)",
             "description": "a deep-link form: {environment_url}, {legal_entity} and record fields"})
def _link_form(value: Any) -> str:
    from shared.templates import TemplateError, placeholders

    text = f.text(value)
    try:
        placeholders(text)
    except TemplateError as exc:
        raise f.Invalid(str(exc)) from None
    if not text.startswith(("{environment_url}", "https://")):
        raise f.Invalid("must start with {environment_url} or https://")
    return text


_attachments = f.object_of(AttachmentSettings, {
    **{name: _odata_name for name in ("entity_set", "company_field", "entity_field", "key_field", "type_field",
                                      "name_field", "text_field", "restriction_field")},
    "note_type": f.text, "restriction": f.text})
_dimensions = f.object_of(DimensionSettings, {"names": f.list_of(f.text, allow_empty=True), "separator": f.text})

_DAY = "(" + "|".join(WEEKDAYS) + ")"
_days = f.matching(f"{_DAY}(-{_DAY})?( *, *{_DAY}(-{_DAY})?)*",
                   "must name business days as a range or a list, such as 'Mon-Fri' or 'Mon,Wed,Fri'")


@f.described({"type": "number", "exclusiveMinimum": 0, "maximum": 1000})
def _business_hours(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1000:
        raise f.Invalid("must be a number of hours above 0 (at most 1000)")
    return float(value)


_silence_alarm = f.object_of(SilenceAlarm, {
    "business_hours": _business_hours, "days": _days, "start": f.clock_time, "end": f.clock_time,
    "time_zone": f.time_zone, "legal_entities": f.list_of(f.text)})


def _silence_alarm_problems(raw: Mapping[str, Any]) -> list[f.Problem]:
    alarm = raw.get("silence_alarm")
    if not isinstance(alarm, dict):
        return []
    problems: list[f.Problem] = []
    start, end = alarm.get("start", "08:00"), alarm.get("end", "18:00")
    if isinstance(start, str) and isinstance(end, str) and end <= start:
        problems.append((".silence_alarm.end", "must be later than start (a business day within one date)"))
    if not alarm.get("legal_entities") and not raw.get("legal_entities"):
        problems.append((".silence_alarm.legal_entities",
                         "name the legal entities to watch, here or as the connection's legal_entities"))
    return problems


SETTINGS = f.ConnectionSettings(
    DynamicsConnection,
    {
        "environment_url": f.url(),
        "tenant_id": f.text,
        "client_id": f.text,
        "client_secret": f.secret_ref,
        "authority": f.url(),
        "default_region": f.region,
        "legal_entities": f.list_of(f.text, allow_empty=True),
        "poll": f.poll,
        "outcome_notes": f.outcome_notes,
        "workflow": _workflow,
        "links": f.named_objects(DOCUMENT_KINDS, _link_form),
        "dimensions": _dimensions,
        "attachments": _attachments,
        "silence_alarm": _silence_alarm,
    },
    f.all_problems(_utc_only, f.polled_entity_problems(ENTITIES), _silence_alarm_problems),
)
