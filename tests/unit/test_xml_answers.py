"""ERP answers in XML are read without entities, DTDs or external references."""

from __future__ import annotations

import pytest

from shared.erp.xml_answers import XmlRefused, parse_xml

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""


def test_an_ordinary_answer_parses_as_the_standard_library_would() -> None:
    root = parse_xml(b"<PorQuery><Order><PurchaseOrder>000123</PurchaseOrder></Order></PorQuery>")
    assert root.find("Order/PurchaseOrder").text == "000123"  # type: ignore[union-attr]


@pytest.mark.parametrize("text", [LAUGHS, EXTERNAL], ids=["entity expansion", "external entity"])
def test_entities_and_external_references_are_refused(text: str) -> None:
    with pytest.raises(XmlRefused, match="refused"):
        parse_xml(text)


def test_text_that_is_not_xml_is_refused_with_the_parsers_words() -> None:
    with pytest.raises(XmlRefused, match=r"syntax error|not well-formed"):
        parse_xml("ERROR: the session has ended")
