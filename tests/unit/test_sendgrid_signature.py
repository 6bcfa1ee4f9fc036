"""Signed Event Webhook checks against SendGrid's own test vector; addresses and message ids."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from shared.channels.sendgrid.client import InvalidAddress, message_id_of, normalize_email
from shared.channels.sendgrid.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, public_key_text, sign, verify
from shared.channels.signed import SignatureRefused

# SendGrid's published vector (sendgrid-python, test/unit/test_eventwebhook.py): a real signature.
PUBLIC_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINX"
              "vVpiglSI8eNEc6wEA3F+g==")
OTHER_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y"
             "7GjUuFDb/R1NGe1OPzpA==")
SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
TIMESTAMP = "1600112502"
PAYLOAD = (json.dumps([{
    "email": "hello@world.com", "event": "dropped", "reason": "Bounced Address",
    "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
    "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
    "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>", "timestamp": 1600112492,
}], sort_keys=True, separators=(",", ":")) + "\r\n").encode()
SIGNED_AT = 1600112502.0


def headers(signature: str | None, timestamp: str | None) -> dict[str, str]:
    return {name: value for name, value in ((SIGNATURE_HEADER, signature), (TIMESTAMP_HEADER, timestamp)) if value}


def verify_event_signature(key: str, payload: bytes, signature: str | None, timestamp: str | None,
                           now: float | None = None) -> bool:
    """Whether ``verify`` takes the post (it raises SignatureRefused, and nothing else, when not)."""
    try:
        verify(key, payload, headers(signature, timestamp), now=now)
    except SignatureRefused:
        return False
    return True


def test_sendgrids_own_signature_verifies() -> None:
    assert verify_event_signature(PUBLIC_KEY, PAYLOAD, SIGNATURE, TIMESTAMP, now=SIGNED_AT + 5)


@pytest.mark.parametrize(
    ("key", "payload", "signature", "timestamp"),
    [
        (OTHER_KEY, PAYLOAD, SIGNATURE, TIMESTAMP),  # another account's key
        (PUBLIC_KEY, PAYLOAD.replace(b"dropped", b"delivered"), SIGNATURE, TIMESTAMP),  # tampered body
        (PUBLIC_KEY, PAYLOAD.rstrip(b"\r\n"), SIGNATURE, TIMESTAMP),  # not the raw bytes
        (PUBLIC_KEY, PAYLOAD, SIGNATURE.replace("MEUCIGHQ", "MEUCIGHR"), TIMESTAMP),  # forged signature
        (PUBLIC_KEY, PAYLOAD, "not base64!", TIMESTAMP),
        (PUBLIC_KEY, PAYLOAD, SIGNATURE, "1600112503"),  # the signature covers the timestamp
        (PUBLIC_KEY, PAYLOAD, SIGNATURE, "timestamp"),
        (PUBLIC_KEY, PAYLOAD, None, TIMESTAMP),
        (PUBLIC_KEY, PAYLOAD, SIGNATURE, None),
    ],
)
def test_anything_else_does_not(key: str, payload: bytes, signature: str | None, timestamp: str | None) -> None:
    assert not verify_event_signature(key, payload, signature, timestamp, now=SIGNED_AT)


@pytest.mark.parametrize("sign", [-1, 1])
def test_a_genuine_signature_outside_the_five_minute_window_is_refused(sign: int) -> None:
    assert verify_event_signature(PUBLIC_KEY, PAYLOAD, SIGNATURE, TIMESTAMP, now=SIGNED_AT + sign * 300)
    assert not verify_event_signature(PUBLIC_KEY, PAYLOAD, SIGNATURE, TIMESTAMP, now=SIGNED_AT + sign * 301)
    assert not verify_event_signature(PUBLIC_KEY, PAYLOAD, SIGNATURE, TIMESTAMP)  # today: years old


def test_the_message_id_is_what_comes_before_the_first_dot() -> None:
    assert message_id_of("LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0") == (
        "LRzXl_NHStOGhQ4kofSm_A")
    assert message_id_of("LRzXl_NHStOGhQ4kofSm_A") == "LRzXl_NHStOGhQ4kofSm_A"
    assert message_id_of("") == ""


@pytest.mark.parametrize(
    ("raw", "address"),
    [(" ap@fabrikam.example ", "ap@fabrikam.example"), ("Fabrikam AP <ap@fabrikam.example>", "ap@fabrikam.example"),
     ("first.last+tag@sub.contoso.co.uk", "first.last+tag@sub.contoso.co.uk")],
)
def test_addresses_are_trimmed_and_unwrapped(raw: str, address: str) -> None:
    assert normalize_email(raw) == address


@pytest.mark.parametrize("raw", ["", "ap", "ap@", "@fabrikam.example", "ap@fabrikam", "a p@fabrikam.example",
                                 "ap@fabrikam.example, bo@fabrikam.example", "ap@-fabrikam.example"])
def test_what_is_not_one_address_is_refused(raw: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_email(raw)


@pytest.mark.parametrize("timestamp", ["9" * 400, "1" * 5000, "\u00b2", "\u0661\u0666\u0660\u0660", "-1600112502"])
def test_a_timestamp_that_is_no_plain_unix_time_is_refused(timestamp: str) -> None:
    assert not verify_event_signature(PUBLIC_KEY, PAYLOAD, SIGNATURE, timestamp, now=SIGNED_AT)


def test_a_post_signed_by_sign_passes_and_a_changed_one_is_refused_with_the_one_error() -> None:
    from cryptography.hazmat.primitives import serialization

    private_key = ec.generate_private_key(ec.SECP256R1())
    der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    public_key = public_key_text(base64.b64encode(der).decode("ascii"))
    signed = sign(private_key, PAYLOAD, timestamp=int(SIGNED_AT))

    verify(public_key, PAYLOAD, signed, now=SIGNED_AT)
    verify(public_key, PAYLOAD, {name.lower(): value for name, value in signed.items()}, now=SIGNED_AT)
    for payload, sent, now, key in [
        (PAYLOAD.replace(b"dropped", b"delivered"), signed, SIGNED_AT, public_key),  # changed body
        (PAYLOAD, signed, SIGNED_AT, PUBLIC_KEY),  # another key
        (PAYLOAD, signed, SIGNED_AT + 301, public_key),  # stale
        (PAYLOAD, {SIGNATURE_HEADER: signed[SIGNATURE_HEADER]}, SIGNED_AT, public_key),  # a header missing
        (PAYLOAD, {TIMESTAMP_HEADER: signed[TIMESTAMP_HEADER]}, SIGNED_AT, public_key),
    ]:
        with pytest.raises(SignatureRefused):
            verify(key, payload, sent, now=now)
