"""Accuracy of the native StrucMin 1.16 header rules against the official verdicts (ANS schematron under Saxon).

The oracle, ``shared/reference/official-verdicts.csv``, gives for each CDA of the shared corpus the StrucMin
verdict and the (possibly truncated) failure messages. The tests check: no false reject on ``pass`` rows; for
every official failure message on ``fail`` rows, a native error with the matching rule id; a mutation suite on
valid ANS examples; and a speed bound.

Value sets: the tests use a terminology read from the StrucMin ``voc-*.xml`` files themselves, so that they
measure the rules and not differences between those files and the shipped JDV; one test repeats the pass rows
with :func:`gateway.terminology.default_terminology`.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from gateway.formats.cda.xml_safety import parse_untrusted
from gateway.model import Severity
from gateway.validation.cda_header import RULES, validate_cda_header
from gateway.validation.cda_header_common import VALUE_SETS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VERDICTS = SHARED / "reference" / "official-verdicts.csv"
TCC = SHARED / "cisis" / "testcontenucda-3.0"
VOC_DIR = TCC / "schematrons" / "profils" / "structurationMinimale" / "include"
EXAMPLES = TCC / "ExemplesCDA"
NS = {"hl7": "urn:hl7-org:v3"}

if not VERDICTS.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"shared reference data missing at {SHARED}")
    pytest.skip("shared reference data not available", allow_module_level=True)


class VocTerminology:
    """``contains`` over the StrucMin voc-<oid>-DYNAMIC.xml files (code only, as the schematron does)."""

    def __init__(self) -> None:
        self.sets: dict[str, frozenset[str]] = {}
        for key, oid in VALUE_SETS.items():
            path = VOC_DIR / f"voc-{oid}-DYNAMIC.xml"
            if path.exists():
                tree = etree.parse(str(path))
                self.sets[key] = frozenset(tree.xpath("//conceptList/concept/@code"))

    def contains(self, value_set: str, code: str, code_system: str | None = None) -> bool | None:
        codes = self.sets.get(value_set)
        return None if codes is None else code in codes


VOC = VocTerminology()


def _rows(verdict: str) -> list[dict[str, str]]:
    with VERDICTS.open(encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r["strucmin"] == verdict]


def _file(row: dict[str, str]) -> str:
    return row["file (under shared/)"]


@cache
def _tree(rel: str) -> etree._ElementTree:
    return parse_untrusted((SHARED / rel).read_bytes())


PASS_ROWS = _rows("pass")
FAIL_ROWS = _rows("fail")

# --- official message -> native rule ----------------------------------------------------------------------
# (schematron context, message prefix, rule id). An official message (possibly cut short in the CSV) matches an
# entry when either text is a prefix of the other; it agrees when the native errors hold one of the rule ids of
# the matching entries.
J245 = "Cette valeur n'est pas présente dans le JDV_J245"
J246 = "Cette valeur n'est pas présente dans le JDV_J246"
MESSAGE_RULES: list[tuple[str, str, str]] = [
    ("*", J245, "STRUCMIN-PREFIX-J245"),
    ("*", J246, "STRUCMIN-SUFFIX-J246"),
    ("*", "element hl7:given appears too often", "STRUCMIN-PERSON-NAME"),
    ("*", "element hl7:family appears too often", "STRUCMIN-PERSON-NAME"),
    (
        "*",
        "The value for code SHALL be selected from value set '1.2.250.1.213.1.1.5.461'",
        "STRUCMIN-SPECIALTY",
    ),
    (
        "CI-SISAuthenticator",
        "element hl7:assignedEntity[hl7:id[@root = '1.2.250.1.71.4.2.1']]",
        "STRUCMIN-AUTHENTICATOR",
    ),
    ("CI-SISAuthor", "attribute @extension SHALL be present.", "STRUCMIN-AUTHOR-ID"),
    ("CI-SISAuthor", "attribute @root SHALL be present.", "STRUCMIN-AUTHOR-ID"),
    ("CI-SISCustodian", "L'attribut @root doit avoir la valeur", "STRUCMIN-CUSTODIAN-OID"),
    ("CI-SISDocumentationOf", "element hl7:performer[@typeCode = 'PRF']", "STRUCMIN-DOCOF-PERFORMER"),
    (
        "CI-SISParticipant",
        "L'attribut @classCode de l'élément 'participant/associatedEntity'",
        "STRUCMIN-PARTICIPANT",
    ),
    ("CI-SISRecordTarget", 'Seuls les qualifiers "BR" pour le nom de famille', "STRUCMIN-NAME-QUALIFIER"),
    ("CI-SISRecordTarget", "Valeur du nom typé par l'attribut qualifier", "STRUCMIN-NAME-QUALIFIER"),
    ("CI-SISRecordTarget", "Prénom typé par l'attribut qualifier", "STRUCMIN-NAME-QUALIFIER"),
    ("CI-SISRecordTarget", "attribute @qualifier SHALL be present.", "STRUCMIN-NAME-QUALIFIER"),
    ("CI-SISRelatedEntity", "@classCode doit être renseigné", "STRUCMIN-RELATED-ENTITY"),
    (
        "SMDS_CDAClinicalDocument",
        "DocumentationOf: EffectiveTime est obligatoire",
        "STRUCMIN-DOCOF-EFFECTIVETIME",
    ),
    ("SMDS_CDAClinicalDocument", "DocumentationOf: Le performer est obligatoire", "STRUCMIN-DOCOF-PERFORMER"),
    (
        "SMDS_CDAClinicalDocument",
        "The value for code SHALL be selected from value set '1.2.250.1.213.1.1.5.471'",
        "STRUCMIN-CODE",
    ),
    (
        "SMDS_CDAClinicalDocument",
        "The value for code SHALL be selected from value set '2.16.840.1.113883.1.11.10228'",
        "STRUCMIN-CONFIDENTIALITY",
    ),
    (
        "SMDS_CDAClinicalDocument",
        "[CI-SIS_StructurationMinimale] Dans un document CDA non structuré",
        "STRUCMIN-N1-TEMPLATEIDS",
    ),
    (
        "SMDS_CDAClinicalDocument",
        "[CI-SIS_StructurationMinimale] Erreur de conformité au CI-SIS : Dans un document CDA non structuré",
        "STRUCMIN-N1-TEMPLATEIDS",
    ),
    (
        "SMDS_CDAClinicalDocument",
        "Erreur de conformité CI-SIS : Dans le cadre de l'INS",
        "STRUCMIN-INS-TRAITS",
    ),
    ("SMDS_CDAClinicalDocument", "element hl7:author[", "STRUCMIN-AUTHOR"),
    ("SMDS_CDAClinicalDocument", "element hl7:componentOf[", "STRUCMIN-COMPONENTOF"),
    ("SMDS_CDAClinicalDocument", "element hl7:custodian[", "STRUCMIN-CUSTODIAN"),
    ("SMDS_CDAClinicalDocument", "element hl7:setId[", "STRUCMIN-SETID"),
    ("SMDS_CDAClinicalDocument", "element hl7:versionNumber[", "STRUCMIN-VERSIONNUMBER"),
    ("SMDS_CDAClinicalDocument", "element hl7:legalAuthenticator[", "STRUCMIN-LEGALAUTHENTICATOR"),
    ("SMDS_CDAClinicalDocument", "element hl7:documentationOf[", "STRUCMIN-DOCOF"),
    ("SMDS_CDAClinicalDocument", "element hl7:realmCode[", "STRUCMIN-REALMCODE"),
    ("SMDS_CDAClinicalDocument", "element hl7:templateId[", "STRUCMIN-TEMPLATEID"),
    ("SMDS_CDAClinicalDocument", "element hl7:recordTarget[", "STRUCMIN-RECORDTARGET"),
]
_OFFICIAL = re.compile(r"^\((?P<ctx>[^)]*)\): (?P<msg>.*)$", re.S)


def _rules_for(official: str) -> set[str]:
    m = _OFFICIAL.match(official.strip())
    assert m, f"unparsable official message {official!r}"
    ctx, msg = m["ctx"], m["msg"]
    return {
        rule
        for c, prefix, rule in MESSAGE_RULES
        if c in ("*", ctx) and (msg.startswith(prefix) or prefix.startswith(msg))
    }


def test_every_rule_id_is_documented() -> None:
    assert all(r.startswith("STRUCMIN-") for r in RULES)
    for _, _, rule in MESSAGE_RULES:
        assert rule in RULES


@pytest.mark.parametrize("row", PASS_ROWS, ids=_file)
def test_no_false_reject(row: dict[str, str]) -> None:
    report = validate_cda_header(_tree(_file(row)), terminology=VOC)
    assert not report.errors, [(f.rule, f.location, f.message) for f in report.errors]


def test_no_false_reject_with_shipped_terminology() -> None:
    terminology = pytest.importorskip("gateway.terminology").default_terminology()
    rejected = {}
    for row in PASS_ROWS:
        errors = validate_cda_header(_tree(_file(row)), terminology=terminology).errors
        if errors:
            rejected[_file(row)] = sorted({(f.rule, f.message) for f in errors})
    assert not rejected


@pytest.mark.parametrize("row", FAIL_ROWS, ids=_file)
def test_agreement_on_rejects(row: dict[str, str]) -> None:
    report = validate_cda_header(_tree(_file(row)), terminology=VOC)
    native = set(report.rule_codes())
    assert native, "official verdict is fail, native found no error"
    missing = []
    for official in filter(None, (m.strip() for m in row["strucmin_failures"].split(" | "))):
        expected = _rules_for(official)
        assert expected, f"no mapping for official message {official!r}"
        if not expected & native:
            missing.append((official, sorted(expected)))
    assert not missing, f"native rules {sorted(native)}"


# --- mutations of valid examples --------------------------------------------------------------------------
N3 = "cisis/testcontenucda-3.0/ExemplesCDA/BIO-CR-BIO_2024.01_TSH_1.xml"
N1 = "cisis/testcontenucda-3.0/ExemplesCDA/DOC_NON_STRUCTURE_CDA-R2-N1.xml"
N1_IMG = "cisis/testcontenucda-3.0/ExemplesCDA/IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"


def _drop(xpath: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        found = root.xpath(xpath, namespaces=NS)
        assert found, f"mutation target {xpath} not in the example"
        for el in found:
            if isinstance(el, etree._Element):
                el.getparent().remove(el)
            else:  # an attribute result: remove it from its parent element
                el.getparent().attrib.pop(el.attrname)

    return mutate


def _set(xpath: str, attr: str, value: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        found = root.xpath(xpath, namespaces=NS)
        assert found, f"mutation target {xpath} not in the example"
        for el in found:
            el.set(attr, value)

    return mutate


def _add_template(root: etree._Element) -> None:
    last = root.findall("hl7:templateId", NS)[-1]
    last.addnext(etree.Element("{urn:hl7-org:v3}templateId", root="1.2.250.1.213.1.1.1.45"))


def _add_related(type_code: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        rel = etree.Element("{urn:hl7-org:v3}relatedDocument", typeCode=type_code)
        parent = etree.SubElement(rel, "{urn:hl7-org:v3}parentDocument")
        etree.SubElement(parent, "{urn:hl7-org:v3}id", root="1.2.3.4.5")
        root.find("hl7:component", NS).addprevious(rel)

    return mutate


CD = "/hl7:ClinicalDocument"
PAT = f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:patient"
ENC = f"{CD}/hl7:componentOf/hl7:encompassingEncounter"
MUTATIONS: list[tuple[str, str, Callable[[etree._Element], None], str]] = [
    ("no-setId", N3, _drop(f"{CD}/hl7:setId"), "STRUCMIN-SETID"),
    ("no-versionNumber", N3, _drop(f"{CD}/hl7:versionNumber"), "STRUCMIN-VERSIONNUMBER"),
    ("no-legalAuthenticator", N3, _drop(f"{CD}/hl7:legalAuthenticator"), "STRUCMIN-LEGALAUTHENTICATOR"),
    ("legalAuth-no-time", N3, _drop(f"{CD}/hl7:legalAuthenticator/hl7:time"), "STRUCMIN-LEGALAUTHENTICATOR"),
    (
        "no-custodian-id",
        N3,
        _drop(f"{CD}/hl7:custodian//hl7:representedCustodianOrganization/hl7:id"),
        "STRUCMIN-CUSTODIAN",
    ),
    (
        "custodian-oid",
        N3,
        _set(f"{CD}/hl7:custodian//hl7:representedCustodianOrganization/hl7:id", "root", "1.2.3.4"),
        "STRUCMIN-CUSTODIAN-OID",
    ),
    ("no-componentOf", N3, _drop(f"{CD}/hl7:componentOf"), "STRUCMIN-COMPONENTOF"),
    (
        "no-facility-code",
        N3,
        _drop(f"{ENC}/hl7:location/hl7:healthCareFacility/hl7:code"),
        "STRUCMIN-FACILITY-CODE",
    ),
    (
        "facility-code-J02",
        N3,
        _set(f"{ENC}/hl7:location/hl7:healthCareFacility/hl7:code", "code", "XX99"),
        "STRUCMIN-FACILITY-CODE",
    ),
    ("no-encounter-time", N3, _drop(f"{ENC}/hl7:effectiveTime"), "STRUCMIN-ENCOUNTER-TIME"),
    (
        "no-performer",
        N3,
        _drop(f"{CD}/hl7:documentationOf/hl7:serviceEvent/hl7:performer"),
        "STRUCMIN-DOCOF-PERFORMER",
    ),
    (
        "no-serviceEvent-time",
        N3,
        _drop(f"{CD}/hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime"),
        "STRUCMIN-DOCOF-EFFECTIVETIME",
    ),
    (
        "practice-setting-J04",
        N3,
        _set(
            f"{CD}/hl7:documentationOf//hl7:representedOrganization/hl7:standardIndustryClassCode",
            "code",
            "NOPE",
        ),
        "STRUCMIN-DOCOF-PRACTICESETTING",
    ),
    ("no-birthTime", N3, _drop(f"{PAT}/hl7:birthTime"), "STRUCMIN-BIRTHTIME"),
    ("no-BR-family", N3, _drop(f"{PAT}/hl7:name/hl7:family[@qualifier='BR']"), "STRUCMIN-INS-TRAITS"),
    ("no-gender", N3, _drop(f"{PAT}/hl7:administrativeGenderCode"), "STRUCMIN-GENDER"),
    ("gender-J143", N3, _set(f"{PAT}/hl7:administrativeGenderCode", "code", "X"), "STRUCMIN-GENDER"),
    (
        "family-SP",
        N3,
        _set(f"{PAT}/hl7:name/hl7:family[@qualifier='BR']", "qualifier", "SP"),
        "STRUCMIN-NAME-QUALIFIER",
    ),
    (
        "given-SP",
        N3,
        _set(f"{PAT}/hl7:name/hl7:given[@qualifier='CL']", "qualifier", "SP"),
        "STRUCMIN-NAME-QUALIFIER",
    ),
    (
        "no-patient-id-ext",
        N3,
        _drop(f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:id/@extension"),
        "STRUCMIN-PATIENT-ID",
    ),
    ("languageCode-fr", N3, _set(f"{CD}/hl7:languageCode", "code", "fr"), "STRUCMIN-LANGUAGECODE"),
    ("no-realmCode", N3, _drop(f"{CD}/hl7:realmCode"), "STRUCMIN-REALMCODE"),
    ("no-typeId", N3, _drop(f"{CD}/hl7:typeId"), "STRUCMIN-TYPEID"),
    (
        "no-cisis-template",
        N3,
        _drop(f"{CD}/hl7:templateId[@root='1.2.250.1.213.1.1.1.1']"),
        "STRUCMIN-TEMPLATEID",
    ),
    ("no-id-root", N3, _drop(f"{CD}/hl7:id/@root"), "STRUCMIN-ID"),
    ("no-title", N3, _drop(f"{CD}/hl7:title"), "STRUCMIN-TITLE"),
    ("no-effectiveTime", N3, _drop(f"{CD}/hl7:effectiveTime"), "STRUCMIN-EFFECTIVETIME"),
    ("conf-code", N3, _set(f"{CD}/hl7:confidentialityCode", "code", "Z"), "STRUCMIN-CONFIDENTIALITY"),
    (
        "conf-no-displayName",
        N3,
        _drop(f"{CD}/hl7:confidentialityCode/@displayName"),
        "STRUCMIN-CONFIDENTIALITY",
    ),
    ("no-author", N3, _drop(f"{CD}/hl7:author"), "STRUCMIN-AUTHOR"),
    ("author-no-time", N3, _drop(f"{CD}/hl7:author/hl7:time"), "STRUCMIN-AUTHOR"),
    ("author-no-id", N3, _drop(f"{CD}/hl7:author/hl7:assignedAuthor/hl7:id"), "STRUCMIN-AUTHOR-ID"),
    (
        "author-code-J01",
        N3,
        _set(f"{CD}/hl7:author/hl7:assignedAuthor/hl7:code", "code", "NOPE"),
        "STRUCMIN-SPECIALTY",
    ),
    (
        "author-no-person",
        N3,
        _drop(f"{CD}/hl7:author/hl7:assignedAuthor/hl7:assignedPerson"),
        "STRUCMIN-AUTHOR-PERSON-DEVICE",
    ),
    (
        "telecom-phone",
        N3,
        _set(f"({CD}/hl7:author//hl7:telecom)[1]", "value", "phone:0100000000"),
        "STRUCMIN-TELECOM",
    ),
    ("telecom-use", N3, _set(f"({CD}/hl7:author//hl7:telecom)[1]", "use", "XX"), "STRUCMIN-TELECOM"),
    ("addr-use", N3, _set(f"({CD}/hl7:author//hl7:addr)[1]", "use", "PST"), "STRUCMIN-ADDR-USE"),
    ("relatedDocument-XFRM", N3, _add_related("XFRM"), "STRUCMIN-RELATEDDOCUMENT"),
    (
        "two-RPLC",
        N3,
        lambda r: (_add_related("RPLC")(r), _add_related("RPLC")(r)),
        "STRUCMIN-RELATEDDOCUMENT",
    ),
    ("no-component", N3, _drop(f"{CD}/hl7:component"), "STRUCMIN-COMPONENT"),
    ("n1-4th-templateId", N1, _add_template, "STRUCMIN-N1-TEMPLATEIDS"),
    (
        "n1-no-xds-sd",
        N1,
        _drop(f"{CD}/hl7:templateId[@root='1.3.6.1.4.1.19376.1.2.20']"),
        "STRUCMIN-N1-TEMPLATEIDS",
    ),
    (
        "n1-no-mediaType",
        N1,
        _drop(f"{CD}/hl7:component/hl7:nonXMLBody/hl7:text/@mediaType"),
        "STRUCMIN-N1-MEDIATYPE",
    ),
    (
        "n1-img-no-mediaType",
        N1_IMG,
        _drop(f"{CD}/hl7:component/hl7:nonXMLBody/hl7:text/@mediaType"),
        "STRUCMIN-N1-MEDIATYPE",
    ),
]


@pytest.mark.parametrize(("name", "rel", "mutate", "rule"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_is_rejected(
    name: str, rel: str, mutate: Callable[[etree._Element], None], rule: str
) -> None:
    assert not validate_cda_header(_tree(rel), terminology=VOC).errors  # the example itself is valid
    tree = copy.deepcopy(_tree(rel))
    mutate(tree.getroot())
    report = validate_cda_header(tree, terminology=VOC)
    assert rule in report.rule_codes(), [(f.rule, f.message) for f in report.errors]
    for finding in report.errors:
        assert finding.location.startswith("/ClinicalDocument")
        assert finding.condition == 207
        assert finding.source and finding.source.startswith("StrucMin 1.16")


def test_messages_do_not_quote_patient_data() -> None:
    tree = copy.deepcopy(_tree(N3))
    root = tree.getroot()
    _set(f"{PAT}/hl7:name/hl7:family", "qualifier", "SP")(root)
    _drop(f"{PAT}/hl7:birthTime")(root)
    _drop(f"{PAT}/hl7:administrativeGenderCode")(root)
    _set(f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:telecom", "value", "phone:0612345678")(root)
    report = validate_cda_header(tree, terminology=VOC)
    assert report.errors
    blob = " ".join(f.message + " " + f.location for f in report.findings)
    for secret in ("PAT-TROIS", "DOMINIQUE", "279035121518989", "19790328", "0612345678"):
        assert secret not in blob


def test_unknown_value_set_is_info_once() -> None:
    class Nothing:
        def contains(self, value_set: str, code: str, code_system: str | None = None) -> bool | None:
            return None

    report = validate_cda_header(_tree(N3), terminology=Nothing())
    assert not report.errors
    infos = [f for f in report.findings if f.rule == "STRUCMIN-VALUESET-UNKNOWN"]
    assert infos and all(f.severity is Severity.INFO for f in infos)
    assert len({f.message for f in infos}) == len(infos)


def test_not_a_clinical_document() -> None:
    report = validate_cda_header(etree.ElementTree(etree.fromstring(b"<foo/>")), terminology=VOC)
    assert report.rule_codes() == ["STRUCMIN-ROOT"]


def test_speed_bound() -> None:
    tree = _tree("cisis/testcontenucda-3.0/ExemplesCDA/BIO-TROD_2024.01_COVID-19.xml")
    validate_cda_header(tree, terminology=VOC)
    start = time.perf_counter()
    for _ in range(200):
        validate_cda_header(tree, terminology=VOC)
    elapsed = time.perf_counter() - start
    print(f"\nStrucMin native header validation: {200 / elapsed:,.0f} documents/s")
    assert elapsed < 2.0
