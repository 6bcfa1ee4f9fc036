"""``make demo``: the demo starts everything it needs on free ports, plays its three steps, says what it saw,
and stops; a step that does not happen is named and the exit status says so."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.app import REPO_ROOT

DEMO_TIMEOUT = 120  # the demo itself takes seconds; this only bounds a hung run


def run_demo(*args: str) -> subprocess.CompletedProcess:
    """The demo in short mode, as ``make demo DEMO_SHORT=1`` runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("QUEUE_BACKEND", "AzureWebJobsStorage")}
    return subprocess.run([sys.executable, "-m", "devhost.demo", *args], cwd=REPO_ROOT, env=env | {"DEMO_SHORT": "1"},
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT)


def test_the_demo_narrates_three_outcomes_and_stops() -> None:
    run = run_demo()
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "[ok] Step 1: the invoice became an SMS, and Twilio reported it delivered." in lines
    assert "[ok] Step 2: the approval was written back to Dynamics." in lines
    assert "[ok] Step 3: the SYSPRO change became an SMS, and the supplier's reply a note in SYSPRO." in lines
    assert "All three steps worked." in lines and "[failed]" not in run.stdout
    # What was seen, not only that it passed: the delivery, the OData action, the note.
    assert "status delivered" in run.stdout
    assert "Dynamics received the OData action Complete on work item WI-DEMO-1: outcome Approve" in run.stdout
    assert "SYSPRO now holds the reply as comment lines on PO-DEMO-1" in run.stdout
    # Short mode does not offer the console: it has stopped.
    assert "Ctrl+C" not in run.stdout
    # Phone numbers are shown masked only.
    assert "+14155550123" not in run.stdout and "+14155550142" not in run.stdout
    assert "+1*******23" in run.stdout


def test_a_step_that_does_not_happen_is_named_and_the_exit_status_says_so() -> None:
    run = run_demo("--timeout", "0")  # no time to see anything happen
    assert run.returncode == 1, run.stdout + run.stderr
    assert "[failed] Step 1 (a posted invoice becomes an SMS): no SMS at Twilio within 0 s" in run.stdout
    assert "The demo failed at step 1, 2, 3" in run.stdout
    assert "[ok]" not in run.stdout
