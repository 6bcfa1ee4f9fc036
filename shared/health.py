"""What ``GET /api/health`` reports: configuration, storage, version. Never a secret."""

from __future__ import annotations

import logging
import time
from typing import Any

from shared import __version__

log = logging.getLogger(__name__)


def config_status() -> dict[str, Any]:
    from shared.config.loading import get_config
    from shared.config.model import ConfigError

    try:
        config = get_config()
    except ConfigError as exc:
        log.error("configuration does not load: %s", exc)
        return {"loaded": False, "errors": len(exc.errors)}
    return {"loaded": True, "connections": len(config.connections), "rules": len(config.rules)}


def storage_status() -> dict[str, Any]:
    from shared.storage.tables import get_stores

    started = time.perf_counter()
    try:
        get_stores().tables.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable", reported, not raised
        log.error("storage is not reachable: %s", exc.__class__.__name__)
        return {"reachable": False, "error": exc.__class__.__name__}
    return {"reachable": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def health_report() -> tuple[dict[str, Any], bool]:
    """The report and whether everything is healthy."""
    config = config_status()
    storage = storage_status()
    healthy = bool(config["loaded"] and storage["reachable"])
    report = {"status": "ok" if healthy else "degraded", "version": __version__,
              "config": config, "storage": storage}
    return report, healthy
