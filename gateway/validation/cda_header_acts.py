"""StrucMin 1.16 header rules for the acts around the document: documentationOf (the "acte principal" and its
performer), relatedDocument, authorization and componentOf/encompassingEncounter.

Split out of :mod:`gateway.validation.cda_header_parties` for size; see :mod:`gateway.validation.cda_header`.
"""

from __future__ import annotations

from lxml import etree

from gateway.validation.cda_header_common import (
    NONE,
    Q_ASSIGNED_ENTITY,
    Q_ASSIGNED_PERSON,
    Q_CODE,
    Q_EFFECTIVE_TIME,
    Q_HIGH,
    Q_ID,
    Q_LOW,
    Q_PERFORMER,
    Q_REPRESENTED_ORGANIZATION,
    Q_SERVICE_EVENT,
    Q_SIC,
    RPPS_OID,
    STRUCT_OID,
    Ctx,
    children,
    kid,
    kids,
    local,
    not_null,
    path_of,
)
from gateway.validation.cda_header_parties import (
    _civility,
    _ids_root_ext,
    _names_of,
    _organization,
    _person,
    _specialty,
)

RULES: dict[str, str] = {
    "STRUCMIN-DOCOF": "documentationOf[serviceEvent] 1..*; serviceEvent 1..1; code @code+@codeSystem",
    "STRUCMIN-DOCOF-EFFECTIVETIME": "main serviceEvent effectiveTime 1..1 with low/@value",
    "STRUCMIN-DOCOF-PERFORMER": "main serviceEvent performer[PRF] 1..1 with assignedEntity/id and organization",
    "STRUCMIN-DOCOF-PRACTICESETTING": "performer organization standardIndustryClassCode 1..1 in J04",
    "STRUCMIN-RELATEDDOCUMENT": "relatedDocument typeCode RPLC only, 0..1, parentDocument/id/@root",
    "STRUCMIN-AUTHORIZATION": "authorization/consent with statusCode completed and code",
    "STRUCMIN-COMPONENTOF": "componentOf/encompassingEncounter[location] 1..1",
    "STRUCMIN-ENCOUNTER-TIME": "encompassingEncounter/effectiveTime 1..1",
    "STRUCMIN-ENCOUNTER-CODE": "encompassingEncounter/code 0..1 in J142",
    "STRUCMIN-FACILITY-CODE": "location/healthCareFacility/code 1..1 in J02",
    "STRUCMIN-ENCOUNTER-PARTICIPANT": "responsibleParty / encounterParticipant (J140) with an RPPS id",
}


def check_acts(ctx: Ctx, doc: etree._Element) -> None:
    _documentation_of(ctx, doc)
    _related_documents(ctx, doc)
    _authorizations(ctx, doc)
    _component_of(ctx, doc)


# --- documentationOf --------------------------------------------------------------------------------------
def _documentation_of(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISDocumentationOf"
    all_docofs = kids(doc, "documentationOf")
    docofs = [d for d in not_null(all_docofs) if Q_SERVICE_EVENT in children(d)]
    ctx.card(
        "STRUCMIN-DOCOF", doc, docofs, "documentationOf[serviceEvent]", "SMDS_CDAClinicalDocument", hi=None
    )
    # The "acte principal" is the first documentationOf: exactly one effectiveTime and one performer there
    # (StrucMin counts them even when there is no documentationOf at all).
    main_event = kid(all_docofs[0], "serviceEvent") if all_docofs else None
    performers = kids(main_event, "performer")
    if len(performers) != 1:
        ctx.error(
            "STRUCMIN-DOCOF-PERFORMER",
            f"{_main_event_path(doc, main_event)}/performer",
            "the main act (first documentationOf/"
            f"serviceEvent) must have exactly one performer (found {len(performers)})",
            "SMDS_CDAClinicalDocument",
        )
    times = kids(main_event, "effectiveTime")
    if len(times) != 1:
        ctx.error(
            "STRUCMIN-DOCOF-EFFECTIVETIME",
            f"{_main_event_path(doc, main_event)}/effectiveTime",
            "the main act (first documentationOf/"
            f"serviceEvent) must have exactly one effectiveTime (found {len(times)})",
            "SMDS_CDAClinicalDocument",
        )
    for d in docofs:
        all_events = children(d).get(Q_SERVICE_EVENT, NONE)
        events = not_null(all_events)
        if len(events) != 1:
            ctx.card("STRUCMIN-DOCOF", d, events, "serviceEvent", s)
        for ev in events[:1]:
            _service_event(ctx, ev, s)
        _civility(
            ctx,
            [
                n
                for ev in all_events
                for p in children(ev).get(Q_PERFORMER, NONE)
                for n in _names_of(kid(p, "assignedEntity"), "assignedPerson")
            ],
            s,
        )


def _main_event_path(doc: etree._Element, main_event: etree._Element | None) -> str:
    """Where the main act's findings go; built only when one is emitted."""
    return path_of(main_event) if main_event is not None else f"{path_of(doc)}/documentationOf/serviceEvent"


def _service_event(ctx: Ctx, ev: etree._Element, s: str) -> None:
    event = children(ev)
    codes = event.get(Q_CODE, NONE)
    if len(codes) > 1:  # ctx.card only reports a count outside [lo, hi]: test it here, off the call
        ctx.card("STRUCMIN-DOCOF", ev, codes, "code", s, lo=0)
    for c in codes[:1]:
        if not (
            (c.get("code") and c.get("codeSystem") and not c.get("nullFlavor"))
            or (c.get("code") is None and c.get("codeSystem") is None and c.get("nullFlavor"))
        ):
            ctx.error(
                "STRUCMIN-DOCOF",
                c,
                "serviceEvent/code needs @code and @codeSystem unless it has a nullFlavor",
                s,
            )
    times = event.get(Q_EFFECTIVE_TIME, NONE)
    if len(times) > 1:
        ctx.card("STRUCMIN-DOCOF-EFFECTIVETIME", ev, times, "effectiveTime", s, lo=0)
    for t in times[:1]:
        bounds = children(t)
        lows = bounds.get(Q_LOW, NONE)
        if len(lows) != 1:
            ctx.card("STRUCMIN-DOCOF-EFFECTIVETIME", t, lows, "low", s)
        highs = bounds.get(Q_HIGH, NONE)
        if len(highs) > 1:
            ctx.card("STRUCMIN-DOCOF-EFFECTIVETIME", t, highs, "high", s, lo=0)
        for low in lows[:1]:
            ctx.require_attrs("STRUCMIN-DOCOF-EFFECTIVETIME", low, ("value",), s)
    performers = [
        p
        for p in event.get(Q_PERFORMER, NONE)
        if p.get("typeCode") == "PRF" and Q_ASSIGNED_ENTITY in children(p)
    ]
    if len(performers) > 1:
        ctx.card(
            "STRUCMIN-DOCOF-PERFORMER", ev, performers, "performer[@typeCode='PRF'][assignedEntity]", s, lo=0
        )
    for perf in performers[:1]:
        entities = [e for e in children(perf)[Q_ASSIGNED_ENTITY] if Q_REPRESENTED_ORGANIZATION in children(e)]
        if len(entities) != 1:
            ctx.card("STRUCMIN-DOCOF-PERFORMER", perf, entities, "assignedEntity[representedOrganization]", s)
        for ae in entities[:1]:
            entity = children(ae)
            ids = entity.get(Q_ID, NONE)
            if len(ids) != 1:
                ctx.card("STRUCMIN-DOCOF-PERFORMER", ae, ids, "id", s)
            _specialty(ctx, ae, s, ())
            persons = entity.get(Q_ASSIGNED_PERSON)
            _person(ctx, persons[0] if persons else None, s)
            orgs = entity[Q_REPRESENTED_ORGANIZATION]
            if len(orgs) != 1:
                ctx.card("STRUCMIN-DOCOF-PERFORMER", ae, orgs, "representedOrganization", s)
            for org in orgs[:1]:
                parts = children(org)
                for oid in [i for i in parts.get(Q_ID, NONE) if i.get("root") == STRUCT_OID]:
                    ctx.require_attrs("STRUCMIN-ORGANIZATION", oid, ("extension",), s)
                sics = not_null(parts.get(Q_SIC, NONE))
                if len(sics) != 1:
                    ctx.card("STRUCMIN-DOCOF-PRACTICESETTING", org, sics, "standardIndustryClassCode", s)
                for sic in sics[:1]:
                    ctx.coded("STRUCMIN-DOCOF-PRACTICESETTING", sic, "J04", s)


# --- relatedDocument, authorization -----------------------------------------------------------------------
def _related_documents(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISRelatedDocument"
    rels = kids(doc, "relatedDocument")
    for rel in rels:
        if rel.get("typeCode") != "RPLC":
            ctx.error(
                "STRUCMIN-RELATEDDOCUMENT",
                f"{path_of(rel)}/@typeCode",
                f"relatedDocument/@typeCode must be RPLC (replacement), found {rel.get('typeCode')!r}",
                s,
            )
    rplc = [r for r in rels if r.get("typeCode") == "RPLC" and kid(r, "parentDocument") is not None]
    if len(rplc) > 1:
        ctx.card("STRUCMIN-RELATEDDOCUMENT", doc, rplc, "relatedDocument[@typeCode='RPLC']", s, lo=0)
    for rel in rplc[:1]:
        parents = not_null(kids(rel, "parentDocument"))
        if len(parents) != 1:
            ctx.card("STRUCMIN-RELATEDDOCUMENT", rel, parents, "parentDocument", s)
        for parent in parents[:1]:
            ids = not_null(kids(parent, "id"))
            if len(ids) != 1:
                ctx.card("STRUCMIN-RELATEDDOCUMENT", parent, ids, "id", s)
            for i in ids[:1]:
                ctx.require_attrs("STRUCMIN-RELATEDDOCUMENT", i, ("root",), s)


def _authorizations(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISAuthorization"
    for auth in kids(doc, "authorization"):
        consents = kids(auth, "consent")
        if not consents:
            continue
        ok = [
            c
            for c in consents
            if any(sc.get("code") == "completed" or sc.get("nullFlavor") for sc in kids(c, "statusCode"))
        ]
        if len(ok) != 1:
            ctx.card("STRUCMIN-AUTHORIZATION", auth, ok, "consent[statusCode[@code='completed']]", s)
        for c in ok[:1]:
            ctx.card("STRUCMIN-AUTHORIZATION", c, kids(c, "code"), "code", s)


# --- componentOf ------------------------------------------------------------------------------------------
def _component_of(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISComponentOf"
    comps = [c for c in not_null(kids(doc, "componentOf")) if kid(c, "encompassingEncounter") is not None]
    ctx.card(
        "STRUCMIN-COMPONENTOF", doc, comps, "componentOf[encompassingEncounter]", "SMDS_CDAClinicalDocument"
    )
    for comp in comps[:1]:
        encs = [e for e in not_null(kids(comp, "encompassingEncounter")) if kid(e, "location") is not None]
        if len(encs) != 1:
            ctx.card("STRUCMIN-COMPONENTOF", comp, encs, "encompassingEncounter[location]", s)
        for enc in encs[:1]:
            _encounter(ctx, enc, s)


def _encounter(ctx: Ctx, enc: etree._Element, s: str) -> None:
    for i in kids(enc, "id"):
        ctx.require_attrs("STRUCMIN-COMPONENTOF", i, ("root",), s)
    codes = kids(enc, "code")
    if len(codes) > 1:
        ctx.card("STRUCMIN-ENCOUNTER-CODE", enc, codes, "code", s, lo=0)
    for c in codes[:1]:
        ctx.coded("STRUCMIN-ENCOUNTER-CODE", c, "J142", s)
    times = kids(enc, "effectiveTime")
    if len(times) != 1:
        ctx.card("STRUCMIN-ENCOUNTER-TIME", enc, times, "effectiveTime", s)
    for t in times[:1]:
        for part in ("low", "high"):
            ctx.card("STRUCMIN-ENCOUNTER-TIME", t, kids(t, part), part, s, lo=0)
    for ddc in kids(enc, "dischargeDispositionCode")[:1]:
        ctx.require_attrs("STRUCMIN-COMPONENTOF", ddc, ("code", "displayName"), s)
    names: list[etree._Element] = []
    rps = [r for r in kids(enc, "responsibleParty") if kid(r, "assignedEntity") is not None]
    if len(rps) > 1:
        ctx.card("STRUCMIN-ENCOUNTER-PARTICIPANT", enc, rps, "responsibleParty", s, lo=0)
    for holder in rps[:1] + [
        p for p in kids(enc, "encounterParticipant") if kid(p, "assignedEntity") is not None
    ]:
        if local(holder) == "encounterParticipant":
            ctx.coded(
                "STRUCMIN-ENCOUNTER-PARTICIPANT", holder, "J140", s, attrs=("typeCode",), attr="typeCode"
            )
            ctx.card("STRUCMIN-ENCOUNTER-PARTICIPANT", holder, kids(holder, "time"), "time", s, lo=0)
        entities = [
            e for e in kids(holder, "assignedEntity") if any(i.get("root") == RPPS_OID for i in kids(e, "id"))
        ]
        ctx.card(
            "STRUCMIN-ENCOUNTER-PARTICIPANT", holder, entities, f"assignedEntity[id[@root='{RPPS_OID}']]", s
        )
        for ae in entities[:1]:
            rpps = [i for i in kids(ae, "id") if i.get("root") == RPPS_OID]
            if len(rpps) != 1:
                ctx.card("STRUCMIN-ENCOUNTER-PARTICIPANT", ae, rpps, f"id[@root='{RPPS_OID}']", s)
            _ids_root_ext(ctx, "STRUCMIN-ENCOUNTER-PARTICIPANT", rpps[:1], s)
            _person(ctx, kid(ae, "assignedPerson"), s)
            _organization(ctx, ae, s)
        names += [n for e in kids(holder, "assignedEntity") for n in _names_of(e, "assignedPerson")]
    _civility(ctx, names, s)
    locs = [loc for loc in kids(enc, "location") if kid(loc, "healthCareFacility") is not None]
    if len(locs) != 1:
        ctx.card("STRUCMIN-FACILITY-CODE", enc, locs, "location[healthCareFacility]", s)
    for loc in locs[:1]:
        hcfs = not_null(kids(loc, "healthCareFacility"))
        if len(hcfs) != 1:
            ctx.card("STRUCMIN-FACILITY-CODE", loc, hcfs, "healthCareFacility", s)
        for hcf in hcfs[:1]:
            codes = not_null(kids(hcf, "code"))
            if len(codes) != 1:
                ctx.card("STRUCMIN-FACILITY-CODE", hcf, codes, "code", s)
            for c in codes[:1]:
                ctx.coded("STRUCMIN-FACILITY-CODE", c, "J02", s)
