"""Secret provider: lookups, caching, and values that never show in text or logs."""

from __future__ import annotations

import io
import logging
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.logs import RedactingFilter, install_redaction
from shared.settings import SettingsError
from shared.storage.secrets import (
    CachedSecretProvider,
    EnvSecretProvider,
    KeyVaultSecretProvider,
    Secret,
    SecretNotFoundError,
    get_secret_provider,
    reset_secret_provider,
)


def unique_value() -> str:
    return "v-" + uuid.uuid4().hex


class CountingProvider:
    """Answers from a dict and counts how often it was asked."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls = 0

    def get(self, name: str) -> Secret:
        self.calls += 1
        if name not in self.values:
            raise SecretNotFoundError(name, "the test dict")
        return Secret(name, self.values[name])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_env_provider_finds_the_name_as_given() -> None:
    value = unique_value()
    provider = EnvSecretProvider({"contoso-fo-client-secret": value})
    assert provider.get("contoso-fo-client-secret").reveal() == value


def test_env_provider_finds_the_env_var_style_name() -> None:
    value = unique_value()
    provider = EnvSecretProvider({"CONTOSO_FO_CLIENT_SECRET": value})

    secret = provider.get("contoso-fo-client-secret")

    assert secret.reveal() == value
    assert secret.name == "contoso-fo-client-secret"


def test_env_provider_treats_an_empty_value_as_missing() -> None:
    with pytest.raises(SecretNotFoundError):
        EnvSecretProvider({"SLACK_BOT_TOKEN": ""}).get("slack-bot-token")


def test_not_found_names_the_secret_and_where_but_no_value() -> None:
    other_value = unique_value()
    provider = EnvSecretProvider({"TWILIO_AUTH_TOKEN": other_value, "twilio-auth-token-old": other_value})

    with pytest.raises(SecretNotFoundError) as caught:
        provider.get("slack-signing-secret")

    message = str(caught.value)
    assert isinstance(caught.value, KeyError)
    assert message == (
        "secret 'slack-signing-secret' not found in environment variables "
        "'slack-signing-secret' or 'SLACK_SIGNING_SECRET'"
    )
    assert other_value not in message


@pytest.mark.parametrize(
    "render",
    [repr, str, lambda s: f"{s}", lambda s: f"{s!r}", lambda s: f"{s:>40}", "{}".format, lambda s: f"{[s]}"],
    ids=["repr", "str", "fstring", "fstring-repr", "fstring-spec", "str-format", "in-list"],
)
def test_secret_text_never_contains_the_value(render: Any) -> None:
    value = unique_value()
    text = render(Secret("twilio-auth-token", value))
    assert value not in text
    assert "Secret('twilio-auth-token', '***')" in text


def test_a_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("slack-bot-token", unique_value()))


def test_cache_serves_within_ttl_and_reads_again_after() -> None:
    inner = CountingProvider({"qad-secret": "first-value"})
    clock = Clock()
    cache = CachedSecretProvider(inner, ttl_seconds=300, clock=clock)

    assert cache.get("qad-secret").reveal() == "first-value"
    clock.now += 299
    inner.values["qad-secret"] = "rotated-value"
    assert cache.get("qad-secret").reveal() == "first-value"
    assert inner.calls == 1

    clock.now += 2
    assert cache.get("qad-secret").reveal() == "rotated-value"
    assert inner.calls == 2


def test_cache_invalidate_forces_a_fresh_read() -> None:
    inner = CountingProvider({"a-secret": "aaaa", "b-secret": "bbbb"})
    cache = CachedSecretProvider(inner, ttl_seconds=300, clock=Clock())
    cache.get("a-secret")
    cache.get("b-secret")

    cache.invalidate("a-secret")
    cache.get("a-secret")
    cache.get("b-secret")
    assert inner.calls == 3

    cache.invalidate()
    cache.get("a-secret")
    cache.get("b-secret")
    assert inner.calls == 5


def test_cache_does_not_remember_a_missing_secret() -> None:
    inner = CountingProvider({})
    cache = CachedSecretProvider(inner, ttl_seconds=300, clock=Clock())
    for _ in range(2):
        with pytest.raises(SecretNotFoundError):
            cache.get("absent")
    assert inner.calls == 2


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """A real StreamHandler on the root logger with redaction installed; all removed afterwards."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    install_redaction(root)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for filterer in [root, *root.handlers]:
            for installed in [f for f in filterer.filters if isinstance(f, RedactingFilter)]:
                filterer.removeFilter(installed)


def test_a_secret_logged_by_mistake_is_masked(root_stream: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    value = unique_value()
    secret = EnvSecretProvider({"SLACK_BOT_TOKEN": value}).get("slack-bot-token")
    log = logging.getLogger("shared.channels.slack.client")  # a child logger: only handler filters see its records

    log.info("token=%s", secret.reveal())
    try:
        raise RuntimeError(f"auth failed for {secret.reveal()}")
    except RuntimeError:
        log.exception("call failed")

    for text in (root_stream.getvalue(), caplog.text):
        assert value not in text
        assert "token=***" in text
        assert "RuntimeError: auth failed for ***" in text
    assert all(value not in record.getMessage() for record in caplog.records)


def test_install_redaction_is_idempotent(root_stream: io.StringIO) -> None:
    root = logging.getLogger()
    install_redaction(root)
    for filterer in [root, *root.handlers]:
        assert sum(isinstance(f, RedactingFilter) for f in filterer.filters) == 1


def test_key_vault_provider_builds_without_network() -> None:
    class NoCredential:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("the constructor must not ask for a token")

    provider = KeyVaultSecretProvider("https://example-vault.vault.azure.net/", credential=NoCredential())
    assert provider.vault_url == "https://example-vault.vault.azure.net/"


def test_key_vault_provider_builds_a_default_credential_without_network() -> None:
    provider = KeyVaultSecretProvider(
        "https://example-vault.vault.azure.net/", env={"AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000"}
    )
    assert provider.vault_url == "https://example-vault.vault.azure.net/"


@pytest.fixture
def fresh_provider() -> Iterator[None]:
    reset_secret_provider()
    yield
    reset_secret_provider()


def test_process_provider_reads_the_environment_without_key_vault(
    fresh_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = unique_value()
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.setenv("SECRET_CACHE_TTL_SECONDS", "60")
    monkeypatch.setenv("SAGEX3_MAIN_PASSWORD", value)

    provider = get_secret_provider()

    assert isinstance(provider.inner, EnvSecretProvider)
    assert provider.get("sagex3-main-password").reveal() == value
    assert get_secret_provider() is provider


def test_process_provider_uses_key_vault_when_configured(fresh_provider: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_VAULT_URL", "https://example-vault.vault.azure.net/")
    assert isinstance(get_secret_provider().inner, KeyVaultSecretProvider)


def test_process_provider_rejects_a_bad_ttl(fresh_provider: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.setenv("SECRET_CACHE_TTL_SECONDS", "five minutes")
    with pytest.raises(SettingsError, match="SECRET_CACHE_TTL_SECONDS"):
        get_secret_provider()
