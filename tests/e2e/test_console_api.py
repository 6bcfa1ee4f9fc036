"""The operator console's routes, and the dry runs of replay and redrive, against the running app."""

from __future__ import annotations

import requests

from shared.logs import mask_phone
from tests.e2e.conftest import MASTER_KEY, Stack
from tests.e2e.test_dynamics_to_twilio import invoice_event, new_phone, record_of
from tests.support.waiting import wait_for


def ops(stack: Stack, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, f"{stack.base_url}/api/ops/{path}", headers={"x-functions-key": MASTER_KEY},
                            timeout=30, **kwargs)


def undelivered_job(stack: Stack, invoice: str, phone: str) -> str:
    stack.post_events(invoice_event(invoice, phone))
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    stack.twilio.advance_message(message.sid, "undelivered", error_code=30003)
    record = record_of(invoice)
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "undelivered", what="undelivered")
    return stack.audit(record)["contacts"][0]["job_id"]


def test_replay_and_redrive_refuse_unknown_fields_and_act_on_nothing(stack: Stack) -> None:
    phone = new_phone()
    job = undelivered_job(stack, "INV-CON-1", phone)
    for body in ({"job_id": job, "dryrun": True}, {"job_id": job, "dry_run": "yes"}):
        answer = ops(stack, "POST", "replay", json=body)
        assert answer.status_code == 400, (body, answer.text)
    assert "dryrun" in ops(stack, "POST", "replay", json={"job_id": job, "dryrun": True}).json()["message"]
    for body in ({"all": True, "dry-run": True}, {"ids": ["x"], "dry_run": 1}):
        assert ops(stack, "POST", "deadletters/redrive", json=body).status_code == 400, body
    assert len(stack.twilio.messages(to=phone)) == 1
    assert stack.steps(record_of("INV-CON-1")).count("replayed") == 0


def test_a_dry_run_replay_shows_who_would_be_sent_what_and_sends_nothing(stack: Stack) -> None:
    phone = new_phone()
    job = undelivered_job(stack, "INV-CON-2", phone)
    answer = ops(stack, "POST", "replay", json={"job_id": job, "dry_run": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dry_run"] is True and body["replayed"] == 0 and body["would_replay"] == 1
    [shown] = body["jobs"]
    assert shown["would_replay"] is True and shown["replayed"] is False
    preview = shown["preview"]
    assert preview["channel"] == "sms" and preview["to"] == mask_phone(phone) and preview["status"] == "undelivered"
    assert preview["record"] == record_of("INV-CON-2") and phone not in answer.text
    assert "replayed" not in stack.steps(record_of("INV-CON-2"))
    failures = ops(stack, "GET", "failures").json()
    [listed] = [j for j in failures["jobs"] if j["job_id"] == job]
    assert listed["status"] == "undelivered" and "30003" in listed["reason"] and phone not in str(failures)

    done = ops(stack, "POST", "replay", json={"job_id": job}).json()
    assert done["replayed"] == 1 and "dry_run" not in done
    wait_for(lambda: len(stack.twilio.messages(to=phone)) == 2, what="the replayed SMS")


def test_the_cli_previews_a_replay_and_fails_when_no_job_matches(stack: Stack) -> None:
    phone = new_phone()
    job = undelivered_job(stack, "INV-CON-3", phone)
    preview = stack.cli("replay", "--job", job, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"{job}  would" in preview.stdout and mask_phone(phone) in preview.stdout and phone not in preview.stdout
    assert "1 of 1 job(s) would be replayed (dry run)" in preview.stdout
    assert len(stack.twilio.messages(to=phone)) == 1
    assert stack.cli("replay", "--job", "no-such-job").returncode == 1


def test_a_story_is_found_by_document_number_and_by_masked_phone(stack: Stack) -> None:
    phone = new_phone()
    stack.post_events(invoice_event("INV-CON-STORY", phone))
    [message] = wait_for(lambda: stack.twilio.messages(to=phone), what="an SMS")
    stack.twilio.advance_message(message.sid, "delivered")
    record = record_of("INV-CON-STORY")
    wait_for(lambda: stack.audit(record)["contacts"][0]["status"] == "delivered", what="delivered")

    by_number = ops(stack, "GET", "story", params={"q": "inv-con-story"}).json()
    assert by_number["by"] == "document" and by_number["records"] == [record]
    stages = [entry["stage"] for entry in by_number["timeline"]]
    assert stages.index("event") < stages.index("rule") < stages.index("job") < stages.index("provider")
    assert [c["status"] for c in by_number["contacts"]] == ["delivered"]
    masked = phone[:2] + "******" + phone[-2:]  # as an operator copies it, whatever the run of '*'
    by_phone = ops(stack, "GET", "story", params={"q": masked}).json()
    assert by_phone["by"] == "phone" and record in by_phone["records"]
    correlation = by_number["timeline"][0]["correlation_id"]
    by_correlation = ops(stack, "GET", "story", params={"q": correlation}).json()
    assert by_correlation["by"] == "correlation" and by_correlation["timeline"]
    assert phone not in str(by_number) + str(by_phone) + str(by_correlation)
    assert ops(stack, "GET", "story").status_code == 400


def test_counters_show_queues_sends_and_failures(stack: Stack) -> None:
    phone = new_phone()
    undelivered_job(stack, "INV-CON-4", phone)
    counters = ops(stack, "GET", "counters").json()
    assert [q["queue"] for q in counters["queues"]] == ["poll-jobs", "erp-events", "notifications", "callbacks"]
    assert all(isinstance(q["messages"], int) and isinstance(q["poison"], int) for q in counters["queues"])
    assert len(counters["sends_per_minute"]) == 5 and sum(m["sends"] for m in counters["sends_per_minute"]) >= 1
    assert len(counters["failures_per_hour"]) == 24 and counters["failures_per_hour"][-1]["failures"] >= 1


def test_the_console_page_is_served_to_the_master_key_only(stack: Stack) -> None:
    page = requests.get(f"{stack.base_url}/api/ops/console", params={"code": MASTER_KEY}, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<script>" in page.text and "x-functions-key" in page.text and "https://" not in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert requests.get(f"{stack.base_url}/api/ops/console", timeout=10).status_code == 401
