"""Official ANS schematrons (StrucMin + volet) run with Saxon, checked against the official verdicts.

Oracle: shared/reference/official-verdicts.csv (Saxon 13 + the ISO XSLT 2 skeleton on every CDA of the kit and
corpus). Subset kept small for run time: 8 StrucMin "pass" rows, every StrucMin "fail" row, 3 volet rows
(BIO-CR-BIO 2024.01, AVC-SUNV 2022.01, eDISP-MED 2024.01), the VSM/BIO volet choice, and one document through a
process pool.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("saxonche")

from gateway.model.report import ValidationReport
from gateway.runtime.loop_lag import measure_loop_lag
from gateway.validation.official import OfficialValidator, validate_official

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KIT = SHARED / "cisis" / "testcontenucda-3.0"
VERDICTS = SHARED / "reference" / "official-verdicts.csv"
STRUCMIN = "ASIP-STRUCT-MIN-StrucMin.sch"

if not (KIT.is_dir() and VERDICTS.is_file()):
    if os.environ.get("CI"):
        pytest.fail(f"shared CI-SIS kit missing at {SHARED}", pytrace=False)
    pytest.skip("shared CI-SIS kit not available", allow_module_level=True)

FILE = "file (under shared/)"
ROWS = {row[FILE]: row for row in csv.DictReader(VERDICTS.open(encoding="utf-8"))}
EX = "cisis/testcontenucda-3.0/ExemplesCDA/"
STRUCMIN_PASS = [
    EX + "BIO-CR-BIO_2024.01_TSH_1.xml",
    EX + "BIO-TROD_2024.01_COVID-19.xml",
    EX + "IMG_CR_IMG_2024.01.xml",
    EX + "DOC_NON_STRUCTURE_CDA-R2-N1.xml",
    EX + "VAC-NOTE_2023.01.xml",
    EX + "CSE-MDE_2023.01.xml",
    EX + "eP-MED-DM_2024.01_PosoStruct.xml",
    EX + "CNAM-HR_2021.01.xml",
]
STRUCMIN_FAIL = [name for name, row in ROWS.items() if row["strucmin"] == "fail"]
VOLET_ROWS = [
    EX + "BIO-CR-BIO_2024.01_TSH_1.xml",
    EX + "AVC-SUNV_2022.01.xml",
    EX + "eDISP-MED_2024.01.xml",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("schematron-cache")


@pytest.fixture(scope="session")
def validator(cache_dir: Path) -> OfficialValidator:
    return OfficialValidator(KIT, cache_dir)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _strucmin_errors(report: ValidationReport) -> list[str]:
    return [f.message for f in report.errors if f.source == STRUCMIN]


@pytest.mark.parametrize("name", STRUCMIN_PASS, ids=lambda n: Path(n).name)
def test_strucmin_pass_rows(validator: OfficialValidator, name: str) -> None:
    assert ROWS[name]["strucmin"] == "pass"
    report = validator.validate((SHARED / name).read_bytes())
    assert _strucmin_errors(report) == []


@pytest.mark.parametrize("name", STRUCMIN_FAIL, ids=lambda n: n.replace("/", "|")[-60:])
def test_strucmin_fail_rows(validator: OfficialValidator, name: str) -> None:
    row = ROWS[name]
    report = validator.validate((SHARED / name).read_bytes())
    messages = [_norm(m) for m in _strucmin_errors(report)]
    assert messages, "official verdict is fail"
    assert len(messages) == int(row["strucmin_errors"])
    for expected in filter(None, (_norm(t) for t in row["strucmin_failures"].split(" | "))):
        # the CSV truncates long texts: the official text is a prefix of one of ours
        assert any(m.startswith(expected[:290]) for m in messages), expected
    finding = next(f for f in report.errors if f.source == STRUCMIN)
    assert finding.rule.startswith("OFFICIAL-")
    assert finding.location.startswith("/*[local-name()='ClinicalDocument'")


def test_volet_choice(validator: OfficialValidator) -> None:
    bio = validator.volet_schematron_for(
        [
            "2.16.840.1.113883.2.8.2.1",
            "1.2.250.1.213.1.1.1.1",
            "1.3.6.1.4.1.19376.1.3.3",
            "1.2.250.1.213.1.1.1.55",
        ]
    )
    assert bio is not None and bio.name == "CI-SIS_BIO-CR-BIO_2024.01.sch"
    bio21 = validator.volet_schematron_for(["1.3.6.1.4.1.19376.1.3.3@2021.01"])
    assert bio21 is not None and bio21.name == "CI-SIS_BIO-CR-BIO_2021.01.sch"
    vsm = validator.volet_schematron_for(["1.2.250.1.213.1.1.1.1", "1.2.250.1.213.1.1.1.13"])
    assert vsm is not None and vsm.name == "CI-SIS_VSM_2023.01.sch"
    vsm14 = validator.volet_schematron_for(["1.2.250.1.213.1.1.1.13@2022.01"])
    assert vsm14 is not None and vsm14.name == "CI-SIS_VSM_1.4_2022.01.sch"
    assert validator.volet_schematron_for(["2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1"]) is None
    assert validator.volet_schematron_for(["1.2.250.1.213.1.1.1.1", "1.3.6.1.4.1.19376.1.2.20"]) is None


@pytest.mark.parametrize("name", VOLET_ROWS, ids=lambda n: Path(n).name)
def test_volet_verdict(validator: OfficialValidator, name: str) -> None:
    row = ROWS[name]
    report = validator.validate((SHARED / name).read_bytes())
    assert row["volet"] == "pass"
    volet_findings = [f for f in report.findings if f.source == row["volet_schematron"]]
    assert [f for f in volet_findings if f.severity == "error"] == []
    assert not [f for f in report.findings if f.rule in ("OFFICIAL-ENGINE", "OFFICIAL-SKIPPED")]
    assert bool(_strucmin_errors(report)) == (row["strucmin"] == "fail")


def test_broken_upstream_volet_is_skipped_with_reason(validator: OfficialValidator) -> None:
    name = next(n for n, r in ROWS.items() if r["volet_schematron"] == "CI-SIS_BIO-CR-BIO_2023.01.sch")
    report = validator.validate((SHARED / name).read_bytes())
    skipped = [f for f in report.findings if f.rule == "OFFICIAL-SKIPPED"]
    assert skipped and "broken upstream" in skipped[0].message and skipped[0].severity == "warning"


def test_not_a_cda(validator: OfficialValidator) -> None:
    assert validator.validate(b"<ClinicalDocument/>").unreadable
    assert validator.validate(b"<ClinicalDocument").unreadable


async def test_validate_official_in_process_pool(validator: OfficialValidator, cache_dir: Path) -> None:
    cda = (SHARED / EX / "BIO-TROD_2024.01_COVID-19.xml").read_bytes()
    expected = validator.validate(cda)
    with ProcessPoolExecutor(max_workers=1) as pool:
        async with measure_loop_lag() as lag:
            report = await validate_official(pool, KIT, cache_dir, cda)
            again = await validate_official(pool, KIT, cache_dir, cda)  # warm worker: executables reused
    assert report == expected == again
    print(f"event loop max gap while validating in the pool: {lag.max_ms:.1f} ms over {len(lag.gaps)} ticks")
    assert lag.max_ms < 50


def test_a_volet_without_version_in_its_templateid_is_accepted_by_the_version_it_conforms_to(
    validator: OfficialValidator,
) -> None:
    """CR-BIO 2021.01 examples carry templateId .55 without extension: 2024.01 would reject them (it requires a
    PDF copy section), 2021.01 accepts them; the official verdict is pass, so the gateway must not reject."""
    ids = ["1.2.250.1.213.1.1.1.55"]
    candidates = [p.name for p in validator.volet_candidates(ids)]
    assert candidates[0] > candidates[-1] and "CI-SIS_BIO-CR-BIO_2021.01.sch" in candidates
    report = validator.validate(
        (KIT / "ExemplesCDA" / "BIO-CR-BIO_2021.01_Microbiologie_V1.xml").read_bytes()
    )
    assert report.valid, [f.rule for f in report.errors]


async def test_a_native_plus_official_route_rejects_what_the_official_kit_rejects(cache_dir: Path) -> None:
    """The runtime step on a real spawn pool: an official failure turns an accepted message into an AE."""
    from gateway.formats.hl7v2.er7 import parse_message
    from gateway.routing import parse_routes
    from gateway.runtime.official import OfficialStep
    from gateway.runtime.pipeline import Envelope, Pipeline
    from tests.conftest import ROOT, SAMPLES

    routes = parse_routes(
        (ROOT / "routes.yaml")
        .read_text()
        .replace("      - to: dmp\n", "      - to: dmp\n    validation: native+official\n", 1)
    )
    pipeline = Pipeline(routes, {}, "k")
    step = OfficialStep(KIT, cache_dir, workers=1)
    try:
        good = pipeline.process(
            Envelope(body=(SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes())
        )
        assert good.accepted and good.decision.official
        await step.apply(good)
        assert good.accepted, [f.rule for f in good.report.errors]
        # The same message whose document loses its versionNumber after native validation: the official
        # StrucMin run must catch it and the message must not be published.
        cda = (KIT / "ExemplesCDA" / "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml").read_bytes()
        bad = pipeline.process(
            Envelope(body=(SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes())
        )
        bad.submission.documents[0].content.data = cda.replace(b'<versionNumber value="2"/>', b"", 1)
        await step.apply(bad)
        assert not bad.accepted and bad.jobs == []
        assert any(f.rule.startswith("OFFICIAL-") for f in bad.report.errors)
        ack = parse_message(bad.reply)
        assert ack.segment("MSA").get(1) == "AE"
    finally:
        step.close()


def test_validate_cli_with_official_reports_native_and_official_findings(cache_dir: Path) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    env = {"CISIS_OFFICIAL_KIT_DIR": str(KIT), "CISIS_OFFICIAL_CACHE_DIR": str(cache_dir)}
    cda = SHARED / "corpus/cda/ansforge_hl7v2ex__CR_Radio_CDAN1_v1.XML"  # a 2021-era CDA: no setId
    result = CliRunner().invoke(
        app,
        [
            "validate",
            str(cda),
            "--official",
            "--json",
            "--header",
            "x-cisis-flags=DESTDMP=N;DESTMSSANTEPS=N;DESTMSSANTEPAT=N",
        ],
        env=env,
    )
    assert result.exit_code == 1
    report = json.loads(result.output)
    rules = {f["rule"] for f in report["findings"]}
    assert "STRUCMIN-SETID" in rules  # native
    assert any(
        r.startswith("OFFICIAL-") and "setId" in f["message"] for f in report["findings"] for r in [f["rule"]]
    )  # official, same reason
