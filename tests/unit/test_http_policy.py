"""The retry decision of shared.http, without any network."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from shared.http import (
    Decision,
    RetryPolicy,
    backoff_delay,
    decide,
    failed_before_sending,
    header_value,
    is_transient_error,
    parse_retry_after,
    redact_url,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
POLICY = RetryPolicy()


def seeded() -> random.Random:
    return random.Random(1234)


def connection_refused() -> requests.ConnectionError:
    """What requests raises when nothing listens on the port."""
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.ConnectionError(MaxRetryError(None, "/", reason))


def connection_dropped_after_sending() -> requests.ConnectionError:
    return requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))


# --- parse_retry_after -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), ("1.5", 1.5), ("  7 ", 7.0)],
)
def test_retry_after_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date_counts_from_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now=NOW) == 120.0


def test_retry_after_http_date_with_naive_now_reads_it_as_utc() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=NOW.replace(tzinfo=None)) == 30.0


def test_retry_after_past_date_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "-5", "1e3", "inf", "nan", "12 seconds", "Wed, 99 Foo 2015"])
def test_retry_after_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", [None, "", "   "])
def test_retry_after_missing_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


# --- backoff_delay -----------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 6, 10])
def test_backoff_stays_within_full_jitter_bounds(attempt: int) -> None:
    rng = seeded()
    ceiling = min(60.0, 0.5 * 2**attempt)
    samples = [backoff_delay(attempt, base=0.5, cap=60.0, rng=rng) for _ in range(500)]
    assert all(0.0 <= sample <= ceiling for sample in samples)
    assert len(set(samples)) > 1, "full jitter must spread the delays"
    # Full jitter uses the whole range, not only its top.
    assert min(samples) < ceiling * 0.1 and max(samples) > ceiling * 0.9


@pytest.mark.parametrize("attempt", [64, 1000, 10**6])
def test_backoff_cap_holds_for_huge_attempts(attempt: int) -> None:
    rng = seeded()
    samples = [backoff_delay(attempt, base=0.5, cap=60.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= sample <= 60.0 for sample in samples)
    assert max(samples) > 50.0


def test_backoff_treats_negative_attempt_as_first() -> None:
    assert 0.0 <= backoff_delay(-3, base=0.5, cap=60.0, rng=seeded()) <= 0.5


# --- decide: statuses --------------------------------------------------------------------


def test_success_is_done() -> None:
    assert decide(POLICY, 1, status=200, headers={}).action == "done"


def test_redirect_is_done() -> None:
    assert decide(POLICY, 1, status=304, headers=None).action == "done"


def test_success_is_done_even_on_the_last_attempt() -> None:
    assert decide(POLICY, POLICY.max_attempts, status=201, headers=None).action == "done"


def test_429_with_short_retry_after_retries_inline_after_exactly_that() -> None:
    decision = decide(POLICY, 1, status=429, headers={"Retry-After": "2"}, rng=seeded())
    assert decision == Decision("retry", 2.0, "HTTP 429")


def test_429_with_long_retry_after_goes_back_to_the_queue() -> None:
    decision = decide(POLICY, 1, status=429, headers={"Retry-After": "120"}, rng=seeded())
    assert decision.action == "requeue"
    assert decision.delay == 120.0


def test_retry_after_header_name_is_case_insensitive() -> None:
    assert decide(POLICY, 1, status=429, headers={"retry-after": "3"}).delay == 3.0


def test_retry_after_http_date_form_in_decide() -> None:
    headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:04 GMT"}
    assert decide(POLICY, 1, status=503, headers=headers, now=NOW) == Decision("retry", 4.0, "HTTP 503")


@pytest.mark.parametrize("status", [429, 503])
def test_throttle_without_header_uses_default_retry_after(status: int) -> None:
    decision = decide(POLICY, 1, status=status, headers={})
    assert decision == Decision("requeue", 30.0, f"HTTP {status}")


def test_default_retry_after_is_configurable_for_chat_providers() -> None:
    slack_like = RetryPolicy(default_retry_after=1.0)
    assert decide(slack_like, 1, status=429, headers=None) == Decision("retry", 1.0, "HTTP 429")


def test_garbage_retry_after_falls_back_to_default() -> None:
    assert decide(POLICY, 1, status=429, headers={"Retry-After": "later"}).delay == 30.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_fail_at_once(status: int) -> None:
    decision = decide(POLICY, 1, status=status, headers={"Retry-After": "1"})
    assert decision == Decision("fail", 0.0, f"HTTP {status}")


def test_server_error_outside_retry_statuses_fails() -> None:
    assert decide(POLICY, 1, status=501, headers=None).action == "fail"


@pytest.mark.parametrize("status", [500, 502, 504, 408])
@pytest.mark.parametrize("attempt", [1, 2, 4])
def test_server_errors_back_off_within_bounds(status: int, attempt: int) -> None:
    rng = seeded()
    ceiling = min(POLICY.max_delay, POLICY.base_delay * 2 ** (attempt - 1))
    delays = [decide(POLICY, attempt, status=status, headers={}, rng=rng).delay for _ in range(200)]
    assert all(0.0 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1


def test_server_error_honours_retry_after_too() -> None:
    assert decide(POLICY, 1, status=502, headers={"Retry-After": "4"}) == Decision("retry", 4.0, "HTTP 502")


def test_long_backoff_is_requeued_not_slept() -> None:
    patient = RetryPolicy(base_delay=100.0, max_delay=100.0, max_attempts=10)
    rng = random.Random(7)
    decisions = [decide(patient, 3, status=500, headers=None, rng=rng) for _ in range(50)]
    assert {d.action for d in decisions if d.delay > patient.inline_wait_limit} == {"requeue"}
    assert {d.action for d in decisions if d.delay <= patient.inline_wait_limit} <= {"retry"}


def test_gives_up_after_max_attempts_naming_the_status() -> None:
    decision = decide(POLICY, 5, status=503, headers={"Retry-After": "1"})
    assert decision.action == "fail"
    assert decision.reason == "gave up after 5 attempts: HTTP 503"


def test_one_attempt_before_the_limit_still_retries() -> None:
    assert decide(POLICY, 4, status=503, headers={"Retry-After": "1"}).action == "retry"


# --- decide: network errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [requests.ConnectTimeout(), requests.ReadTimeout(), connection_refused(), ConnectionResetError(), TimeoutError()],
)
def test_network_errors_back_off(error: BaseException) -> None:
    decision = decide(POLICY, 1, status=None, headers=None, error=error, rng=seeded())
    assert decision.action == "retry"
    assert 0.0 <= decision.delay <= POLICY.base_delay
    assert decision.reason == type(error).__name__


def test_network_error_on_last_attempt_gives_up() -> None:
    decision = decide(POLICY, 5, status=None, headers=None, error=requests.ReadTimeout())
    assert decision == Decision("fail", 0.0, "gave up after 5 attempts: ReadTimeout")


@pytest.mark.parametrize("error", [requests.exceptions.SSLError(), ValueError("bad")])
def test_non_transient_errors_fail(error: BaseException) -> None:
    assert decide(POLICY, 1, status=None, headers=None, error=error).action == "fail"


def test_decide_needs_a_status_or_an_error() -> None:
    with pytest.raises(ValueError):
        decide(POLICY, 1, status=None, headers=None)


# --- decide: requests that must not be sent twice ----------------------------------------


@pytest.mark.parametrize("status", [500, 502, 504])
def test_non_idempotent_request_is_not_retried_on_server_error(status: int) -> None:
    decision = decide(POLICY, 1, status=status, headers={"Retry-After": "1"}, idempotent=False)
    assert decision.action == "fail"
    assert decision.reason.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [408, 429, 503])
def test_non_idempotent_request_is_retried_when_not_processed(status: int) -> None:
    decision = decide(POLICY, 1, status=status, headers={"Retry-After": "1"}, idempotent=False)
    assert decision == Decision("retry", 1.0, f"HTTP {status}")


@pytest.mark.parametrize("error", [requests.ReadTimeout(), connection_dropped_after_sending()])
def test_non_idempotent_request_is_not_retried_after_it_may_have_been_sent(error: BaseException) -> None:
    assert decide(POLICY, 1, status=None, headers=None, error=error, idempotent=False).action == "fail"


@pytest.mark.parametrize("error", [requests.ConnectTimeout(), connection_refused(), ConnectionRefusedError()])
def test_non_idempotent_request_is_retried_when_never_sent(error: BaseException) -> None:
    assert decide(POLICY, 1, status=None, headers=None, error=error, idempotent=False).action == "retry"


def test_error_classification() -> None:
    assert failed_before_sending(connection_refused())
    assert not failed_before_sending(connection_dropped_after_sending())
    assert not failed_before_sending(requests.ReadTimeout())
    assert is_transient_error(requests.exceptions.ChunkedEncodingError())
    assert not is_transient_error(requests.exceptions.SSLError())


# --- policy, helpers, import cost --------------------------------------------------------


def test_policy_defaults() -> None:
    assert POLICY.max_attempts == 5
    assert POLICY.timeout == (3.05, 15.0)
    assert POLICY.retry_statuses == frozenset({429, 500, 502, 503, 504})
    assert POLICY.default_retry_after == 30.0
    assert POLICY.inline_wait_limit == 5.0


def test_policy_accepts_any_iterable_of_statuses_and_stays_hashable() -> None:
    policy = RetryPolicy(retry_statuses={429, 503})  # type: ignore[arg-type]
    assert isinstance(policy.retry_statuses, frozenset)
    hash(policy)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay": -1.0}, {"read_timeout": 0.0}, {"default_retry_after": -1.0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_header_value_lookups() -> None:
    assert header_value({"RETRY-AFTER": "5"}, "Retry-After") == "5"
    assert header_value(None, "Retry-After") is None
    assert header_value({"Other": "x"}, "Retry-After") is None


def test_redact_url_drops_credentials_query_and_phone_numbers() -> None:
    url = "https://user:pw@lookups.twilio.com/v2/PhoneNumbers/+14155550123?Fields=line_type&token=s3cret#frag"
    redacted = redact_url(url)
    assert redacted == "https://lookups.twilio.com/v2/PhoneNumbers/***23"
    assert redact_url("http://127.0.0.1:8080/data/Customers") == "http://127.0.0.1:8080/data/Customers"


def test_importing_the_module_does_not_import_requests() -> None:
    probe = "import sys, shared.http; print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"
