"""Routing rules: conditions on ERP fields pick recipients; nothing is evaluated as code."""

from __future__ import annotations

import pytest

from shared.config.loading import config_from_dict
from shared.config.model import Condition, Recipient, Rule
from shared.pipeline.rules import holds, needs_approval_code, targets

RECORD = {
    "event": "VendorInvoicePostedBusinessEvent",
    "amount": 12500.5,
    "amount_text": "12,500.50",
    "legal_entity": "USMF",
    "vendor_group": "10",
    "due_date": "2026-12-01T12:00:00Z",
    "vendor_phone": "+14155550100",
    "tags": ["urgent", "ap"],
    "empty": "",
}


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("amount", "gt", 10000, True),
        ("amount", "gt", 12500.5, False),
        ("amount", "ge", 12500.5, True),
        ("amount_text", "gt", 12000, True),  # numbers written as text compare as numbers
        ("amount", "lt", 100, False),
        ("legal_entity", "eq", "usmf", True),  # text without regard to case
        ("legal_entity", "ne", "usmf", False),
        ("legal_entity", "in", ("usrt", "usmf"), True),
        ("legal_entity", "not_in", ("usrt", "usmf"), False),
        ("vendor_group", "eq", 10, True),
        ("due_date", "lt", "2026-12-02", True),
        ("due_date", "gt", "2026-12-02T00:00:00Z", False),
        ("tags", "contains", "urgent", True),
        ("legal_entity", "contains", "sm", True),
        ("vendor_phone", "exists", True, True),
        ("empty", "exists", False, True),
        ("missing", "exists", False, True),
        ("missing", "eq", "x", False),
        ("missing", "ne", "x", False),
        ("legal_entity", "gt", 5, False),  # not comparable: does not hold
    ],
)
def test_conditions(field: str, op: str, value: object, expected: bool) -> None:
    assert holds(Condition(field, op, value), RECORD) is expected  # type: ignore[arg-type]


def config(rules: list[dict]) -> object:
    return config_from_dict({
        "connections": {
            "fo": {"kind": "dynamics", "environment_url": "https://fo.example.com", "tenant_id": "t",
                   "client_id": "c", "client_secret": {"secret": "s"}},
            "tw": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "api_key_sid": "SK" + "0" * 32,
                   "api_key_secret": {"secret": "k"}, "auth_token": {"secret": "a"}, "from_number": "+15005550006"},
        },
        "rules": rules,
    })


def rule(rule_id: str, **extra: object) -> dict:
    return {"id": rule_id, "source": "fo", "channel": "sms", "via": "tw", "to": ["+14155550101"],
            "template": "vendor-invoice-posted", **extra}


def test_targets_follow_event_conditions_and_priority() -> None:
    cfg = config([
        rule("any-invoice", event="VendorInvoicePostedBusinessEvent"),
        rule("big", event="VendorInvoicePostedBusinessEvent", priority=1,
             when=[{"field": "amount", "op": "gt", "value": 10000}], to=[{"field": "vendor_phone"}]),
        rule("other-event", event="PurchaseOrderConfirmedBusinessEvent"),
        rule("small", when=[{"field": "amount", "op": "lt", "value": 100}]),
    ])
    found = targets(cfg, "fo", "VendorInvoicePostedBusinessEvent", RECORD)
    assert [(t.rule.id, t.address, t.problem) for t in found] == [
        ("big", "+14155550100", ""),
        ("any-invoice", "+14155550101", ""),
    ]


def test_a_lookup_recipient_missing_from_the_record_is_reported() -> None:
    cfg = config([rule("r", to=[{"field": "approver_phone"}, "+14155550101"])])
    found = targets(cfg, "fo", "X", RECORD)
    assert [(t.address, t.problem) for t in found] == [
        ("", "the record has no value in 'approver_phone'"),
        ("+14155550101", ""),
    ]


def card_rule(**fields: object) -> Rule:
    return Rule(id="card", source="contoso", channel="slack", via="slack", to=(Recipient(value="#ap"),),
                template="workflow-approval", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"amount": 10000.01}, True),
        ({"amount": 10000}, False),  # above, not at
        ({"amount": "25,000.00"}, True),  # amounts written as text
        ({"amount": 900}, False),
        ({}, True),  # no amount: nothing shows the approval is small
        ({"amount": "n/a"}, True),
        ({"amount": True}, True),
    ],
)
def test_approve_needs_a_code_above_the_amount_or_when_it_is_unknown(record: dict, expected: bool) -> None:
    assert needs_approval_code(card_rule(verify_above=10000.0, verify_via="twilio"), record) is expected


def test_the_amount_field_is_configurable_and_rules_without_a_threshold_need_no_code() -> None:
    rule = card_rule(verify_above=0.0, verify_via="twilio", verify_amount_field="InvoiceAmount")

    assert needs_approval_code(rule, {"InvoiceAmount": 1, "amount": 0})
    assert not needs_approval_code(rule, {"InvoiceAmount": 0})
    assert not needs_approval_code(card_rule(), {})
