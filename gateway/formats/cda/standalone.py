"""A CDA document published to the inbox on its own (no HL7v2 envelope), with routing hints in AMQP headers.

The HL7v2 volet carries the MetaDMPMSS flags, the recipients and the sender in OBX/PRT segments; a bare CDA
carries them in these AMQP headers instead (names are the gateway's; values as in the volet):

    x-cisis-flags            DESTDMP=Y;DESTMSSANTEPS=Y;DESTMSSANTEPAT=N;MASQUE_PS=N;...   (MetaDMPMSS codes)
    x-cisis-recipients       MSSanté addresses of the PS / organisation recipients, comma-separated
    x-cisis-action           initial | replacement | deletion (default: replacement when the CDA has
                             relatedDocument[@typeCode='RPLC'], else initial)
    x-cisis-identity-status  PROV | VALI | RECUP | QUAL (the CDA does not carry it; the DMP needs QUAL/VALI)
    x-cisis-sender-ps        IdNat_PS of the sender (8 + RPPS ...)
    x-cisis-sender-org       IdNat_Struct of the sending structure (1 + FINESS ...)
    x-cisis-reply-to         MSSanté reply-to address
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.formats.cda.header import CdaHeader, CdaReadError, read_cda
from gateway.model import (
    Content,
    Document,
    DocumentAction,
    DocumentSubmission,
    MetaFlags,
    Organization,
    Participant,
    ParticipantRole,
    Person,
    Provenance,
    ValidationReport,
)

SOURCE = "cisis-gateway CDA ingest (AMQP headers)"
CDA_CONTENT_TYPES = {"application/xml", "text/xml", "application/hl7-cda+xml", "application/cda+xml"}


@dataclass(slots=True)
class CdaMessage:
    submission: DocumentSubmission | None
    report: ValidationReport
    header: CdaHeader | None = None
    flag_codes: set[str] = field(default_factory=set)  # the MetaDMPMSS codes the headers gave


def _text(headers: dict[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip() if value is not None else ""


def is_cda(body: bytes, content_type: str | None) -> bool:
    if content_type and content_type.split(";")[0].strip().lower() in CDA_CONTENT_TYPES:
        return True
    head = body[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and b"ClinicalDocument" in body[:4096]


def map_cda(body: bytes, headers: dict[str, Any], provenance: Provenance) -> CdaMessage:
    report = ValidationReport()
    result = CdaMessage(submission=None, report=report)
    try:
        header = read_cda(body)
    except CdaReadError as exc:
        report.add(exc.rule, exc.location, f"CDA: {exc}", condition=102, source="CDA R2")
        return result
    result.header = header
    flags: dict[str, Any] = {}
    for item in _text(headers, "x-cisis-flags").replace(",", ";").split(";"):
        if not item.strip():
            continue
        code, _, value = item.partition("=")
        code, value = code.strip().upper(), value.strip().upper()
        if code not in MetaFlags.CODES or value not in ("Y", "N"):
            report.add(
                "CDA-HINT-FLAG",
                "x-cisis-flags",
                f"unknown MetaDMPMSS flag or value {item.strip()[:40]}",
                condition=103,
                source=SOURCE,
            )
            continue
        flags[MetaFlags.CODES[code]] = value == "Y"
        result.flag_codes.add(code)
    # Masking and confidentiality flags not given are N: a bare CDA has no other place for them.
    for code in (
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REP_LEGAUX",
        "CONNEXION_SECRETE",
        "MODIF_CONF_CODE",
    ):
        flags.setdefault(MetaFlags.CODES[code], False)
    action_text = _text(headers, "x-cisis-action").lower()
    meta = header.metadata
    if action_text:
        try:
            action = DocumentAction(action_text)
        except ValueError:
            report.add(
                "CDA-HINT-ACTION",
                "x-cisis-action",
                "action must be initial, replacement or deletion",
                condition=103,
                source=SOURCE,
            )
            action = DocumentAction.INITIAL
    else:
        action = DocumentAction.REPLACEMENT if meta.replaced_document_id else DocumentAction.INITIAL
    recipients = [
        Participant(role=ParticipantRole.RECIPIENT, address=a.strip())
        for a in _text(headers, "x-cisis-recipients").split(",")
        if a.strip()
    ]
    sender = None
    ps, org = _text(headers, "x-cisis-sender-ps"), _text(headers, "x-cisis-sender-org")
    if ps or org:
        sender = Participant(
            role=ParticipantRole.SENDER,
            person=Person(id=ps, id_authority="1.2.250.1.71.4.2.1") if ps else None,
            organization=Organization(id=org, id_authority="1.2.250.1.71.4.2.2") if org else None,
        )
    patient = header.patient.model_copy(
        update={"identity_status": _text(headers, "x-cisis-identity-status").upper() or None}
    )
    reply_to = _text(headers, "x-cisis-reply-to")
    result.submission = DocumentSubmission(
        provenance=provenance,
        patient=patient,
        action=action,
        documents=[Document(metadata=meta, content=Content(data=body))],
        replaced_document_id=meta.replaced_document_id.xds_unique_id() if meta.replaced_document_id else None,
        flags=MetaFlags(**flags),
        sender=sender,
        recipients=recipients,
        reply_to=[reply_to] if reply_to else [],
        type_code=meta.type_code,
    )
    return result
