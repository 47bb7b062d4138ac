"""Evaluates the route table against a submission and says what to do with it.

Every enabled route whose ``when`` holds contributes its actions; a matching ``reject`` wins over everything
(the first one in file order is reported). When nothing rejects and nothing sends, the table's ``unmatched``
rejection applies, so a message never silently goes nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gateway.model import DocumentSubmission
from gateway.routing.schema import Destination, RecipientKind, Reject, RouteTable, When


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery to make: a destination kind and, for MSSanté, one mail's recipient kind."""

    destination: Destination
    recipients: RecipientKind | None
    route: str
    via: str | None = None  # dmp: the transport a route asked for (xds, pdsm), else the configured one


@dataclass(slots=True)
class RoutingDecision:
    matched: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    transforms: list[str] = field(default_factory=list)
    rejection: Reject | None = None
    rejected_by: str | None = None
    official: bool = False  # a matching route asks for the official schematrons too

    @property
    def rejected(self) -> bool:
        return self.rejection is not None


@dataclass(frozen=True, slots=True)
class Facts:
    """The submission seen as the values routes can test."""

    message_type: str
    event: str
    type_code: str | None
    flags: dict[str, bool | None]
    confidentiality: frozenset[str]
    sending_application: str
    sending_facility: str
    ins_present: bool
    ins_qualified: bool
    action: str

    @classmethod
    def of(cls, sub: DocumentSubmission) -> Facts:
        prov = sub.provenance
        parts = (prov.message_type or "").split("^")
        primary = sub.primary
        conf = frozenset(c.code.upper() for c in primary.metadata.confidentiality) if primary else frozenset()
        type_code = (
            sub.type_code.code
            if sub.type_code
            else (primary.metadata.type_code.code if primary and primary.metadata.type_code else None)
        )
        return cls(
            message_type=parts[0].upper(),
            event=parts[1].upper() if len(parts) > 1 else "",
            type_code=type_code,
            flags={code: sub.flags.by_code(code) for code in sub.flags.CODES},
            confidentiality=conf,
            sending_application=(prov.sending_application or "").split("^")[0],
            sending_facility=(prov.sending_facility or "").split("^")[0],
            ins_present=sub.patient.ins_present,
            ins_qualified=sub.patient.ins_qualified,
            action=sub.action.value,
        )


def _any_pattern(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def holds(when: When, f: Facts) -> bool:
    if when.message_type is not None:
        full = f"{f.message_type}^{f.event}"
        if not any(m.upper() in (f.message_type, full) for m in when.message_type):
            return False
    if when.event is not None and f.event not in {e.upper() for e in when.event}:
        return False
    if when.type_code is not None and f.type_code not in when.type_code:
        return False
    if when.flags is not None and any(f.flags.get(code) is not value for code, value in when.flags.items()):
        return False
    if when.confidentiality is not None and not (
        f.confidentiality & {c.upper() for c in when.confidentiality}
    ):
        return False
    if when.sending_application is not None and not _any_pattern(
        f.sending_application, when.sending_application
    ):
        return False
    if when.sending_facility is not None and not _any_pattern(f.sending_facility, when.sending_facility):
        return False
    if when.ins_present is not None and f.ins_present is not when.ins_present:
        return False
    if when.ins_qualified is not None and f.ins_qualified is not when.ins_qualified:
        return False
    if when.action is not None and f.action not in {a.value for a in when.action}:
        return False
    if when.all_of is not None and not all(holds(w, f) for w in when.all_of):
        return False
    if when.any_of is not None and not any(holds(w, f) for w in when.any_of):
        return False
    return not (when.not_ is not None and holds(when.not_, f))


def decide(table: RouteTable, sub: DocumentSubmission) -> RoutingDecision:
    facts = Facts.of(sub)
    decision = RoutingDecision()
    seen: set[tuple[str, str | None]] = set()
    for route in table.routes:
        if not route.enabled or not holds(route.when, facts):
            continue
        decision.matched.append(route.name)
        if route.reject is not None:
            if decision.rejection is None:
                decision.rejection, decision.rejected_by = route.reject, route.name
            continue
        decision.official = decision.official or route.validation == "native+official"
        for name in route.transform:
            if name not in decision.transforms:
                decision.transforms.append(name)
        for send in route.send:
            for kind in send.recipients or [None]:
                key = (send.to, kind)
                if key not in seen:
                    seen.add(key)
                    decision.targets.append(Target(send.to, kind, route.name, send.via))
    if decision.rejection is not None:
        decision.targets.clear()
        decision.transforms.clear()
    elif not decision.targets:
        decision.rejection, decision.rejected_by = table.unmatched, None
    return decision
