"""Maps a message of the volet "Transmission de documents CDA en HL7v2" to the canonical model (cisis-facts §7).

``ORU^R01^ORU_R01`` (v2.5) and ``MDM^T02/T10/T04^MDM_T02`` (v2.6): PID/PV1, the document OBX (ED, base64 CDA in
OBX-5), the PRT segments pre-adopted from v2.9 that follow it (SB sender, RCT recipients, REPLY reply-to), and
the MetaDMPMSS OBX groups. The reading is tolerant of the quirks the ANS examples show (§7.5: spaces inside
components, case of code systems, empty PRT-4.2) while the canonical model holds trimmed, upper-cased codes.

Anything that prevents building a submission is a finding in the returned report, never an exception: the
caller always gets a report it can turn into an ACK with ERR segments.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from gateway.formats.cda.header import CdaHeader, CdaReadError, read_cda
from gateway.formats.hl7v2.er7 import Message, Segment
from gateway.model import (
    INS_OIDS,
    Code,
    Content,
    Document,
    DocumentAction,
    DocumentSubmission,
    InstanceId,
    MetaFlags,
    Organization,
    Participant,
    ParticipantRole,
    PatientIdentity,
    Person,
    Provenance,
    Severity,
    ValidationReport,
)

SOURCE = "CI-SIS Transmission de documents CDA en HL7v2 2.1"
PROFILE_ID = "CISIS_CDA_HL7_V2"

#: MDM trigger event -> action [§7.1].
MDM_EVENTS = {
    "T02": DocumentAction.INITIAL,
    "T10": DocumentAction.REPLACEMENT,
    "T04": DocumentAction.DELETION,
}
#: OBX-11 of the document OBX (HL7 table 0085) -> action [§7.1].
OBX11_ACTIONS = {"F": DocumentAction.INITIAL, "C": DocumentAction.REPLACEMENT, "D": DocumentAction.DELETION}
#: ORC-1 order control -> action [§7.1].
ORC1_ACTIONS = {"NW": DocumentAction.INITIAL, "RO": DocumentAction.REPLACEMENT, "CA": DocumentAction.DELETION}

META_SYSTEM = "METADMPMSS"


@dataclass(slots=True)
class TransmissionMessage:
    """What the mapping produced: the submission (None if the message could not be understood), the report,
    and facts validation needs that the canonical model does not keep (segment positions, raw codes)."""

    submission: DocumentSubmission | None
    report: ValidationReport
    cda_headers: list[CdaHeader] = field(default_factory=list)
    cda_locations: list[str] = field(default_factory=list)  # 'OBX[1]-5' of each header, same order
    orc1: str | None = None
    obx11: str | None = None
    event: str | None = None
    document_obx: list[int] = field(default_factory=list)  # OBX-1 set ids of the document OBX
    obr4: Code | None = None
    txa12: str | None = None


def _clean(value: str) -> str:
    """Trim a component (§7.5: the ANS examples have '^^ expandedYes-NoIndicator'); code comparisons also
    upper-case, and code-system names drop inner spaces where compared (MetaDMPMSS)."""
    return value.strip()


def _oid_of(hd_namespace: str, hd_universal: str) -> str | None:
    """Assigning authority OID of an HD: HD.2 normally; some examples put the bare OID in HD.1."""
    if hd_universal.strip():
        return hd_universal.strip()
    candidate = hd_namespace.strip()
    if candidate and candidate.replace(".", "").isdigit() and "." in candidate:
        return candidate
    return None


class _Locator:
    """Finding locations as SEG[occurrence]-field (OBX[12]-5 = field 5 of the 12th OBX): the ERL segment sequence."""

    def __init__(self, message: Message) -> None:
        counts: dict[str, int] = {}
        self._occurrence: dict[int, int] = {}
        for seg in message.segments:
            counts[seg.id] = counts.get(seg.id, 0) + 1
            self._occurrence[seg.index] = counts[seg.id]

    def __call__(self, seg: Segment, n: int) -> str:
        return f"{seg.id}[{self._occurrence.get(seg.index, 1)}]-{n}"


def _patient(pid: Segment | None) -> PatientIdentity:
    if pid is None:
        return PatientIdentity()
    ins = ins_oid = None
    ipp: InstanceId | None = None
    for rep in range(1, len(pid.repetitions(3)) + 1):
        cx_id = _clean(pid.get(3, rep, 1))
        authority = _oid_of(pid.get(3, rep, 4, 1), pid.get(3, rep, 4, 2))
        id_type = _clean(pid.get(3, rep, 5)).upper()
        if (id_type == "INS" or authority in INS_OIDS) and ins is None:
            ins, ins_oid = cx_id or None, authority
        elif id_type == "PI" and ipp is None and cx_id:
            ipp = InstanceId(root=authority or _clean(pid.get(3, rep, 4, 1)) or "unknown", extension=cx_id)
    traits: dict[str, str | None] = {}
    for rep in range(1, len(pid.repetitions(5)) + 1):
        name_type = _clean(pid.get(5, rep, 7)).upper()
        if name_type == "L":
            traits["birth_family_name"] = _clean(pid.get(5, rep, 1)) or None
            traits["first_given_name"] = _clean(pid.get(5, rep, 2)) or None
            traits["given_names"] = _clean(pid.get(5, rep, 3)) or None
        elif name_type == "D":
            traits["used_family_name"] = _clean(pid.get(5, rep, 1)) or None
    for rep in range(1, len(pid.repetitions(11)) + 1):
        if _clean(pid.get(11, rep, 7)).upper() == "BDL":
            traits["birthplace_cog"] = _clean(pid.get(11, rep, 9)) or None
    birth = _clean(pid.get(7))[:8]
    return PatientIdentity(
        ins=ins,
        ins_oid=ins_oid,
        identity_status=_clean(pid.get(32)).upper() or None,
        ipp=ipp,
        birth_date=birth or None,
        sex=_clean(pid.get(8)).upper() or None,
        **traits,
    )


def _participant(prt: Segment, role: ParticipantRole) -> Participant:
    person = None
    if _clean(prt.get(5)) or _clean(prt.get(5, 1, 2)):
        person = Person(
            id=_clean(prt.get(5)) or None,
            family=_clean(prt.get(5, 1, 2)) or None,
            given=_clean(prt.get(5, 1, 3)) or None,
            id_authority=_oid_of(prt.get(5, 1, 9, 1), prt.get(5, 1, 9, 2)),
            id_type=_clean(prt.get(5, 1, 13)).upper() or None,
        )
    organization = None
    if _clean(prt.get(8)) or _clean(prt.get(8, 1, 10)):
        organization = Organization(
            name=_clean(prt.get(8)) or None,
            id=_clean(prt.get(8, 1, 10)) or None,
            id_authority=_oid_of(prt.get(8, 1, 6, 1), prt.get(8, 1, 6, 2)),
            id_type=_clean(prt.get(8, 1, 7)).upper() or None,
        )
    address = None
    for rep in range(1, len(prt.repetitions(15)) + 1):
        if _clean(prt.get(15, rep, 3)).upper() == "X.400" and _clean(prt.get(15, rep, 4)):
            address = _clean(prt.get(15, rep, 4))
            break
    return Participant(
        role=role,
        person=person,
        organization=organization,
        device=_clean(prt.get(10)) or None,
        address=address,
    )


def _decode_ed(seg: Segment) -> tuple[bytes | None, str | None, bool]:
    """OBX-5 ED: ^TEXT^XML^Base64^<data> -> (bytes, error, padding_repaired).

    Missing '=' padding is repaired (one ANS example ships an unpadded CORPSMAIL); anything else that is not
    Base64 is an error."""
    encoding = _clean(seg.get(5, 1, 4)).upper()
    data = seg.get(5, 1, 5)
    if encoding not in ("BASE64", "A"):
        return None, f"OBX-5.4 encoding must be Base64 (got {encoding[:10] or 'nothing'})", False
    if encoding == "A":
        return data.encode("utf-8"), None, False
    text = "".join(data.split())
    missing = -len(text) % 4
    if missing == 3:
        return None, "OBX-5.5 is not valid Base64 (truncated)", False
    try:
        return base64.b64decode(text + "=" * missing, validate=True), None, missing > 0
    except (binascii.Error, ValueError):
        return None, "OBX-5.5 is not valid Base64", False


def _read_ed(
    seg: Segment, report: ValidationReport, where: str, what: str
) -> tuple[bytes | None, str | None]:
    """:func:`_decode_ed`, reporting a restored padding as a warning (``what`` names the content)."""
    data, error, repaired = _decode_ed(seg)
    if repaired:
        report.add(
            "TRANS-BASE64-PADDING",
            where,
            f"{what} Base64 padding was missing and has been restored",
            severity=Severity.WARNING,
            condition=102,
            source=SOURCE,
        )
    return data, error


def _yes_no(seg: Segment) -> bool | None:
    value = _clean(seg.get(5)).upper()
    return {"Y": True, "N": False}.get(value)


def map_transmission(message: Message, provenance: Provenance) -> TransmissionMessage:
    """Build a :class:`DocumentSubmission` from an ORU^R01 or MDM^T02/T10/T04 of the transmission volet."""
    report = ValidationReport()
    _loc = _Locator(message)
    msh = message.msh
    msg_code = _clean(msh.get(9, 1, 1)).upper()
    event = _clean(msh.get(9, 1, 2)).upper()
    result = TransmissionMessage(submission=None, report=report, event=event)

    if msg_code not in ("ORU", "MDM"):
        report.add(
            "TRANS-MSG-TYPE",
            "MSH-9",
            f"message type {msg_code or '(empty)'} is not ORU or MDM",
            condition=200,
            source=SOURCE,
        )
        return result
    if (msg_code == "ORU" and event != "R01") or (msg_code == "MDM" and event not in MDM_EVENTS):
        report.add(
            "TRANS-MSG-EVENT",
            "MSH-9",
            f"event {msg_code}^{event or '(empty)'} is not part of the volet",
            condition=201,
            source=SOURCE,
        )
        return result

    pid = message.segment("PID")
    pv1 = message.segment("PV1")
    orc = message.segment("ORC")
    obr = message.segment("OBR")
    txa = message.segment("TXA")
    result.orc1 = _clean(orc.get(1)).upper() if orc else None
    if obr and _clean(obr.get(4)):
        result.obr4 = Code(
            code=_clean(obr.get(4)),
            display=_clean(obr.get(4, 1, 2)) or None,
            code_system=_clean(obr.get(4, 1, 3)) or None,
        )
    if txa is not None:
        result.txa12 = _clean(txa.get(12)) or None

    flags: dict[str, object] = {}
    documents: list[Document] = []
    sender: Participant | None = None
    recipients: list[Participant] = []
    reply_to: list[str] = []
    current_obx: Segment | None = None
    last_meta_code: str | None = None
    for seg in message.segments:
        if seg.id == "OBX":
            current_obx = seg
            system = _clean(seg.get(3, 1, 3)).upper().replace(" ", "")
            if system == META_SYSTEM:
                code = _clean(seg.get(3)).upper()
                last_meta_code = code
                if code == "ACK_LECTURE":  # §7.5: an older spelling of ACK_LECTURE_MSS
                    code = "ACK_LECTURE_MSS"
                if code in MetaFlags.CODES:
                    value = _yes_no(seg)
                    if value is None:
                        report.add(
                            "TRANS-META-VALUE",
                            _loc(seg, 5),
                            f"{code} must be Y or N (HL7 table 0136)",
                            condition=103,
                            source=SOURCE,
                        )
                    flags[MetaFlags.CODES[code]] = value
                elif code in ("CORPSMAIL_PS", "CORPSMAIL_PATIENT"):
                    data, error = _read_ed(seg, report, _loc(seg, 5), f"{code}:")
                    if error:
                        report.add(
                            "TRANS-CORPSMAIL", _loc(seg, 5), f"{code}: {error}", condition=102, source=SOURCE
                        )
                    elif data is not None:
                        try:
                            text = data.decode("utf-8")
                        except UnicodeDecodeError:
                            text = data.decode("latin-1")
                        flags["corpsmail_ps" if code == "CORPSMAIL_PS" else "corpsmail_patient"] = text
                else:
                    report.add(
                        "TRANS-META-UNKNOWN",
                        _loc(seg, 3),
                        f"unknown MetaDMPMSS code {code[:40]}",
                        severity=Severity.WARNING,
                        condition=103,
                        source=SOURCE,
                    )
                continue
            last_meta_code = None
            if _clean(seg.get(2)).upper() == "ED":
                result.document_obx.append(seg.index)
                result.obx11 = result.obx11 or _clean(seg.get(11)).upper() or None
                data, error = _read_ed(seg, report, _loc(seg, 5), "document")
                if error or data is None:
                    report.add(
                        "TRANS-DOC-ENCODING",
                        _loc(seg, 5),
                        error or "no document data",
                        condition=102,
                        source=SOURCE,
                    )
                    continue
                try:
                    header = read_cda(data)
                except CdaReadError as exc:
                    report.add(
                        exc.rule,
                        f"{_loc(seg, 5)} {exc.location}",
                        f"embedded CDA: {exc}",
                        condition=102,
                        source="CDA R2",
                    )
                    continue
                result.cda_headers.append(header)
                result.cda_locations.append(_loc(seg, 5))
                for rule, where, text in header.warnings:
                    report.add(
                        rule, f"{_loc(seg, 5)} {where}", text, severity=Severity.WARNING, source="CDA R2"
                    )
                documents.append(Document(metadata=header.metadata, content=Content(data=data)))
        elif seg.id == "PRT":
            if current_obx is None or current_obx.index not in result.document_obx:
                report.add(
                    "TRANS-PRT-POSITION",
                    _loc(seg, 4),
                    "PRT must follow the OBX carrying the document",
                    severity=Severity.WARNING,
                    condition=100,
                    source=SOURCE,
                )
            role_code = _clean(seg.get(4)).upper()
            try:
                role = ParticipantRole(role_code)
            except ValueError:
                report.add(
                    "TRANS-PRT-ROLE",
                    _loc(seg, 4),
                    f"PRT-4 participation {role_code[:10] or '(empty)'} is not SB, RCT or REPLY",
                    condition=103,
                    source=SOURCE,
                )
                continue
            participant = _participant(seg, role)
            if role is ParticipantRole.SENDER:
                sender = sender or participant
            elif role is ParticipantRole.RECIPIENT:
                recipients.append(participant)
            elif participant.address:
                reply_to.append(participant.address)
        elif seg.id == "NTE" and last_meta_code == "DESTMSSANTEPAT":
            flags["mes_fin"] = _clean(seg.get(4)).upper() == "FIN" or flags.get("mes_fin", False)

    # Action [§7.1]: the MDM event decides for MDM; for ORU the document OBX-11, checked against ORC-1 later.
    if msg_code == "MDM":
        action = MDM_EVENTS[event]
    else:
        action = (
            OBX11_ACTIONS.get(result.obx11 or "")
            or ORC1_ACTIONS.get(result.orc1 or "")
            or DocumentAction.INITIAL
        )

    replaced: str | None = None
    if action is DocumentAction.REPLACEMENT:
        if txa is not None and _clean(txa.get(13)):
            replaced = _parse_txa_id(txa, 13)
        elif documents and documents[0].metadata.replaced_document_id:
            replaced = documents[0].metadata.replaced_document_id.xds_unique_id()

    type_code = None
    if msg_code == "MDM" and txa is not None and _clean(txa.get(2)):
        type_code = Code(
            code=_clean(txa.get(2)),
            display=_clean(txa.get(2, 1, 2)) or None,
            code_system=_clean(txa.get(2, 1, 3)) or None,
        )
    else:
        type_code = result.obr4

    result.submission = DocumentSubmission(
        provenance=provenance,
        patient=_patient(pid),
        action=action,
        documents=documents,
        replaced_document_id=replaced,
        flags=MetaFlags(**flags),
        sender=sender,
        recipients=recipients,
        reply_to=reply_to,
        patient_class=_clean(pv1.get(2)).upper() or None if pv1 else None,
        type_code=type_code,
    )
    return result


def _parse_txa_id(txa: Segment, n: int) -> str:
    """TXA-12/13 [§7.3]: ``ext^^root^ISO`` (EI with namespace) or a full OID in EI.1."""
    entity = _clean(txa.get(n, 1, 1))
    universal = _clean(txa.get(n, 1, 3))
    if universal and entity:
        return f"{universal}^{entity}"
    return entity or universal


def provenance_from_msh(message: Message, base: Provenance) -> Provenance:
    """Complete broker provenance with the MSH fields."""
    msh = message.msh
    profiles = [
        _clean(msh.get(21, rep, 1)) + "^" + _clean(msh.get(21, rep, 2))
        for rep in range(1, len(msh.repetitions(21)) + 1)
    ]
    return base.model_copy(
        update={
            "control_id": _clean(msh.get(10)) or None,
            "message_type": "^".join(c for c in (_clean(msh.get(9, 1, i)) for i in (1, 2, 3)) if c) or None,
            "version": _clean(msh.get(12)) or None,
            "profile": "~".join(profiles) or None,
            "sending_application": _clean(msh.get(3)) or None,
            "sending_facility": _clean(msh.get(4)) or None,
            "receiving_application": _clean(msh.get(5)) or None,
            "receiving_facility": _clean(msh.get(6)) or None,
            "processing_id": _clean(msh.get(11)) or None,
        }
    )
