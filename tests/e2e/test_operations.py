"""What operators do: read a record's trail, replay failures, and see acknowledgements."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.e2e.conftest import Stack
from tests.e2e.test_dynamics_to_twilio import invoice_event, new_phone, record_of
from tests.support.waiting import wait_for


def test_cli_shows_who_was_contacted_about_an_invoice(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-OPS-1", phone))
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    stack.twilio.advance_message(message.sid, "delivered")
    record = record_of("INV-OPS-1")
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "delivered", what="delivered")
    shown = stack.cli("audit", "--record", record)
    assert shown.returncode == 0, shown.stderr
    trail, _, summary = shown.stdout.partition("contacted:")
    assert "received" in trail and "sent" in trail
    [line] = [line for line in summary.splitlines() if message.sid in line]
    assert line.split()[0] == "sms" and "delivered" in line
    assert phone not in shown.stdout and phone[-2:] in line  # the number is masked


def test_failed_jobs_of_a_window_are_replayed_and_delivered_ones_never(stack: Stack) -> None:
    since = datetime.now(UTC).isoformat()
    lost, fine = new_phone(), new_phone()
    stack.post_events(invoice_event("INV-OPS-2", lost))
    stack.post_events(invoice_event("INV-OPS-3", fine))
    [first] = wait_for(lambda: stack.twilio.messages(to=lost), what="the SMS that will be lost")
    [kept] = wait_for(lambda: stack.twilio.messages(to=fine), what="the SMS that arrives")
    stack.twilio.advance_message(first.sid, "undelivered", error_code=30003)
    stack.twilio.advance_message(kept.sid, "delivered")
    wait_for(lambda: stack.audit(record_of("INV-OPS-2"))["contacts"][0]["status"] == "undelivered", what="undelivered")
    wait_for(lambda: stack.audit(record_of("INV-OPS-3"))["contacts"][0]["status"] == "delivered", what="delivered")

    lost_job = stack.audit(record_of("INV-OPS-2"))["contacts"][0]["job_id"]
    fine_job = stack.audit(record_of("INV-OPS-3"))["contacts"][0]["job_id"]
    replay = stack.cli("replay", "--from", since)
    assert replay.returncode == 0, replay.stderr
    assert f"{lost_job}  replayed  was undelivered" in replay.stdout
    assert fine_job not in replay.stdout  # delivered: never replayed
    again = wait_for(lambda: len(stack.twilio.messages(to=lost)) == 2 and stack.twilio.messages(to=lost),
                     what="the replayed SMS")
    assert {m.body for m in again} == {first.body}
    assert len(stack.twilio.messages(to=fine)) == 1
    contact = wait_for(lambda: next((c for c in stack.audit(record_of("INV-OPS-2"))["contacts"]
                                     if c["status"] == "queued"), None), what="the replay recorded as sent")
    assert contact["provider_id"] not in ("", first.sid)
    assert "replayed" in stack.steps(record_of("INV-OPS-2"))

    again_output = stack.cli("replay", "--from", since).stdout
    assert lost_job not in again_output  # the replayed job is under way, not failed


def test_pressing_1_during_the_call_acknowledges_the_alert(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-OPS-4", phone, amount=25000.0))
    [call] = wait_for(lambda: stack.twilio.calls(to=phone), what="a call")
    request = next(r for r in stack.twilio.requests_to("POST /2010-04-01/Accounts/")
                   if r.path.endswith("/Calls.json") and r.form_value("To") == phone)
    import xml.etree.ElementTree as ET

    action = ET.fromstring(request.form_value("Twiml")).find("Gather").get("action")
    params = {**stack.twilio.call_status_params(call.sid, "in-progress", 1), "Digits": "1"}
    answer = stack.twilio.send_status_callback(action, params)
    assert answer.status_code == 200 and "acknowledged" in answer.text
    wait_for(lambda: "acknowledged" in stack.steps(record_of("INV-OPS-4")), what="acknowledged")


def test_cli_says_what_is_wrong(stack: Stack) -> None:
    missing = stack.cli("replay")
    assert missing.returncode == 2 and "one of the arguments --job --from is required" in missing.stderr
    unknown = stack.cli("replay", "--job", "no-such-job")
    assert unknown.returncode == 1 and "no such job" in unknown.stdout
