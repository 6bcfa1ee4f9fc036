"""What the environment says about outbound proxies and CA bundles, read when a client is built.

A requests session that trusts the environment (the default) looks up HTTP(S)_PROXY, NO_PROXY,
REQUESTS_CA_BUNDLE and ~/.netrc on every request, scanning every variable each time: about a
tenth of the app's CPU per SMS. The app's sessions and azure-core transports ignore the
environment per call and are given these answers instead, so proxies keep working.
"""

from __future__ import annotations

import os


def environment_proxies(url: str) -> dict[str, str]:
    """The proxies requests would take from the environment for ``url``: {} when NO_PROXY exempts its host."""
    from requests.utils import get_environ_proxies

    return {scheme: proxy for scheme, proxy in get_environ_proxies(url).items() if scheme != "no" and proxy}


class ProxiesByOrigin:
    """The proxies the environment names for each origin (scheme and host), read the first time
    that origin is asked for."""

    def __init__(self) -> None:
        self._found: dict[str, dict[str, str]] = {}

    def for_url(self, url: str) -> dict[str, str]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        proxies = self._found.get(origin)
        if proxies is None:
            proxies = self._found[origin] = environment_proxies(origin)
        return proxies


def environment_ca_bundle() -> str | None:
    """The CA bundle requests would verify against instead of its own (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
