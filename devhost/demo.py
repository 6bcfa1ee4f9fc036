"""``python -m devhost.demo`` (``make demo``): the app at work on this machine, narrated step by step.

It starts an Azurite of its own (in memory, on free ports), local stand-ins for Entra ID, Dynamics 365,
Twilio, Slack and SYSPRO (real HTTP servers on 127.0.0.1: nothing leaves the machine), and the app under
the local host with a generated configuration whose every base URL points at them. Then it plays three
steps and says what it saw at each, from the app's audit (``/api/ops/audit``) and what the stand-ins
received:

1. a posted vendor invoice (a Dynamics business event) becomes an SMS, which Twilio reports delivered;
2. an approver clicks Approve on a Slack card and the decision is written back to Dynamics;
3. a SYSPRO poll finds a new purchase order and texts the supplier, whose reply becomes a note in SYSPRO.

Exit status: 0 when every step worked, 1 when one did not (it says which) or the app could not start,
130 when interrupted. Unless ``--short`` (or ``DEMO_SHORT=1``), everything keeps running afterwards, for
the operator console, until Ctrl+C; whatever happens, what was started is stopped, last first.

This is a local tool, never deployed (``.funcignore`` leaves ``devhost/`` and ``tests/`` out of the
package): it runs the tests' fakes and reuses the end-to-end tests' configuration and helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import requests

from devhost.azurite import REPO_ROOT, start_azurite
from shared.logs import mask_phone
from shared.model import POLL_JOBS, POLL_RUN, Envelope
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from tests.e2e.conftest import (
    APPROVALS_CHANNEL,
    APPROVER,
    FAST_HOST_JSON,
    SLACK_SIGNING_SECRET,
    app_config,
    app_values,
    audit_of,
    prepare_dynamics,
    prepare_slack,
    text_in,
)
from tests.e2e.test_dynamics_poll import invoice_header
from tests.e2e.test_dynamics_to_twilio import invoice_event, record_of
from tests.e2e.test_slack_approvals import buttons, work_item_event
from tests.fakes.dynamics import FakeDynamics
from tests.fakes.entra import FakeEntra
from tests.fakes.slack import FakeSlack, SlackMessage, SlackUpdate
from tests.fakes.syspro import FakeSyspro
from tests.fakes.twilio import FakeTwilio, Message, TwilioCredentials
from tests.support.app import LocalApp, local_app
from tests.support.waiting import wait_for

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
SHORT_VARIABLE = "DEMO_SHORT"  # the demo's own switch, from the environment: not a setting of the app
DEFAULT_TIMEOUT = 30.0  # the longest wait for any one thing the demo expects to happen
LOCAL_SETTINGS_EXAMPLE = REPO_ROOT / "local.settings.example.json"

# The scenario's data: one invoice, one work item, one purchase order, and who is behind them.
INVOICE, INVOICE_PHONE = "INV-DEMO-1", "+14155550123"
WORK_ITEM = "WI-DEMO-1"
SYSPRO, SYSPRO_OPERATOR, SYSPRO_PASSWORD, SYSPRO_COMPANY = "syspro-main", "MLCONNECT", "demo-syspro-password", "EDU1"
SUPPLIER, SUPPLIER_NAME, SUPPLIER_PHONE = "S-DEMO", "Northwind Parts", "+14155550142"
ORDER = "PO-DEMO-1"
REPLY = "Confirmed, ships Friday"
STEP_TITLES = ("a posted invoice becomes an SMS", "a Slack approval goes back to Dynamics",
               "a SYSPRO change becomes an SMS, and the reply a note")


class StepFailed(Exception):
    """What a step expected and did not see."""


def say(text: str) -> None:
    print(text, flush=True)


def saw(text: str) -> None:
    say(f"   - {text}")


# --- what runs ---------------------------------------------------------------------------------


@dataclass
class Fakes:
    entra: FakeEntra
    dynamics: FakeDynamics
    twilio: FakeTwilio
    slack: FakeSlack
    syspro: FakeSyspro
    twilio_creds: TwilioCredentials


@dataclass
class Demo:
    app: LocalApp
    fakes: Fakes
    storage: str  # Azurite's connection string
    function_key: str
    master_key: str
    timeout: float

    def wait(self, predicate: Callable[[], T | None], what: str) -> T:
        """The first truthy answer of ``predicate``; StepFailed when the app stops or time runs out first."""
        def while_app_runs() -> T | None:
            if self.app.process.poll() is not None:
                raise StepFailed(f"the app stopped (exit status {self.app.process.returncode}) while waiting for "
                                 f"{what}; its log: {self.app.log_path}")
            return predicate()

        try:
            return wait_for(while_app_runs, timeout=self.timeout, what=what, interval=0.1)
        except AssertionError:
            raise StepFailed(f"no {what} within {self.timeout:.0f} s") from None

    def audit(self, record: str) -> dict[str, Any]:
        return audit_of(self.app.base_url, record, master_key=self.master_key)

    def steps(self, record: str) -> list[str]:
        return [entry["step"] for entry in self.audit(record)["entries"]]

    def post_event(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.app.base_url}/api/dynamics/events/contoso-fo", json=body,
                             headers={"x-functions-key": self.function_key}, timeout=10)


def local_keys() -> tuple[str, str]:
    """The function and master keys every local run uses (local.settings.example.json)."""
    values = json.loads(LOCAL_SETTINGS_EXAMPLE.read_text(encoding="utf-8"))["Values"]
    return values["DEVHOST_FUNCTION_KEY"], values["DEVHOST_MASTER_KEY"]


def start_fakes(started: ExitStack) -> Fakes:
    """The stand-ins, each stopped when ``started`` closes, set up as the end-to-end tests set them up."""
    entra = FakeEntra().start()
    started.callback(entra.stop)
    dynamics = FakeDynamics(entra).start()
    started.callback(dynamics.stop)
    # Twilio calls the app back with each status of an SMS (queued, sent, delivered), signed, as the real one.
    twilio = FakeTwilio(auto_callbacks=True).start()
    started.callback(twilio.stop)
    slack = FakeSlack().start()
    started.callback(slack.stop)
    syspro = FakeSyspro().start()
    started.callback(syspro.stop)
    prepare_dynamics(entra, dynamics)
    # The configuration polls Dynamics invoice headers too (on its schedule): one that is not on hold, so
    # that poll finds the fields it asks for and has nothing to say.
    settled = invoice_header("DEMO-0", datetime.now(UTC) - timedelta(days=30), "No")
    dynamics.add_entities("VendorInvoiceHeaders", [settled], keys=("dataAreaId", "HeaderReference"))
    prepare_slack(slack)
    syspro.add_operator(SYSPRO_OPERATOR, SYSPRO_PASSWORD)
    syspro.add_company(SYSPRO_COMPANY)
    syspro.add_supplier(SUPPLIER, SUPPLIER_NAME, SUPPLIER_PHONE)
    return Fakes(entra, dynamics, twilio, slack, syspro, twilio.add_test_account())


def demo_config(fakes: Fakes) -> dict[str, Any]:
    """The end-to-end tests' configuration (Dynamics, Twilio, Slack) and a SYSPRO connection that texts
    suppliers about their purchase orders."""
    config = app_config(fakes.dynamics, fakes.entra, fakes.twilio, fakes.twilio_creds, fakes.slack)
    config["connections"][SYSPRO] = {
        "kind": "syspro", "base_url": fakes.syspro.rest_url, "operator": SYSPRO_OPERATOR,
        "password": {"secret": f"{SYSPRO}-operator-password"}, "company_id": SYSPRO_COMPANY,
        "poll": {"entities": ["PorMasterHdr"], "interval_minutes": 5},
    }
    config["rules"].append({"id": "po-to-supplier", "source": SYSPRO, "event": "PorMasterHdr", "channel": "sms",
                            "via": "twilio-main", "to": [{"field": "supplier_phone"}],
                            "template": "syspro-po-approval"})
    return config


def demo_settings(storage: str, fakes: Fakes, function_key: str, master_key: str) -> dict[str, str]:
    """The app's settings: storage on the demo's Azurite under a table prefix of its own, the local keys,
    and every secret the configuration names."""
    values = app_values(storage, "demo" + uuid.uuid4().hex[:8], fakes.twilio_creds, fakes.slack)
    return values | {"DEVHOST_FUNCTION_KEY": function_key, "DEVHOST_MASTER_KEY": master_key,
                     f"{SYSPRO.upper().replace('-', '_')}_OPERATOR_PASSWORD": SYSPRO_PASSWORD}


def start_everything(started: ExitStack, timeout: float) -> Demo:
    say("Starting Azurite, the storage emulator, in memory on free ports ...")
    azurite = start_azurite()
    started.callback(azurite.stop)
    say("Starting local stand-ins for Entra ID, Dynamics 365, Twilio, Slack and SYSPRO (nothing leaves "
        "this machine) ...")
    fakes = start_fakes(started)
    folder = Path(started.enter_context(tempfile.TemporaryDirectory(prefix="ml-connector-demo-")))
    function_key, master_key = local_keys()
    say("Starting the app under the local host, every base URL pointed at the stand-ins ...")
    app = started.enter_context(local_app(folder, config=demo_config(fakes), host_json=FAST_HOST_JSON,
                                          values=demo_settings(azurite.connection_string, fakes, function_key,
                                                               master_key)))
    say(f"The app is up at {app.base_url}/api/ (its log: {app.log_path})")
    return Demo(app, fakes, azurite.connection_string, function_key, master_key, timeout)


# --- step 1: a posted invoice becomes an SMS, delivered ------------------------------------------


def invoice_becomes_sms(demo: Demo) -> str:
    say(f"Dynamics 365 posts a business event: vendor invoice {INVOICE} from Fabrikam Supplies, 950.00 USD, "
        "to be texted to the person who must know.")
    answer = demo.post_event(invoice_event(INVOICE, INVOICE_PHONE))
    expect(answer.status_code == 202, f"the app answered the business event with {answer.status_code}")
    saw("the app accepted the event (HTTP 202) and queued it")
    message = demo.wait(lambda: first(demo.fakes.twilio.messages(to=INVOICE_PHONE)), "SMS at Twilio")
    saw(f"Twilio was asked to send an SMS to {mask_phone(INVOICE_PHONE)}: \"{message.body}\"")
    record = record_of(INVOICE)
    demo.wait(lambda: contact_status(demo, record) == "delivered", "delivery reported in the audit")
    saw(f"Twilio called back with the SMS's status, signed; the invoice's audit trail reads: {trail(demo, record)}")
    return "the invoice became an SMS, and Twilio reported it delivered"


def contact_status(demo: Demo, record: str) -> str | None:
    contacts = demo.audit(record)["contacts"]
    return contacts[0]["status"] if contacts else None


# --- step 2: a Slack approval is written back to Dynamics -------------------------------------------


def approval_written_back(demo: Demo) -> str:
    dynamics, slack = demo.fakes.dynamics, demo.fakes.slack
    dynamics.add_work_item(WORK_ITEM)
    say(f"Dynamics 365 posts a workflow work item: approve vendor invoice {WORK_ITEM}, assigned to {APPROVER[1]}.")
    answer = demo.post_event(work_item_event(WORK_ITEM))
    expect(answer.status_code == 202, f"the app answered the work item with {answer.status_code}")
    card = demo.wait(lambda: card_for(slack, WORK_ITEM), "approval card in Slack")
    saw(f"the app posted an approval card to Slack's #ap-approvals with the buttons "
        f"{' and '.join(sorted(buttons(card)))}")
    click = slack.block_actions_payload(APPROVER[0], APPROVALS_CHANNEL, card.ts, "approve", buttons(card)["approve"])
    answer = slack.send_interaction(f"{demo.app.base_url}/api/slack/interactions/slack-main", click,
                                    SLACK_SIGNING_SECRET)
    expect(answer.status_code == 200, f"the app answered the click with {answer.status_code}")
    saw(f"{APPROVER[1]} clicked Approve; Slack sent the signed click and the app took it (HTTP 200)")
    completion = demo.wait(lambda: completion_of(dynamics, WORK_ITEM), "decision written to Dynamics")
    saw(f"Dynamics received the OData action Complete on work item {WORK_ITEM}: outcome "
        f"{completion['outcome']}, comment \"{completion.get('comment', '')}\"")
    update = demo.wait(lambda: update_of(slack, card), "card updated in Slack")
    saw(f"the card in Slack now reads \"{update.text}\", without its buttons")
    record = f"contoso-fo|WorkflowWorkItem|{WORK_ITEM}"
    demo.wait(lambda: "decided" in demo.steps(record), "decision in the audit")
    saw(f"the work item's audit trail reads: {trail(demo, record)}")
    return "the approval was written back to Dynamics"


def card_for(slack: FakeSlack, work_item: str) -> SlackMessage | None:
    return next((message for message in slack.messages(APPROVALS_CHANNEL) if work_item in message.text), None)


def completion_of(dynamics: FakeDynamics, work_item: str) -> dict[str, Any] | None:
    return next((done for done in dynamics.completions if done.get("WorkflowWorkitemInstanceID") == work_item), None)


def update_of(slack: FakeSlack, card: SlackMessage) -> SlackUpdate | None:
    return next((update for update in slack.updates if update.ts == card.ts), None)


# --- step 3: a SYSPRO change becomes an SMS, and the supplier's reply a note ----------------------


def syspro_change_and_reply(demo: Demo) -> str:
    syspro = demo.fakes.syspro
    say("The app polls SYSPRO on a schedule; a first poll notes where SYSPRO stands, and announces nothing.")
    poll_syspro(demo)
    saw("the first poll of SYSPRO's purchase orders is done")
    syspro.add_purchase_order(ORDER, SUPPLIER, [(4, "12.50")], status="4")
    say(f"In SYSPRO, purchase order {ORDER} to {SUPPLIER_NAME} is printed; the next poll runs.")
    poll_syspro(demo)
    message = demo.wait(lambda: first(demo.fakes.twilio.messages(to=SUPPLIER_PHONE)), "SMS to the supplier")
    saw(f"the poll found the change, and Twilio was asked to text the supplier at {mask_phone(SUPPLIER_PHONE)}: "
        f"\"{message.body}\"")
    record = f"{SYSPRO}|PorMasterHdr|{ORDER}"
    demo.wait(lambda: contact_status(demo, record) == "delivered", "delivery of the supplier's SMS in the audit")
    saw("Twilio reported it delivered")
    reply = demo.fakes.twilio.inbound_sms_params(SUPPLIER_PHONE, demo.fakes.twilio_creds.phone_number, REPLY)
    text_in(demo.fakes.twilio, demo.app.base_url, reply)
    saw(f"the supplier texted back \"{REPLY}\"; Twilio posted it to the app (signed), which took it")
    demo.wait(lambda: "note-written" in demo.steps(record), "note written to SYSPRO in the audit")
    comments = demo.wait(lambda: syspro.comments(ORDER), "comment on the order in SYSPRO")
    saw(f"SYSPRO now holds the reply as comment lines on {ORDER}: {' / '.join(map(repr, comments))}")
    saw(f"the order's audit trail reads: {trail(demo, record)}")
    return "the SYSPRO change became an SMS, and the supplier's reply a note in SYSPRO"


def poll_syspro(demo: Demo) -> None:
    """Ask for a poll now, as the schedule would, and wait until one has read the purchase orders."""
    before = len(polls_done(demo))
    bus = StorageQueueBus(StorageSettings(demo.storage, None, None, None))
    try:
        bus.send(POLL_JOBS, Envelope(POLL_RUN, SYSPRO, f"demo-poll|{uuid.uuid4().hex}", {"entities": ["PorMasterHdr"]}))
    finally:
        bus.close()
    demo.wait(lambda: len(polls_done(demo)) > before, "finished poll of SYSPRO")


def polls_done(demo: Demo) -> list[str]:
    """The app's log line of each finished poll of the purchase orders."""
    return re.findall(rf"polled {SYSPRO}/PorMasterHdr\b.*?: \d+ change\(s\)", demo.app.log())


# --- the scenario ---------------------------------------------------------------------------------


STEPS: Sequence[Callable[[Demo], str]] = (invoice_becomes_sms, approval_written_back, syspro_change_and_reply)


def expect(condition: bool, otherwise: str) -> None:
    if not condition:
        raise StepFailed(otherwise)


def first(items: Sequence[Message]) -> Message | None:
    return items[0] if items else None


def trail(demo: Demo, record: str) -> str:
    """The record's audit steps in order, a status step with the status it recorded."""
    return " -> ".join(f"{entry['step']} {entry['detail']['status']}"
                       if entry["step"] == "status" and entry.get("detail", {}).get("status") else entry["step"]
                       for entry in demo.audit(record)["entries"])


def play(demo: Demo) -> list[int]:
    """Every step, in order; the numbers of those that failed."""
    failed = []
    for number, (step, title) in enumerate(zip(STEPS, STEP_TITLES, strict=True), start=1):
        say(f"\nStep {number}: {title}")
        try:
            outcome = step(demo)
        except (StepFailed, AssertionError, requests.RequestException) as error:
            say(f"[failed] Step {number} ({title}): {error}")
            failed.append(number)
        else:
            say(f"[ok] Step {number}: {outcome}.")
    return failed


def keep_running(demo: Demo) -> int:
    say(f"\nEverything keeps running: the console is at {demo.app.base_url}/api/ops/console?code={demo.master_key}; "
        "Ctrl+C to stop.")
    try:
        while demo.app.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl+C is how a demo that worked ends
    say(f"The app stopped by itself (exit status {demo.app.process.returncode}); its log: {demo.app.log_path}")
    return EXIT_FAILED


def run(short: bool, timeout: float) -> int:
    with ExitStack() as started:
        try:
            demo = start_everything(started, timeout)
        except (RuntimeError, TimeoutError, OSError) as error:
            say(f"[failed] the demo could not start: {error}")
            return EXIT_FAILED
        status = outcome(demo, play(demo), short)
        say("Stopping everything the demo started ...")
    say("Stopped.")
    return status


def outcome(demo: Demo, failed: list[int], short: bool) -> int:
    """The exit status once the steps are played: at once in short mode or after a failure, else when the
    operator is done with the running app."""
    if failed:
        say(f"\nThe demo failed at step {', '.join(map(str, failed))}. The end of the app's log "
            "(it goes with the demo's temporary folder):")
        say(log_tail(demo.app))
        return EXIT_FAILED
    say("\nAll three steps worked.")
    return EXIT_OK if short else keep_running(demo)


def log_tail(app: LocalApp, lines: int = 40) -> str:
    return "\n".join(f"   | {line}" for line in app.log().splitlines()[-lines:])


def interrupt(signum: int, _frame: object) -> NoReturn:
    # A second Ctrl+C must not cut short the stopping of what was started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost.demo",
                                     description="Run the app against local stand-ins and narrate three flows.")
    parser.add_argument("--short", action="store_true", default=os.environ.get(SHORT_VARIABLE, "") not in ("", "0"),
                        help=f"stop once the steps are played (also {SHORT_VARIABLE}=1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"longest wait for any one thing, in seconds (default {DEFAULT_TIMEOUT:.0f})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C, and a SIGTERM as well, stop everything the same way (even where SIGINT came in ignored).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(args.short, args.timeout)
    except KeyboardInterrupt:
        say("Interrupted; everything the demo started is stopped.")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
