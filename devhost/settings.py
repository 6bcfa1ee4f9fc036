"""Settings the local host reads: local.settings.json (as Core Tools does) and host.json."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.azurite import ACCOUNT_KEY, ACCOUNT_NAME, REPO_ROOT

STORAGE_SETTING = "AzureWebJobsStorage"
DEVELOPMENT_STORAGE = "usedevelopmentstorage=true"
DEFAULT_AZURITE_PORTS = (10000, 10001, 10002)
DEFAULT_HTTP_PORT = 7071
DEFAULT_HOST_JSON = REPO_ROOT / "host.json"
PUBLIC_BASE_URL_SETTING = "PUBLIC_BASE_URL"
# local.settings.example.json's value: the default port's address, not a choice of the operator's.
EXAMPLE_PUBLIC_BASE_URL = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}"

# The Functions host's defaults for storage queue triggers (extensions.queues).
DEFAULT_BATCH_SIZE = 16
MAX_BATCH_SIZE = 32
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_MAX_POLLING_INTERVAL = 60.0
QUEUE_ENCODINGS = ("base64", "none")

_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<hours>\d+):(?P<minutes>\d+)(?::(?P<seconds>\d+(?:\.\d+)?))?$")
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


class SettingsFileError(Exception):
    """A settings file is missing or unreadable; the message says which and why."""


@dataclass(frozen=True)
class LocalSettings:
    """What devhost takes from local.settings.json: the Values and the local HTTP port."""

    path: Path
    values: dict[str, str]
    http_port: int | None = None


def development_storage_connection_string(ports: tuple[int, int, int] = DEFAULT_AZURITE_PORTS) -> str:
    """The full connection string behind ``UseDevelopmentStorage=true`` (Azurite's account)."""
    blob, queue, table = ports
    host = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={host}:{blob}/{ACCOUNT_NAME};"
        f"QueueEndpoint={host}:{queue}/{ACCOUNT_NAME};"
        f"TableEndpoint={host}:{table}/{ACCOUNT_NAME};"
    )


def expand_development_storage(value: str) -> str:
    """Spell out the shorthand: not every SDK understands ``UseDevelopmentStorage=true``."""
    if value.strip().rstrip(";").lower() == DEVELOPMENT_STORAGE:
        return development_storage_connection_string()
    return value


def _setting_text(name: str, value: Any, path: Path) -> str:
    # App settings are strings; numbers and booleans are forgiven, structures are not.
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise SettingsFileError(f"{path}: Values.{name} must be a string, not {type(value).__name__}")


def read_local_settings(path: str | Path) -> LocalSettings:
    """Parse local.settings.json; ``ConnectionStrings`` is ignored, as devhost has no use for it."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise SettingsFileError(
            f"settings file not found: {path} (copy local.settings.example.json to local.settings.json "
            "or pass --settings PATH)"
        ) from None
    except (OSError, ValueError) as error:
        raise SettingsFileError(f"cannot read settings file {path}: {error}") from None
    if not isinstance(document, dict):
        raise SettingsFileError(f"{path}: expected a JSON object")
    if document.get("IsEncrypted"):
        raise SettingsFileError(f"{path}: IsEncrypted is true; devhost reads plain-text settings only")
    raw_values = document.get("Values") or {}
    if not isinstance(raw_values, dict):
        raise SettingsFileError(f"{path}: Values must be a JSON object")
    values = {name: _setting_text(name, value, path) for name, value in raw_values.items()}
    port = (document.get("Host") or {}).get("LocalHttpPort")
    if port is not None and not isinstance(port, int):
        raise SettingsFileError(f"{path}: Host.LocalHttpPort must be a whole number")
    return LocalSettings(path=path, values=values, http_port=port)


def apply_local_settings(
    settings: LocalSettings, env: MutableMapping[str, str] | None = None
) -> list[str]:
    """Put Values into the environment; returns the names skipped because the environment had them.

    As with Core Tools an existing environment variable wins, so one run can override a
    setting without editing the file. Storage shorthands are expanded afterwards, whichever
    source the value came from.
    """
    env = os.environ if env is None else env
    skipped = []
    for name, value in settings.values.items():
        if name in env:
            skipped.append(name)
        else:
            env[name] = value
    for name in {*settings.values, STORAGE_SETTING}:
        if name in env:
            env[name] = expand_development_storage(env[name])
    return skipped


def follow_local_port(port: int, env: MutableMapping[str, str] | None = None) -> str | None:
    """Point ``PUBLIC_BASE_URL`` at the port the local host serves on, unless it was chosen.

    Twilio signs the URL it called, so callbacks to another port than the one in
    ``PUBLIC_BASE_URL`` are refused. Unset, empty or the example's value follow the port; any
    other value (a tunnel's address, say) is the operator's and stays. Returns the new value,
    or None when the setting was left as it was.
    """
    env = os.environ if env is None else env
    current = env.get(PUBLIC_BASE_URL_SETTING, "").strip().rstrip("/")
    if current and current != EXAMPLE_PUBLIC_BASE_URL:
        return None
    env[PUBLIC_BASE_URL_SETTING] = f"http://127.0.0.1:{port}"
    return env[PUBLIC_BASE_URL_SETTING]


def resolve_setting_references(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``%Name%`` with the app setting, as the host does in binding attributes."""
    env = os.environ if env is None else env

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise KeyError(f"app setting {name!r} (referenced as %{name}%) is not set")
        return env[name]

    return _SETTING_REFERENCE.sub(setting, text)


def parse_timespan(text: str) -> float:
    """Seconds in a .NET TimeSpan as host.json writes it: ``[d.]hh:mm[:ss[.fff]]``."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise ValueError(f"not a time span (expected hh:mm:ss): {text!r}")
    parts = match.groupdict()
    return (
        int(parts["days"] or 0) * 86400
        + int(parts["hours"]) * 3600
        + int(parts["minutes"]) * 60
        + float(parts["seconds"] or 0)
    )


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues``, with the Functions host's defaults."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    visibility_timeout: float = 0.0
    max_polling_interval: float = DEFAULT_MAX_POLLING_INTERVAL
    message_encoding: str = "base64"
    # None: the host's default, batchSize / 2 (times the cores on a dedicated plan; one here).
    new_batch_threshold: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"queues.batchSize must be between 1 and {MAX_BATCH_SIZE}")
        if self.new_batch_threshold is not None and self.new_batch_threshold < 0:
            raise ValueError("queues.newBatchThreshold must not be negative")
        if self.max_dequeue_count < 1:
            raise ValueError("queues.maxDequeueCount must be at least 1")
        if self.message_encoding not in QUEUE_ENCODINGS:
            raise ValueError(f"queues.messageEncoding must be one of {', '.join(QUEUE_ENCODINGS)}")

    @property
    def batch_threshold(self) -> int:
        """Messages still running at or below which the host fetches the next batch."""
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold

    @classmethod
    def from_host_json(cls, section: Mapping[str, Any]) -> QueueOptions:
        defaults = cls()

        def seconds(key: str, default: float) -> float:
            return parse_timespan(section[key]) if key in section else default

        threshold = section.get("newBatchThreshold")

        return cls(
            batch_size=int(section.get("batchSize", defaults.batch_size)),
            max_dequeue_count=int(section.get("maxDequeueCount", defaults.max_dequeue_count)),
            visibility_timeout=seconds("visibilityTimeout", defaults.visibility_timeout),
            max_polling_interval=seconds("maxPollingInterval", defaults.max_polling_interval),
            message_encoding=str(section.get("messageEncoding", defaults.message_encoding)).lower(),
            new_batch_threshold=None if threshold is None else int(threshold),
        )


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json that change how devhost runs functions."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)


def load_host_config(path: str | Path = DEFAULT_HOST_JSON) -> HostConfig:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise SettingsFileError(f"host.json not found: {path}") from None
    except (OSError, ValueError) as error:
        raise SettingsFileError(f"cannot read {path}: {error}") from None
    extensions = document.get("extensions") or {}
    http = extensions.get("http") or {}
    try:
        queues = QueueOptions.from_host_json(extensions.get("queues") or {})
    except ValueError as error:
        raise SettingsFileError(f"{path}: {error}") from None
    return HostConfig(route_prefix=str(http.get("routePrefix", "api")).strip("/"), queues=queues)
