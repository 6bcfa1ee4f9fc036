"""``twilio-webhooks``: each Twilio number's SMS webhook and status callback pointed at the app."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.channels.twilio.connection import TwilioConnection
    from shared.channels.twilio.webhooks import NumberWebhooks

EXIT_WEBHOOK_PROBLEMS = 1
EXIT_WEBHOOK_UNUSABLE = 2


def add(commands: argparse._SubParsersAction) -> None:
    webhooks = commands.add_parser(
        "twilio-webhooks",
        help="point each Twilio number's incoming SMS webhook and status callback at PUBLIC_BASE_URL")
    webhooks.add_argument("--connection", help="only this Twilio connection (default: every one)")
    webhooks.add_argument("--dry-run", action="store_true", help="show what would change and change nothing")
    webhooks.set_defaults(run=run, storage=False)


def run(args: argparse.Namespace) -> int:
    """0 when every number calls the app (or would, with --dry-run); 1 when one could not be set;
    2 without PUBLIC_BASE_URL, a loadable configuration or the named connection."""
    from shared.channels.twilio.connection import TwilioConnection
    from shared.config.loading import get_config
    from shared.config.model import ConfigError
    from shared.settings import env_str

    only, dry_run = args.connection, args.dry_run
    base_url = env_str("PUBLIC_BASE_URL")
    if not base_url:
        print("error: PUBLIC_BASE_URL is not set: the address Twilio should call", file=sys.stderr)
        return EXIT_WEBHOOK_UNUSABLE
    try:
        connections = [connection for connection in get_config().connections.values()
                       if isinstance(connection, TwilioConnection) and only in (None, connection.name)]
    except ConfigError as exc:
        print(f"error: the configuration does not load: {'; '.join(exc.errors)}", file=sys.stderr)
        return EXIT_WEBHOOK_UNUSABLE
    if not connections:
        print(f"error: no Twilio connection{f' named {only!r}' if only else ''} in the configuration", file=sys.stderr)
        return EXIT_WEBHOOK_UNUSABLE
    return max(point_number_at_app(connection, base_url, dry_run) for connection in connections)


def point_number_at_app(connection: TwilioConnection, base_url: str, dry_run: bool) -> int:
    """Set (or with ``dry_run`` show) one connection's number webhooks, printing them before and after."""
    from shared.channels.twilio.client import TwilioChannel, TwilioSendError
    from shared.channels.twilio.webhooks import expected_webhooks
    from shared.logs import mask_phone
    from shared.outcomes import RetryLater
    from shared.storage.secrets import get_secret_provider

    if not connection.from_number:
        print(f"{connection.name}: no from_number; set the incoming-message webhook of its Messaging Service "
              "in the Twilio console (Integration)")
        return EXIT_WEBHOOK_PROBLEMS
    wanted = expected_webhooks(connection.name, base_url)
    channel = TwilioChannel(connection, get_secret_provider())
    try:
        number = channel.find_number(connection.from_number)
        if number is None:
            print(f"{connection.name}: {mask_phone(connection.from_number)} is not a number of account "
                  f"{connection.account_sid}")
            return EXIT_WEBHOOK_PROBLEMS
        print(f"{connection.name}: {mask_phone(number.phone_number)} ({number.sid})")
        print(f"  before: {describe_webhooks(number.webhooks)}")
        if number.webhooks == wanted:
            print("  already calls the app: nothing to change")
        elif dry_run:
            print(f"  would set: {describe_webhooks(wanted)}")
        else:
            print(f"  after:  {describe_webhooks(channel.set_number_webhooks(number.sid, wanted).webhooks)}")
    except (TwilioSendError, RetryLater) as exc:
        print(f"{connection.name}: Twilio did not answer as expected: {exc}")
        return EXIT_WEBHOOK_PROBLEMS
    finally:
        channel.close()
    return 0


def describe_webhooks(webhooks: NumberWebhooks) -> str:
    return (f"SmsUrl={webhooks.sms_url or '(none)'} SmsMethod={webhooks.sms_method or '(none)'} "
            f"StatusCallback={webhooks.status_callback or '(none)'}")
