"""Every setting the app reads is in local.settings.example.json and the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# A setting is read through env_str/env_int/env_float("NAME") or named by a *_SETTING constant.
READ_PATTERNS = (
    re.compile(r'env_(?:str|int|float)\(\s*"([A-Za-z_][A-Za-z0-9_]*)"'),
    re.compile(r'^\w*_SETTING\w*\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"', re.MULTILINE),
    re.compile(r'env\.get\(\s*"([A-Za-z_][A-Za-z0-9_]*)"'),
)


def settings_read_by(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (REPO_ROOT / folder).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in READ_PATTERNS:
            names.update(pattern.findall(text))
    return names


def example_values() -> dict[str, str]:
    return json.loads((REPO_ROOT / "local.settings.example.json").read_text())["Values"]


def test_the_scan_finds_the_settings_it_should() -> None:
    found = settings_read_by("shared")
    assert {"QUEUE_BACKEND", "CONNECTOR_CONFIG_PATH", "KEY_VAULT_URL", "AzureWebJobsStorage"} <= found


def test_every_setting_the_app_reads_is_in_the_example() -> None:
    missing = (settings_read_by("shared") | settings_read_by("devhost")) - set(example_values())
    assert not missing, f"add to local.settings.example.json: {sorted(missing)}"


def test_every_setting_is_in_the_readme_reference() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    names = settings_read_by("shared") | settings_read_by("devhost") | set(example_values())
    secrets = {name for name, value in example_values().items() if value.startswith("replace-with-")}
    missing = sorted(name for name in names - secrets if f"`{name}`" not in readme)
    assert not missing, f"document in README.md: {missing}"


def test_the_example_names_every_secret_of_the_sample_config() -> None:
    from shared.config.loading import load_config
    from shared.storage.secrets import env_style_name

    config = load_config(REPO_ROOT / "config" / "connections.sample.json")
    referenced = {
        env_style_name(value.name)
        for connection in config.connections.values()
        for value in vars(connection).values()
        if type(value).__name__ == "SecretRef"
    }
    assert referenced and referenced <= set(example_values())
