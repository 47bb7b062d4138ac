"""StrucMin 1.16 header rules for the participations: author, informant, custodian, recipients, legal and other
authenticators, participants, documentationOf, relatedDocument, authorization, componentOf, telecom and addr.

Split out of :mod:`gateway.validation.cda_header` for size; see there for the conventions.
"""

from __future__ import annotations

from lxml import etree

from gateway.validation.cda_header_common import (
    NONE,
    NS,
    Q_CODE,
    Q_ID,
    Q_NAME,
    Q_REPRESENTED_ORGANIZATION,
    Q_SIC,
    RPPS_OID,
    STRUCT_OID,
    Ctx,
    H,
    children,
    kid,
    kids,
    local,
    not_null,
    path_of,
    text,
)

CUSTODIAN_ROOTS = ("1.2.250.1.71.4.2.2", "1.2.250.1.213.4.1")
TELECOM_SCHEMES = frozenset({"tel", "fax", "mailto", "http", "ftp", "mllp"})
TELECOM_USES = frozenset({"H", "HP", "HV", "WP", "DIR", "PUB", "EC", "MC", "PG"})
TELECOM_NULLS = frozenset({"UNK", "NASK", "ASKU", "NAV", "MSK"})
ADDR_USES = frozenset({"H", "HP", "HV", "WP", "TMP"})
RELATED_CLASSES = frozenset({"ECON", "NOK", "CON", "CAREGIVER", "PAT"})

RULES: dict[str, str] = {
    "STRUCMIN-AUTHOR": "author[assignedAuthor] 1..*; time 1..1 with @value; assignedAuthor 1..1",
    "STRUCMIN-AUTHOR-ID": "assignedAuthor/id 1..* with @root and @extension",
    "STRUCMIN-AUTHOR-PERSON-DEVICE": "assignedPerson or assignedAuthoringDevice (manufacturerModelName+softwareName)",
    "STRUCMIN-SPECIALTY": "code of an author/authenticator/performer/participant with attributes, in J01",
    "STRUCMIN-FUNCTIONCODE": "functionCode 0..1 in J47",
    "STRUCMIN-PERSON-NAME": "professional/related person: name[family] 1..1, family 1..1, given/prefix/suffix 0..1",
    "STRUCMIN-PREFIX-J245": "name/prefix (civility) in J245",
    "STRUCMIN-SUFFIX-J246": "name/suffix (title) in J246",
    "STRUCMIN-ORGANIZATION": "representedOrganization 0..1; id[@root=1.2.250.1.71.4.2.2] with @extension; J04",
    "STRUCMIN-DATAENTERER": "dataEnterer 0..1, time 0..1",
    "STRUCMIN-INFORMANT": "informant: exactly one of assignedEntity / relatedEntity[@classCode][relatedPerson]",
    "STRUCMIN-RELATED-ENTITY": "relatedEntity @classCode ECON|NOK|CON|CAREGIVER|PAT, code in J11, relatedPerson",
    "STRUCMIN-CUSTODIAN": "custodian 1..1 / assignedCustodian / representedCustodianOrganization / id 1..1",
    "STRUCMIN-CUSTODIAN-OID": "custodian organization id/@root 1.2.250.1.71.4.2.2 or 1.2.250.1.213.4.1",
    "STRUCMIN-INFORMATION-RECIPIENT": "informationRecipient: intendedRecipient 1..1, RPPS/structure ids",
    "STRUCMIN-LEGALAUTHENTICATOR": "legalAuthenticator[signatureCode S] 1..1: time, assignedEntity/id, name",
    "STRUCMIN-AUTHENTICATOR": "authenticator[signatureCode S]: time 1..1, assignedEntity[id RPPS] 1..1",
    "STRUCMIN-PARTICIPANT": "participant: typeCode in J144, time 1..1, associatedEntity PROV|AGNT (J141)",
    "STRUCMIN-INFULFILLMENTOF": "inFulfillmentOf/order 1..1 with id 1..1",
    "STRUCMIN-TELECOM": "telecom/@value tel:|fax:|mailto:|http:|ftp:|mllp:, @use list, value xor nullFlavor",
    "STRUCMIN-ADDR-USE": "addr/@use H|HP|HV|WP|TMP",
}


def check_all(ctx: Ctx, doc: etree._Element) -> None:
    _authors(ctx, doc)
    for de in kids(doc, "dataEnterer")[1:2]:
        ctx.error(
            "STRUCMIN-DATAENTERER", de, "dataEnterer appears too often [max 1x]", "SMDS_CDAClinicalDocument"
        )
    for de in kids(doc, "dataEnterer")[:1]:
        ctx.card("STRUCMIN-DATAENTERER", de, kids(de, "time"), "time", "CI-SISDataEnterer", lo=0)
    for inf in kids(doc, "informant"):
        _informant(ctx, inf)
    _custodian(ctx, doc)
    for rec in kids(doc, "informationRecipient"):
        if kid(rec, "intendedRecipient") is not None:
            _recipient(ctx, rec)
    _legal_authenticator(ctx, doc)
    for auth in kids(doc, "authenticator"):
        if any(sc.get("code") == "S" for sc in kids(auth, "signatureCode")):
            _authenticator(ctx, auth)
    for part in kids(doc, "participant"):
        if part.get("typeCode") is not None and any(
            e.get("classCode") for e in kids(part, "associatedEntity")
        ):
            _participant(ctx, part)
    for ful in kids(doc, "inFulfillmentOf"):
        orders = kids(ful, "order")
        if orders:
            if len(orders) != 1:
                ctx.card("STRUCMIN-INFULFILLMENTOF", ful, orders, "order", "CI-SISinFulfillmentOf")
            ctx.card(
                "STRUCMIN-INFULFILLMENTOF", orders[0], kids(orders[0], "id"), "id", "CI-SISinFulfillmentOf"
            )
    _telecoms_addrs(ctx, doc)


# --- shared pieces ----------------------------------------------------------------------------------------
_NAME, _FAMILY, _PREFIX, _SUFFIX = H + "name", H + "family", H + "prefix", H + "suffix"
_NAME_PARTS = ((H + "given", "given"), (_PREFIX, "prefix"), (_SUFFIX, "suffix"))


def _person(ctx: Ctx, person: etree._Element | None, source: str, *, name_not_null: bool = False) -> None:
    """A professional or related person: exactly one name with a family; family 1, given/prefix/suffix 0..1."""
    if person is None:
        return
    names = [n for n in children(person).get(_NAME, NONE) if _FAMILY in children(n)]
    if name_not_null:
        names = not_null(names)
    if len(names) != 1:  # ctx.card only reports a count outside [lo, hi]: test it here, off the call
        ctx.card("STRUCMIN-PERSON-NAME", person, names, "name[family]", source)
    for name in names[:1]:
        parts = children(name)
        families = parts.get(_FAMILY, NONE)
        if len(families) != 1:
            ctx.card("STRUCMIN-PERSON-NAME", name, families, "family", source)
        for tag, part in _NAME_PARTS:
            found = parts.get(tag)
            if found is not None and len(found) > 1:
                ctx.card("STRUCMIN-PERSON-NAME", name, found, part, source, lo=0)


def _civility(ctx: Ctx, names: list[etree._Element], source: str) -> None:
    """prefix in J245 (civility), suffix in J246 (title): StrucMin compares the element *text* with the codes."""
    for name in names:
        parts = children(name)
        for el in parts.get(_PREFIX, NONE):
            if not ctx.in_value_set("J245", text(el), None, el, source):
                ctx.error(
                    "STRUCMIN-PREFIX-J245", el, f"name/{local(el)} is not a code of value set J245", source
                )
        for el in parts.get(_SUFFIX, NONE):
            if not ctx.in_value_set("J246", text(el), None, el, source):
                ctx.error(
                    "STRUCMIN-SUFFIX-J246", el, f"name/{local(el)} is not a code of value set J246", source
                )


def _names_of(el: etree._Element | None, person: str) -> list[etree._Element]:
    return [n for p in kids(el, person) for n in kids(p, "name")]


def _ids_root_ext(ctx: Ctx, rule: str, ids: list[etree._Element], source: str) -> None:
    for i in ids:
        ctx.require_attrs(rule, i, ("root", "extension"), source)


def _organization(ctx: Ctx, entity: etree._Element, source: str, *, sic_key: str | None = "J04") -> None:
    orgs = children(entity).get(Q_REPRESENTED_ORGANIZATION, NONE)
    if len(orgs) > 1:
        ctx.card("STRUCMIN-ORGANIZATION", entity, orgs, "representedOrganization", source, lo=0)
    for org in orgs[:1]:
        parts = children(org)
        names = parts.get(Q_NAME, NONE)
        if len(names) > 1:
            ctx.card("STRUCMIN-ORGANIZATION", org, names, "name", source, lo=0)
        for oid in [i for i in parts.get(Q_ID, NONE) if i.get("root") == STRUCT_OID]:
            ctx.require_attrs("STRUCMIN-ORGANIZATION", oid, ("extension",), source)
        if sic_key:
            for sic in not_null(parts.get(Q_SIC, NONE)):
                ctx.coded("STRUCMIN-ORGANIZATION", sic, sic_key, source)


def _specialty(ctx: Ctx, entity: etree._Element, source: str, attrs: tuple[str, ...]) -> None:
    codes = children(entity).get(Q_CODE, NONE)
    if len(codes) > 1:
        ctx.card("STRUCMIN-SPECIALTY", entity, codes, "code", source, lo=0)
    for code in codes[:1]:
        ctx.coded("STRUCMIN-SPECIALTY", code, "J01", source, attrs=attrs)


# --- author -----------------------------------------------------------------------------------------------
def _authors(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISAuthor"
    authors = [a for a in not_null(kids(doc, "author")) if kid(a, "assignedAuthor") is not None]
    if not authors:
        ctx.card(
            "STRUCMIN-AUTHOR", doc, authors, "author[assignedAuthor]", "SMDS_CDAClinicalDocument", hi=None
        )
    for author in authors:
        times = kids(author, "time")
        if len(times) != 1:
            ctx.card("STRUCMIN-AUTHOR", author, times, "time", s)
        for t in times[:1]:
            ctx.require_attrs("STRUCMIN-AUTHOR", t, ("value",), s)
        fcs = kids(author, "functionCode")
        if len(fcs) > 1:
            ctx.card("STRUCMIN-FUNCTIONCODE", author, fcs, "functionCode", s, lo=0)
        for fc in fcs[:1]:
            ctx.coded("STRUCMIN-FUNCTIONCODE", fc, "J47", s, attrs=("code", "codeSystem"))
        assigned = not_null(kids(author, "assignedAuthor"))
        if len(assigned) != 1:
            ctx.card("STRUCMIN-AUTHOR", author, assigned, "assignedAuthor", s)
        for aa in assigned[:1]:
            ids = kids(aa, "id")
            if not ids:
                ctx.card("STRUCMIN-AUTHOR-ID", aa, ids, "id", s, hi=None)
            _ids_root_ext(ctx, "STRUCMIN-AUTHOR-ID", ids, s)
            _specialty(ctx, aa, s, ("code", "codeSystem", "displayName"))
            persons, devices = kids(aa, "assignedPerson"), kids(aa, "assignedAuthoringDevice")
            if len(persons) + len(devices) != 1:
                ctx.error(
                    "STRUCMIN-AUTHOR-PERSON-DEVICE",
                    aa,
                    "assignedAuthor must contain exactly one of "
                    f"assignedPerson or assignedAuthoringDevice (found {len(persons) + len(devices)})",
                    s,
                )
            for person in persons[:1]:
                _person(ctx, person, s)
            for dev in devices[:1]:
                for part in ("manufacturerModelName", "softwareName"):
                    ctx.card("STRUCMIN-AUTHOR-PERSON-DEVICE", dev, kids(dev, part), part, s)
            _organization(ctx, aa, s)
        _civility(ctx, _names_of(kid(author, "assignedAuthor"), "assignedPerson"), s)


# --- informant --------------------------------------------------------------------------------------------
def _informant(ctx: Ctx, inf: etree._Element) -> None:
    s = "CI-SISInformant"
    assigned = kids(inf, "assignedEntity")
    related = [
        r for r in kids(inf, "relatedEntity") if r.get("classCode") and kid(r, "relatedPerson") is not None
    ]
    if len(assigned) + len(related) != 1:
        ctx.error(
            "STRUCMIN-INFORMANT",
            inf,
            "informant must contain exactly one of assignedEntity or "
            "relatedEntity[@classCode][relatedPerson]",
            s,
        )
    for ae in assigned[:1]:
        sa = "CI-SISAssignedEntity"
        ids = kids(ae, "id")
        if len(ids) != 1:
            ctx.card("STRUCMIN-INFORMANT", ae, ids, "id", sa)
        for i in ids[:1]:
            if not ((i.get("root") and i.get("extension")) or i.get("nullFlavor")):
                ctx.error(
                    "STRUCMIN-INFORMANT",
                    i,
                    "assignedEntity/id needs @root and @extension, or a nullFlavor",
                    sa,
                )
        _specialty(ctx, ae, sa, ())
        _person(ctx, kid(ae, "assignedPerson"), sa)
        _organization(ctx, ae, sa)
        _civility(ctx, _names_of(ae, "assignedPerson"), sa)
    for re_ in related[:1]:
        sr = "CI-SISRelatedEntity"
        if re_.get("classCode") not in RELATED_CLASSES:
            ctx.error(
                "STRUCMIN-RELATED-ENTITY",
                f"{path_of(re_)}/@classCode",
                "relatedEntity/@classCode must be one of ECON, NOK, CON, CAREGIVER, PAT",
                sr,
            )
        codes = kids(re_, "code")
        if len(codes) > 1:
            ctx.card("STRUCMIN-RELATED-ENTITY", re_, codes, "code", sr, lo=0)
        for c in codes[:1]:
            ctx.coded("STRUCMIN-RELATED-ENTITY", c, "J11", sr)
        persons = kids(re_, "relatedPerson")
        if len(persons) != 1:
            ctx.card("STRUCMIN-RELATED-ENTITY", re_, persons, "relatedPerson", sr)
        _person(ctx, persons[0] if persons else None, sr)
        _civility(ctx, _names_of(re_, "relatedPerson"), sr)


# --- custodian, recipients --------------------------------------------------------------------------------
def _custodian(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISCustodian"
    custs = [c for c in not_null(kids(doc, "custodian")) if kid(c, "assignedCustodian") is not None]
    if len(custs) != 1:
        ctx.card("STRUCMIN-CUSTODIAN", doc, custs, "custodian[assignedCustodian]", "SMDS_CDAClinicalDocument")
    for cust in custs[:1]:
        acs = [
            a
            for a in kids(cust, "assignedCustodian")
            if kid(a, "representedCustodianOrganization") is not None
        ]
        if len(acs) != 1:
            ctx.card(
                "STRUCMIN-CUSTODIAN", cust, acs, "assignedCustodian[representedCustodianOrganization]", s
            )
        for ac in acs[:1]:
            orgs = kids(ac, "representedCustodianOrganization")
            if len(orgs) != 1:
                ctx.card("STRUCMIN-CUSTODIAN", ac, orgs, "representedCustodianOrganization", s)
            for org in orgs[:1]:
                ids = not_null(kids(org, "id"))
                if len(ids) != 1:
                    ctx.card("STRUCMIN-CUSTODIAN", org, ids, "id", s)
                for i in ids[:1]:
                    if i.get("root") not in CUSTODIAN_ROOTS:
                        ctx.error(
                            "STRUCMIN-CUSTODIAN-OID",
                            f"{path_of(i)}/@root",
                            "custodian organization id/@root "
                            "must be 1.2.250.1.71.4.2.2 (health structures) or 1.2.250.1.213.4.1 "
                            "(host of patient-produced documents)",
                            s,
                        )
                for part in ("name", "telecom"):
                    ctx.card("STRUCMIN-CUSTODIAN", org, kids(org, part), part, s, lo=0)
                ctx.card("STRUCMIN-CUSTODIAN", org, kids(org, "addr"), "addr", s, lo=0)


def _recipient(ctx: Ctx, rec: etree._Element) -> None:
    s = "CI-SISInformationRecipient"
    irs = kids(rec, "intendedRecipient")
    if len(irs) != 1:
        ctx.card("STRUCMIN-INFORMATION-RECIPIENT", rec, irs, "intendedRecipient", s)
    for ir in irs[:1]:
        for part in ("informationRecipient", "receivedOrganization"):
            ctx.card("STRUCMIN-INFORMATION-RECIPIENT", ir, kids(ir, part), part, s, lo=0)
        for i in kids(ir, "id"):
            if i.get("root") == RPPS_OID:
                ctx.require_attrs("STRUCMIN-INFORMATION-RECIPIENT", i, ("extension",), s)
        for i in kids(kid(ir, "receivedOrganization"), "id"):
            if i.get("root") == STRUCT_OID:
                ctx.require_attrs("STRUCMIN-INFORMATION-RECIPIENT", i, ("extension",), s)
        for name in _names_of(ir, "informationRecipient"):
            if kid(name, "family") is not None:
                for part in ("family", "given", "prefix", "suffix"):
                    ctx.card(
                        "STRUCMIN-PERSON-NAME",
                        name,
                        kids(name, part),
                        part,
                        s,
                        lo=1 if part == "family" else 0,
                    )
        _civility(ctx, _names_of(ir, "informationRecipient"), s)


# --- legal authenticator, authenticators, participants ----------------------------------------------------
def _legal_authenticator(ctx: Ctx, doc: etree._Element) -> None:
    s = "CI-SISLegalAuthenticator"
    las = [
        la
        for la in kids(doc, "legalAuthenticator")
        if any(sc.get("code") == "S" for sc in kids(la, "signatureCode"))
    ]
    ctx.card(
        "STRUCMIN-LEGALAUTHENTICATOR",
        doc,
        las,
        "legalAuthenticator[signatureCode[@code='S']]",
        "SMDS_CDAClinicalDocument",
    )
    for la in las[:1]:
        times = kids(la, "time")
        if len(times) != 1:
            ctx.card("STRUCMIN-LEGALAUTHENTICATOR", la, times, "time", s)
        for t in times[:1]:
            ctx.require_attrs("STRUCMIN-LEGALAUTHENTICATOR", t, ("value",), s)
        ctx.card(
            "STRUCMIN-LEGALAUTHENTICATOR",
            la,
            [c for c in kids(la, "signatureCode") if c.get("code") == "S"],
            "signatureCode[@code='S']",
            s,
        )
        entities = kids(la, "assignedEntity")
        if len(entities) != 1:
            ctx.card("STRUCMIN-LEGALAUTHENTICATOR", la, entities, "assignedEntity", s)
        for ae in entities[:1]:
            ids = not_null(kids(ae, "id"))
            if len(ids) != 1:
                ctx.card("STRUCMIN-LEGALAUTHENTICATOR", ae, ids, "id", s)
            _ids_root_ext(ctx, "STRUCMIN-LEGALAUTHENTICATOR", ids[:1], s)
            _specialty(ctx, ae, s, ())
            persons = kids(ae, "assignedPerson")
            if len(persons) > 1:
                ctx.card("STRUCMIN-LEGALAUTHENTICATOR", ae, persons, "assignedPerson", s, lo=0)
            _person(ctx, persons[0] if persons else None, s, name_not_null=True)
            _organization(ctx, ae, s)
        _civility(ctx, _names_of(kid(la, "assignedEntity"), "assignedPerson"), s)


def _authenticator(ctx: Ctx, auth: etree._Element) -> None:
    s = "CI-SISAuthenticator"
    times = kids(auth, "time")
    if len(times) != 1:
        ctx.card("STRUCMIN-AUTHENTICATOR", auth, times, "time", s)
    for t in times[:1]:
        ctx.require_attrs("STRUCMIN-AUTHENTICATOR", t, ("value",), s)
    entities = [
        e for e in kids(auth, "assignedEntity") if any(i.get("root") == RPPS_OID for i in kids(e, "id"))
    ]
    if len(entities) != 1:
        ctx.card("STRUCMIN-AUTHENTICATOR", auth, entities, f"assignedEntity[id[@root='{RPPS_OID}']]", s)
    for ae in entities[:1]:
        rpps = [i for i in kids(ae, "id") if i.get("root") == RPPS_OID]
        if len(rpps) != 1:
            ctx.card("STRUCMIN-AUTHENTICATOR", ae, rpps, f"id[@root='{RPPS_OID}']", s)
        for i in rpps[:1]:
            ctx.require_attrs("STRUCMIN-AUTHENTICATOR", i, ("extension",), s)
        _person(ctx, kid(ae, "assignedPerson"), s)
        _organization(ctx, ae, s)
    _civility(ctx, _names_of(kid(auth, "assignedEntity"), "assignedPerson"), s)


_TIME, _FUNCTION_CODE, _ASSOCIATED_ENTITY = H + "time", H + "functionCode", H + "associatedEntity"
_ID, _CODE, _ASSOCIATED_PERSON = H + "id", H + "code", H + "associatedPerson"


def _participant(ctx: Ctx, part: etree._Element) -> None:
    s = "CI-SISParticipant"
    ctx.coded("STRUCMIN-PARTICIPANT", part, "J144", s, attrs=("typeCode",), attr="typeCode")
    parts = children(part)
    times = parts.get(_TIME, NONE)
    if len(times) != 1:
        ctx.card("STRUCMIN-PARTICIPANT", part, times, "time", s)
    fcs = parts.get(_FUNCTION_CODE, NONE)
    if len(fcs) > 1:
        ctx.card("STRUCMIN-FUNCTIONCODE", part, fcs, "functionCode", s, lo=0)
    for fc in fcs[:1]:
        ctx.coded("STRUCMIN-FUNCTIONCODE", fc, "J47", s, attrs=())
    entities = [e for e in parts.get(_ASSOCIATED_ENTITY, NONE) if e.get("classCode")]
    if len(entities) != 1:
        ctx.card("STRUCMIN-PARTICIPANT", part, entities, "associatedEntity[@classCode]", s)
    for ae in entities[:1]:
        if ae.get("classCode") not in ("PROV", "AGNT"):
            ctx.error(
                "STRUCMIN-PARTICIPANT",
                f"{path_of(ae)}/@classCode",
                "participant/associatedEntity/@classCode must be PROV (health professional) or AGNT (other)",
                s,
            )
        entity = children(ae)
        ids = entity.get(_ID, NONE)
        if len(ids) > 1:
            ctx.card("STRUCMIN-PARTICIPANT", ae, ids, "id", s, lo=0)
        _ids_root_ext(ctx, "STRUCMIN-PARTICIPANT", ids[:1], s)
        codes = entity.get(_CODE, NONE)  # _specialty, inlined
        if len(codes) > 1:
            ctx.card("STRUCMIN-SPECIALTY", ae, codes, "code", s, lo=0)
        for code in codes[:1]:
            ctx.coded("STRUCMIN-SPECIALTY", code, "J01", s)
        persons = entity.get(_ASSOCIATED_PERSON, NONE)
        named = [p for p in persons if _NAME in children(p)]
        _person(ctx, named[0] if named else None, s)
        _civility(ctx, [n for p in persons for n in children(p).get(_NAME, NONE)], s)


# --- telecom, addr ----------------------------------------------------------------------------------------
#: Every telecom and addr of the header, in document order: one C-level walk of the header children's subtrees
#: (``component``, the body, excluded), as the Python ``iter`` loop it replaces did. (Predicates pre-selecting
#: the suspicious ones were measured slower: libxml2 string functions cost more than the Python checks.)
_TELECOMS_ADDRS = etree.XPath(
    "*[not(self::hl7:component)]/descendant-or-self::hl7:telecom"
    " | *[not(self::hl7:component)]/descendant-or-self::hl7:addr",
    namespaces=NS,
)
_TELECOM_TAG = H + "telecom"


def _telecoms_addrs(ctx: Ctx, doc: etree._Element) -> None:
    """Every telecom and addr of the header (the body is not StrucMin's business)."""
    for el in _TELECOMS_ADDRS(doc):
        if el.tag == _TELECOM_TAG:
            _telecom(ctx, el)
            continue
        use = el.get("use")
        if use is not None and use not in ADDR_USES:
            ctx.error(
                "STRUCMIN-ADDR-USE",
                f"{path_of(el)}/@use",
                f"addr/@use {use!r} is not one of H, HP, HV, WP, TMP",
                "CI-SISAddr",
            )


def _telecom(ctx: Ctx, tel: etree._Element) -> None:
    s = "CI-SISTelecom"
    value, null = tel.get("value"), tel.get("nullFlavor")
    if (value is None) == (null is None):
        ctx.error("STRUCMIN-TELECOM", tel, "telecom must carry exactly one of @value or @nullFlavor", s)
    if value is not None:
        scheme, sep, rest = value.partition(":")
        if not sep or not rest or scheme not in TELECOM_SCHEMES:
            # The scheme is a code, safe to name; the rest of the value (a number, an address) is not quoted.
            shown = repr(scheme) if sep and len(scheme) <= 10 else "(none)"
            ctx.error(
                "STRUCMIN-TELECOM",
                f"{path_of(tel)}/@value",
                f"telecom/@value must be a URL "
                f"tel:, fax:, mailto:, http:, ftp: or mllp: (scheme found: {shown})",
                s,
            )
    elif null is not None and (null not in TELECOM_NULLS or len(tel.attrib) != 1):
        ctx.error("STRUCMIN-TELECOM", tel, "telecom nullFlavor must be UNK, NASK, ASKU, NAV or MSK, alone", s)
    use = tel.get("use")
    if use is not None and use not in TELECOM_USES:
        ctx.error(
            "STRUCMIN-TELECOM",
            f"{path_of(tel)}/@use",
            f"telecom/@use {use!r} is not one of H, HP, HV, WP, DIR, PUB, EC, MC, PG",
            s,
        )
