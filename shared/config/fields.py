"""The kit each kind's connection settings are written with: field parsers, checks, and problems.

A parser takes the raw JSON value and returns the typed value, or raises ``Invalid``.
Problems are (relative path, reason) pairs, so nested objects report full paths and one
run of the loader shows every problem of a file.

Each parser also carries the JSON Schema fragment of what it accepts (``described``), and
the factories compose them, so ``shared.config.schema`` publishes the file's schema from
these same declarations. Composed fragments are built on demand: a cold start builds none.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shared.config.model import OUTCOMES, Connection, OutcomeNotes, PollSettings, QuietHours, SecretRef

Problem = tuple[str, str]
Parser = Callable[[Any], Any]
Check = Callable[[Mapping[str, Any]], list[Problem]]
Schema = dict[str, Any]
# A fragment, or a function that builds one when the schema is generated.
SchemaSource = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])


class Invalid(Exception):
    def __init__(self, reason: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(reason)
        self.problems: list[Problem] = problems if problems is not None else [("", reason)]


def described(fragment: SchemaSource, *, shared_as: str | None = None) -> Callable[[F], F]:
    """Attach the JSON Schema fragment of what a parser (or a check) accepts.

    ``shared_as`` names a fragment used in many places: the schema holds it once under
    ``$defs`` and refers to it by that name.
    """

    def attach(parse: F) -> F:
        parse.schema = fragment  # type: ignore[attr-defined]
        parse.schema_name = shared_as  # type: ignore[attr-defined]
        return parse

    return attach


def schema_of(parse: Callable[..., Any], *, inline: bool = False) -> Schema:
    """The JSON Schema fragment of ``parse``: a reference for a shared one, unless ``inline``."""
    name = getattr(parse, "schema_name", None)
    if name is not None and not inline:
        return {"$ref": f"#/$defs/{name}"}
    fragment = getattr(parse, "schema", None)
    if fragment is None:
        raise TypeError(f"{parse.__module__}.{parse.__qualname__} declares no JSON Schema fragment")
    return copy.deepcopy(dict(fragment() if callable(fragment) else fragment))


def shared_name(parse: Callable[..., Any]) -> str:
    """The ``$defs`` name of a fragment used in many places."""
    name = getattr(parse, "schema_name", None)
    if not isinstance(name, str):
        raise TypeError(f"{parse.__module__}.{parse.__qualname__} declares no shared schema name")
    return name


def has_schema(parse: Callable[..., Any]) -> bool:
    return getattr(parse, "schema", None) is not None


def full_match(pattern: str) -> str:
    """``pattern`` anchored as the parsers match it (``fullmatch``); JSON Schema patterns match anywhere."""
    return f"^(?:{pattern})$"


def under(prefix: str, problems: Iterable[Problem]) -> list[Problem]:
    return [(prefix + path, reason) for path, reason in problems]


def render(prefix: str, problems: Iterable[Problem]) -> list[str]:
    return [f"{prefix}{path}: {reason}" for path, reason in problems]


NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
NAME_RULE = "must be 1-40 lowercase letters, digits or hyphens, starting with a letter"
_SECRET_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_SECRET_REF_REASON = 'must be a secret reference {"secret": "<name>"}'
_URL_REASON = "must be an https URL (http only for loopback hosts)"
E164 = re.compile(r"\+[1-9]\d{6,14}")
E164_REASON = "must be an E.164 phone number such as +14155550123"


@described({"type": "string", "pattern": r"\S"})
def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string")
    return value


@described({"type": "string", "pattern": full_match(NAME.pattern)})
def name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Invalid(NAME_RULE)
    return value


def matching(pattern: str, reason: str) -> Parser:
    compiled = re.compile(pattern)

    @described({"type": "string", "pattern": full_match(pattern)})
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise Invalid(reason)
        return value

    return parse


def sid(prefix: str) -> Parser:
    """A Twilio-style id: a two-letter prefix and 32 hex digits."""
    return matching(prefix + r"[0-9a-fA-F]{32}", f"must be '{prefix}' followed by 32 hex digits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


@described({"type": "integer"})
def integer(value: Any) -> int:
    if not _is_int(value):
        raise Invalid("must be a whole number")
    return value


def int_between(low: int, high: int) -> Parser:
    @described({"type": "integer", "minimum": low, "maximum": high})
    def parse(value: Any) -> int:
        if not _is_int(value) or not low <= value <= high:
            raise Invalid(f"must be a whole number from {low} to {high}")
        return value

    return parse


@described({"type": "number", "minimum": 0})
def non_negative_number(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise Invalid("must be a number of at least 0")
    return float(value)


@described({"type": "boolean"})
def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def one_of(choices: tuple[str, ...]) -> Parser:
    @described({"type": "string", "enum": list(choices)})
    def parse(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}")
        return value

    return parse


def list_of(item: Parser, *, allow_empty: bool = False) -> Parser:
    def fragment() -> Schema:
        return {"type": "array", "items": schema_of(item), **({} if allow_empty else {"minItems": 1})}

    @described(fragment)
    def parse(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise Invalid("must be a list" if allow_empty else "must be a non-empty list")
        items: list[Any] = []
        problems: list[Problem] = []
        for index, raw in enumerate(value):
            try:
                items.append(item(raw))
            except Invalid as exc:
                problems += under(f"[{index}]", exc.problems)
        if problems:
            raise Invalid(problems=problems)
        return tuple(items)

    return parse


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# https anywhere, http only on a loopback host; no credentials, query or fragment (as the parser says).
_URL_PATTERN = (r"^\s*(?:https://[^/?#@\s]+|http://(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?)"
                r"(?:/[^?#\s]*)?\s*$")


def url(*, trailing_slash: bool = False) -> Parser:
    @described({"type": "string", "format": "uri", "pattern": _URL_PATTERN})
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(_URL_REASON)
        stripped = value.strip()
        try:
            parts = urlsplit(stripped)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise Invalid(_URL_REASON) from None
        host = parts.hostname
        if not host or not (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))):
            raise Invalid(_URL_REASON)
        if parts.username or parts.password:
            raise Invalid("must not hold credentials; name a secret in the credential field instead")
        if parts.query or parts.fragment:
            raise Invalid("must be a base URL, without query or fragment")
        base = stripped.rstrip("/")
        return base + "/" if trailing_slash else base

    return parse


@described({
    "description": 'The name of a Key Vault secret, never its value: {"secret": "<name>"}',
    "type": "object",
    "properties": {"secret": {"type": "string", "pattern": full_match(_SECRET_NAME.pattern)}},
    "required": ["secret"],
    "additionalProperties": False,
}, shared_as="secret_ref")
def secret_ref(value: Any) -> SecretRef:
    # Never echo the value: a plain string here is most likely the secret itself.
    if isinstance(value, str):
        raise Invalid(f"{_SECRET_REF_REASON}, not a value")
    if not isinstance(value, dict) or set(value) != {"secret"}:
        raise Invalid(_SECRET_REF_REASON)
    secret = value["secret"]
    if not isinstance(secret, str) or not _SECRET_NAME.fullmatch(secret):
        raise Invalid("secret name must be 1-127 letters, digits or hyphens (Key Vault rules)")
    return SecretRef(secret)


@described({"type": "string", "pattern": r"\S", "description": "An IANA time zone name such as America/Chicago"})
def time_zone(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("must be an IANA time zone name such as 'America/Chicago'")
    from zoneinfo import ZoneInfo  # only when a configuration names a zone: a first request needs none

    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):  # not found, not a normalized key, a folder like "America"
        raise Invalid(f"unknown time zone {value!r}; use an IANA name such as 'America/Chicago'") from None
    return value


_CLOCK_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


@described({"type": "string", "pattern": full_match(_CLOCK_TIME.pattern), "description": "A local time, HH:MM"})
def clock_time(value: Any) -> str:
    if not isinstance(value, str) or not _CLOCK_TIME.fullmatch(value):
        raise Invalid("must be a time of day as HH:MM (00:00-23:59)")
    return value


def _quiet_hours_problems(values: Mapping[str, Any]) -> list[Problem]:
    if values.get("start") is not None and values.get("start") == values.get("end"):
        return [(".end", "must differ from start (a window of no length holds nothing)")]
    return []


@described(lambda: object_schema(QuietHours, QUIET_HOURS_FIELDS), shared_as="quiet_hours")
def quiet_hours(value: Any) -> QuietHours:
    """A daily quiet window: start, end (HH:MM, local) and optionally its time zone."""
    values, problems = read_fields(value, QuietHours, QUIET_HOURS_FIELDS)
    problems += _quiet_hours_problems(values)
    if problems:
        raise Invalid(problems=problems)
    return QuietHours(**values)


QUIET_HOURS_FIELDS: Mapping[str, Parser] = {"start": clock_time, "end": clock_time, "time_zone": time_zone}


def object_of(cls: type, parsers: Mapping[str, Parser], *, shared_as: str | None = None) -> Parser:
    @described(lambda: object_schema(cls, parsers), shared_as=shared_as)
    def parse(value: Any) -> Any:
        values, problems = read_fields(value, cls, parsers)
        if problems:
            raise Invalid(problems=problems)
        return cls(**values)

    return parse


def named_objects(known: tuple[str, ...], item: Parser) -> Parser:
    """An object whose keys must be among ``known`` and whose values parse with ``item``."""

    def fragment() -> Schema:
        return {"type": "object", "properties": {key: schema_of(item) for key in known}, "additionalProperties": False}

    @described(fragment)
    def parse(value: Any) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise Invalid("must be an object")
        parsed: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, body in value.items():
            if key not in known:
                problems.append((f".{key}", f"unknown name; one of {', '.join(known)}"))
                continue
            try:
                parsed[key] = item(body)
            except Invalid as exc:
                problems += under(f".{key}", exc.problems)
        if problems:
            raise Invalid(problems=problems)
        return MappingProxyType(parsed)

    return parse


def read_fields(raw: Any, cls: type, parsers: Mapping[str, Parser]) -> tuple[dict[str, Any], list[Problem]]:
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
        except Invalid as exc:
            problems += under(f".{key}", exc.problems)
    for key in required_fields(cls):
        if key in parsers and key not in raw:
            problems.append((f".{key}", "is required"))
    return values, problems


def required_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


def object_schema(cls: type, parsers: Mapping[str, Parser]) -> Schema:
    """The schema of one JSON object read by ``read_fields``: the parsers' fields, required as the
    dataclass says, nothing else; with the dataclass's comments as descriptions."""
    notes = field_notes(cls)
    defaults = {field.name: field.default for field in fields(cls) if field.default is not MISSING}
    properties: Schema = {}
    for key, parse in parsers.items():
        described_by = {"description": notes[key]} if key in notes else {}
        default = defaults.get(key)
        shown_default = {"default": default} if isinstance(default, (str, int, float, bool)) else {}
        properties[key] = {**described_by, **schema_of(parse), **shown_default}
    schema: Schema = {"type": "object"}
    summary = own_summary(cls)
    if summary:
        schema["description"] = summary
    required = [key for key in required_fields(cls) if key in parsers]
    schema |= {"properties": properties, **({"required": required} if required else {}), "additionalProperties": False}
    return schema


def own_summary(cls: type) -> str | None:
    """The first paragraph of the class's own docstring (not the signature dataclasses write for a class without)."""
    doc = cls.__doc__ or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


# A field line (``name: type = default``) and its trailing comment, or a comment line of its own.
_FIELD_LINE = re.compile(r"\s+(\w+)\s*:[^#]*?(?:#\s*(.*\S))?\s*")
_COMMENT_LINE = re.compile(r"\s*#\s*(.*\S)\s*")


def field_notes(cls: type) -> dict[str, str]:
    """What the dataclass says of each field in comments: the one after it, or the lines just above it."""
    import inspect  # only when a schema is generated

    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source, e.g. a built-in or a compiled deployment
            continue
        above: list[str] = []
        for line in lines[1:]:
            comment, field_line = _COMMENT_LINE.fullmatch(line), _FIELD_LINE.fullmatch(line)
            if comment:
                above.append(comment.group(1))
            elif field_line and field_line.group(1) in {field.name for field in fields(klass)}:
                note = field_line.group(2) or " ".join(above)
                if note:
                    notes[field_line.group(1)] = note
                above = []
            else:
                above = []
    return notes


region = matching(r"[A-Z]{2}", "must be an ISO 3166 alpha-2 country code such as 'US'")
poll = object_of(
    PollSettings,
    {
        "interval_minutes": int_between(1, 1440),
        "entities": list_of(text),
        "overlap_seconds": int_between(0, 3600),
        "time_zone": time_zone,
    },
    shared_as="poll",
)


outcome_notes = object_of(OutcomeNotes, {"enabled": boolean, "on": list_of(one_of(OUTCOMES))})


def polled_entity_problems(known: tuple[str, ...]) -> Check:
    """Whether each entity named under ``poll.entities`` is one of ``known``, the kind's entities."""

    @described({"properties": {"poll": {"properties": {"entities": {"items": {"enum": list(known)}}}}}})
    def problems(raw: Mapping[str, Any]) -> list[Problem]:
        poll_body = raw.get("poll")
        entities = poll_body.get("entities") if isinstance(poll_body, dict) else None
        if not isinstance(entities, list):
            return []  # reported by the field parser
        names = ", ".join(known)
        return [(f".poll.entities[{index}]", f"cannot poll {entity!r}; entities that can be polled: {names}")
                for index, entity in enumerate(entities) if isinstance(entity, str) and entity not in known]

    return problems


def all_problems(*checks: Check) -> Check:
    def fragment() -> Schema:
        return {"allOf": [schema_of(check) for check in checks if has_schema(check)]}

    @described(fragment)
    def problems(raw: Mapping[str, Any]) -> list[Problem]:
        return [problem for check in checks for problem in check(raw)]

    return problems


COMMON_PARSERS: Mapping[str, Parser] = {"kind": text, "ca_bundle": text}


@dataclass(frozen=True)
class ConnectionSettings:
    """How one kind's connection is read from the file: its dataclass, a parser per field, and
    the checks that look across fields."""

    cls: type[Connection]
    parsers: Mapping[str, Parser]
    check: Check | None = None

    def build(self, connection_name: str, body: Mapping[str, Any]) -> Connection:
        values, problems = read_fields(body, self.cls, {**COMMON_PARSERS, **self.parsers})
        if self.check is not None:
            problems += self.check(body)
        if problems:
            raise Invalid(problems=problems)
        values.pop("kind")
        return self.cls(name=connection_name, **values)

    def schema(self) -> Schema:
        """The JSON Schema of one connection of this kind, ``kind`` fixed to its name."""
        body = object_schema(self.cls, {**COMMON_PARSERS, **self.parsers})
        body["properties"]["kind"] = {"const": self.cls.kind}  # first among the properties, as in COMMON_PARSERS
        body["required"] = ["kind", *body.get("required", [])]
        summary = own_summary(self.cls) or _module_summary(self.cls)
        if summary:
            body = {"description": summary, **body}
        if self.check is not None and has_schema(self.check):
            body["allOf"] = [schema_of(self.check)]
        return body


def _module_summary(cls: type) -> str | None:
    module = sys.modules.get(cls.__module__)
    doc = module.__doc__ if module is not None else None
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else None


# The fragments the schema holds once under ``$defs`` (see ``described``).
SHARED_SCHEMAS: tuple[Parser, ...] = (secret_ref, poll, quiet_hours)
