"""The one list of kinds: each ERP and channel provider, how its connection is read, and what it can do.

Adding an ERP or a channel is one folder (``shared/erp/<kind>/`` or ``shared/channels/<kind>/``)
and one line below. The folder's ``connection.py`` declares the settings; the modules named
here by path are imported on first use, so a cold start reads none of them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.channels.sendgrid import connection as sendgrid
from shared.channels.slack import connection as slack
from shared.channels.twilio import connection as twilio
from shared.config.fields import E164, E164_REASON, ConnectionSettings
from shared.erp.dynamics import connection as dynamics
from shared.erp.qad import connection as qad
from shared.erp.sagex3 import connection as sagex3
from shared.erp.syspro import connection as syspro
from shared.logs import mask_phone


@dataclass(frozen=True)
class AddressForm:
    """What a recipient's address looks like on one channel, and what to say when it does not.

    ``phone``: the address is a phone number, shown masked wherever the audit or logs name it.
    """

    pattern: re.Pattern[str]
    reason: str
    phone: bool = False


@dataclass(frozen=True)
class RuleChannel:
    """A channel a rule can name: its addresses, and the template texts it can send (the first
    that a template has is used; none needed when empty)."""

    address: AddressForm
    texts: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ErpKind:
    name: str
    settings: ConnectionSettings
    adapter: str  # the module that meets ``shared.erp.polling.ErpAdapter``
    entities: tuple[str, ...]  # what its polls can read, as the adapter names them
    notes: bool = False  # replies can be written back against the ERP record
    decisions: bool = False  # approval cards' decisions can be written back to its workflow
    doctor: str = ""  # the module whose ``checks(connection, context)`` the connection doctor runs


@dataclass(frozen=True, kw_only=True)
class ChannelKind:
    name: str
    settings: ConnectionSettings
    flow: str  # the module that meets ``shared.pipeline.flows.ChannelFlow``
    carries: Mapping[str, RuleChannel] = field(default_factory=dict)  # the rule channels it carries, by name
    doctor: str = ""  # the module whose ``checks(connection, context)`` the connection doctor runs

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.carries)


PHONE = AddressForm(E164, E164_REASON, phone=True)

ERPS: Mapping[str, ErpKind] = MappingProxyType({kind.name: kind for kind in (
    ErpKind(name="dynamics", settings=dynamics.SETTINGS, adapter="shared.erp.dynamics.adapter",
            entities=dynamics.ENTITIES, notes=True, decisions=True, doctor="shared.erp.dynamics.doctor"),
    ErpKind(name="syspro", settings=syspro.SETTINGS, adapter="shared.erp.syspro.adapter",
            entities=syspro.ENTITIES, notes=True, doctor="shared.erp.syspro.doctor"),
    ErpKind(name="sagex3", settings=sagex3.SETTINGS, adapter="shared.erp.sagex3.adapter",
            entities=sagex3.ENTITIES, notes=True, doctor="shared.erp.sagex3.doctor"),
    ErpKind(name="qad", settings=qad.SETTINGS, adapter="shared.erp.qad.adapter", entities=qad.ENTITIES, notes=True,
            doctor="shared.erp.qad.doctor"),
)})

CHANNELS: Mapping[str, ChannelKind] = MappingProxyType({kind.name: kind for kind in (
    ChannelKind(name="twilio", settings=twilio.SETTINGS, flow="shared.pipeline.twilio_flow",
                doctor="shared.channels.twilio.doctor",
                carries={"sms": RuleChannel(PHONE, ("sms",)), "voice": RuleChannel(PHONE, ("voice",))}),
    ChannelKind(name="slack", settings=slack.SETTINGS, flow="shared.pipeline.slack_flow",
                doctor="shared.channels.slack.doctor",
                carries={"slack": RuleChannel(AddressForm(slack.SLACK_TARGET, slack.SLACK_TARGET_REASON))}),
    ChannelKind(name="sendgrid", settings=sendgrid.SETTINGS, flow="shared.pipeline.email_flow",
                doctor="shared.channels.sendgrid.doctor",
                carries={"email": RuleChannel(AddressForm(sendgrid.EMAIL_ADDRESS, sendgrid.EMAIL_REASON),
                                              ("email", "sms"))}),
)})


def all_kinds() -> tuple[str, ...]:
    return (*ERPS, *CHANNELS)


def settings_of(kind: str) -> ConnectionSettings | None:
    found = ERPS.get(kind) or CHANNELS.get(kind)
    return found.settings if found is not None else None


def rule_channels() -> tuple[str, ...]:
    """Every channel a rule can name (sms, voice, slack, email), in the order of the kinds."""
    return tuple(channel for kind in CHANNELS.values() for channel in kind.channels)


def carrier_of(channel: str) -> ChannelKind | None:
    """The channel kind whose connections carry ``channel``."""
    return next((kind for kind in CHANNELS.values() if channel in kind.carries), None)


def rule_channel(channel: str) -> RuleChannel | None:
    carrier = carrier_of(channel)
    return carrier.carries[channel] if carrier is not None else None


def shown_address(channel: str, address: str) -> str:
    """An address as the audit and logs may show it: phone numbers masked, others as they are."""
    found = rule_channel(channel)
    return mask_phone(address) if found is None or found.address.phone else address


def load(module: str) -> Any:
    """An adapter, flow or doctor module named in the list above, imported on first use."""
    return importlib.import_module(module)
