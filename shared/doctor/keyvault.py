"""Key Vault: every secret the configuration names is in the app's secret store.

In Azure the store is Key Vault (``KEY_VAULT_URL``); locally the environment (a secret
``contoso-fo-client-secret`` as ``CONTOSO_FO_CLIENT_SECRET``). A check reads each secret
and says where it was found; never what it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from shared.config.model import Connection, SecretRef
from shared.doctor import Check, Context, failed, passed, shown


def named_secrets(connections: list[Connection]) -> dict[str, list[str]]:
    """Each secret name the connections refer to, with the connections that use it, in file order."""
    found: dict[str, list[str]] = {}
    for connection in connections:
        for ref in _refs(connection):
            users = found.setdefault(ref.name, [])
            if connection.name not in users:
                users.append(connection.name)
    return found


def _refs(value: Any) -> Iterator[SecretRef]:
    if isinstance(value, SecretRef):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _refs(getattr(value, item.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _refs(item)


def checks(connection: Connection | None, context: Context) -> list[Check]:
    """The secrets of ``connection``, or of every connection when it is None."""
    chosen = [connection] if connection is not None else list(context.config.connections.values())
    secrets = named_secrets(chosen)
    if not secrets:
        return [passed("Secrets", "the configuration names no secrets")]
    return [secret_present(name, users, context) for name, users in secrets.items()]


def secret_present(name: str, users: list[str], context: Context) -> Check:
    from shared.storage.secrets import SecretNotFoundError

    title = f"secret {name}"
    used_by = ", ".join(users)
    try:
        context.secrets.get(name)
    except SecretNotFoundError as missing:
        return failed(title, f"{missing} (used by {used_by})", _missing_fix(name, context))
    except Exception as error:  # noqa: BLE001 - the vault refused or did not answer: the app cannot read it either
        return failed(title, f"cannot read it: {type(error).__name__}: {error}",
                      "give the app's identity the Key Vault Secrets User role on the vault, and check "
                      "KEY_VAULT_URL and that the vault's network rules let the app in")
    return passed(title, f"present in {_store(context)} (used by {used_by})")


def _store(context: Context) -> str:
    vault_url = getattr(context.secrets, "vault_url", None)
    return f"Key Vault {vault_url}" if vault_url else "the environment"


def _missing_fix(name: str, context: Context) -> str:
    from shared.storage.secrets import env_style_name

    vault_url = getattr(context.secrets, "vault_url", None)
    if vault_url:
        vault = shown(vault_url.split("//")[-1].split(".")[0])
        return f"az keyvault secret set --vault-name {vault} --name {name} --value <the secret>"
    return f"set {env_style_name(name)} in local.settings.json Values (or the environment), or set KEY_VAULT_URL"
