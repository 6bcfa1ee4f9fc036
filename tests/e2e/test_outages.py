"""Outages and dead letters, end to end: nothing lost, nothing sent twice, every failure repairable.

Each stack runs with short backoff settings so that minutes of retries take seconds of backoff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devhost.azurite import start_azurite
from tests.e2e.conftest import MASTER_KEY, Stack, running_stack
from tests.e2e.test_dynamics_to_twilio import invoice_event, message_requests, new_phone, record_of
from tests.support.waiting import wait_for

OUTAGE_SECONDS = 60.0  # Entra unreachable, then Dynamics answering 500: two minutes in all


def stack_on_its_own_azurite(folder: Path, **settings: str) -> Iterator[Stack]:
    azurite = start_azurite()
    try:
        with running_stack(folder, azurite, QUEUE_MAX_ATTEMPTS="0", **settings) as stack:
            yield stack
    finally:
        azurite.stop()


@pytest.fixture(scope="module")
def patient_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Retries every few seconds for up to an hour."""
    yield from stack_on_its_own_azurite(tmp_path_factory.mktemp("outage"), RETRY_BACKOFF_BASE_SECONDS="1",
                                        RETRY_BACKOFF_CAP_SECONDS="4", RETRY_MAX_AGE_SECONDS="3600")


@pytest.fixture(scope="module")
def impatient_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Gives work up after a few seconds of failures, so that it dead-letters within a test."""
    yield from stack_on_its_own_azurite(tmp_path_factory.mktemp("deadletter"), RETRY_BACKOFF_BASE_SECONDS="0.5",
                                        RETRY_BACKOFF_CAP_SECONDS="1", RETRY_MAX_AGE_SECONDS="4")


def steps_of(stack: Stack, record: str) -> list[dict]:
    return sorted(stack.audit(record)["entries"], key=lambda entry: entry["at"])


def ops(stack: Stack, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, f"{stack.base_url}/api/ops/{path}", headers={"x-functions-key": MASTER_KEY},
                            timeout=30, **kwargs)


def test_two_minutes_of_entra_and_dynamics_outage_lose_nothing_and_send_nothing_twice(patient_stack: Stack) -> None:
    stack = patient_stack
    stack.entra.drop_next(1_000_000)  # every token request: the connection closes unanswered
    events = [(f"INV-OUT-{index}", new_phone()) for index in range(6)]
    for invoice, phone in events:
        assert stack.post_events(invoice_event(invoice, phone)).status_code == 202
    time.sleep(OUTAGE_SECONDS)
    stack.entra.clear_scripts()
    stack.dynamics.fail_next(1_000_000, status=500, match="/data/")
    time.sleep(OUTAGE_SECONDS)
    assert not stack.twilio.messages(), "nothing can be sent while the record cannot be read"
    stack.dynamics.clear_scripts()

    for invoice, phone in events:
        [message] = wait_for(lambda phone=phone: stack.twilio.messages(to=phone), timeout=60,
                             what=f"the SMS about {invoice}")
        # Delivered once the app has recorded its send, as a handset's receipt comes after Twilio's answer.
        wait_for(lambda invoice=invoice: "sent" in [entry["step"] for entry in steps_of(stack, record_of(invoice))],
                 what=f"the send about {invoice} recorded")
        stack.twilio.advance_message(message.sid, "delivered")
    for invoice, phone in events:
        record = record_of(invoice)
        wait_for(lambda record=record: "delivered" in [c["status"] for c in stack.audit(record)["contacts"]],
                 what=f"{invoice} delivered")
        assert len(message_requests(stack, phone)) == 1
        entries = steps_of(stack, record)
        names = [entry["step"] for entry in entries]
        assert names.count("received") == 1 and "dead-lettered" not in names and "failed" not in names
        retries = [entry["detail"]["reason"] for entry in entries if entry["step"] == "retrying"]
        assert retries and all(retries), names
        assert names.index("retrying") < names.index("enriched") < names.index("sent")
        assert names[-1] == "status" and entries[-1]["detail"]["status"] == "delivered"
    reasons = {entry["detail"]["reason"] for invoice, _ in events for entry in steps_of(stack, record_of(invoice))
               if entry["step"] == "retrying"}
    assert any("500" in reason for reason in reasons), reasons  # Dynamics' own answer
    assert any("500" not in reason for reason in reasons), reasons  # the token that could not be had


def dead_lettered(stack: Stack, invoice: str, phone: str) -> dict:
    """Post an invoice event while Dynamics fails, until the app gives it up; its dead letter."""
    event = invoice_event(invoice, phone)
    stack.dynamics.fail_next(1_000_000, status=500, match="/data/")
    try:
        assert stack.post_events(event).status_code == 202
        record = record_of(invoice)
        wait_for(lambda: "dead-lettered" in [e["step"] for e in stack.audit(record)["entries"]], timeout=60,
                 what=f"{invoice} dead-lettered")
    finally:
        stack.dynamics.clear_scripts()
    letters = ops(stack, "GET", "deadletters").json()["dead_letters"]
    [letter] = [letter for letter in letters if letter["record"] == record]
    assert letter["queue"] == "erp-events" and letter["type"] == "dynamics.business_event"
    assert "HTTP 500" in letter["reason"] and phone not in str(letter)
    return {"event": event, "letter": letter, "record": record}


def test_a_dead_lettered_event_is_processed_once_when_dynamics_sends_it_again(impatient_stack: Stack) -> None:
    stack, phone = impatient_stack, new_phone()
    dead = dead_lettered(stack, "INV-DL-RESEND", phone)

    assert stack.post_events(dead["event"]).status_code == 202  # Dynamics' resend: same ControlNumber
    wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS after the resend")
    assert stack.post_events(dead["event"]).status_code == 202  # and once more, after it was sent
    wait_for(lambda: "duplicate" in [e["step"] for e in steps_of(stack, dead["record"])], what="a duplicate")
    names = [entry["step"] for entry in steps_of(stack, dead["record"])]
    assert names.index("dead-lettered") < names.index("sent") and names.count("sent") == 1
    assert len(message_requests(stack, phone)) == 1


def test_a_dead_lettered_event_is_processed_once_when_redriven(impatient_stack: Stack) -> None:
    stack, phone = impatient_stack, new_phone()
    dead = dead_lettered(stack, "INV-DL-REDRIVE", phone)
    letter_id = dead["letter"]["id"]

    answer = ops(stack, "POST", "deadletters/redrive", json={"ids": [letter_id]})
    assert answer.status_code == 200 and answer.json()["redriven"] == 1
    wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS after the redrive")
    again = ops(stack, "POST", "deadletters/redrive", json={"ids": [letter_id]}).json()
    assert again["redriven"] == 0 and "already redriven" in again["dead_letters"][0]["reason"]
    assert stack.post_events(dead["event"]).status_code == 202  # Dynamics resends it too: a duplicate now
    wait_for(lambda: "duplicate" in [e["step"] for e in steps_of(stack, dead["record"])], what="a duplicate")
    names = [entry["step"] for entry in steps_of(stack, dead["record"])]
    assert names.index("dead-lettered") < names.index("redriven") < names.index("sent")
    assert names.count("sent") == 1 and len(message_requests(stack, phone)) == 1
    shown = ops(stack, "GET", f"deadletters/{letter_id}").json()
    assert shown["state"] == "redriven" and shown["redrives"] == 1


def test_an_operator_lists_shows_and_redrives_a_dead_letter_from_the_cli(impatient_stack: Stack) -> None:
    stack, phone = impatient_stack, new_phone()
    dead = dead_lettered(stack, "INV-DL-CLI", phone)
    letter_id = dead["letter"]["id"]

    listed = stack.cli("deadletters", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(letter_id)]
    assert "dynamics.business_event" in line and dead["record"] in line and "HTTP 500" in line
    shown = stack.cli("deadletters", "show", letter_id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["record"] == dead["record"]
    assert phone not in listed.stdout + shown.stdout

    redriven = stack.cli("deadletters", "redrive", letter_id)
    assert redriven.returncode == 0 and "1 of 1 dead letter(s) redriven" in redriven.stdout
    wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS after the redrive")
    again = stack.cli("deadletters", "redrive", letter_id)
    assert again.returncode == 1 and "already redriven" in again.stdout
    assert len(message_requests(stack, phone)) == 1


def test_a_dry_run_redrive_previews_the_dead_letter_and_sends_nothing(impatient_stack: Stack) -> None:
    stack, phone = impatient_stack, new_phone()
    dead = dead_lettered(stack, "INV-DL-DRY", phone)
    letter_id = dead["letter"]["id"]

    preview = ops(stack, "POST", "deadletters/redrive", json={"ids": [letter_id], "dry_run": True}).json()
    assert preview["dry_run"] is True and preview["redriven"] == 0 and preview["would_redrive"] == 1
    [shown] = preview["dead_letters"]
    assert shown["preview"]["queue"] == "erp-events" and shown["preview"]["record"] == dead["record"]
    assert "processed again" in shown["preview"]["effect"] and phone not in str(preview)
    cli = stack.cli("deadletters", "redrive", letter_id, "--dry-run")
    assert cli.returncode == 0 and "1 of 1 dead letter(s) would be redriven (dry run)" in cli.stdout, cli.stdout
    assert ops(stack, "GET", f"deadletters/{letter_id}").json()["state"] == "open"
    assert "redriven" not in [entry["step"] for entry in steps_of(stack, dead["record"])]
    assert not stack.twilio.messages(to=phone)
