"""Native CDA R2 header rules of the ANS volet "Structuration minimale des documents de santé" (StrucMin 1.16).

The official form of these rules is the ART-DECOR schematron ``ASIP-STRUCT-MIN-StrucMin.sch`` (XSLT2, ~617
rules); running it needs Saxon and costs 0.03-1.4 s per document (cisis-facts §2.5). This module re-states the
rules that matter for the header in Python + lxml: every rule has a stable id (``STRUCMIN-*``), the
schematron rule/context it mirrors in ``source``, an XPath ``location`` and an English message that never quotes
patient data. What it deliberately leaves to the full schematron (``xsi:type`` checks, ART-DECOR data-type
asserts, sdtc extensions) is listed in the module's tests.

Value sets come from :mod:`gateway.terminology` (``contains(key, code, code_system)``); an unknown value set
never fails a rule, it yields one INFO finding.

Rule ids and what they check are listed in :data:`RULES`.
"""

from __future__ import annotations

import re

from lxml import etree

from gateway.model import Severity, ValidationReport
from gateway.validation import cda_header_acts as acts
from gateway.validation import cda_header_parties as parties
from gateway.validation.cda_header_common import (
    HL7,
    NONE,
    NS,
    Ctx,
    H,
    Terminology,
    children,
    children_index,
    is_uid,
    kid,
    kids,
    not_null,
    path_of,
)

TYPE_ID_ROOT = "2.16.840.1.113883.1.3"
TYPE_ID_EXT = "POCD_HD000040"
TPL_HL7_FR = "2.16.840.1.113883.2.8.2.1"
TPL_CISIS = "1.2.250.1.213.1.1.1.1"
TPL_XDS_SD = "1.3.6.1.4.1.19376.1.2.20"
#: INS-NIR, INS-NIA, INS-NIR test, INS-NIR démo: any of them makes the INS traits mandatory [§2.2].
INS_ROOTS = frozenset(
    {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
)
#: HL7 Confidentiality (2.16.840.1.113883.1.11.10228), the value set StrucMin reads; CI-SIS J08 keeps N/R/V.
CONFIDENTIALITY_10228 = frozenset({"L", "M", "N", "R", "U", "V"})
CONFIDENTIALITY_CISIS = frozenset({"N", "R", "V"})
_LANG = re.compile(r"^[a-z]{2}-[A-Z]{2}$")
_TS = re.compile(r"^[0-9]{4,14}")
_INT = re.compile(r"^[+-]?\d+$")

SRC_DOC = "SMDS_CDAClinicalDocument"
SRC_RT = "CI-SISRecordTarget"

RULES: dict[str, str] = {
    "STRUCMIN-ROOT": "the document element is hl7:ClinicalDocument",
    "STRUCMIN-REALMCODE": "realmCode[@code='FR'] 1..1",
    "STRUCMIN-TYPEID": "typeId 2.16.840.1.113883.1.3 / POCD_HD000040 1..1",
    "STRUCMIN-TEMPLATEID": "templateId 2.16.840.1.113883.2.8.2.1 1..1, 1.2.250.1.213.1.1.1.1 1..1, another 1..* (uid)",
    "STRUCMIN-N1-TEMPLATEIDS": "nonXMLBody: exactly the 3 templateIds FR-header, CI-SIS, XDS-SD 1.3.6.1.4.1.19376.1.2.20",
    "STRUCMIN-ID": "id 1..1 with @root (uid), non-empty @extension",
    "STRUCMIN-CODE": "code 1..1 with @code @codeSystem @displayName; @code in J07",
    "STRUCMIN-TITLE": "title 1..1",
    "STRUCMIN-EFFECTIVETIME": "effectiveTime 1..1 with @value (TS)",
    "STRUCMIN-CONFIDENTIALITY": "confidentialityCode 1..1 with @code @codeSystem @displayName; @code in 10228",
    "STRUCMIN-LANGUAGECODE": "languageCode 1..1, @code like fr-FR",
    "STRUCMIN-SETID": "setId 1..1 with @root",
    "STRUCMIN-VERSIONNUMBER": "versionNumber 1..1 with integer @value",
    "STRUCMIN-RECORDTARGET": "recordTarget 1..1 / patientRole[patient] 1..1 / patient 1..1",
    "STRUCMIN-PATIENT-ID": "patientRole/id 1..* each with @root and @extension",
    "STRUCMIN-PATIENT-NAME": "patient/name 1..1 with family 1..* and given 1..*; prefix, suffix 0..1",
    "STRUCMIN-NAME-QUALIFIER": "family @qualifier required, BR or CL; given BR, CL or none (RNIV)",
    "STRUCMIN-GENDER": "administrativeGenderCode 1..1, @code in J143",
    "STRUCMIN-BIRTHTIME": "birthTime 1..1 with @value (TS)",
    "STRUCMIN-BIRTHPLACE": "birthplace 0..1 with place 1..1",
    "STRUCMIN-GUARDIAN": "guardian: one of guardianPerson/guardianOrganization",
    "STRUCMIN-INS-TRAITS": "INS root (4.8-4.11) => BR family, BR given, unqualified given, birthTime, COG, gender",
    "STRUCMIN-COMPONENT": "component 1..1 with structuredBody or nonXMLBody",
    "STRUCMIN-N1-MEDIATYPE": "nonXMLBody/text/@mediaType present",
    **parties.RULES,
    **acts.RULES,
}


def validate_cda_header(
    tree: etree._ElementTree | etree._Element, *, terminology: Terminology | None = None
) -> ValidationReport:
    """Check the CDA header of ``tree`` (parsed with ``parse_untrusted``) against the StrucMin 1.16 rules.

    ``terminology`` defaults to :func:`gateway.terminology.default_terminology`; without one, value-set rules
    are skipped with one INFO finding each.
    """
    report = ValidationReport()
    if terminology is None:
        terminology = _default_terminology()
    ctx = Ctx(report, terminology)
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    if root.tag != H + "ClinicalDocument":
        # "Auto-présentable" CDAs are an XSL stylesheet embedding the ClinicalDocument; StrucMin's contexts are
        # //hl7:ClinicalDocument, so it validates the embedded one, and so do we.
        root = next(root.iter(H + "ClinicalDocument"), root)
    if root.tag != H + "ClinicalDocument":
        ctx.error(
            "STRUCMIN-ROOT",
            "/",
            f"the document element must be ClinicalDocument in namespace {HL7}",
            SRC_DOC,
        )
        return report
    with children_index():
        _document(ctx, root)
        _record_target(ctx, root)
        parties.check_all(ctx, root)
        acts.check_acts(ctx, root)
        _component(ctx, root)
    return report


def _default_terminology() -> Terminology | None:
    try:
        from gateway.terminology import default_terminology
    except ImportError:  # the terminology package is optional at this layer: rules degrade to INFO
        return None
    return default_terminology()


#: Qualified tags of the children of ClinicalDocument that _document asks about.
_Q_CODE = H + "code"
_Q_COMPONENT = H + "component"
_Q_CONFIDENTIALITYCODE = H + "confidentialityCode"
_Q_EFFECTIVETIME = H + "effectiveTime"
_Q_ID = H + "id"
_Q_LANGUAGECODE = H + "languageCode"
_Q_REALMCODE = H + "realmCode"
_Q_SETID = H + "setId"
_Q_TEMPLATEID = H + "templateId"
_Q_TITLE = H + "title"
_Q_TYPEID = H + "typeId"
_Q_VERSIONNUMBER = H + "versionNumber"


# --- ClinicalDocument -------------------------------------------------------------------------------------
def _document(ctx: Ctx, doc: etree._Element) -> None:
    s = SRC_DOC
    d = children(doc)  # one index lookup for the ~15 questions asked of the document element
    ctx.card(
        "STRUCMIN-REALMCODE",
        doc,
        [e for e in d.get(_Q_REALMCODE, NONE) if e.get("code") == "FR"],
        "realmCode[@code='FR']",
        s,
    )
    type_ids = [
        e
        for e in d.get(_Q_TYPEID, NONE)
        if e.get("root") == TYPE_ID_ROOT and e.get("extension") == TYPE_ID_EXT
    ]
    if len(type_ids) != 1:
        ctx.card(
            "STRUCMIN-TYPEID", doc, type_ids, f"typeId[@root='{TYPE_ID_ROOT}'][@extension='{TYPE_ID_EXT}']", s
        )

    templates = d.get(_Q_TEMPLATEID, NONE)
    roots = [t.get("root") for t in templates]
    for oid in (TPL_HL7_FR, TPL_CISIS):
        ctx.card(
            "STRUCMIN-TEMPLATEID",
            doc,
            [t for t in templates if t.get("root") == oid],
            f"templateId[@root='{oid}']",
            s,
        )
    others = [t for t in templates if t.get("root") not in (TPL_HL7_FR, TPL_CISIS)]
    if not others:
        ctx.card("STRUCMIN-TEMPLATEID", doc, others, "templateId (volet or model)", s, hi=None)
    for t in others:
        r = t.get("root")
        if r is None or not is_uid(r):
            ctx.error("STRUCMIN-TEMPLATEID", t, "templateId/@root is missing or not a valid uid", s)

    components = d.get(_Q_COMPONENT)
    component = components[0] if components else None
    if (
        component is not None
        and kid(component, "nonXMLBody") is not None
        and kid(component, "structuredBody") is None
    ):
        if TPL_XDS_SD not in roots:
            ctx.error(
                "STRUCMIN-N1-TEMPLATEIDS",
                doc,
                f"a non-structured CDA (nonXMLBody) must carry templateId {TPL_XDS_SD}",
                s,
            )
        if len(templates) != 3 or not {TPL_HL7_FR, TPL_CISIS, TPL_XDS_SD} <= set(roots):
            ctx.error(
                "STRUCMIN-N1-TEMPLATEIDS",
                doc,
                f"a non-structured CDA must have exactly the 3 templateIds "
                f"{TPL_HL7_FR}, {TPL_CISIS} and {TPL_XDS_SD} (found {len(templates)})",
                s,
            )

    ids = not_null(d.get(_Q_ID, NONE))
    if len(ids) != 1:
        ctx.card("STRUCMIN-ID", doc, ids, "id", s)
    for i in ids[:1]:
        _ii(ctx, "STRUCMIN-ID", i, s)

    codes = not_null(d.get(_Q_CODE, NONE))
    if len(codes) != 1:
        ctx.card("STRUCMIN-CODE", doc, codes, "code", s)
    for c in codes[:1]:
        ctx.coded("STRUCMIN-CODE", c, "J07", s)

    ctx.card("STRUCMIN-TITLE", doc, not_null(d.get(_Q_TITLE, NONE)), "title", s)

    times = not_null(d.get(_Q_EFFECTIVETIME, NONE))
    if len(times) != 1:
        ctx.card("STRUCMIN-EFFECTIVETIME", doc, times, "effectiveTime", s)
    for t in times[:1]:
        _ts(ctx, "STRUCMIN-EFFECTIVETIME", t, s)

    confs = not_null(d.get(_Q_CONFIDENTIALITYCODE, NONE))
    if len(confs) != 1:
        ctx.card("STRUCMIN-CONFIDENTIALITY", doc, confs, "confidentialityCode", s)
    for c in confs[:1]:
        ctx.require_attrs("STRUCMIN-CONFIDENTIALITY", c, ("code", "codeSystem", "displayName"), s)
        code = c.get("code")
        if code is not None and code not in CONFIDENTIALITY_10228:
            ctx.error(
                "STRUCMIN-CONFIDENTIALITY",
                c,
                f"confidentialityCode/@code {code!r} is not in value set "
                "2.16.840.1.113883.1.11.10228 (Confidentiality)",
                s,
            )
        elif code is not None and code not in CONFIDENTIALITY_CISIS:
            ctx.add(
                "STRUCMIN-CONFIDENTIALITY",
                c,
                f"confidentialityCode/@code {code!r} is outside CI-SIS J08 (N, R, V)",
                s,
                Severity.WARNING,
            )

    langs = not_null(d.get(_Q_LANGUAGECODE, NONE))
    if len(langs) != 1:
        ctx.card("STRUCMIN-LANGUAGECODE", doc, langs, "languageCode", s)
    for lang in langs[:1]:
        code = lang.get("code")
        if code is None:
            ctx.require_attrs("STRUCMIN-LANGUAGECODE", lang, ("code",), s)
        elif not _LANG.match(code):
            ctx.error(
                "STRUCMIN-LANGUAGECODE",
                lang,
                f"languageCode/@code {code!r} must look like 'fr-FR' "
                "(ISO 639-1 language, '-', ISO 3166 country)",
                s,
            )

    set_ids = not_null(d.get(_Q_SETID, NONE))
    if len(set_ids) != 1:
        ctx.card("STRUCMIN-SETID", doc, set_ids, "setId", s)
    for i in set_ids[:1]:
        _ii(ctx, "STRUCMIN-SETID", i, s)

    versions = not_null(d.get(_Q_VERSIONNUMBER, NONE))
    if len(versions) != 1:
        ctx.card("STRUCMIN-VERSIONNUMBER", doc, versions, "versionNumber", s)
    for v in versions[:1]:
        value = v.get("value")
        if value is None:
            ctx.require_attrs("STRUCMIN-VERSIONNUMBER", v, ("value",), s)
        elif not _INT.match(value):
            ctx.error("STRUCMIN-VERSIONNUMBER", v, "versionNumber/@value is not an integer", s)


def _ii(ctx: Ctx, rule: str, el: etree._Element, source: str) -> None:
    root = el.get("root")
    if root is None:
        ctx.require_attrs(rule, el, ("root",), source)
    elif not is_uid(root):
        ctx.error(
            rule, el, f"{etree.QName(el).localname}/@root is not a valid uid (OID, UUID or RUID)", source
        )
    ext = el.get("extension")
    if ext is not None and not ext:
        ctx.error(rule, el, f"{etree.QName(el).localname}/@extension is empty", source)


def _ts(ctx: Ctx, rule: str, el: etree._Element, source: str) -> None:
    value = el.get("value")
    if value is None:
        ctx.require_attrs(rule, el, ("value",), source)
    elif not _TS.match(value):
        ctx.error(rule, el, f"{etree.QName(el).localname}/@value is not a valid HL7 TS timestamp", source)


# --- recordTarget -----------------------------------------------------------------------------------------
def _record_target(ctx: Ctx, doc: etree._Element) -> None:
    s = SRC_RT
    rts = not_null(kids(doc, "recordTarget"))
    if len(rts) != 1:
        ctx.card("STRUCMIN-RECORDTARGET", doc, rts, "recordTarget", SRC_DOC)
    if not rts:
        return
    rt = rts[0]
    roles = [r for r in kids(rt, "patientRole") if kid(r, "patient") is not None]
    if len(roles) != 1:
        ctx.card("STRUCMIN-RECORDTARGET", rt, roles, "patientRole[patient]", s)
    if not roles:
        return
    role = roles[0]
    ids = not_null(kids(role, "id"))
    if not ids:
        ctx.card("STRUCMIN-PATIENT-ID", role, ids, "id", s, hi=None)
    for i in ids:
        ctx.require_attrs("STRUCMIN-PATIENT-ID", i, ("root", "extension"), s)
        if i.get("root") is not None and not is_uid(i.get("root", "")):
            ctx.error("STRUCMIN-PATIENT-ID", i, "patientRole/id/@root is not a valid uid", s)

    patients = not_null(kids(role, "patient"))
    if len(patients) != 1:
        ctx.card("STRUCMIN-RECORDTARGET", role, patients, "patient", s)
    patient = patients[0] if patients else None
    names = not_null(kids(patient, "name"))
    if patient is not None:
        if len(names) != 1:
            ctx.card("STRUCMIN-PATIENT-NAME", patient, names, "name", s)
        for name in names[:1]:
            ctx.card("STRUCMIN-PATIENT-NAME", name, not_null(kids(name, "family")), "family", s, hi=None)
            ctx.card("STRUCMIN-PATIENT-NAME", name, not_null(kids(name, "given")), "given", s, hi=None)
            ctx.card("STRUCMIN-PATIENT-NAME", name, kids(name, "prefix"), "prefix", s, lo=0)
            ctx.card("STRUCMIN-PATIENT-NAME", name, kids(name, "suffix"), "suffix", s, lo=0)
        genders = kids(patient, "administrativeGenderCode")
        if len(genders) != 1:
            ctx.card("STRUCMIN-GENDER", patient, genders, "administrativeGenderCode", s)
        for g in genders[:1]:
            ctx.coded("STRUCMIN-GENDER", g, "J143", s, attrs=("code",), quote=False)
        births = kids(patient, "birthTime")
        if len(births) != 1:
            ctx.card("STRUCMIN-BIRTHTIME", patient, births, "birthTime", s)
        for b in births[:1]:
            _ts(ctx, "STRUCMIN-BIRTHTIME", b, s)
        places = [b for b in kids(patient, "birthplace") if kid(b, "place") is not None]
        if len(places) > 1:
            ctx.card("STRUCMIN-BIRTHPLACE", patient, places, "birthplace[place]", s, lo=0)
        for bp in places[:1]:
            ctx.card("STRUCMIN-BIRTHPLACE", bp, kids(bp, "place"), "place", s)
        for guardian in kids(patient, "guardian"):
            _guardian(ctx, guardian, names)

    _name_qualifiers(ctx, role, names, bool(ids))
    _ins_traits(ctx, role, patient, names, ids)


_FAMILIES = etree.XPath("hl7:family[not(@nullFlavor)]", namespaces=NS)


def _name_qualifiers(ctx: Ctx, role: etree._Element, names: list[etree._Element], has_id: bool) -> None:
    """RNIV name typing: family BR (birth) or CL (used), given BR (first birth given name), CL, or none (all)."""
    s = SRC_RT
    for name in names[:1]:
        for fam in _FAMILIES(name):
            q = fam.get("qualifier")
            if q is None:
                ctx.error(
                    "STRUCMIN-NAME-QUALIFIER",
                    fam,
                    "patient family name must carry @qualifier (BR birth name or CL used name)",
                    s,
                )
            elif has_id and q not in ("BR", "CL"):
                ctx.error(
                    "STRUCMIN-NAME-QUALIFIER",
                    f"{path_of(fam)}/@qualifier",
                    f"family qualifier {q!r} is not allowed: only BR (birth name) or CL (used name, RNIV)",
                    s,
                )
        if not has_id:
            continue  # StrucMin evaluates the qualifier value rules in the patientRole/id context
        for given in kids(name, "given"):
            q = given.get("qualifier")
            if q is not None and q not in ("BR", "CL"):
                ctx.error(
                    "STRUCMIN-NAME-QUALIFIER",
                    f"{path_of(given)}/@qualifier",
                    f"given-name qualifier {q!r} "
                    "is not allowed: BR (first birth given name), CL (used given name) or none",
                    s,
                )


def _guardian(ctx: Ctx, guardian: etree._Element, patient_names: list[etree._Element]) -> None:
    s = SRC_RT
    choice = kids(guardian, "guardianPerson") + kids(guardian, "guardianOrganization")
    if len(choice) != 1:
        ctx.error(
            "STRUCMIN-GUARDIAN",
            guardian,
            "guardian must contain exactly one of guardianPerson or "
            f"guardianOrganization (found {len(choice)})",
            s,
        )
    for person in kids(guardian, "guardianPerson"):
        pnames = [n for n in kids(person, "name") if kid(n, "family") is not None]
        if len(pnames) != 1:
            ctx.card("STRUCMIN-GUARDIAN", person, pnames, "name[family]", s)
        if any(kids(n, "family") for n in pnames):
            # StrucMin's guardian family rule actually tests the *patient's* family qualifier (BR, SP or CL).
            quals = {f.get("qualifier") for n in patient_names for f in kids(n, "family")}
            if not quals & {"BR", "SP", "CL"}:
                ctx.error(
                    "STRUCMIN-NAME-QUALIFIER",
                    pnames[0],
                    "with a guardian, the patient family name must be typed by @qualifier BR, SP or CL",
                    s,
                )


def _ins_traits(
    ctx: Ctx,
    role: etree._Element,
    patient: etree._Element | None,
    names: list[etree._Element],
    ids: list[etree._Element],
) -> None:
    """With an INS (NIR/NIA, test or démo OID) the identity traits of the RNIV are mandatory [§2.2]."""
    has_ins = any(i.get("root") in INS_ROOTS for i in kids(role, "id"))
    has_ext = any(i.get("extension") is not None for i in kids(role, "id"))
    fams = [f for n in names for f in kids(n, "family")]
    givens = [g for n in names for g in kids(n, "given")]
    missing = []
    if not any(f.get("qualifier") == "BR" for f in fams):
        missing.append("family[@qualifier='BR']")
    if not any(g.get("qualifier") == "BR" for g in givens):
        missing.append("given[@qualifier='BR']")
    if not any(g.get("qualifier") is None for g in givens):
        missing.append("given without qualifier")
    if patient is None or kid(patient, "birthTime") is None:
        missing.append("birthTime")
    if patient is None or not _COUNTY(patient):
        missing.append("birthplace/place/addr/county (COG)")
    if patient is None or not any(
        g.get("code") is not None for g in kids(patient, "administrativeGenderCode")
    ):
        missing.append("administrativeGenderCode/@code")
    if missing and not has_ins and not has_ext:
        # StrucMin's assert: (no INS root and some id/@extension) or all the traits.
        ctx.error("STRUCMIN-PATIENT-ID", role, "patientRole needs an id with @extension", SRC_DOC)
    elif missing and has_ins:
        ctx.error(
            "STRUCMIN-INS-TRAITS",
            patient if patient is not None else role,
            "the patient has an INS: its identity traits are mandatory; missing " + ", ".join(missing),
            SRC_DOC,
        )


_COUNTY = etree.XPath("hl7:birthplace/hl7:place/hl7:addr/hl7:county", namespaces=NS)


# --- component --------------------------------------------------------------------------------------------
def _component(ctx: Ctx, doc: etree._Element) -> None:
    comps = kids(doc, "component")
    if len(comps) != 1:
        ctx.card("STRUCMIN-COMPONENT", doc, comps, "component", SRC_DOC)
    for comp in comps[:1]:
        nonxml = kid(comp, "nonXMLBody")
        if kid(comp, "structuredBody") is None and nonxml is None:
            ctx.error(
                "STRUCMIN-COMPONENT", comp, "component must contain structuredBody or nonXMLBody", SRC_DOC
            )
        if nonxml is not None:
            txt = kid(nonxml, "text")
            if txt is None:
                ctx.error(
                    "STRUCMIN-N1-MEDIATYPE",
                    f"{path_of(nonxml)}/text",
                    "nonXMLBody/text is required",
                    "(CDA R2 nonXMLBody, cisis-facts 2.4)",
                )
            elif not txt.get("mediaType"):
                ctx.error(
                    "STRUCMIN-N1-MEDIATYPE",
                    f"{path_of(txt)}/@mediaType",
                    "nonXMLBody/text/@mediaType is required (it drives the XDS formatCode)",
                    "(CDA R2 nonXMLBody, cisis-facts 2.4)",
                )
