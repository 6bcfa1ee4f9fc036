"""What an operator does in the console: read a record's story, redrive a dead letter and replay a
failed job, each only after a dry-run preview they confirm."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import MASTER_KEY, WAIT_MS, Console
from tests.e2e.test_dynamics_to_twilio import invoice_event, new_phone, record_of
from tests.e2e.test_outages import dead_lettered
from tests.support.waiting import wait_for

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture then skips, or fails on CI, saying why
    expect: Any = None


def delivered_sms(console: Console, invoice: str) -> str:
    """An invoice event whose SMS Twilio reports delivered; the phone it went to."""
    stack, phone = console.stack, new_phone()
    assert stack.post_events(invoice_event(invoice, phone)).status_code == 202
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    for status in ("sent", "delivered"):
        stack.twilio.advance_message(message.sid, status)
    return phone


def test_a_records_story_runs_from_the_event_to_its_delivery(console: Console) -> None:
    page = console.page
    assert "code=" not in page.url and MASTER_KEY not in page.url  # the key left the address bar
    phone = delivered_sms(console, "INV-BR-1")

    page.fill("#story-query", "INV-BR-1")
    page.click("#story-form button")
    expect(page.locator("#story-contacts tbody tr")).to_contain_text("delivered", timeout=WAIT_MS)
    timeline = page.locator("#story-timeline li")
    steps = [step for step in timeline.evaluate_all("items => items.map(item => item.dataset.step)")]
    assert steps.index("received") < steps.index("routed") < steps.index("sent") < steps.index("status")
    expect(page.locator("#story-timeline li.provider").last).to_contain_text("delivered")
    expect(page.locator("#story-found")).to_contain_text("1 match(es) by document")
    text = page.locator("main").inner_text()
    assert phone not in text and f"{phone[:2]}*******{phone[-2:]}" in text  # masked as the audit keeps it
    console.screenshot()


def test_a_dead_letter_is_redriven_after_its_dry_run_is_confirmed(console: Console) -> None:
    page, stack, phone = console.page, console.stack, new_phone()
    dead = dead_lettered(stack, "INV-BR-DL", phone)
    letter = dead["letter"]["id"]

    console.tab("Failures")
    row = page.locator(f'#dead-letters tr[data-letter="{letter}"]')
    expect(row).to_contain_text("HTTP 500", timeout=WAIT_MS)
    row.get_by_role("button", name="Redrive").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("would be sent again to erp-events")
    expect(dialog).to_contain_text(dead["record"])
    console.screenshot()
    assert "redriven" not in stack.steps(dead["record"])  # the preview sent nothing
    page.click("#confirm-ok")
    expect(console.status()).to_contain_text("Redriven: sent again to erp-events")
    wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS after the redrive")
    expect(row).to_have_count(0, timeout=WAIT_MS)  # no longer open


def test_a_failed_job_is_replayed_after_its_preview_and_a_cancel_sends_nothing(console: Console) -> None:
    page, stack, phone = console.page, console.stack, new_phone()
    stack.post_events(invoice_event("INV-BR-LOST", phone))
    [first] = wait_for(lambda: stack.twilio.messages(to=phone), what="the SMS that will be lost")
    stack.twilio.advance_message(first.sid, "undelivered", error_code=30003)
    record = record_of("INV-BR-LOST")
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "undelivered", what="undelivered")
    job = stack.audit(record)["contacts"][0]["job_id"]

    console.tab("Failures")
    row = page.locator(f'#failed-jobs tr[data-job="{job}"]')
    expect(row).to_contain_text("undelivered", timeout=WAIT_MS)
    row.get_by_role("button", name="Replay").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_contain_text(f"{phone[:2]}*******{phone[-2:]}")
    expect(dialog).to_contain_text("would be sent again")
    assert phone not in dialog.inner_text()
    page.click("#confirm-cancel")
    expect(console.status()).to_contain_text("nothing was sent")
    assert len(stack.twilio.messages(to=phone)) == 1 and "replayed" not in stack.steps(record)

    row.get_by_role("button", name="Replay").click()
    expect(dialog).to_be_visible()
    console.screenshot()
    page.click("#confirm-ok")
    expect(console.status()).to_contain_text("Replayed: was undelivered; queued again")
    again = wait_for(lambda: len(stack.twilio.messages(to=phone)) == 2 and stack.twilio.messages(to=phone),
                     what="the replayed SMS")
    assert {m.body for m in again} == {first.body}


POLLS = {"polls": [{"connection": "contoso-fo", "kind": "dynamics", "entity": "VendorInvoiceHeaders",
                    "last_success": "2026-12-05T06:00:00Z", "last_attempt": "2026-12-05T06:10:00Z",
                    "watermark": "2026-12-05T05:58:00Z", "lag_seconds": 612.4, "last_error": "HTTP 503 from Dynamics",
                    "failures": 2, "next_run": "2026-12-05T06:20:00Z"}]}
DOCTOR = {"ok": False, "checked_at": "2026-12-05T06:30:00Z", "connections": [
    {"connection": "contoso-fo", "kind": "dynamics", "ok": False, "checks": [
        {"name": "Entra token", "ok": True, "detail": "token for https://contoso.example", "fix": None},
        {"name": "OData read", "ok": False, "detail": "HTTP 403", "fix": "grant the app user a security role"}]},
    {"connection": "secrets", "kind": "keyvault", "ok": True, "checks": [
        {"name": "twilio-auth-token", "ok": True, "detail": "readable", "fix": None}]}]}


def test_polls_and_connections_render_their_contracts_and_say_when_a_route_is_missing(console: Console) -> None:
    """The answers of GET /api/ops/polls and /api/ops/doctor as their contracts shape them, then a 404."""
    import json

    page = console.page
    answers = {"polls": (200, POLLS), "doctor": (200, DOCTOR)}
    runs: list[dict] = []

    def answer(route: object, name: str) -> None:
        status, body = answers[name]
        route.fulfill(status=status, content_type="application/json", body=json.dumps(body))  # type: ignore[attr-defined]

    def poll_run(route: object) -> None:
        runs.append(route.request.post_data_json)  # type: ignore[attr-defined]
        route.fulfill(status=202, content_type="application/json", body='{"queued": 1}')  # type: ignore[attr-defined]

    page.route("**/api/ops/polls", lambda route: answer(route, "polls"))
    page.route("**/api/ops/polls/run", poll_run)
    page.route("**/api/ops/doctor", lambda route: answer(route, "doctor"))

    console.tab("Polls")
    row = page.locator("#polls tbody tr")
    expect(row).to_contain_text("VendorInvoiceHeaders")
    expect(row).to_contain_text("612 s")
    expect(row).to_contain_text("HTTP 503 from Dynamics")
    row.get_by_role("button", name="Poll now").click()
    expect(console.status()).to_contain_text("Queued 1 poll(s) of contoso-fo VendorInvoiceHeaders")
    assert runs == [{"connection": "contoso-fo", "entity": "VendorInvoiceHeaders"}]

    console.tab("Connections")
    page.click("#run-checks")
    expect(page.locator('#doctor [data-connection="contoso-fo"]')).to_contain_text("grant the app user a security role")
    expect(page.locator('#doctor [data-connection="secrets"]')).to_contain_text("keyvault")
    expect(page.locator("#doctor-summary")).to_contain_text("Some checks failed")
    console.screenshot()

    answers.update(polls=(404, {"error": "not_found"}), doctor=(404, {"error": "not_found"}))
    page.click("#run-checks")
    expect(page.locator("#doctor-summary")).to_contain_text("not available")
    console.tab("Polls")
    expect(page.locator("#polls-note")).to_contain_text("not available")
    expect(page.locator("#polls tbody tr")).to_have_count(0)


def test_the_connections_view_shows_the_doctors_real_checks_and_a_repaired_webhook_passes(console: Console) -> None:
    """The doctor's round trips to the app's own fakes: the Twilio number's inbound URL points at nothing,
    so its check fails with the URL to set; once set (as in the Twilio Console), the next run passes it."""
    page, stack = console.page, console.stack
    console.tab("Connections")
    page.click("#run-checks")
    twilio = page.locator('#doctor [data-connection="twilio-main"]')
    inbound = twilio.locator("tr", has_text="Inbound SMS URL")
    expect(inbound.locator("td").first).to_have_text("failed", timeout=WAIT_MS)
    expect(inbound).to_contain_text(f"{stack.base_url}/api/twilio/inbound/twilio-main")
    expect(twilio.locator("tr", has_text="Credentials").locator("td").first).to_have_text("ok")
    expect(page.locator('#doctor [data-connection="slack-main"] tr', has_text="Scopes").locator("td").first
           ).to_have_text("ok")
    expect(page.locator('#doctor [data-connection="secrets"]')).to_contain_text("slack-bot-token")
    expect(page.locator("#doctor-summary")).to_contain_text("Some checks failed")
    console.screenshot()

    stack.twilio.set_number_webhooks(stack.twilio_creds.phone_number,
                                     sms_url=f"{stack.base_url}/api/twilio/inbound/twilio-main")
    page.click("#run-checks")
    expect(inbound.locator("td").first).to_have_text("ok", timeout=WAIT_MS)


def test_poll_now_runs_a_real_poll_whose_health_the_polls_view_then_shows(console: Console) -> None:
    """Poll now on the Dynamics connection's entity: the poll runs behind the queue against the fake F&O and
    the row fills in its last success and watermark, with no failure."""
    from datetime import UTC, datetime, timedelta

    from tests.e2e.test_dynamics_poll import invoice_header

    page, stack = console.page, console.stack
    settled = invoice_header(f"BR-{datetime.now(UTC):%H%M%S%f}", datetime.now(UTC) - timedelta(days=3), "No")
    stack.dynamics.add_entities("VendorInvoiceHeaders", [settled], keys=("dataAreaId", "HeaderReference"))
    console.tab("Polls")
    row = page.locator("#polls tbody tr", has_text="VendorInvoiceHeaders")
    expect(row).to_contain_text("contoso-fo", timeout=WAIT_MS)
    row.get_by_role("button", name="Poll now").click()
    expect(console.status()).to_contain_text("Queued 1 poll(s) of contoso-fo VendorInvoiceHeaders")

    last_success, failures = row.locator("td").nth(3), row.locator("td").nth(7)
    expect(last_success).not_to_have_text("", timeout=WAIT_MS)  # the view refreshes by itself
    expect(failures).to_have_text("0")
    console.screenshot()
