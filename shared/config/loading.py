"""Reading the configuration file: every problem collected, then the frozen ``AppConfig``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared import kinds
from shared.config import fields as f
from shared.config.model import AppConfig, ConfigError, Connection
from shared.config.rules import Connections, parse_rules, parse_templates, template_problems
from shared.settings import env_str
from shared.templates import BUILTIN as BUILTIN_TEMPLATES

CONFIG_PATH_SETTING = "CONNECTOR_CONFIG_PATH"
TOP_LEVEL_FIELDS = ("connections", "rules", "templates", "$schema")


def _declared_kind(body: Any) -> str | None:
    kind = body.get("kind") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) and kinds.settings_of(kind) is not None else None


def _build_connection(name: str, body: Any) -> Connection:
    if not isinstance(body, dict):
        raise f.Invalid("must be an object")
    known = ", ".join(kinds.all_kinds())
    if "kind" not in body:
        raise f.Invalid(problems=[(".kind", f"is required: one of {known}")])
    settings = kinds.settings_of(body["kind"]) if isinstance(body["kind"], str) else None
    if settings is None:
        # The other fields depend on the kind, so there is nothing more to check.
        raise f.Invalid(problems=[(".kind", f"must be one of {known}")])
    return settings.build(name, body)


def _parse_connections(raw: Any, errors: list[str]) -> Connections:
    found = Connections({}, {})
    if not isinstance(raw, dict):
        errors.append("connections: must be an object of named connections")
        return found
    for name, body in raw.items():
        path = f"connections.{name}"
        if not f.NAME.fullmatch(name):
            errors.append(f"{path}: connection name {f.NAME_RULE}")
        found.declared[name] = _declared_kind(body)
        try:
            found.built[name] = _build_connection(name, body)
        except f.Invalid as exc:
            errors += f.render(path, exc.problems)
    return found


def config_from_dict(data: Any, *, source: str | None = None) -> AppConfig:
    """Validate a parsed configuration; raise ``ConfigError`` with every problem found."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): must be a JSON object with connections and rules", source)
    errors = [f"{key}: unknown field" for key in data if key not in TOP_LEVEL_FIELDS]
    if "connections" not in data:
        errors.append("connections: is required")
    found = _parse_connections(data.get("connections", {}), errors)
    rules = parse_rules(data.get("rules", []), found, errors)
    templates = parse_templates(data.get("templates", {}), errors)
    errors += template_problems(rules, {**BUILTIN_TEMPLATES, **templates})
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
    return Path(__file__).resolve().parents[2]


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
