"""Run the official ANS CDA schematrons (StrucMin header + the document's volet) with Saxon (saxonche).

Saxon work is CPU-bound and holds the GIL: in the gateway it runs in a ``ProcessPoolExecutor`` worker
(:func:`validate_official`); each worker process keeps its Saxon processor and compiled executables in a
module-level cache, so the ~8 s Saxon compilation of StrucMin is paid once per worker.
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from gateway.model.report import Severity, ValidationReport
from gateway.validation.official.compiler import (
    SCH_NS,
    SchematronCompileError,
    compiled_xslt,
    load_expanded_schema,
)

HL7 = "urn:hl7-org:v3"
SVRL = "{http://purl.oclc.org/dsdl/svrl}"
STRUCMIN = Path("schematrons/profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch")
MESSAGE_MAX = 300

#: Upstream schematrons that cannot run (reported as a warning, never as a verdict on the document).
BROKEN_UPSTREAM: dict[str, str] = {
    "CI-SIS_BIO-CR-BIO_2023.01.sch": "broken upstream in the ANS kit: its include folders are 0-byte files",
}

#: templateIds every French CDA (or every IHE medical document) carries: they identify no volet.
GENERIC_TEMPLATE_IDS = frozenset(
    {
        "2.16.840.1.113883.2.8.2.1",  # FR realm
        "1.2.250.1.213.1.1.1.1",  # Structuration minimale
        "1.3.6.1.4.1.19376.1.5.3.1.1.1",  # IHE PCC medical document
        "1.3.6.1.4.1.19376.1.2.20",  # unstructured (N1) document
    }
)
ANS_DOCUMENT_OID = "1.2.250.1.213.1.1.1."
_VOLET_NAME = re.compile(r"^CI-SIS_(?P<volet>.+)_(?P<version>\d{4}\.\d{2})\.sch$")
_TEMPLATE_IN_TEST = re.compile(r"templateId\s*\[\s*@root\s*=\s*['\"]([0-9.]+)['\"]")


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


@dataclass(frozen=True)
class VoletSchematron:
    path: Path
    volet: str
    version: str
    template_ids: frozenset[str]


# ---------------------------------------------------------------------------------------------------------------
# Saxon engine (one per process)
# ---------------------------------------------------------------------------------------------------------------


class _Engine:
    def __init__(self) -> None:
        from saxonche import PySaxonProcessor

        self.proc = PySaxonProcessor(license=False)
        self.xslt = self.proc.new_xslt30_processor()
        self.executables: dict[str, Any] = {}

    def executable(self, xslt_path: Path) -> Any:
        key = str(xslt_path)
        exe = self.executables.get(key)
        if exe is None:
            exe = self.xslt.compile_stylesheet(stylesheet_file=key)
            self.executables[key] = exe
        return exe

    def run(self, xslt_path: Path, xml_text: str) -> str:
        exe = self.executable(xslt_path)
        node = self.proc.parse_xml(xml_text=xml_text)
        exe.set_global_context_item(xdm_item=node)
        return exe.apply_templates_returning_string(xdm_value=node) or ""


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


# ---------------------------------------------------------------------------------------------------------------
# Validator
# ---------------------------------------------------------------------------------------------------------------


class OfficialValidator:
    """StrucMin + volet schematron of the ANS kit found at ``kit_dir`` (``testcontenucda-3.0``)."""

    def __init__(self, kit_dir: Path, cache_dir: Path) -> None:
        self.kit_dir = Path(kit_dir).resolve()
        self.cache_dir = Path(cache_dir)
        self.strucmin = self.kit_dir / STRUCMIN
        if not self.strucmin.exists():
            raise FileNotFoundError(f"StrucMin schematron not found under {self.kit_dir}")
        self._volets: list[VoletSchematron] | None = None

    # -- volet map ---------------------------------------------------------------------------------------------

    def volet_map(self) -> list[VoletSchematron]:
        """Each top-level ``CI-SIS_<VOLET>_<version>.sch`` with the document templateIds that select it.

        Built once: the templateIds are those the volet's header rules (rules whose context is the
        ``ClinicalDocument``) require as ``templateId[@root=...]``, plus the volet's own templateId read from the
        kit's example CDAs named after the volet (some header schematrons only check the IHE parent template).
        Generic templateIds (FR realm, StrucMin, IHE medical document, N1) are left out.
        """
        if self._volets is None:
            self._volets = self._build_volet_map()
        return self._volets

    def _build_volet_map(self) -> list[VoletSchematron]:
        examples = sorted((self.kit_dir / "ExemplesCDA").glob("*.xml"))
        volets: list[VoletSchematron] = []
        for sch in sorted((self.kit_dir / "schematrons").glob("CI-SIS_*.sch")):
            match = _VOLET_NAME.match(sch.name)
            if not match:
                continue
            ids: set[str] = set()
            try:
                schema, _ = load_expanded_schema(sch)
                for rule in schema.iter(f"{{{SCH_NS}}}rule"):
                    if not re.search(r"ClinicalDocument\s*$", rule.get("context") or ""):
                        continue
                    for check in rule.iter(f"{{{SCH_NS}}}assert", f"{{{SCH_NS}}}report"):
                        ids.update(_TEMPLATE_IN_TEST.findall(check.get("test") or ""))
            except SchematronCompileError:
                pass  # broken upstream: still mapped (from the examples) so that validation can say why
            prefix = _norm(f"{match['volet']}_{match['version']}")
            for example in examples:
                if _norm(example.name).startswith(prefix):
                    doc_ids = _document_template_ids(example.read_bytes())
                    own = [root for root, _ in doc_ids if root.startswith(ANS_DOCUMENT_OID)]
                    if own:
                        ids.add(own[-1])
            ids -= GENERIC_TEMPLATE_IDS
            volets.append(VoletSchematron(sch, match["volet"], match["version"], frozenset(ids)))
        # a volet version whose schematron cannot be read (BIO-CR-BIO 2023.01) takes its siblings' templateIds
        by_volet: dict[str, set[str]] = {}
        for v in volets:
            by_volet.setdefault(v.volet, set()).update(v.template_ids)
        return [
            v if v.template_ids else VoletSchematron(v.path, v.volet, v.version, frozenset(by_volet[v.volet]))
            for v in volets
        ]

    def volet_schematron_for(self, template_ids: list[str]) -> Path | None:
        """The volet schematron for a document's ``ClinicalDocument/templateId``\\ s.

        Entries are ``root`` or ``root@extension``. Candidates share a templateId with the document; the one
        matching the most ANS document-model OIDs (1.2.250.1.213.1.1.1.x) wins, then other matches; among the
        versions of one volet, the version equal to a matched templateId's extension wins, else the latest.
        """
        parsed = [tuple(t.split("@", 1)) if "@" in t else (t, "") for t in template_ids]
        roots = {root for root, _ in parsed}
        best: tuple[tuple[int, int, int, str], VoletSchematron] | None = None
        for volet in self.volet_map():
            matched = roots & volet.template_ids
            if not matched:
                continue
            strong = sum(1 for r in matched if r.startswith(ANS_DOCUMENT_OID))
            exts = {ext for root, ext in parsed if root in matched and ext}
            version_hit = 1 if volet.version in exts else 0
            score = (strong, version_hit, len(matched), volet.version)
            if best is None or score > best[0]:
                best = (score, volet)
        return best[1].path if best else None

    def volet_candidates(self, template_ids: list[str]) -> list[Path]:
        """The schematrons to try, in order. When no templateId extension names the version (e.g. CR-BIO's
        ``.55`` without extension fits both 2021.01 and 2024.01), every version of the chosen volet is a
        candidate, newest first: a document conforming to any published version is not rejected."""
        chosen = self.volet_schematron_for(template_ids)
        if chosen is None:
            return []
        exts = {t.split("@", 1)[1] for t in template_ids if "@" in t}
        volet = next(v for v in self.volet_map() if v.path == chosen)
        if volet.version in exts:
            return [chosen]
        siblings = sorted(
            (v for v in self.volet_map() if v.volet == volet.volet), key=lambda v: v.version, reverse=True
        )
        return [v.path for v in siblings]

    # -- validation --------------------------------------------------------------------------------------------

    def validate(self, cda: bytes) -> ValidationReport:
        report = ValidationReport()
        try:
            tree = etree.fromstring(
                cda, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
            )
        except etree.XMLSyntaxError as exc:
            report.unreadable = True
            report.add("OFFICIAL-XML", "/", f"Not well-formed XML: {exc}"[:MESSAGE_MAX], condition=100)
            return report
        document = _clinical_document(tree)
        if document is None:  # (auto-presentable CDAs embed the ClinicalDocument in a stylesheet: accepted)
            report.unreadable = True
            report.add("OFFICIAL-NOT-CDA", "/", "No HL7 v3 ClinicalDocument in the message.", condition=100)
            return report
        xml_text = etree.tostring(tree, encoding="unicode")
        self._run(self.strucmin, xml_text, report)
        ids = [f"{r}@{e}" if e else r for r, e in _template_ids_of(document)]
        first: ValidationReport | None = None
        for volet in self.volet_candidates(ids):
            attempt = ValidationReport()
            if volet.name in BROKEN_UPSTREAM:
                attempt.add(
                    "OFFICIAL-SKIPPED",
                    "/",
                    f"Volet schematron {volet.name} not run: {BROKEN_UPSTREAM[volet.name]}",
                    severity=Severity.WARNING,
                    source=volet.name,
                )
            else:
                self._run(volet, xml_text, attempt)
            if first is None:
                first = attempt
            if attempt.valid and not any(f.rule == "OFFICIAL-SKIPPED" for f in attempt.findings):
                report.extend(attempt)
                return report
        if first is not None:  # no version accepts it: the newest candidate's findings explain why
            report.extend(first)
        return report

    def _run(self, sch: Path, xml_text: str, report: ValidationReport) -> None:
        try:
            compiled = compiled_xslt(sch, self.cache_dir)
            svrl = _engine().run(compiled.xslt_path, xml_text)
        except SchematronCompileError as exc:
            report.add(
                "OFFICIAL-SKIPPED",
                "/",
                f"Schematron {sch.name} not run: {exc}"[:MESSAGE_MAX],
                severity=Severity.WARNING,
                source=sch.name,
            )
            return
        except (
            Exception
        ) as exc:  # Saxon static/dynamic error (PySaxonApiError): no verdict from this schematron
            report.add(
                "OFFICIAL-ENGINE",
                "/",
                f"Schematron {sch.name} failed at run time: {exc}"[:MESSAGE_MAX],
                source=sch.name,
            )
            return
        _svrl_to_findings(svrl, sch.name, report)


def _clinical_document(root: etree._Element) -> etree._Element | None:
    if root.tag == f"{{{HL7}}}ClinicalDocument":
        return root
    return next(root.iter(f"{{{HL7}}}ClinicalDocument"), None)


def _template_ids_of(document: etree._Element) -> list[tuple[str, str]]:
    return [(t.get("root") or "", t.get("extension") or "") for t in document.findall(f"{{{HL7}}}templateId")]


def _document_template_ids(cda: bytes) -> list[tuple[str, str]]:
    try:
        root = etree.fromstring(cda, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return []
    document = _clinical_document(root)
    return _template_ids_of(document) if document is not None else []


_SEVERITY = {
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "info": Severity.INFO,
    "information": Severity.INFO,
}


def _svrl_to_findings(svrl: str, source: str, report: ValidationReport) -> None:
    if not svrl:
        return
    root = etree.fromstring(svrl.encode("utf-8"))
    for el in root.iter(f"{SVRL}failed-assert", f"{SVRL}successful-report"):
        role = (el.get("role") or el.get("flag") or "error").strip().lower()
        text_el = el.find(f"{SVRL}text")
        message = " ".join("".join(text_el.itertext()).split()) if text_el is not None else ""
        if len(message) > MESSAGE_MAX:
            message = message[: MESSAGE_MAX - 1] + "…"
        rule_id = el.get("id") or el.get("pattern") or "ASSERT"
        report.add(
            f"OFFICIAL-{rule_id}",
            el.get("location") or "/",
            message or el.get("test") or "",
            severity=_SEVERITY.get(role, Severity.ERROR),
            source=source,
        )


# ---------------------------------------------------------------------------------------------------------------
# Process-pool entry points
# ---------------------------------------------------------------------------------------------------------------

_VALIDATORS: dict[tuple[str, str], OfficialValidator] = {}


def validate_in_worker(kit_dir: str, cache_dir: str, cda: bytes) -> dict[str, Any]:
    """Picklable entry point for a process pool: the report as JSON-able dict (validators cached per process)."""
    key = (kit_dir, cache_dir)
    validator = _VALIDATORS.get(key)
    if validator is None:
        validator = _VALIDATORS[key] = OfficialValidator(Path(kit_dir), Path(cache_dir))
    return validator.validate(cda).model_dump(mode="json")


async def validate_official(
    pool: Executor, kit_dir: Path | str, cache_dir: Path | str, cda: bytes
) -> ValidationReport:
    """Validate ``cda`` against the official schematrons in ``pool`` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    data = await loop.run_in_executor(pool, validate_in_worker, str(kit_dir), str(cache_dir), cda)
    return ValidationReport.model_validate(data)
