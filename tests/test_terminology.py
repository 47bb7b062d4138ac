"""Terminology: the shipped JDV file answers the lookups XDS/CDA validation relies on, and is not stale."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.terminology import Terminology, TerminologyError, ValueSet, default_terminology, shipped_path
from gateway.terminology.build import build_document, compile_terminology

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "cisis"
JDV_DIR = SHARED / "testcontenucda-3.0" / "jeuxDeValeurs"
NOS_DIR = SHARED / "nos-jdv-derived"

LOINC = "2.16.840.1.113883.6.1"
TRE_R02 = "1.2.250.1.71.4.2.4"
TRE_A01 = "1.2.250.1.213.1.1.4.9"
TRE_A03 = "1.2.250.1.213.1.1.4.1"
HL7_GENDER = "2.16.840.1.113883.5.1"
TRE_A11 = "1.3.6.1.4.1.19376.1.2.3"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def _need_shared() -> None:
    """The kit is only needed for the staleness checks; CI must have it, a bare checkout may not."""
    if not JDV_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the ANS kit is missing: {JDV_DIR}")
        pytest.skip("../shared/cisis not available")


# --- the shipped file ---------------------------------------------------------------------------------


def test_shipped_file_loads_without_shared() -> None:
    """An audit hook fails any open() under ../shared while the shipped file is loaded and queried."""
    code = textwrap.dedent(
        f"""
        import sys
        def hook(event, args):
            if event == "open" and isinstance(args[0], str) and "/shared/" in args[0]:
                raise RuntimeError("opened " + args[0])
        sys.addaudithook(hook)
        from gateway.terminology import default_terminology
        t = default_terminology()
        assert t.contains("J02", "SA25", {TRE_R02!r}) is True
        assert len(t) >= 400
        """
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_shipped_file_is_small_and_fast() -> None:
    path = shipped_path()
    assert path.is_file()
    assert path.stat().st_size < 1_000_000
    best = min(_timed_load() for _ in range(3))
    assert best < 0.5  # ~15 ms measured; the bound only catches an accidental eager build of every set


def _timed_load() -> float:
    start = time.perf_counter()
    Terminology.load()
    return time.perf_counter() - start


def test_default_terminology_is_cached() -> None:
    assert default_terminology() is default_terminology()


def test_j02_healthcare_facility_type(term: Terminology) -> None:
    j02 = term.value_set("J02")
    assert j02 is not None
    assert j02.oid == "1.2.250.1.213.1.1.5.466"
    assert j02.contains("SA25", TRE_R02)
    assert j02.contains("SA25")
    assert j02.display("SA25", TRE_R02) == "Laboratoire de biologie médicale"
    assert not j02.contains("SA25", LOINC)  # right code, wrong code system
    assert j02.display("SA25", LOINC) is None
    assert term.contains("J02", "SA25", "1.2.250.1.213.1.1.4.6") is False
    assert term.contains("J02", "EXP_PATIENT", "1.2.250.1.213.1.1.4.6") is True


def test_j07_and_j66_type_codes(term: Terminology) -> None:
    for code in ("11502-2", "18748-4"):
        assert term.contains("J07", code, LOINC) is True
    assert term.contains("1.2.250.1.213.1.1.5.471", "11502-2", LOINC) is True
    assert term.contains("J07", "E1762", "ASTM") is True  # the kit's literal, not an OID
    assert term.contains("J66", "11502-2", LOINC) is True
    j66 = term.value_set("J66")
    assert j66 is not None and j66.oid == "1.2.250.1.213.1.1.5.7" and j66.name == "JDV_J66-TypeCode-DMP"
    assert term.contains("J66", "11502-2", TRE_R02) is False


def test_class_codes_dmp_and_cisis(term: Terminology) -> None:
    assert term.contains("J57", "10", TRE_A03) is True
    assert term.contains("J06", "99", TRE_A03) is True  # "Document technique": CI-SIS only
    assert term.contains("J57", "99", TRE_A03) is False
    j57 = term.value_set("J57")
    assert j57 is not None and j57.oid == "1.2.250.1.213.1.1.5.6"


def test_j04_and_j143(term: Terminology) -> None:
    assert term.contains("J04", "AMBULATOIRE", TRE_A01) is True
    # The kit's J143 has M, F and UN (HL7 AdministrativeGender), not "U".
    for code in ("M", "F", "UN"):
        assert term.contains("J143", code, HL7_GENDER) is True
    assert term.contains("J143", "U") is False
    assert term.value_set("J143") == term.value_set("1.2.250.1.213.1.1.5.590")


def test_lookup_keys_agree(term: Terminology) -> None:
    by_oid = term.value_set("1.2.250.1.213.1.1.5.466")
    assert isinstance(by_oid, ValueSet)
    for key in (
        "J02",
        "j02",
        "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS",
        "JDV_J02-XdsHealthcareFacilityTypeCode-CISIS",
        "jdv-j02-xdshealthcarefacilitytypecode-cisis",
        "urn:oid:1.2.250.1.213.1.1.5.466",
        "https://mos.esante.gouv.fr/NOS/JDV_J02-XdsHealthcareFacilityTypeCode-CISIS",
    ):
        assert term.value_set(key) is by_oid, key
    assert by_oid.name == "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS"
    assert by_oid.short_id == "J02"


def test_unknown_value_set(term: Terminology) -> None:
    assert term.value_set("J9999") is None
    assert term.value_set("1.2.3.4") is None
    assert term.value_set("JDV_Nope_CISIS") is None
    assert term.contains("J9999", "SA25") is None


def test_kit_quirks_are_cleaned(term: Terminology) -> None:
    # Codes with a leading tab / trailing NBSP in the kit are compiled stripped.
    assert term.contains("JDV_ScoreRankin_CISIS", "LA6114-8", LOINC) is True
    assert term.contains("JDV_CompletudeDispensation_CISIS", "FFC") is True
    # Placeholders are not codes.
    assert term.contains("JDV_TrousseCCU_CISIS", "code à fournir") is False
    # Two files share the AGGIR OIDs; the draft one (placeholder only) resolves to the real list.
    draft = term.value_set("JDV_Evaluation_AGGIR_PA_CISIS")
    assert draft is not None and draft.oid == "1.2.250.1.213.1.1.5.806" and draft.contains("d510")
    assert "JDV_Evaluation_AGGIR_PA_CISIS.xml" in term.skipped


def test_source_versions(term: Terminology) -> None:
    versions = term.source_versions
    assert versions["JDV_J02_XdsHealthcareFacilityTypeCode_CISIS"].startswith(
        "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS.xml"
    )
    assert versions["JDV_J66-TypeCode-DMP"].startswith("JDV_J66-TypeCode-DMP_v1.1.0")
    assert versions["ASS_A12"].startswith("ASS_A12-")


# --- ASS_A12 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_type", "format_code"),
    [
        ("application/pdf", "urn:ihe:iti:xds-sd:pdf:2008"),
        ("text/plain", "urn:ihe:iti:xds-sd:text:2008"),
        ("text/rtf", "urn:ihe:iti-fr:xds-sd:rtf:2010"),
        ("image/jpeg", "urn:ihe:iti-fr:xds-sd:jpeg:2010"),
        ("image/tiff", "urn:ihe:iti-fr:xds-sd:tiff:2010"),
        ("Application/PDF", "urn:ihe:iti:xds-sd:pdf:2008"),
        ("text/plain; charset=utf-8", "urn:ihe:iti:xds-sd:text:2008"),
    ],
)
def test_ass_a12(term: Terminology, media_type: str, format_code: str) -> None:
    got = term.format_code_for_media_type(media_type)
    assert got is not None
    assert got[:2] == (format_code, TRE_A11)


def test_ass_a12_unknown(term: Terminology) -> None:
    assert term.format_code_for_media_type("application/msword") is None
    assert term.format_code_for_media_type("") is None


# --- staleness and coverage against the kit ---------------------------------------------------------------


def test_shipped_file_matches_a_rebuild(tmp_path: Path) -> None:
    _need_shared()
    out = tmp_path / "t.json.gz"
    compile_terminology(JDV_DIR, NOS_DIR, out)
    rebuilt = json.loads(gzip.decompress(out.read_bytes()))
    shipped = json.loads(gzip.decompress(shipped_path().read_bytes()))
    assert rebuilt == shipped, "stale: run .venv/bin/python tools/build_terminology.py"


def test_every_kit_file_is_compiled_or_skipped() -> None:
    _need_shared()
    document, summary = build_document(JDV_DIR, NOS_DIR)
    compiled = {vs["source"] for vs in document["value_sets"]}
    skipped = document["skipped"]
    assert all(reason.strip() for reason in skipped.values())
    files = {p.name for p in JDV_DIR.glob("JDV_*.xml")} | {p.name for p in NOS_DIR.glob("JDV_*.csv")}
    assert files == compiled | set(skipped)
    assert not compiled & set(skipped)
    assert summary["value_sets"] >= 400


# --- compiler behaviour on synthetic sources ----------------------------------------------------------------

_SVS_NO_NS = """<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse>
  <ValueSet id="1.2.3.4.5" displayName="JDV_J900_Essai_CISIS.tabs" revisionDate="2024-01-01T00:00:00+01:00">
    <ConceptList>
      <Concept code="A " codeSystem="1.2.3" displayName="Alpha"/>
      <Concept code="B" codeSystem="1.2.4" displayName="Beta"/>
      <Concept code="A" codeSystem="1.2.3" displayName="Alpha again"/>
    </ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>
"""

_SVS_DMP = """<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="1.2.250.1.213.1.1.5.7" displayName="JDV_J66_TypeCode_DMP.tabs" revisionDate="2030-01-01">
    <ConceptList><Concept code="OLD" codeSystem="2.16.840.1.113883.6.1" displayName="old"/></ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>
"""

_SVS_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<RetrieveValueSetResponse><ValueSet id="1.2.3.9" displayName="JDV_Evil">
<ConceptList><Concept code="&x;" codeSystem="1.2" displayName="x"/></ConceptList></ValueSet>
</RetrieveValueSetResponse>
"""


def test_compiler_variations_and_precedence(tmp_path: Path) -> None:
    jdv = tmp_path / "jdv"
    nos = tmp_path / "nos"
    jdv.mkdir()
    nos.mkdir()
    (jdv / "JDV_J900_Essai_CISIS.xml").write_text(_SVS_NO_NS, encoding="utf-8")
    (jdv / "JDV_J66_TypeCode_DMP.xml").write_text(_SVS_DMP, encoding="utf-8")
    (jdv / "JDV_Evil.xml").write_text(_SVS_ENTITY, encoding="utf-8")
    (jdv / "JDV_Empty.xml").write_bytes(b"")
    (nos / "JDV_J66-TypeCode-DMP_v1.1.0_2024-02-23.csv").write_text(
        "system_url|oid,code,display\nhttp://loinc.org|2.16.840.1.113883.6.1,11502-2,CR d'examens biologiques\n",
        encoding="utf-8",
    )
    (nos / "ASS_A12-x_v5.0.0.csv").write_text(
        "mediaType,formatCode (codingScheme 1.3.6.1.4.1.19376.1.2.3)\nApplication/PDF,urn:x:pdf,PDF\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.json.gz"
    summary = compile_terminology(jdv, nos, out)
    assert summary["value_sets"] == 2
    term = Terminology.load(out)

    essai = term.value_set("J900")
    assert essai is not None
    assert essai.codes == frozenset({("1.2.3", "A"), ("1.2.4", "B")})
    assert essai.display("A") == "Alpha"
    assert essai.version == "2024-01-01"

    # DMP set: the CSV wins over an SVS file of the same OID, even a newer one; the SVS name becomes an alias.
    j66 = term.value_set("J66")
    assert j66 is not None and j66.contains("11502-2", LOINC) and not j66.contains("OLD")
    assert term.value_set("JDV_J66_TypeCode_DMP") is j66

    skipped = term.skipped
    assert skipped["JDV_Empty.xml"] == "empty file"
    assert skipped["JDV_Evil.xml"].startswith("unreadable: XML-")  # DOCTYPE / external entity refused
    assert "takes precedence" in skipped["JDV_J66_TypeCode_DMP.xml"]
    assert term.format_code_for_media_type("application/pdf") == ("urn:x:pdf", TRE_A11, "PDF")


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(TerminologyError):
        Terminology.load(bad)
    bad.write_bytes(gzip.compress(json.dumps({"format": 99, "value_sets": []}).encode()))
    with pytest.raises(TerminologyError, match="unsupported"):
        Terminology.load(bad)
    with pytest.raises(TerminologyError, match="not found"):
        Terminology.load(tmp_path / "missing.json.gz")
