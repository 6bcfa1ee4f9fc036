"""What the local host hosts: one function of the app, and the keys that guard its routes.

Kept apart from the host itself so that its HTTP server and queue pollers can name these
without importing the host that starts them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import secrets
import time
import types
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devhost.azurite import REPO_ROOT
from devhost.cpu import hosting_cpu

log = logging.getLogger("devhost")

FUNCTION_KEY_SETTING = "DEVHOST_FUNCTION_KEY"
MASTER_KEY_SETTING = "DEVHOST_MASTER_KEY"


@dataclass
class HostedFunction:
    """One function of the app: its trigger binding (plain values) and the Python callable."""

    name: str
    binding: dict[str, Any]
    user_function: Callable[..., Any]
    unsupported_reason: str | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.binding.get("type", ""))

    @property
    def arg_name(self) -> str:
        return str(self.binding.get("name", ""))

    def invoke(self, trigger_value: Any, reason: str) -> Any:
        """Call the function (awaiting it if async), logging like the host; exceptions propagate."""
        invocation_id = str(uuid.uuid4())
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", self.name, reason, invocation_id)
        started = time.monotonic()
        try:
            arguments = self._arguments(trigger_value, invocation_id)
            with hosting_cpu.in_function():
                result = self.user_function(**arguments)
                if inspect.isawaitable(result):
                    result = asyncio.run(_awaited(result))
        except Exception:
            log.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                self.name, invocation_id, (time.monotonic() - started) * 1000,
            )
            raise
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            self.name, invocation_id, (time.monotonic() - started) * 1000,
        )
        return result

    @functools.cached_property
    def _takes_context(self) -> bool:
        # Once per function, not per run: inspect.signature is among devhost's costlier steps per message.
        return "context" in parameter_names(self.user_function)

    def _arguments(self, trigger_value: Any, invocation_id: str) -> dict[str, Any]:
        arguments = {self.arg_name: trigger_value}
        if self._takes_context:
            arguments["context"] = types.SimpleNamespace(
                invocation_id=invocation_id, function_name=self.name, function_directory=str(REPO_ROOT)
            )
        return arguments


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def parameter_names(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)



@dataclass
class AccessKeys:
    """The function key and master key that guard function- and admin-level routes."""

    function_key: str
    master_key: str
    generated: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(
        cls, env: Mapping[str, str], function_key: str | None = None, master_key: str | None = None
    ) -> AccessKeys:
        generated = []
        function_key = function_key or env.get(FUNCTION_KEY_SETTING)
        if not function_key:
            function_key = secrets.token_urlsafe(32)
            generated.append(FUNCTION_KEY_SETTING)
        master_key = master_key or env.get(MASTER_KEY_SETTING)
        if not master_key:
            master_key = secrets.token_urlsafe(32)
            generated.append(MASTER_KEY_SETTING)
        return cls(function_key, master_key, generated)
