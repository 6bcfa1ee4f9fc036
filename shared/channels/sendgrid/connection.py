"""A SendGrid connection: the API key, the verified sender, and the Signed Event Webhook's public key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.config import fields as f
from shared.config.model import Connection, SecretRef

DEFAULT_SENDGRID_API_BASE_URL = "https://api.sendgrid.com"  # EU regional subusers: https://api.eu.sendgrid.com

# One plain address (no display name): a local part without spaces or brackets, a dotted domain.
EMAIL_ADDRESS = re.compile(
    r"[^@\s<>()\[\],;:\"]{1,64}@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
EMAIL_REASON = "must be an email address such as ap@contoso.com"


@dataclass(frozen=True, kw_only=True)
class SendGridConnection(Connection):
    kind: ClassVar[str] = "sendgrid"
    api_key: SecretRef  # a key with the Mail Send permission
    from_email: str  # a verified sender of the SendGrid account
    from_name: str | None = None
    api_base_url: str = DEFAULT_SENDGRID_API_BASE_URL
    # The Signed Event Webhook's verification key (base64 DER, as SendGrid shows it): public, not a secret.
    event_webhook_public_key: str | None = None


@f.described({"type": "string", "pattern": r"\S",
              "description": "The Signed Event Webhook's verification key: base64 DER, as SendGrid shows it, or PEM"})
def _event_public_key(value: Any) -> str:
    """SendGrid's verification key: base64 DER of an ECDSA P-256 public key (PEM armour is taken off)."""
    from shared.channels.sendgrid.signature import InvalidPublicKey, public_key_text

    try:
        return public_key_text(value)
    except InvalidPublicKey as exc:
        raise f.Invalid(str(exc)) from None


SETTINGS = f.ConnectionSettings(
    SendGridConnection,
    {
        "api_key": f.secret_ref,
        "from_email": f.matching(EMAIL_ADDRESS.pattern, EMAIL_REASON),
        "from_name": f.text,
        "api_base_url": f.url(),
        "event_webhook_public_key": _event_public_key,
    },
)
