"""Small helpers shared by the PDSm reader: code systems, references, identifiers, dates."""

from __future__ import annotations

import re
from typing import Any

from gateway.model import INS_OIDS, Code, Organization, Person

#: FHIR code system URIs seen in PDSm / PDSM4DMP -> the OIDs the compiled terminology uses.
SYSTEM_OIDS: dict[str, str] = {
    "http://loinc.org": "2.16.840.1.113883.6.1",
    "http://snomed.info/sct": "2.16.840.1.113883.6.96",
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality": "2.16.840.1.113883.5.25",
    "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument": "1.2.250.1.213.1.1.4.1",
    "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire": (
        "1.2.250.1.213.1.1.4.12"
    ),
    "https://mos.esante.gouv.fr/NOS/TRE_A00-ProducteurDocNonPS/FHIR/TRE-A00-ProducteurDocNonPS": (
        "1.2.250.1.213.1.1.4.6"
    ),
    "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice": "1.2.250.1.213.1.1.4.9",
    "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite": "1.2.250.1.71.4.2.4",
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatusVisibiliteDocument/FHIR/TRE-A07-StatusVisibiliteDocument": (
        "1.2.250.1.213.1.1.4.13"
    ),
}
#: Masking securityLabel codes (TRE_A07, 1.2.250.1.213.1.1.4.13) -> MetaFlags field.
MASKING_CODES: dict[str, str] = {
    "MASQUE_PS": "masque_ps",
    "INVISIBLE_PATIENT": "invisible_patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "invisible_rep_legaux",
    "INVISIBLE_REP_LEGAUX": "invisible_rep_legaux",
}
PS_OID = "1.2.250.1.71.4.2.1"  # IdNat_PS
STRUCT_OID = "1.2.250.1.71.4.2.2"  # IdNat_Struct

_DT = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def system_oid(system: str | None) -> str | None:
    """An OID for a FHIR system URI when one is known (``urn:oid:`` prefix or the table above), else None."""
    if not system:
        return None
    if system.startswith("urn:oid:"):
        return system[len("urn:oid:") :]
    return SYSTEM_OIDS.get(system)


def strip_urn(value: str | None) -> str | None:
    """``urn:oid:1.2.3`` -> ``1.2.3``; ``urn:uuid:x`` -> ``x``; anything else unchanged."""
    if value is None:
        return None
    for prefix in ("urn:oid:", "urn:uuid:"):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def codings(concept: Any) -> list[dict[str, Any]]:
    """The codings of a CodeableConcept (or a lone Coding) that carry a code."""
    if not isinstance(concept, dict):
        return []
    items = concept.get("coding") if "coding" in concept else [concept]
    return [c for c in items or [] if isinstance(c, dict) and isinstance(c.get("code"), str)]


def to_code(concept: Any) -> Code | None:
    first = next(iter(codings(concept)), None)
    if first is None:
        return None
    system = first.get("system")
    return Code(code=first["code"], code_system=system_oid(system) or system, display=first.get("display"))


def hl7_dtm(value: Any) -> str | None:
    """FHIR date/dateTime/instant -> HL7 DTM as CDA and XDS write it (``20260612100000+0200``)."""
    if not isinstance(value, str):
        return None
    m = _DT.match(value)
    if not m:
        return value
    year, month, day, hh, mm, ss, tz = m.groups()
    out = year + (month or "") + (day or "") + (hh or "") + (mm or "") + ((ss or "00") if hh else "")
    if tz:
        out += "+0000" if tz == "Z" else tz.replace(":", "")
    return out


def ins_identifier(identifiers: Any) -> tuple[str, str] | None:
    """(matricule, OID) of the first INS identifier of a list of FHIR Identifiers."""
    for ident in identifiers or []:
        if not isinstance(ident, dict):
            continue
        oid = system_oid(ident.get("system"))
        if oid in INS_OIDS and isinstance(ident.get("value"), str):
            return ident["value"], oid
    return None


def parse_conditional_ins(reference: str) -> tuple[str, str] | None:
    """``Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|<NIR>`` (PDSM4DMP) -> (NIR, OID)."""
    if not reference.startswith("Patient?identifier="):
        return None
    system, _, value = reference[len("Patient?identifier=") :].partition("|")
    oid = system_oid(system)
    return (value, oid) if oid in INS_OIDS and value else None


def person_of(resource: dict[str, Any]) -> Person:
    ident = next((i for i in resource.get("identifier") or [] if isinstance(i, dict)), {})
    names = resource.get("name") or []
    name = names[0] if names and isinstance(names[0], dict) else {}
    given = name.get("given") or []
    prefix = name.get("prefix") or []
    return Person(
        id=ident.get("value"),
        id_authority=system_oid(ident.get("system")) or ident.get("system"),
        family=name.get("family"),
        given=given[0] if given else None,
        prefix=prefix[0] if prefix else None,
    )


def organization_of(resource: dict[str, Any]) -> Organization:
    ident = next((i for i in resource.get("identifier") or [] if isinstance(i, dict)), {})
    return Organization(
        name=resource.get("name"),
        id=ident.get("value"),
        id_authority=system_oid(ident.get("system")) or ident.get("system"),
    )
