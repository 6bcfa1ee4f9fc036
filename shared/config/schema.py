"""The JSON Schema of the connections file, generated from the declarations the loader reads it with.

Every field's fragment comes from its parser (``shared.config.fields.described``), each kind's
object from its ``ConnectionSettings``, and the kinds from ``shared.kinds``; so the schema
cannot drift from the loader. Editors use it for completion and checks as the file is
written; the loader still decides, and checks what a schema cannot (names that must exist,
recipients for the channel, time zones, keys).

    python -m shared.config.schema            # print it
    python -m shared.config.schema --write    # write config/connections.schema.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared import kinds
from shared.config import fields as f
from shared.config.rules import rule_schema, template_schema

DRAFT = "https://json-schema.org/draft/2020-12/schema"
PUBLISHED_PATH = Path(__file__).resolve().parents[2] / "config" / "connections.schema.json"
REGENERATE = "python -m shared.config.schema --write"


def _definition_of(kind: str) -> str:
    return f"{kind}-connection"


def _connection() -> f.Schema:
    """One named connection: ``kind`` picks which kind's object schema the rest must meet."""
    names = list(kinds.all_kinds())
    return {
        "type": "object",
        "properties": {"kind": {"enum": names, "description": "What this connection is: an ERP or a channel"}},
        "required": ["kind"],
        "allOf": [
            {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
             "then": {"$ref": f"#/$defs/{_definition_of(kind)}"}}
            for kind in names
        ],
    }


def _definitions() -> f.Schema:
    found: f.Schema = {}
    for kind in kinds.all_kinds():
        settings = kinds.settings_of(kind)
        if settings is not None:
            found[_definition_of(kind)] = settings.schema()
    found |= {f.shared_name(parse): f.schema_of(parse, inline=True) for parse in f.SHARED_SCHEMAS}
    return found | {"connection": _connection(), "rule": rule_schema(), "template": template_schema()}


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the connections file."""
    name_pattern = f.full_match(f.NAME.pattern)
    return {
        "$schema": DRAFT,
        "title": "ml-connector connections and rules",
        "description": "Connections to ERPs and channels, the rules that route ERP events to people, "
                       "and message templates. Secrets are named, never written here.",
        "type": "object",
        "properties": {
            "$schema": {"type": "string", "description": "This schema, for editors: ./connections.schema.json"},
            "connections": {
                "description": "Named connections; a name is 1-40 lowercase letters, digits or hyphens",
                "type": "object",
                "propertyNames": {"pattern": name_pattern},
                "additionalProperties": {"$ref": "#/$defs/connection"},
            },
            "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
            "templates": {
                "description": "Named message templates, over the built-in ones",
                "type": "object",
                "propertyNames": {"pattern": name_pattern},
                "additionalProperties": {"$ref": "#/$defs/template"},
            },
        },
        "required": ["connections"],
        "additionalProperties": False,
        "$defs": _definitions(),
    }


def render() -> str:
    return json.dumps(config_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the JSON Schema of the connections file.")
    parser.add_argument("--write", action="store_true", help=f"write it to {PUBLISHED_PATH.name} instead")
    args = parser.parse_args(argv)
    if args.write:
        PUBLISHED_PATH.write_text(render(), encoding="utf-8")
        print(f"wrote {PUBLISHED_PATH}")
    else:
        print(render(), end="")


if __name__ == "__main__":
    main()
