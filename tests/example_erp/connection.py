"""An example ERP connection: the API's base URL, its token, and the poll."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shared.config import fields as f
from shared.config.model import Connection, PollSettings, SecretRef

# What a poll can read (the adapter's entities, the same names).
ENTITIES: tuple[str, ...] = ("Tickets",)


@dataclass(frozen=True, kw_only=True)
class ExampleConnection(Connection):
    kind: ClassVar[str] = "example"
    base_url: str  # https://<tenant>.example-erp.test
    api_token: SecretRef
    poll: PollSettings


SETTINGS = f.ConnectionSettings(
    ExampleConnection,
    {"base_url": f.url(), "api_token": f.secret_ref, "poll": f.poll},
    f.polled_entity_problems(ENTITIES),
)
