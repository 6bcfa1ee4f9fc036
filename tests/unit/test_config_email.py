"""Email in the configuration: the sendgrid connection, email rules and the email part of templates."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.channels.sendgrid.connection import SendGridConnection
from shared.config.loading import config_from_dict
from shared.config.model import ConfigError, SecretRef
from shared.templates import Template, email_message

# The verification key of SendGrid's own signed-event test vector (sendgrid-python's tests).
SENDGRID_TEST_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw"
                     "+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==")

BASE: dict[str, Any] = {
    "connections": {
        "contoso": {"kind": "dynamics", "environment_url": "https://contoso.operations.dynamics.com",
                    "tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-1111-1111-1111-111111111111",
                    "client_secret": {"secret": "contoso-client-secret"}},
        "mail": {"kind": "sendgrid", "api_key": {"secret": "sendgrid-api-key"}, "from_email": "alerts@contoso.com",
                 "event_webhook_public_key": SENDGRID_TEST_KEY},
        "twilio": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                   "api_key_secret": {"secret": "twilio-api-key-secret"}, "auth_token": {"secret": "twilio-auth-token"},
                   "from_number": "+15005550006"},
    },
    "rules": [{"id": "invoice-email", "source": "contoso", "channel": "email", "via": "mail",
               "to": ["ap@fabrikam.com", {"field": "vendor_email"}], "template": "vendor-invoice-posted"}],
}


def data(**connection: Any) -> dict[str, Any]:
    copied = copy.deepcopy(BASE)
    copied["connections"]["mail"].update(connection)
    return copied


def errors_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    return caught.value.errors


def pem_of(key: Any) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_sendgrid_connection_and_an_email_rule_load_with_defaults() -> None:
    loaded = config_from_dict(copy.deepcopy(BASE))
    mail = loaded.connection_of("mail", SendGridConnection)
    assert mail.api_key == SecretRef("sendgrid-api-key") and mail.from_email == "alerts@contoso.com"
    assert (mail.from_name, mail.api_base_url) == (None, "https://api.sendgrid.com")
    assert mail.event_webhook_public_key == SENDGRID_TEST_KEY
    [rule] = loaded.rules
    assert rule.channel == "email" and rule.to[1].field == "vendor_email"


def test_the_verification_key_may_come_as_pem_and_is_kept_as_base64_der() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    loaded = config_from_dict(data(event_webhook_public_key=pem_of(key)))
    kept = loaded.connection_of("mail", SendGridConnection).event_webhook_public_key
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kept == base64.b64encode(der).decode()


def test_the_verification_key_is_optional() -> None:
    raw = data()
    del raw["connections"]["mail"]["event_webhook_public_key"]
    assert config_from_dict(raw).connection_of("mail", SendGridConnection).event_webhook_public_key is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"api_key": "SG.the-key-itself"}, 'connections.mail.api_key: must be a secret reference {"secret": "<name>"}, '
                                           "not a value"),
        ({"from_email": "alerts at contoso"}, "connections.mail.from_email: must be an email address such as "
                                              "ap@contoso.com"),
        ({"from_name": ""}, "connections.mail.from_name: must be a non-empty string"),
        ({"api_base_url": "http://api.sendgrid.com"}, "connections.mail.api_base_url: must be an https URL "
                                                      "(http only for loopback hosts)"),
        ({"event_webhook_public_key": "bm90IGEga2V5"}, "connections.mail.event_webhook_public_key: is not a "
                                                       "base64-encoded DER public key"),
        ({"event_webhook_public_key": "***"}, "connections.mail.event_webhook_public_key: is not a base64-encoded "
                                              "DER public key"),
        ({"event_webhook_public_key": 42}, "connections.mail.event_webhook_public_key: must be the base64 public "
                                           "key SendGrid shows for the Signed Event Webhook"),
        ({"reply_to": "x@y.com"}, "connections.mail.reply_to: unknown field"),
    ],
)
def test_each_connection_mistake_names_its_field(change: dict[str, Any], expected: str) -> None:
    assert errors_of(data(**change)) == [expected]


@pytest.mark.parametrize("other", ["p384", "rsa"])
def test_a_key_that_is_not_p256_is_refused(other: str) -> None:
    private = ec.generate_private_key(ec.SECP384R1()) if other == "p384" else rsa.generate_private_key(65537, 2048)
    assert errors_of(data(event_webhook_public_key=pem_of(private.public_key()))) == [
        "connections.mail.event_webhook_public_key: must be an ECDSA P-256 (prime256v1) public key"]


def test_required_fields_are_named() -> None:
    raw = copy.deepcopy(BASE)
    raw["connections"]["mail"] = {"kind": "sendgrid"}
    assert errors_of(raw) == ["connections.mail.api_key: is required", "connections.mail.from_email: is required"]


def rule_with(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["rules"][0].update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"to": ["ap@fabrikam.com", "+14155550123", "ap@", {"field": "vendor_email"}]},
         ["rules[0].to[1]: must be an email address such as ap@contoso.com",
          "rules[0].to[2]: must be an email address such as ap@contoso.com"]),
        ({"via": "twilio"}, ["rules[0].via: channel 'email' needs a sendgrid connection; 'twilio' is a twilio "
                             "connection"]),
        ({"channel": "sms"}, ["rules[0].via: channel 'sms' needs a twilio connection; 'mail' is a sendgrid "
                              "connection", "rules[0].to[0]: must be an E.164 phone number such as +14155550123"]),
        ({"verify": True}, ["rules[0].verify: needs a twilio connection with verify_service_sid as via; 'mail' has "
                            "none"]),
        ({"source": "mail"}, ["rules[0].source: 'mail' is a sendgrid connection; a source must be one of dynamics, "
                              "syspro, sagex3, qad"]),
    ],
)
def test_each_rule_mistake_names_its_field(changes: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(rule_with(**changes)) == expected


def test_an_email_rule_needs_a_template_with_email_or_sms_text() -> None:
    raw = rule_with(template="spoken-only")
    raw["templates"] = {"spoken-only": {"voice": "Invoice {invoice_id} posted."}}
    assert errors_of(raw) == ["rules[0].template: template 'spoken-only' has no email (or sms) text"]
    raw["templates"]["spoken-only"]["email"] = "Invoice {invoice_id} posted."
    assert config_from_dict(raw).rules[0].template == "spoken-only"


def test_templates_take_a_subject_and_an_email_body_and_check_their_placeholders() -> None:
    raw = rule_with(template="invoice-mail")
    raw["templates"] = {"invoice-mail": {"subject": "Invoice {invoice_id}", "email": "Dear {vendor_name},\n\nPaid."}}
    template = config_from_dict(raw).template("invoice-mail")
    assert (template.subject, template.email, template.sms) == ("Invoice {invoice_id}", "Dear {vendor_name},\n\nPaid.",
                                                                "")
    raw["templates"]["invoice-mail"]["subject"] = "Invoice {invoice.id}"
    assert errors_of(raw)[0] == ("templates.invoice-mail.subject: placeholder {invoice.id} must be a plain field "
                                 "name such as {invoice_id}")


RECORD = {"invoice_id": "INV-0042", "vendor_name": "Fabrikam", "amount": 12500.5, "currency": "USD"}


def test_an_email_has_its_own_subject_and_body_when_the_template_gives_them() -> None:
    template = Template(sms="ignored", subject="Invoice {invoice_id}: {money}", email="From {vendor_name}.\nThanks.")
    assert email_message(template, RECORD, "Event") == ("Invoice INV-0042: 12,500.50 USD", "From Fabrikam.\nThanks.")


def test_without_an_email_part_the_sms_text_is_body_and_subject() -> None:
    template = Template(sms="Invoice {invoice_id} from {vendor_name} posted: {money}.")
    text = "Invoice INV-0042 from Fabrikam posted: 12,500.50 USD."
    assert email_message(template, RECORD, "VendorInvoicePostedBusinessEvent") == (text, text)


def test_a_long_or_multi_line_subject_becomes_one_short_line() -> None:
    template = Template(subject="Invoice {invoice_id}\n" + "x" * 200, email="Body")
    subject, body = email_message(template, RECORD, "Event")
    assert "\n" not in subject and len(subject) == 78 and subject.endswith("...") and body == "Body"
    assert email_message(Template(email="{nothing}"), RECORD, "The event") == ("The event", "")
    assert email_message(Template(subject="{nothing}", email="Body"), RECORD, "The event") == ("Body", "Body")
