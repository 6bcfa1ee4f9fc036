"""``python -m devhost``: run the FunctionApp locally, reading local.settings.json as Core Tools does."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from devhost.azurite import REPO_ROOT, Azurite, free_port, start_azurite
from devhost.settings import (
    DEFAULT_AZURITE_PORTS,
    DEFAULT_HOST_JSON,
    DEFAULT_HTTP_PORT,
    STORAGE_SETTING,
    HostConfig,
    LocalSettings,
    SettingsFileError,
    apply_local_settings,
    development_storage_connection_string,
    follow_local_port,
    load_host_config,
    read_local_settings,
)

log = logging.getLogger("devhost")

EXIT_USAGE = 2
EXIT_FAILURE = 1
CONFIG_PATH_SETTING = "CONNECTOR_CONFIG_PATH"
AZURITE_DIR = REPO_ROOT / ".azurite"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description="Run the Functions app locally (HTTP routes, timers, storage queue triggers) without Core Tools.",
    )
    parser.add_argument("--settings", default="local.settings.json", help="local.settings.json to read")
    parser.add_argument("--config", help=f"connections config file; sets {CONFIG_PATH_SETTING}")
    parser.add_argument("--app", default="function_app:app", help="the FunctionApp as module:attribute")
    parser.add_argument("--port", type=int, help=f"HTTP port (default Host.LocalHttpPort or {DEFAULT_HTTP_PORT})")
    parser.add_argument("--host-json", default=str(DEFAULT_HOST_JSON), help="host.json to read")
    parser.add_argument("--azurite", action="store_true", help="start (or reuse) a persistent Azurite on 10000-10002")
    return parser.parse_args(argv)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # host.json keeps the Azure SDKs at Warning; their request logging would drown the functions' own.
    logging.getLogger("azure").setLevel(logging.WARNING)


def load_settings(args: argparse.Namespace) -> LocalSettings:
    """Apply local.settings.json and --config to the environment, before the app is imported."""
    settings = read_local_settings(args.settings)
    for name in apply_local_settings(settings):
        log.info("Skipping '%s' from local settings: already set in the environment", name)
    if args.config:
        config_path = Path(args.config).resolve()
        if not config_path.is_file():
            raise SettingsFileError(f"config file not found: {config_path}")
        os.environ[CONFIG_PATH_SETTING] = str(config_path)
    return settings


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def start_or_reuse_azurite() -> Azurite | None:
    """A persistent Azurite on the default ports; None when one already listens there (reused)."""
    open_ports = [port for port in DEFAULT_AZURITE_PORTS if _port_open(port)]
    if open_ports:
        log.info("Azurite already running (ports %s answer); reusing it", ", ".join(map(str, open_ports)))
        azurite = None
    else:
        log.info("Starting Azurite with data in %s", AZURITE_DIR)
        azurite = start_azurite(
            location=AZURITE_DIR, ports=DEFAULT_AZURITE_PORTS, log_path=AZURITE_DIR / "azurite.log"
        )
    os.environ[STORAGE_SETTING] = development_storage_connection_string()
    return azurite


def install_stop_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("Received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop


def run_host(args: argparse.Namespace, settings: LocalSettings, config: HostConfig, stop: threading.Event) -> int:
    # Imported here so that the app's imports see the settings just applied.
    from devhost.host import DevHost, load_app

    port = args.port if args.port is not None else settings.http_port or DEFAULT_HTTP_PORT
    # Known before the app loads, so that no trigger ever sees another address than the one served.
    port = port or free_port()
    followed = follow_local_port(port)
    if followed:
        log.info("PUBLIC_BASE_URL follows the local port: %s", followed)
    app = load_app(args.app)
    try:
        host = DevHost(app, port=port, config=config)
        host.start()
    except OSError as error:
        print(f"devhost: cannot listen on 127.0.0.1:{port}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        while not stop.wait(0.5):
            pass
    finally:
        host.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    stop = install_stop_signals()
    try:
        settings = load_settings(args)
        config = load_host_config(args.host_json)
    except SettingsFileError as error:
        print(f"devhost: {error}", file=sys.stderr)
        return EXIT_USAGE
    azurite = start_or_reuse_azurite() if args.azurite else None
    try:
        return run_host(args, settings, config, stop)
    finally:
        if azurite is not None:
            log.info("Stopping Azurite")
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
