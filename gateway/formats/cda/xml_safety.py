"""Hardened XML parsing for documents that come from outside.

Every XML the gateway reads from a sender goes through :func:`parse_untrusted`: no entity expansion, no DTD
loading, no network access, a byte-size limit checked before parsing, and any DOCTYPE refused outright (a CDA
never has one, and a DOCTYPE is how entity-expansion and external-entity attacks get in).
"""

from __future__ import annotations

from lxml import etree

DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class UnsafeXMLError(ValueError):
    """The XML is refused before or while parsing. ``rule`` is a stable code, ``location`` where it failed."""

    def __init__(self, rule: str, location: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.location = location


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        collect_ids=False,
    )


def parse_untrusted(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._ElementTree:
    """Parse ``data`` safely or raise :class:`UnsafeXMLError` naming the rule and the place."""
    if len(data) > max_bytes:
        raise UnsafeXMLError(
            "XML-TOO-LARGE", "/", f"document of {len(data)} bytes exceeds the {max_bytes}-byte limit"
        )
    if not data.strip():
        raise UnsafeXMLError("XML-EMPTY", "/", "empty document")
    try:
        tree = etree.ElementTree(etree.fromstring(data, _parser()))
    except etree.XMLSyntaxError as exc:
        line = getattr(exc, "lineno", None)
        where = f"line {line}" if line else "/"
        # libxml2's message names the construct and position, never document content beyond a few tag names.
        raise UnsafeXMLError("XML-NOT-WELL-FORMED", where, f"not well-formed XML: {exc.msg}") from None
    if tree.docinfo.doctype:
        raise UnsafeXMLError("XML-DOCTYPE", "/", "a DOCTYPE declaration is not allowed in a CDA document")
    return tree
