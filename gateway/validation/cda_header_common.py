"""Shared machinery of the native StrucMin header rules: the check context, element paths, value-set lookups.

Kept apart from the rules so that :mod:`gateway.validation.cda_header` (document, patient) and
:mod:`gateway.validation.cda_header_parties` (author, custodian, participants, encounter) stay readable.
Nothing here quotes element *content* into a message: messages name elements, attributes, codes and OIDs only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from lxml import etree

from gateway.model import Severity, ValidationReport

try:  # the shipped terminology class, whose value sets a run can resolve once per key (see Ctx.in_value_set)
    from gateway.terminology.jdv import Terminology as _JdvTerminology
except ImportError:  # the terminology package is optional at this layer
    _JdvTerminology = None

HL7 = "urn:hl7-org:v3"
NS = {"hl7": HL7}
H = "{" + HL7 + "}"
CONDITION = 207  # HL7 0357 "Application internal error": what the ACK builder expects for content rules.

#: Qualified tags for the ``children(el).get(Q_*, NONE)`` lookups of the hot rules.
Q_ID, Q_CODE, Q_NAME, Q_TIME = H + "id", H + "code", H + "name", H + "time"
Q_EFFECTIVE_TIME, Q_LOW, Q_HIGH = H + "effectiveTime", H + "low", H + "high"
Q_ASSIGNED_ENTITY, Q_ASSIGNED_PERSON = H + "assignedEntity", H + "assignedPerson"
Q_REPRESENTED_ORGANIZATION, Q_SIC = H + "representedOrganization", H + "standardIndustryClassCode"
Q_PERFORMER, Q_SERVICE_EVENT = H + "performer", H + "serviceEvent"

RPPS_OID = "1.2.250.1.71.4.2.1"
STRUCT_OID = "1.2.250.1.71.4.2.2"

#: Keys passed to ``Terminology.contains`` and the value-set OID StrucMin reads for each (voc-<oid>-DYNAMIC.xml).
VALUE_SETS: dict[str, str] = {
    "J01": "1.2.250.1.213.1.1.5.461",
    "J02": "1.2.250.1.213.1.1.5.466",
    "J04": "1.2.250.1.213.1.1.5.467",
    "J07": "1.2.250.1.213.1.1.5.471",
    "J11": "1.2.250.1.213.3.3.16",
    "J47": "1.2.250.1.213.1.1.5.124",
    "J140": "1.2.250.1.213.1.1.5.528",
    "J141": "1.2.250.1.213.1.1.5.588",
    "J142": "1.2.250.1.213.1.1.5.589",
    "J143": "1.2.250.1.213.1.1.5.590",
    "J144": "1.2.250.1.213.1.1.5.591",
    "J245": "1.2.250.1.213.1.1.5.718",
    "J246": "1.2.250.1.213.1.1.5.719",
}

_UID = re.compile(
    r"^(?:[0-2](?:\.(?:0|[1-9]\d*))*"
    r"|[A-Fa-f\d]{8}-[A-Fa-f\d]{4}-[A-Fa-f\d]{4}-[A-Fa-f\d]{4}-[A-Fa-f\d]{12}"
    r"|[A-Za-z][A-Za-z\d\-]*)$"
)


class Terminology(Protocol):
    def contains(self, value_set: str, code: str, code_system: str | None = None) -> bool | None: ...


def is_uid(value: str) -> bool:
    return bool(_UID.match(value))


#: The children index of the validation run in progress (see children_index). A module global rather than a
#: thread-local because ``kids`` is called ~200 times per header and a global load is the cheapest lookup;
#: runs in several threads take turns on ``_RUN_LOCK`` (they would take turns on the GIL anyway).
_INDEX: dict | None = None
_RUN_LOCK = threading.RLock()


@contextmanager
def children_index() -> Iterator[None]:
    """For one validation run, index each element's children by tag the first time the element is asked about:
    the rules ask the same elements for different children about 200 times per header, and walking the
    children once per element instead of once per question is what brings the run well under a millisecond."""
    global _INDEX
    with _RUN_LOCK:
        _INDEX = {}
        try:
            yield
        finally:
            _INDEX = None


def _index_children(index: dict, el: etree._Element) -> dict:
    # Comments and processing instructions are filed under their (non-string) tag and so never match a name.
    found: dict = {}
    for child in el:
        tag = child.tag
        same = found.get(tag)
        if same is None:
            found[tag] = [child]
        else:
            same.append(child)
    index[el] = found  # the key keeps the element proxy alive, so identity stays stable during the run
    return found


def children(el: etree._Element) -> dict:
    """The children of ``el`` by qualified tag (``H + name``), for rules that ask one element several questions:
    one index lookup, then plain ``dict.get(tag, NONE)``. Read it, never mutate it."""
    index = _INDEX
    if index is None:
        return _index_children({}, el)
    found = index.get(el)
    if found is None:
        found = _index_children(index, el)
    return found


_QNAMES: dict[str, str] = {}


def _qname(name: str) -> str:
    q = _QNAMES.get(name)
    if q is None:
        q = _QNAMES[name] = H + name
    return q


_NONE: list[etree._Element] = []
NONE = _NONE


def kids(el: etree._Element | None, name: str) -> list[etree._Element]:
    """Children in the HL7 namespace called ``name``. The list is the run's index itself: read it, never
    mutate it (no rule does; concatenation with ``+`` makes a new list). Hot: ~200 calls per header, hence
    the inlined lookups."""
    if el is None:
        return _NONE
    index = _INDEX
    if index is None:
        return list(el.iterchildren(H + name))
    found = index.get(el)
    if found is None:
        found = _index_children(index, el)
    return found.get(_QNAMES.get(name) or _qname(name), _NONE)


def kid(el: etree._Element | None, name: str) -> etree._Element | None:
    if el is None:
        return None
    index = _INDEX
    if index is None:
        return next(el.iterchildren(H + name), None)
    found = index.get(el)
    if found is None:
        found = _index_children(index, el)
    same = found.get(_QNAMES.get(name) or _qname(name))
    return same[0] if same else None


def not_null(els: list[etree._Element]) -> list[etree._Element]:
    return [e for e in els if e.get("nullFlavor") is None]


def text(el: etree._Element) -> str:
    if not len(el):  # no child node at all (not even a comment): the text is el.text alone
        t = el.text
        return t.strip() if t else ""
    return "".join(el.itertext()).strip()


def path_of(el: etree._Element) -> str:
    """An XPath-like location ``/ClinicalDocument/author[2]/time``; index only when siblings share the name.

    Built only when a finding is emitted, so the cost is off the happy path.
    """
    parts: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        tag = node.tag
        if not isinstance(tag, str):
            node = node.getparent()
            continue
        q = etree.QName(tag)
        name = q.localname if q.namespace in (HL7, None) else f"{{{q.namespace}}}{q.localname}"
        parent = node.getparent()
        if parent is not None:
            same = list(parent.iterchildren(tag))
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


_UNRESOLVED = object()


class Ctx:
    """One validation run: the report, the terminology, and the set of value sets already found unknown."""

    __slots__ = ("_unknown_vs", "_value_sets", "report", "terminology")

    def __init__(self, report: ValidationReport, terminology: Terminology | None) -> None:
        self.report = report
        self.terminology = terminology
        self._unknown_vs: set[str] = set()
        # key -> resolved ValueSet (or None, unknown) when the terminology is exactly the shipped class, whose
        # ``contains(key, code, cs)`` is ``value_set(key).contains(code, cs)``: resolved once per run, not per code.
        self._value_sets: dict[str, object] | None = (
            {} if _JdvTerminology is not None and type(terminology) is _JdvTerminology else None
        )

    def error(self, rule: str, where: etree._Element | str, message: str, source: str) -> None:
        self.add(rule, where, message, source, Severity.ERROR)

    def add(
        self, rule: str, where: etree._Element | str, message: str, source: str, severity: Severity
    ) -> None:
        location = where if isinstance(where, str) else path_of(where)
        self.report.add(
            rule,
            location,
            message,
            severity=severity,
            condition=CONDITION,
            source=f"StrucMin 1.16 {source}",
        )

    # --- cardinalities -------------------------------------------------------------------------------------
    def card(
        self,
        rule: str,
        parent: etree._Element,
        found: list[etree._Element],
        what: str,
        source: str,
        lo: int = 1,
        hi: int | None = 1,
    ) -> None:
        """Emit the ART-DECOR style 'required [min n]' / 'appears too often [max n]' finding."""
        n = len(found)
        if n < lo:
            self.error(rule, f"{path_of(parent)}/{what}", f"element {what} is required [min {lo}x]", source)
        elif hi is not None and n > hi:
            self.error(
                rule, path_of(found[hi]), f"element {what} appears too often [max {hi}x], found {n}", source
            )

    def require_attrs(self, rule: str, el: etree._Element, attrs: tuple[str, ...], source: str) -> None:
        for a in attrs:
            if el.get(a) is None:
                self.error(rule, f"{path_of(el)}/@{a}", f"attribute @{a} is required on {_local(el)}", source)

    # --- value sets ----------------------------------------------------------------------------------------
    def in_value_set(
        self, key: str, code: str, code_system: str | None, where: etree._Element, source: str
    ) -> bool:
        """True/False from the terminology; True (do not fail) when the value set is unknown, with one INFO."""
        result: bool | None = None
        value_sets = self._value_sets
        if value_sets is not None:
            vs = value_sets.get(key, _UNRESOLVED)
            if vs is _UNRESOLVED:
                try:
                    vs = self.terminology.value_set(key)  # type: ignore[union-attr]
                except (KeyError, LookupError):
                    vs = None
                value_sets[key] = vs
            if vs is not None:
                return bool(vs.contains(code, code_system))  # type: ignore[attr-defined]
        elif self.terminology is not None:
            try:
                result = self.terminology.contains(key, code, code_system)
            except (KeyError, LookupError):
                result = None
        if result is None:
            if key not in self._unknown_vs:
                self._unknown_vs.add(key)
                self.add(
                    "STRUCMIN-VALUESET-UNKNOWN",
                    where,
                    f"value set {key} ({VALUE_SETS.get(key, '?')}) is not available: its rules were not checked",
                    source,
                    Severity.INFO,
                )
            return True
        return bool(result)

    def coded(
        self,
        rule: str,
        el: etree._Element,
        key: str,
        source: str,
        attrs: tuple[str, ...] = ("code", "codeSystem", "displayName"),
        attr: str = "code",
        quote: bool = True,
    ) -> None:
        """Required attributes, then the value-set membership of ``@attr`` (StrucMin tokenises it on spaces)."""
        self.require_attrs(rule, el, attrs, source)
        value = el.get(attr)
        if value is None:
            return
        # StrucMin tests @code alone against the voc file (not the code system), so pass code_system=None:
        # checking the pair would reject documents the official engine accepts.
        for token in value.split() or [value]:
            if not self.in_value_set(key, token, None, el, source):
                self.error(
                    rule,
                    f"{path_of(el)}/@{attr}",
                    f"{_local(el)}/@{attr} {repr(token) if quote else 'value'} is not in value set "
                    f"{key} ({VALUE_SETS.get(key, '')})",
                    source,
                )


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def local(el: etree._Element) -> str:
    return _local(el)
