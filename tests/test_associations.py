"""NOS association tables ASS_X04 (typeCode -> classCode) and ASS_A11 (templateId -> formatCode), and their use
when the CDA header fills the XDS metadata."""

from __future__ import annotations

import csv
import gzip
import json
from importlib import resources
from pathlib import Path

import pytest

from gateway.formats.cda.header import CdaReadError, read_cda
from gateway.terminology import default_terminology
from gateway.terminology.associations import (
    LOINC,
    TRE_A03_CLASSE_DOCUMENT,
    TRE_A05_TYPE_COMPLEMENTAIRE,
    TRE_A06_FORMAT_CODE,
    TRE_A11_IHE_FORMAT_CODE,
    associations,
    class_code_for_type,
    format_code_for_templates,
)
from tests.conftest import ANS_CDA, SHARED, require_shared

J06_CSV = SHARED / "cisis/nos-jdv-derived/JDV_J06-XdsClassCode-CISIS_20230922.csv"
XDS_SD = "1.3.6.1.4.1.19376.1.2.20"
EXAMPLES = sorted(ANS_CDA.glob("*.xml")) if ANS_CDA.is_dir() else []


def _raw() -> dict:
    data = resources.files("gateway.terminology").joinpath("data", "associations.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))


def _j06() -> set[tuple[str, str]]:
    with J06_CSV.open(encoding="utf-8") as fh:
        return {(row["system_url|oid"].split("|")[-1], row["code"]) for row in csv.DictReader(fh)}


# --- the vendored tables --------------------------------------------------------------------------------


def test_row_counts_are_those_of_the_sources():
    raw = _raw()
    x04, a11 = raw["ASS_X04"], raw["ASS_A11"]
    # ASS_X04 dateMaj 20240927120000: 130 MappedConcept = 92 LOINC + 37 TRE_A05 + 1 ASTM (E1762, signature).
    assert x04["row_count"] == 130
    assert (
        len(x04["map"]) == 92 and x04["system_from"] == LOINC and x04["system_to"] == TRE_A03_CLASSE_DOCUMENT
    )
    extra = x04["additional_systems"]
    assert {k: len(v["map"]) for k, v in extra.items()} == {TRE_A05_TYPE_COMPLEMENTAIRE: 37, "ASTM": 1}
    assert extra[TRE_A05_TYPE_COMPLEMENTAIRE]["system_to"] == TRE_A03_CLASSE_DOCUMENT
    assert len(associations().type_to_class) == 130
    # ASS_A11 v5.0.0: 83 elements = 47 (TRE_A06) + 31 (TRE_A11) + 5 (N1 XDS-SD, one per media type).
    assert a11["row_count"] == 83
    assert [g["elements"] for g in a11["groups"]] == [47, 31, 5]
    schemes = [g["scheme"] for g in a11["groups"]]
    assert schemes == [TRE_A06_FORMAT_CODE, TRE_A11_IHE_FORMAT_CODE, TRE_A11_IHE_FORMAT_CODE]
    assert len(a11["map"]) == 78 and len(associations().template_to_format) == 78
    assert len(associations().n1_format_codes[XDS_SD]) == 5


def test_sources_are_recorded():
    src = associations().sources
    assert (
        src["ASS_X04"]["dateMaj"] == "20240927120000" and src["ASS_X04"]["oid"] == "1.2.250.1.213.1.1.4.249"
    )
    assert src["ASS_X04"]["commit"] == "15af24e776b9f8c6ffbb051c0535fd82f0326203"
    assert src["ASS_A11"]["version"] == "5.0.0"
    assert src["ASS_A11"]["commit"] == "2095e02e1779680f742aaa55d83e8bc9b54f43a0"
    assert (Path(__file__).parents[1] / "gateway/terminology/data/ASSOCIATIONS-SOURCES.md").is_file()


@pytest.mark.parametrize(
    ("code", "system", "expected"),
    [
        ("11502-2", LOINC, "10"),  # CR d'examens biologiques -> Compte rendu
        ("18748-4", LOINC, "31"),  # CR d'imagerie -> Imagerie médicale
        ("57833-6", LOINC, "42"),  # Prescription de médicaments
        ("101881-1", LOINC, "52"),  # added in the 2024-09-27 publication
        ("REMB", TRE_A05_TYPE_COMPLEMENTAIRE, "60"),
        ("FEUILLE-DE-STYLE", TRE_A05_TYPE_COMPLEMENTAIRE, "99"),
        ("11502-2", None, "10"),  # no system: every source system is searched
    ],
)
def test_known_class_codes(code, system, expected):
    c = class_code_for_type(code, system)
    assert c is not None and c.code == expected and c.code_system == TRE_A03_CLASSE_DOCUMENT
    assert c.display  # the J06 label


def test_class_code_unknown_or_wrong_system():
    assert class_code_for_type("00000-0", LOINC) is None
    assert class_code_for_type("11502-2", TRE_A05_TYPE_COMPLEMENTAIRE) is None
    assert class_code_for_type("", None) is None
    sig = class_code_for_type("E1762", "ASTM")
    assert sig.code == "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1" and sig.code_system == "URN"


def test_class_codes_are_all_in_j06():
    require_shared()
    j06 = _j06()
    targets = set(associations().type_to_class.values())
    assert {(system, code) for code, system in targets} <= j06
    # and every class of J06 is reachable from some type
    assert j06 == {(system, code) for code, system in targets}


def test_class_code_display_comes_from_j06():
    assert class_code_for_type("18748-4", LOINC).display == "Imagerie médicale"
    assert class_code_for_type("11502-2", LOINC).display == "Compte rendu"


@pytest.mark.parametrize(
    ("templates", "code", "scheme"),
    [
        (["1.2.250.1.213.1.1.1.12.4"], "urn:asip:ci-sis:obp-scm:2023", TRE_A06_FORMAT_CODE),
        (
            ["1.2.250.1.213.1.1.1.45"],
            "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013",
            TRE_A11_IHE_FORMAT_CODE,
        ),
        (["1.3.6.1.4.1.19376.1.3.3"], "urn:ihe:lab:xd-lab:2008", TRE_A11_IHE_FORMAT_CODE),
        (["1.3.6.1.4.1.19376.1.8.1.1.2.20"], "urn:ihe:pat:apsr:larynx:2010", TRE_A11_IHE_FORMAT_CODE),
        # header templates ignored; the model wins
        (
            ["2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", "1.2.250.1.213.1.1.1.13"],
            "urn:asip:ci-sis:vsm:2012",
            TRE_A06_FORMAT_CODE,
        ),
        # sub-model over its family (the family is not in the table anyway) — CSE-CS8
        (
            ["1.2.250.1.213.1.1.1.5", "1.2.250.1.213.1.1.1.5.1"],
            "urn:asip:ci-sis:cse-cs8:2017",
            TRE_A06_FORMAT_CODE,
        ),
        # CI-SIS model over the IHE profile it specialises, whatever the order
        (
            ["1.2.250.1.213.1.1.1.41", "1.3.6.1.4.1.19376.1.8.1.1.1"],
            "urn:asip:ci-sis:cr-cpa:2020",
            TRE_A06_FORMAT_CODE,
        ),
        (
            ["1.3.6.1.4.1.19376.1.8.1.1.1", "1.2.250.1.213.1.1.1.41"],
            "urn:asip:ci-sis:cr-cpa:2020",
            TRE_A06_FORMAT_CODE,
        ),
    ],
)
def test_known_format_codes(templates, code, scheme):
    c = format_code_for_templates(templates)
    assert c is not None and (c.code, c.code_system) == (code, scheme)


def test_format_code_none_without_a_model_in_the_table():
    assert format_code_for_templates([]) is None
    assert format_code_for_templates(["2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1"]) is None
    # N1 XDS-SD is not a candidate: its formatCode depends on the media type (ASS_A12)
    assert format_code_for_templates(["1.2.250.1.213.1.1.1.1", XDS_SD]) is None


def test_n1_group_is_consistent_with_ass_a12():
    """ASS_A11 group 3 and ASS_A12 (already shipped in terminology.json.gz) give the same N1 formatCodes."""
    t = default_terminology()
    a12 = {
        t.format_code_for_media_type(m)[:2]
        for m in ("application/pdf", "text/plain", "image/jpeg", "text/rtf", "image/tiff")
    }
    assert a12 == set(associations().n1_format_codes[XDS_SD])


# --- every ANS example CDA ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_ans_example_gets_class_and_format_code(path):
    require_shared()
    try:
        m = read_cda(path.read_bytes()).metadata
    except CdaReadError as exc:  # the two "Auto-Presentable" files wrap the CDA for display
        pytest.skip(f"not a bare ClinicalDocument: {exc}")
    table = associations()
    # classCode: present exactly when ASS_X04 knows the type, in TRE_A03 and J06
    known_type = (m.type_code.code_system, m.type_code.code) in table.type_to_class
    assert (m.class_code is not None) == known_type
    if m.class_code is not None:
        assert m.class_code.code_system == TRE_A03_CLASSE_DOCUMENT and m.class_code.display
        if J06_CSV.is_file():
            assert (m.class_code.code_system, m.class_code.code) in _j06()
    # formatCode: N1 by media type (ASS_A12); N3 whenever one of its templateIds is an ASS_A11 model
    if m.level == "N1":
        assert (m.format_code.code, m.format_code.code_system) in table.n1_format_codes[XDS_SD]
    elif any(t in table.template_to_format for t in m.template_ids):
        assert m.format_code is not None
        assert m.format_code.code_system in (TRE_A06_FORMAT_CODE, TRE_A11_IHE_FORMAT_CODE)
    else:
        assert m.format_code is None


EXPECTED_FORMAT = {
    "01_Modèles_contenus_CDA.xml": "urn:asip:ci-sis:vsm:2012",
    "BIO-CR-BIO_2024.01_TSH_1.xml": "urn:ihe:lab:xd-lab:2008",
    "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml": "urn:ihe:iti:xds-sd:pdf:2008",
    "BIO-TROD_2024.01_COVID-19.xml": None,  # model 1.2.250.1.213.1.1.1.59 is not in ASS_A11 v5.0.0
    "CARD-F-PRC-DCI_2022.01.xml": "urn:asip:ci-sis:dci:2009",
    "CSE-CS8_2025.01.xml": "urn:asip:ci-sis:cse-cs8:2017",
    "IMG_CR_IMG_2024.01.xml": "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013",
    "IMG-DA-IMG_2024.01_Radiographie_ChevilleGenou.xml": "urn:ans:ci-sis:img-da:2022",
    "IPS-FR_2024.01_DLU.xml": "urn:ihe:pcc:ips:2020",
    "OBP-SCM_2024.01.xml": "urn:asip:ci-sis:obp-scm:2023",
    "eDISP-MED_2024.01.xml": "urn:ihe:pharm:dis:2010",
    "eP-MED-DM_2024.01_PosoStruct.xml": "urn:ihe:pharm:pre:2010",
}
EXPECTED_CLASS = {
    "BIO-CR-BIO_2024.01_TSH_1.xml": "10",
    "IMG_CR_IMG_2024.01.xml": "31",
    "CNAM-HR_2021.01.xml": "60",  # TRE_A05 REMB
    "CSE-CS8_2025.01.xml": "52",  # TRE_A05 CERT_DECL
    "eDISP-MED_2024.01.xml": "43",
    "OBP-SCM_2024.01.xml": "11",
}


def test_ans_examples_expected_values_and_coverage():
    require_shared()
    got = {}
    for path in EXAMPLES:
        try:
            got[path.name] = read_cda(path.read_bytes()).metadata
        except CdaReadError:
            continue
    for name, code in EXPECTED_FORMAT.items():
        fc = got[name].format_code
        assert (fc.code if fc else None) == code, name
    for name, code in EXPECTED_CLASS.items():
        assert got[name].class_code.code == code, name
    # testcontenucda-3.0: 63 files, 61 bare CDAs; all get a classCode, all but the two BIO-TROD a formatCode
    assert len(got) == 61
    assert sum(m.class_code is not None for m in got.values()) == 61
    missing = sorted(n for n, m in got.items() if m.format_code is None)
    assert missing == ["BIO-TROD_2024.01_COVID-19.xml", "BIO-TROD_2024.01_COVID-19_Grippe-A_Grippe-B.xml"]
