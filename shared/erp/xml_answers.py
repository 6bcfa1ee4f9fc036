"""XML answers from ERPs, read without trusting them: no entities, no DTDs, no external references.

SYSPRO e.net, Sage X3's SOAP web service and QAD's QXtend answer in XML. A hostile or broken
server (or anyone between) could send an entity expansion ("billion laughs") or an external
entity; defusedxml refuses those, and everything else parses as the standard library would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element


class XmlRefused(ValueError):
    """Text that is not XML, or XML with constructs an answer has no business carrying."""


def parse_xml(text: str | bytes) -> Element:
    import defusedxml.ElementTree as SafeElementTree
    from defusedxml import DefusedXmlException

    try:
        return SafeElementTree.fromstring(text)
    except SafeElementTree.ParseError as error:
        raise XmlRefused(str(error)) from None
    except DefusedXmlException as error:
        raise XmlRefused(f"refused: {type(error).__name__}") from None
