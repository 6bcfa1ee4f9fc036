"""Routing rules and message templates: parsed, then checked against the connections they name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import kinds
from shared.channels.twilio.connection import TwilioConnection
from shared.config import fields as f
from shared.config.model import (
    ESCALATION_CONDITIONS,
    OPS,
    Condition,
    Connection,
    Escalation,
    EscalationStep,
    Recipient,
    Rule,
)
from shared.templates import Template, TemplateError, placeholders


@dataclass
class Connections:
    """Connections that validated, and the kind each name in the file declares (None when unusable)."""

    built: dict[str, Connection]
    declared: dict[str, str | None]


# --- rules -------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = ["string", "number", "boolean", "null"]


@f.described({"type": [*_SCALAR_TYPES, "array"], "items": {"type": _SCALAR_TYPES}})
def _condition_value(value: Any) -> Any:
    if isinstance(value, list):
        if not all(isinstance(item, _SCALARS) for item in value):
            raise f.Invalid("list items must be strings, numbers, booleans or null")
        return tuple(value)
    if not isinstance(value, _SCALARS):
        raise f.Invalid("must be a string, number, boolean, null or a list of those")
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


CONDITION_PARSERS: Mapping[str, f.Parser] = {"field": f.text, "op": f.one_of(OPS), "value": _condition_value}


def _when_op(ops: list[str], value: f.Schema) -> f.Schema:
    return {"if": {"properties": {"op": {"enum": ops}}, "required": ["op"]}, "then": {"properties": {"value": value}}}


def _condition_schema() -> f.Schema:
    """The condition's fields, and the value each op needs (as ``_value_problem`` says)."""
    single = [op for op in OPS if op not in ("in", "not_in")]
    return {**f.object_schema(Condition, CONDITION_PARSERS), "allOf": [
        _when_op(["in", "not_in"], {"type": "array", "minItems": 1}),
        _when_op(single, {"not": {"type": "array"}}),
        _when_op(["gt", "ge", "lt", "le"], {"type": ["number", "string"]}),
        _when_op(["exists"], {"type": "boolean"}),
        _when_op(["contains"], {"type": ["string", "number"]}),
    ]}


@f.described(_condition_schema)
def _condition(raw: Any) -> Condition:
    values, problems = f.read_fields(raw, Condition, CONDITION_PARSERS)
    if not problems:
        reason = _value_problem(values["op"], values["value"])
        if reason:
            problems.append((".value", reason))
    if problems:
        raise f.Invalid(problems=problems)
    return Condition(**values)


@f.described({"anyOf": [
    {"type": "string", "pattern": r"\S", "description": "An address: a phone number, Slack channel or email address"},
    {"type": "object", "required": ["field"], "additionalProperties": False,
     "properties": {"field": {**f.schema_of(f.text), "description": "The record field that holds the address"}}},
]})
def _recipient(raw: Any) -> Recipient:
    if isinstance(raw, str) and raw.strip():
        return Recipient(value=raw)
    if isinstance(raw, dict) and set(raw) == {"field"}:
        try:
            return Recipient(field=f.text(raw["field"]))
        except f.Invalid as exc:
            raise f.Invalid(problems=f.under(".field", exc.problems)) from None
    raise f.Invalid('must be an address string or {"field": "<record field>"}')


# A validity period per rule: a minute at least, a week at most.
VALID_FOR_MINUTES = f.int_between(1, 7 * 24 * 60)


# A step comes due this many minutes after the one before it: a week at most (a storage queue's longest delay).
ESCALATION_MAX_MINUTES = 7 * 24 * 60
# The channels an escalation step can take: those Twilio carries.
ESCALATION_CHANNELS = ("sms", "voice")


@f.described({"type": "number", "exclusiveMinimum": 0, "maximum": ESCALATION_MAX_MINUTES})
def _after_minutes(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= ESCALATION_MAX_MINUTES:
        raise f.Invalid(f"must be a number of minutes above 0 and at most {ESCALATION_MAX_MINUTES}")
    return float(value)


ESCALATION_STEP_PARSERS: Mapping[str, f.Parser] = {
    "channel": f.one_of(ESCALATION_CHANNELS), "to": f.list_of(_recipient), "via": f.text,
    "unless": f.one_of(ESCALATION_CONDITIONS), "after_minutes": _after_minutes,
}
_escalation_step = f.object_of(EscalationStep, ESCALATION_STEP_PARSERS)


@f.described(lambda: {**f.object_schema(Escalation, {"steps": f.list_of(_escalation_step)}),
                      "properties": {"steps": {**f.schema_of(f.list_of(_escalation_step)), "minItems": 2}}})
def _escalation(value: Any) -> Escalation:
    values, problems = f.read_fields(value, Escalation, {"steps": f.list_of(_escalation_step)})
    if not problems and len(values["steps"]) < 2:
        problems.append((".steps", "needs the rule's own send first and at least one step after it"))
    if problems:
        raise f.Invalid(problems=problems)
    return Escalation(**values)


def rule_parsers() -> Mapping[str, f.Parser]:
    """The parser of each rule field; the channels are those of the kinds list."""
    return {
        "id": f.name,
        "source": f.text,
        "event": f.text,
        "when": f.list_of(_condition, allow_empty=True),
        "channel": f.one_of(kinds.rule_channels()),
        "via": f.text,
        "to": f.list_of(_recipient),
        "template": f.text,
        "verify": f.boolean,
        "priority": f.integer,
        "valid_for_minutes": VALID_FOR_MINUTES,
        "verify_above": f.non_negative_number,
        "verify_via": f.text,
        "verify_amount_field": f.text,
        "verify_phone_field": f.text,
        "category": f.name,
        "quiet_hours": f.quiet_hours,
        "critical": f.boolean,
        "time_zone_field": f.text,
        "reject_reason": f.boolean,
        "escalation": _escalation,
    }


_APPROVAL_CODE_FIELDS = ("verify_above", "verify_via", "verify_amount_field", "verify_phone_field")


def rule_schema() -> f.Schema:
    """The JSON Schema of one rule: its fields, and the approval-code fields together, on slack rules only.

    What a rule names (connections, templates, recipients for the channel) is checked by the loader alone.
    """
    together = {name: [other for other in ("verify_above", "verify_via") if other != name]
                for name in _APPROVAL_CODE_FIELDS}
    slack_only = {"if": {"properties": {"channel": {"not": {"const": "slack"}}}, "required": ["channel"]},
                  "then": {"properties": dict.fromkeys(_APPROVAL_CODE_FIELDS, False)}}
    return {**f.object_schema(Rule, rule_parsers()), "dependentRequired": together, "allOf": [slack_only]}


def _source_problems(source: str, found: Connections) -> list[f.Problem]:
    if source not in found.declared:
        return [(".source", f"unknown connection {source!r}")]
    kind = found.declared[source]
    if kind is not None and kind not in kinds.ERPS:
        return [(".source", f"{source!r} is a {kind} connection; a source must be one of {', '.join(kinds.ERPS)}")]
    return []


def _via_problems(via: str, channel: str | None, found: Connections) -> list[f.Problem]:
    if via not in found.declared:
        return [(".via", f"unknown connection {via!r}")]
    kind, carrier = found.declared[via], kinds.carrier_of(channel or "")
    if kind is not None and carrier is not None and kind != carrier.name:
        return [(".via", f"channel {channel!r} needs a {carrier.name} connection; {via!r} is a {kind} connection")]
    return []


def _verify_problems(via: str, found: Connections, path: str = ".verify",
                     needs: str = "needs a twilio connection with verify_service_sid as via") -> list[f.Problem]:
    if found.declared.get(via) is None:
        return []  # unknown or broken connection: reported on its own
    connection = found.built.get(via)
    if connection is None and found.declared[via] == "twilio":
        return []  # a twilio connection with errors of its own; cannot tell yet
    if isinstance(connection, TwilioConnection) and connection.verify_service_sid:
        return []
    return [(path, f"{needs}; {via!r} has none")]


def _approval_code_problems(values: Mapping[str, Any], written: Iterable[str], found: Connections) -> list[f.Problem]:
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


def _recipient_problems(channel: str, recipients: tuple[Recipient, ...]) -> list[f.Problem]:
    carries = kinds.rule_channel(channel)
    if carries is None:
        return []  # an unknown channel is reported by its parser
    form = carries.address
    return [
        (f".to[{index}]", form.reason)
        for index, recipient in enumerate(recipients)
        if recipient.value is not None and not form.pattern.fullmatch(recipient.value)
    ]


def _rule_problems(values: Mapping[str, Any], written: Iterable[str], found: Connections) -> list[f.Problem]:
    """Checks that look beyond one field: references to connections, recipients for the channel."""
    problems: list[f.Problem] = []
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
    if "reject_reason" in written and channel not in (None, "slack"):
        problems.append((".reject_reason", "only slack rules have a Reject button"))
    if values.get("escalation") is not None:
        problems += _escalation_problems(values["escalation"], channel, found)
    return problems


def _escalation_problems(escalation: Escalation, channel: str | None, found: Connections) -> list[f.Problem]:
    """The first step is the rule's own send; each later one says when it is due and what makes it unnecessary,
    and goes through a Twilio connection to phone numbers."""
    if channel is not None and channel not in ESCALATION_CHANNELS:
        return [(".escalation", f"only sms and voice rules escalate; this rule's channel is {channel!r}")]
    first, *later = escalation.steps
    problems: list[f.Problem] = []
    if channel is not None and first.channel != channel:
        problems.append((".escalation.steps[0].channel", f"the first step is the rule's own send: {channel!r}"))
    if first.to or first.via or first.unless or first.after_minutes:
        problems.append((".escalation.steps[0]", "the first step is the rule's own send: only its channel is given"))
    for index, step in enumerate(later, start=1):
        path = f".escalation.steps[{index}]"
        if step.unless is None:
            problems.append((f"{path}.unless", f"is required: one of {', '.join(ESCALATION_CONDITIONS)}"))
        if not step.after_minutes:
            problems.append((f"{path}.after_minutes", "is required"))
        if step.via is not None:
            problems += [(f"{path}{where}", reason) for where, reason in _via_problems(step.via, step.channel, found)]
        problems += [(f"{path}{where}", reason) for where, reason in _recipient_problems(step.channel, step.to)]
    return problems


def parse_rules(raw: Any, found: Connections, errors: list[str]) -> list[Rule]:
    if not isinstance(raw, list):
        errors.append("rules: must be a list")
        return []
    rules: list[Rule] = []
    first_index: dict[str, int] = {}
    parsers = rule_parsers()
    for index, body in enumerate(raw):
        values, problems = f.read_fields(body, Rule, parsers)
        problems += _rule_problems(values, body if isinstance(body, dict) else (), found)
        rule_id = values.get("id")
        if rule_id in first_index:
            problems.append((".id", f"duplicate rule id {rule_id!r} (first used by rules[{first_index[rule_id]}])"))
        elif rule_id is not None:
            first_index[rule_id] = index
        if problems:
            errors += f.render(f"rules[{index}]", problems)
        else:
            rules.append(Rule(**values))
    return rules


# --- templates ---------------------------------------------------------------------------


@f.described(f.schema_of(f.text))
def _template_text(value: Any) -> str:
    text = f.text(value)
    try:
        placeholders(text)
    except TemplateError as exc:
        raise f.Invalid(str(exc)) from None
    return text


TEMPLATE_PARSERS: Mapping[str, f.Parser] = {"sms": _template_text, "voice": _template_text, "gather": f.boolean,
                                            "subject": _template_text, "email": _template_text}
_template = f.object_of(Template, TEMPLATE_PARSERS)


def template_schema() -> f.Schema:
    return f.schema_of(_template)


def parse_templates(raw: Any, errors: list[str]) -> dict[str, Template]:
    if not isinstance(raw, dict):
        errors.append("templates: must be an object of named templates")
        return {}
    templates: dict[str, Template] = {}
    for name, body in raw.items():
        if not f.NAME.fullmatch(name):
            errors.append(f"templates.{name}: template name {f.NAME_RULE}")
            continue
        try:
            templates[name] = _template(body)
        except f.Invalid as exc:
            errors += f.render(f"templates.{name}", exc.problems)
    return templates


def template_problems(rules: list[Rule], templates: Mapping[str, Template]) -> list[str]:
    """Each rule names a known template that has a text its channel can send (Slack cards need
    none; an email without text of its own sends the SMS text)."""
    problems = []
    for index, rule in enumerate(rules):
        template = templates.get(rule.template)
        if template is None:
            known = ", ".join(sorted(templates))
            problems.append(f"rules[{index}].template: unknown template {rule.template!r} (known: {known})")
            continue
        channels = dict.fromkeys([rule.channel, *(step.channel for step in rule.escalation.steps)]
                                 if rule.escalation else [rule.channel])
        for channel in channels:
            carries = kinds.rule_channel(channel)
            texts = carries.texts if carries is not None else ()
            if texts and not any(getattr(template, text) for text in texts):
                wanted = texts[0] + (f" (or {', '.join(texts[1:])})" if len(texts) > 1 else "")
                problems.append(f"rules[{index}].template: template {rule.template!r} has no {wanted} text")
    return problems
