"""``python -m devhost``: run the FunctionApp locally, reading local.settings.json as Core Tools does."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from devhost.azurite import (
    REPO_ROOT,
    Azurite,
    AzuritePortError,
    free_port,
    parse_azurite_ports,
    running_azurite,
    start_azurite,
)
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
    parser.add_argument("--azurite", action="store_true",
                        help="start a persistent Azurite (or share one already running there) on --azurite-ports")
    parser.add_argument("--azurite-ports", type=azurite_ports_argument, metavar="PORT[,QUEUE,TABLE]",
                        help="Azurite's blob port, the queue and table ports following it (default 10000), "
                             "or all three separated by commas; implies --azurite")
    args = parser.parse_args(argv)
    args.azurite = args.azurite or args.azurite_ports is not None
    args.azurite_ports = args.azurite_ports or DEFAULT_AZURITE_PORTS
    return args


def azurite_ports_argument(text: str) -> tuple[int, int, int]:
    try:
        return parse_azurite_ports(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Their request logging would drown the functions' own: the app sets the libraries' level when it loads
    # (LIBRARY_LOG_LEVEL); devhost's queue pollers use the Azure SDKs before that.
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


def azurite_folder(ports: tuple[int, int, int]) -> Path:
    """Where a persistent Azurite keeps its data: two Azurites must never share a folder."""
    return AZURITE_DIR if ports == DEFAULT_AZURITE_PORTS else AZURITE_DIR / f"ports-{ports[0]}"


def start_or_reuse_azurite(ports: tuple[int, int, int]) -> Azurite | None:
    """A persistent Azurite on ``ports``; None when one already answers there as Azurite (shared).

    Raises AzuritePortError when the ports are taken by something that is not (all of) an Azurite.
    """
    listed = ", ".join(map(str, ports))
    if running_azurite(ports):
        log.info("Azurite already running on ports %s; sharing it", listed)
        azurite = None
    else:
        folder = azurite_folder(ports)
        log.info("Starting Azurite on ports %s with data in %s", listed, folder)
        azurite = start_azurite(location=folder, ports=ports, log_path=folder / "azurite.log")
    os.environ[STORAGE_SETTING] = development_storage_connection_string(ports)
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
    try:
        azurite = start_or_reuse_azurite(args.azurite_ports) if args.azurite else None
    except AzuritePortError as error:
        print(f"devhost: {error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        return run_host(args, settings, config, stop)
    finally:
        if azurite is not None:
            log.info("Stopping Azurite")
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
