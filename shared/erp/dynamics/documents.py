"""What a person needs to see of the document behind a work item: its financial dimensions, as the
connection's display format names them, and the link that opens it in F&O."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from shared.erp.dynamics.connection import DimensionSettings, DynamicsConnection

DIMENSION_SETS_SHOWN = "; "  # between the distinct dimension values of a document's lines


def shown_dimensions(values: list[str] | tuple[str, ...], settings: DimensionSettings) -> str:
    """Each display value (``001-022-ABC``) as ``BusinessUnit 001, Department 022, ...`` when the names of
    the display format are set; as F&O writes it otherwise, or when its segments do not fit the names."""
    return DIMENSION_SETS_SHOWN.join(_named(value, settings) for value in values if value)


def _named(value: str, settings: DimensionSettings) -> str:
    if not settings.names or not settings.separator:
        return value
    segments = value.split(settings.separator)
    if len(segments) > len(settings.names):
        return value  # another format than the one configured: the raw value misleads no one
    return ", ".join(f"{name} {segment}" for name, segment in zip(settings.names, segments, strict=False)
                     if segment.strip())


def record_link(form: str, connection: DynamicsConnection, fields: Mapping[str, Any]) -> str:
    """The deep link of ``form`` filled in: the environment as configured, every other value URL-encoded."""
    parts: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(form):
        parts.append(literal)
        if name == "environment_url":
            parts.append(connection.environment_url.rstrip("/"))
        elif name is not None:
            value = fields.get(name)
            parts.append(quote("" if value is None else str(value), safe=""))
    return "".join(parts)


def document_fields(fields: Mapping[str, Any], connection: DynamicsConnection) -> dict[str, Any]:
    """``dimensions`` (text) and ``record_url`` for a record whose document was read; nothing otherwise."""
    added: dict[str, Any] = {}
    dimension_values = fields.get("dimension_values")
    if isinstance(dimension_values, list | tuple) and dimension_values:
        added["dimensions"] = shown_dimensions([str(value) for value in dimension_values], connection.dimensions)
    form = connection.link_form(str(fields.get("document_kind") or ""))
    if form:
        added["record_url"] = record_link(form, connection, fields)
    return added
