"""An outbound proxy set in the environment (HTTP_PROXY / HTTPS_PROXY, NO_PROXY) is honoured by every
client the app builds: tables, queues, Key Vault and the outbound HTTP client. The environment is
read when a client is built, not on every call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceRequestError

from devhost.azurite import Azurite
from shared.http import HttpClient, HttpFailure
from shared.model import Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from shared.storage.secrets import KeyVaultSecretProvider
from shared.storage.tables import Stores
from tests.fakes.proxy import FakeProxy

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
VAULT_HOST = "contoso-connector.vault.azure.net"


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProxy]:
    """A loopback proxy, and an environment that names no other."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    started = FakeProxy().start()
    yield started
    started.stop()


def storage(azurite: Azurite) -> StorageSettings:
    return StorageSettings(azurite.connection_string, None, None, None)


def test_table_calls_go_through_the_proxy_the_environment_names(
        proxy: FakeProxy, azurite: Azurite, table_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    stores = Stores.open(storage(azurite), table_prefix)
    try:
        assert stores.dedup.claim("proxy-test", "key-1")
        assert not stores.dedup.claim("proxy-test", "key-1")
    finally:
        stores.close()
    assert ("POST", f"127.0.0.1:{azurite.table_port}") in proxy.seen


def test_no_proxy_exempts_the_storage_host(
        proxy: FakeProxy, azurite: Azurite, table_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    stores = Stores.open(storage(azurite), table_prefix)
    try:
        assert stores.dedup.claim("proxy-test", "key-1")
    finally:
        stores.close()
    assert proxy.seen == []


def test_the_proxy_is_read_when_the_client_is_built(
        proxy: FakeProxy, azurite: Azurite, table_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    stores = Stores.open(storage(azurite), table_prefix)
    try:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        assert stores.dedup.claim("proxy-test", "key-1")
    finally:
        stores.close()
    assert ("POST", f"127.0.0.1:{azurite.table_port}") in proxy.seen


def test_queue_sends_go_through_the_proxy(proxy: FakeProxy, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    bus = StorageQueueBus(storage(azurite))
    try:
        bus.send("q" + uuid.uuid4().hex[:12], Envelope("ping", "proxy-test", "key-1", {}))
    finally:
        bus.close()
    assert ("POST", f"127.0.0.1:{azurite.queue_port}") in proxy.seen


def test_outbound_http_goes_through_the_proxy_unless_exempted(
        proxy: FakeProxy, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    # Azurite stands in for any HTTP service: its blob endpoint answers a GET without credentials.
    url = f"http://127.0.0.1:{azurite.blob_port}/devstoreaccount1?comp=list"
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with HttpClient() as client, pytest.raises(HttpFailure) as refused:
        client.get(url)
    assert refused.value.status == 403  # Azurite's answer to an unsigned request, relayed
    assert proxy.seen == [("GET", f"127.0.0.1:{azurite.blob_port}")]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with HttpClient() as client, pytest.raises(HttpFailure):
        client.get(url)
    assert len(proxy.seen) == 1


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: object) -> object:
        from azure.core.credentials import AccessToken

        return AccessToken("token", 2**31)


def test_key_vault_calls_tunnel_through_the_https_proxy(proxy: FakeProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    provider = KeyVaultSecretProvider(f"https://{VAULT_HOST}", credential=StaticToken())  # type: ignore[arg-type]
    with pytest.raises(ServiceRequestError):  # the proxy refuses the tunnel; that it was asked is the point
        provider.get("twilio-auth-token")
    assert ("CONNECT", f"{VAULT_HOST}:443") in proxy.seen
