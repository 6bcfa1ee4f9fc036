"""Slack's v0 request signature: what ``sign`` makes, ``verify`` takes within five minutes; anything
changed, stale or missing is refused with the one error."""

from __future__ import annotations

import pytest

from shared.channels.signed import SignatureRefused
from shared.channels.slack.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify

# Slack's documented example ("Verifying requests from Slack"): this body, secret and timestamp.
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SIGNED_AT = 1531420618
BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
DOCUMENTED_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_slacks_documented_example_verifies_and_sign_makes_it() -> None:
    headers = {TIMESTAMP_HEADER: str(SIGNED_AT), SIGNATURE_HEADER: DOCUMENTED_SIGNATURE}

    verify(SECRET, BODY, headers, now=SIGNED_AT + 10)
    assert sign(SECRET, BODY, timestamp=SIGNED_AT) == headers


def test_a_signed_request_passes_whatever_the_header_case() -> None:
    signed = sign(SECRET, BODY)

    verify(SECRET, BODY, signed)
    verify(SECRET, BODY, {name.lower(): value for name, value in signed.items()})


@pytest.mark.parametrize("seconds", [-300, 300])
def test_the_window_is_five_minutes_either_way(seconds: int) -> None:
    signed = sign(SECRET, BODY, timestamp=SIGNED_AT)

    verify(SECRET, BODY, signed, now=SIGNED_AT + seconds)
    with pytest.raises(SignatureRefused):
        verify(SECRET, BODY, signed, now=SIGNED_AT + seconds + (1 if seconds > 0 else -1))


SIGNED = sign(SECRET, BODY, timestamp=SIGNED_AT)


@pytest.mark.parametrize(
    ("secret", "body", "headers"),
    [
        (SECRET, BODY.replace(b"roadrunner", b"coyote"), SIGNED),  # a changed body
        ("another-signing-secret", BODY, SIGNED),  # a wrong secret
        (SECRET, BODY, {TIMESTAMP_HEADER: str(SIGNED_AT)}),  # a header missing
        (SECRET, BODY, {SIGNATURE_HEADER: SIGNED[SIGNATURE_HEADER]}),
        (SECRET, BODY, {}),
        (SECRET, BODY, None),
        (SECRET, BODY, {**SIGNED, TIMESTAMP_HEADER: str(SIGNED_AT + 1)}),  # the signature covers the time
        (SECRET, b"\xff" + BODY, SIGNED),  # no UTF-8
    ],
)
def test_anything_else_is_refused_with_the_one_error(secret: str, body: bytes,
                                                     headers: dict[str, str] | None) -> None:
    with pytest.raises(SignatureRefused):
        verify(secret, body, headers, now=SIGNED_AT)


def test_a_stale_request_is_refused_by_the_wall_clock() -> None:
    with pytest.raises(SignatureRefused):
        verify(SECRET, BODY, sign(SECRET, BODY, timestamp=SIGNED_AT))  # 2018
