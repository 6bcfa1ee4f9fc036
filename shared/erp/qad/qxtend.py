"""QXtend Inbound (SOAP): supplier replies written to QAD as master comments (``cmt_det``).

One QDoc request per note, posted to ``{qxtend.url}/services/QdocWebService`` with
``Content-Type: text/xml`` and ``SOAPAction: ""``. The session context (``dsSessionContext``
``ttContext`` rows) carries the domain, the QXtend user and password and the QDoc version.
The reply's ``result`` is ``success``, ``warning`` (also a success) or ``error`` with the
reasons in ``tt_msg_desc``. The Progress database is never written directly.

QXtend calls can block for a long time, so the read timeout is 90 s; a request that timed out
or failed with a 5xx is not repeated inline (QAD may have applied it), it goes back to the
queue. Each note carries the provider's message id, so a repeat is recognisable in QAD.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from shared.clients import PerConnection
from shared.erp.polling import Note
from shared.erp.qad.connection import QadConnection
from shared.erp.xml_answers import XmlRefused, parse_xml
from shared.http import HttpClient, HttpFailure, RetryPolicy
from shared.outcomes import PermanentFailure, RetryLater

if TYPE_CHECKING:
    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

QDOC_SERVICE_PATH = "/services/QdocWebService"
QXTEND_READ_TIMEOUT = 90.0
QXTEND_CONNECT_TIMEOUT = 10.0
SUCCESS_RESULTS = ("success", "warning")
# cmt_cmmt holds up to 15 lines of 76 characters per comment.
COMMENT_LINE_WIDTH = 76
COMMENT_MAX_LINES = 15
# Messages that mean "try again later", not "this will never work".
_TRANSIENT_MESSAGE = re.compile(r"in use|locked|lock wait|timeout|try again", re.IGNORECASE)
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_MAX_REASON = 300


# --- check on the customer's instance --------------------------------------------------------------
# The envelope, the session context and the namespaces follow working QXtend clients. The name of
# the Master Comment Maintenance QDoc, its dataset and field names, and whether a request without a
# sequence number appends a comment page (as assumed here) are not confirmed: compare them with the
# QDoc schema the QXtend server publishes for master comments.
QDOC_OPERATION = "maintainMasterComment"
QDOC_DATASET, QDOC_RECORD = "dsMasterComment", "masterComment"


def master_comment_request(*, receiver: str, message_id: str, context: Sequence[tuple[str, str]], reference: str,
                           comment_type: str, language: str | None, lines: Sequence[str]) -> bytes:
    """The whole SOAP request that adds one master comment (``cmt_ref`` + ``cmt_type``) with ``lines``."""
    context_rows = "".join(
        "<qcom:ttContext><qcom:propertyQualifier>QAD</qcom:propertyQualifier>"
        f"<qcom:propertyName>{escape(name)}</qcom:propertyName>"
        + (f"<qcom:propertyValue>{escape(value)}</qcom:propertyValue>" if value else "<qcom:propertyValue/>")
        + "</qcom:ttContext>"
        for name, value in context
    )
    fields = (f"<cmtRef>{escape(reference)}</cmtRef><cmtType>{escape(comment_type)}</cmtType>"
              + (f"<cmtLang>{escape(language)}</cmtLang>" if language else "")
              + "".join(f"<cmtCmmt>{escape(line)}</cmtCmmt>" for line in lines))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns="urn:schemas-qad-com:xml-services" '
        'xmlns:qcom="urn:schemas-qad-com:xml-services:common" '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:wsa="http://www.w3.org/2005/08/addressing">'
        "<soapenv:Header>"
        "<wsa:Action/>"
        f"<wsa:To>urn:services-qad-com:{escape(receiver)}</wsa:To>"
        f"<wsa:MessageID>urn:messages-qad-com:{escape(message_id)}</wsa:MessageID>"
        "<wsa:ReferenceParameters><qcom:suppressResponseDetail>true</qcom:suppressResponseDetail>"
        "</wsa:ReferenceParameters>"
        "<wsa:ReplyTo><wsa:Address>urn:services-qad-com:</wsa:Address></wsa:ReplyTo>"
        "</soapenv:Header>"
        "<soapenv:Body>"
        f"<{QDOC_OPERATION}>"
        f"<qcom:dsSessionContext>{context_rows}</qcom:dsSessionContext>"
        f"<{QDOC_DATASET}><{QDOC_RECORD}>{fields}</{QDOC_RECORD}></{QDOC_DATASET}>"
        f"</{QDOC_OPERATION}>"
        "</soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()
# --- end of the unconfirmed block -----------------------------------------------------------------


def session_context(*, domain: str, username: str, password: str, version: str) -> list[tuple[str, str]]:
    """The ``ttContext`` rows every QDoc request carries, in the order QXtend clients send them."""
    return [("domain", domain), ("scopeTransaction", "true"), ("version", version), ("mnemonicsRaw", "false"),
            ("username", username), ("password", password), ("action", ""), ("entity", ""), ("email", ""),
            ("emailLevel", "")]


@dataclass(frozen=True)
class QdocResult:
    result: str  # success | warning | error | fault
    messages: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.result in SUCCESS_RESULTS


def parse_qdoc_reply(body: bytes) -> QdocResult:
    """The ``result`` of a QDoc reply and its ``tt_msg_desc`` messages; a SOAP Fault is result ``fault``."""
    root = parse_xml(body)
    found: dict[str, list[str]] = {}
    for element in root.iter():
        name = element.tag.rpartition("}")[2]
        if name in ("result", "tt_msg_desc", "faultstring"):
            found.setdefault(name, []).append((element.text or "").strip())
    if "faultstring" in found:
        return QdocResult("fault", tuple(found["faultstring"]))
    results = found.get("result") or [""]
    return QdocResult(results[0].lower(), tuple(message for message in found.get("tt_msg_desc", []) if message))


def comment_lines(note: Note, about: str = "") -> list[str]:
    """The comment as QAD shows it: who answered and when, what it is about, then the text, wrapped."""
    moment = note.received_at.strftime("%Y-%m-%d %H:%M %Z").strip()
    heading = f"Alert outcome {moment}" if note.outcome else f"SMS reply {moment} from {note.sender}"
    lines = textwrap.wrap(heading, COMMENT_LINE_WIDTH)
    lines += textwrap.wrap(f"Message {note.reference}" + (f", re {about}" if about else ""), COMMENT_LINE_WIDTH)
    for paragraph in _XML_UNSAFE.sub(" ", note.text).splitlines():
        lines += textwrap.wrap(paragraph, COMMENT_LINE_WIDTH) or []
    if len(lines) > COMMENT_MAX_LINES:
        last = lines[COMMENT_MAX_LINES - 1][: COMMENT_LINE_WIDTH - 3].rstrip()
        lines = [*lines[: COMMENT_MAX_LINES - 1], last + "..."]
    return lines


class QxtendClient:
    """Posts QDoc requests to one QXtend Inbound server as the connection's QXtend user."""

    def __init__(self, connection: QadConnection, secrets: SecretProvider, *, http: HttpClient | None = None) -> None:
        if connection.qxtend is None:
            raise PermanentFailure(f"{connection.name}: notes need the connection's qxtend settings")
        self.connection = connection
        self.settings = connection.qxtend
        self._secrets = secrets
        self._url = self.settings.url.rstrip("/") + QDOC_SERVICE_PATH
        policy = RetryPolicy(max_attempts=3, connect_timeout=QXTEND_CONNECT_TIMEOUT, read_timeout=QXTEND_READ_TIMEOUT)
        self._http = http or HttpClient(policy, verify=connection.ca_bundle or True)

    def add_master_comment(self, reference: str, lines: Sequence[str], *, message_id: str) -> QdocResult:
        """Add a comment to ``reference``; raises RetryLater/HttpFailure (try again) or PermanentFailure."""
        settings = self.settings
        password_ref = settings.password or self.connection.password
        context = session_context(domain=self.connection.domain,
                                  username=settings.username or self.connection.username,
                                  password=self._secrets.get(password_ref.name).reveal(), version=settings.version)
        body = master_comment_request(receiver=settings.receiver, message_id=message_id, context=context,
                                      reference=reference, comment_type=settings.comment_type,
                                      language=settings.language, lines=lines)
        result = self._post(body)
        if result.succeeded:
            if result.result == "warning":
                log.info("QXtend accepted the comment on %s with a warning: %s", reference, _reason(result))
            return result
        if result.result == "fault" or any(_TRANSIENT_MESSAGE.search(message) for message in result.messages):
            raise RetryLater(60.0, f"QXtend could not add the comment now: {_reason(result)}")
        raise PermanentFailure(f"QXtend refused the comment on {reference!r}: {_reason(result)}")

    def _post(self, body: bytes) -> QdocResult:
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        try:
            response = self._http.post(self._url, data=body, headers=headers)
        except HttpFailure as failure:
            fault = _fault_of(failure)
            if failure.status is not None and 400 <= failure.status < 500 and fault is None:
                raise PermanentFailure(f"QXtend answered HTTP {failure.status}") from None
            if fault is not None:
                return fault
            raise
        try:
            return parse_qdoc_reply(response.content)
        except XmlRefused:
            raise RetryLater(60.0, f"QXtend answered HTTP {response.status_code} without a QDoc reply") from None

    def close(self) -> None:
        self._http.close()


def _fault_of(failure: HttpFailure) -> QdocResult | None:
    """A SOAP Fault carried by an HTTP error (QXtend answers 500 with one), or None."""
    if failure.response is None:
        return None
    try:
        result = parse_qdoc_reply(failure.response.content)
    except XmlRefused:
        return None
    return result if result.result in ("fault", "error") else None


def _reason(result: QdocResult) -> str:
    return ("; ".join(result.messages) or result.result)[:_MAX_REASON]


def _new_qxtend_client(connection: QadConnection) -> QxtendClient:
    from shared.storage.secrets import get_secret_provider

    return QxtendClient(connection, get_secret_provider())


_clients: PerConnection[QxtendClient] = PerConnection(_new_qxtend_client)


def qxtend_client(connection: QadConnection) -> QxtendClient:
    return _clients.get(connection)


def reset_qxtend_clients() -> None:
    _clients.reset()
