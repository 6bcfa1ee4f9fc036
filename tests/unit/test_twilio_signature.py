"""Twilio's X-Twilio-Signature: what ``sign`` makes, ``verify`` takes; anything changed is refused."""

from __future__ import annotations

import pytest

from shared.channels.signed import SignatureRefused
from shared.channels.twilio.signature import SIGNATURE_HEADER, sign, verify

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
# Twilio's own documented example: this URL and form, signed with auth token 12345.
PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234", "From": "+14158675309",
          "To": "+18005551212"}
DOCUMENTED_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilios_documented_example_verifies_and_sign_makes_it() -> None:
    verify(TOKEN, URL, PARAMS, {SIGNATURE_HEADER: DOCUMENTED_SIGNATURE})
    assert sign(TOKEN, URL, PARAMS) == {SIGNATURE_HEADER: DOCUMENTED_SIGNATURE}


def test_a_signed_request_passes_whatever_the_header_case_and_with_repeated_parameters() -> None:
    params = {**PARAMS, "StatusCallbackEvent": ["initiated", "answered"]}
    signed = sign(TOKEN, URL, params)

    verify(TOKEN, URL, params, signed)
    verify(TOKEN, URL, params, {SIGNATURE_HEADER.lower(): signed[SIGNATURE_HEADER]})


@pytest.mark.parametrize(
    ("token", "url", "params", "headers"),
    [
        (TOKEN, URL, {**PARAMS, "Digits": "1235"}, sign(TOKEN, URL, PARAMS)),  # a changed body
        (TOKEN, URL, {**PARAMS, "Extra": ""}, sign(TOKEN, URL, PARAMS)),  # a parameter added
        (TOKEN, URL.replace("foo=1", "foo=2"), PARAMS, sign(TOKEN, URL, PARAMS)),  # another URL
        ("54321", URL, PARAMS, sign(TOKEN, URL, PARAMS)),  # a wrong secret
        (TOKEN, URL, PARAMS, {}),  # the header missing
        (TOKEN, URL, PARAMS, {SIGNATURE_HEADER: ""}),
        (TOKEN, URL, PARAMS, None),
    ],
)
def test_anything_else_is_refused_with_the_one_error(token: str, url: str, params: dict,
                                                     headers: dict[str, str] | None) -> None:
    with pytest.raises(SignatureRefused) as refused:
        verify(token, url, params, headers)
    assert SIGNATURE_HEADER in refused.value.reason
