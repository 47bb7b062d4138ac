"""NOS association tables for the XDS DocumentEntry metadata derived from a CDA (cisis-facts §4.1).

* **ASS_X04-CorrespondanceType-Classe-CISIS**: document type (``ClinicalDocument/code``, LOINC or TRE_A05) ->
  ``classCode`` (TRE_A03, ``1.2.250.1.213.1.1.4.1``). One row also maps the ASTM E1762 signature type to the
  TRE_A10 URN class ``urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1``.
* **ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS**: CDA model (``templateId/@root``) -> ``formatCode``, in
  TRE_A06 (codingScheme ``1.2.250.1.213.1.1.4.2.282``, CI-SIS volets) or TRE_A11 (``1.3.6.1.4.1.19376.1.2.3``,
  IHE profiles). Its third group (the XDS-SD templateId of non-structured "N1" documents, one formatCode per
  embedded media type) is kept in the data file for reference only: N1 formatCodes come from ASS_A12 by
  mediaType (:meth:`gateway.terminology.Terminology.format_code_for_media_type`), which yields the same codes.

Both are transcribed, every row, into ``data/associations.json.gz``; ``data/ASSOCIATIONS-SOURCES.md`` says from
which published copy and how to refresh them. The file is read once (:func:`associations`).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gateway.model import Code
from gateway.terminology.jdv import default_terminology

__all__ = [
    "CISIS_MODEL_PREFIX",
    "LOINC",
    "TRE_A03_CLASSE_DOCUMENT",
    "TRE_A05_TYPE_COMPLEMENTAIRE",
    "TRE_A06_FORMAT_CODE",
    "TRE_A11_IHE_FORMAT_CODE",
    "Associations",
    "associations",
    "class_code_for_type",
    "format_code_for_templates",
]

_DATA_FILE = "associations.json.gz"

LOINC = "2.16.840.1.113883.6.1"
TRE_A03_CLASSE_DOCUMENT = "1.2.250.1.213.1.1.4.1"
TRE_A05_TYPE_COMPLEMENTAIRE = "1.2.250.1.213.1.1.4.12"
TRE_A06_FORMAT_CODE = "1.2.250.1.213.1.1.4.2.282"
TRE_A11_IHE_FORMAT_CODE = "1.3.6.1.4.1.19376.1.2.3"
#: Root of the CI-SIS CDA model OIDs (TRE_R220): the French volets, which specialise the IHE profiles.
CISIS_MODEL_PREFIX = "1.2.250.1.213.1.1.1."


@dataclass(frozen=True, slots=True)
class Associations:
    """The two tables, indexed for lookup, plus their provenance (``sources``) for reports."""

    #: (source code system, source code) -> (target code, target code system), every ASS_X04 row.
    type_to_class: Mapping[tuple[str, str], tuple[str, str]]
    #: templateId -> (formatCode, codingScheme, display or None), ASS_A11 groups 1 and 2 (structured models).
    template_to_format: Mapping[str, tuple[str, str, str | None]]
    #: ASS_A11 group 3: the N1 XDS-SD templateId -> its per-media-type formatCodes (reference only).
    n1_format_codes: Mapping[str, tuple[tuple[str, str], ...]]
    sources: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Associations:
        x04, a11 = doc["ASS_X04"], doc["ASS_A11"]
        type_to_class: dict[tuple[str, str], tuple[str, str]] = {
            (x04["system_from"], code): (target, x04["system_to"]) for code, target in x04["map"].items()
        }
        for system, table in x04.get("additional_systems", {}).items():
            for code, target in table["map"].items():
                type_to_class[(system, code)] = (target, table["system_to"])
        template_to_format = {
            tid: (row["code"], row["scheme"], row.get("display")) for tid, row in a11["map"].items()
        }
        n1 = {tid: tuple((r["code"], r["scheme"]) for r in rows) for tid, rows in a11.get("n1", {}).items()}
        return cls(
            type_to_class=type_to_class,
            template_to_format=template_to_format,
            n1_format_codes=n1,
            sources={"ASS_X04": x04["source"], "ASS_A11": a11["source"]},
        )

    def class_code(self, code: str, system: str | None = None) -> tuple[str, str] | None:
        """ASS_X04 lookup. Without a system the code is looked up in every source system of the table (LOINC
        codes, TRE_A05 codes and ``E1762`` cannot collide)."""
        code = code.strip()
        if system:
            return self.type_to_class.get((system.strip(), code))
        for (_, src_code), target in self.type_to_class.items():
            if src_code == code:
                return target
        return None

    def format_code(self, template_ids: Iterable[str]) -> tuple[str, str, str | None] | None:
        """ASS_A11 lookup over all the templateIds of a document; see :func:`format_code_for_templates`."""
        best: tuple[tuple[int, int, int], str] | None = None
        for position, tid in enumerate(t.strip() for t in template_ids if t):
            if tid not in self.template_to_format:
                continue
            key = (1 if tid.startswith(CISIS_MODEL_PREFIX) else 0, tid.count(".") + 1, position)
            if best is None or key > best[0]:
                best = (key, tid)
        return self.template_to_format[best[1]] if best else None


def _class_display(code: str, system: str) -> str | None:
    # TRE_A03 labels come from JDV J06 (the class value set the codes must belong to); ASS_X04 has none.
    vs = default_terminology().value_set("J06")
    return vs.display(code, system) if vs is not None else None


@functools.lru_cache(maxsize=1)
def associations() -> Associations:
    """The shipped tables, decompressed and indexed on first use."""
    raw = resources.files("gateway.terminology").joinpath("data", _DATA_FILE).read_bytes()
    return Associations.from_document(json.loads(gzip.decompress(raw)))


def class_code_for_type(code: str, system: str | None) -> Code | None:
    """XDS ``classCode`` for a document type code (the CDA ``ClinicalDocument/code``) by ASS_X04.

    ``system`` is the type code's codeSystem (LOINC ``2.16.840.1.113883.6.1`` or TRE_A05
    ``1.2.250.1.213.1.1.4.12``); ``None`` searches every source system of the table. Returns ``None`` for a type
    the table does not know. The display name is the JDV J06 label of the class.
    """
    if not code:
        return None
    found = associations().class_code(code, system)
    if found is None:
        return None
    return Code(code=found[0], code_system=found[1], display=_class_display(*found))


def format_code_for_templates(template_ids: Iterable[str]) -> Code | None:
    """XDS ``formatCode`` of a structured (N3) CDA from its ``templateId/@root`` values by ASS_A11.

    A CDA carries several templateIds: the HL7 France header (``2.16.840.1.113883.2.8.2.1``), the CI-SIS
    "structuration minimale" one (``1.2.250.1.213.1.1.1.1``), often IHE or DICOM profile ones, a volet family
    (``1.2.250.1.213.1.1.1.5`` for CSE, ``1.2.250.1.213.1.1.1.2.1`` for the cardiology prescriptions…) and the
    model itself. Only the ones present in ASS_A11 are candidates, and the **most specific** of them wins:

    1. a CI-SIS model (``1.2.250.1.213.1.1.1.*``, TRE_R220) over a foreign (IHE) one — the French volets
       specialise IHE profiles (CR-BIO ``1.2.250.1.213.1.1.1.55`` over IHE XD-LAB ``1.3.6.1.4.1.19376.1.3.3``);
    2. then the OID with the most arcs (a sub-model over its family, e.g. CSE-CS8 ``….1.5.1`` over ``….1.5``);
    3. then the templateId that comes last in the document (the volet's is conventionally declared last).

    The N1 XDS-SD templateId is not a candidate (its formatCode depends on the embedded media type, ASS_A12).
    There is no display name: ASS_A11 gives none for its targets.
    """
    found = associations().format_code(template_ids)
    if found is None:
        return None
    return Code(code=found[0], code_system=found[1], display=found[2])
