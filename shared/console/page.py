"""The console page: one HTML answer with its CSS and JavaScript inlined from ``static/``.

Inlined, so that the page needs no request of its own for them (every route under ``/api/ops`` wants
the key, and a browser sends none with a ``<script src>``), and nothing is fetched from elsewhere. The
Content-Security-Policy allows exactly this script and style (by their hashes) and calls back to this
app only; the key never leaves the page in a Referer.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib.resources import files


@cache
def page() -> tuple[bytes, dict[str, str]]:
    """The page's bytes and the headers it is served with; read from the package once per process."""
    static = files("shared.console").joinpath("static")
    script = static.joinpath("console.js").read_text(encoding="utf-8")
    style = static.joinpath("console.css").read_text(encoding="utf-8")
    html = static.joinpath("console.html").read_text(encoding="utf-8")
    html = html.replace("/*CSS*/", style, 1).replace("/*JS*/", script, 1)
    policy = "; ".join((
        "default-src 'none'", f"script-src '{_sha256(script)}'", f"style-src '{_sha256(style)}'",
        "connect-src 'self'", "img-src 'self' data:", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    ))
    headers = {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
               "X-Content-Type-Options": "nosniff"}
    return html.encode("utf-8"), headers


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
