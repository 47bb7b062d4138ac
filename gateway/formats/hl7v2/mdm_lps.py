"""MDM writer of the volet "Transmission au LPS d'un document CDA provenant d'un courriel MSSanté" (LPSMSS,
cisis-facts §7.4 last bullet): one ``MDM^T02|T10|T04^MDM_T02`` HL7 v2.6 message per CDA of a mail received in
the BAL applicative, for the DPI/RIS (the volet's CONSOMMATEUR).

Layout, segment for segment like the ANS examples (``LPS_MSS_V1.0_MDM_T02_DocB64``,
``LPS_MSS_V1.1_MDM_T10_RPLC_N1_Base64``) and the volet's "profils-messages" tables::

    MSH|^~\\&|<app>|<fac>|<app>|<fac>|<ts>||MDM^T02^MDM_T02|<id>|P|2.6|||||FRA|UNICODE UTF-8|||1.1^CISIS_CDA_HL7_LPS
    EVN||<ts>||||<mail Date>
    PID|||<INS>^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS~<IPP>^^^&<OID>&ISO^PI||<NOM>^<Prénom>^<Prénoms>^^^^L||<naissance>|<sexe>|||^^^^^^BDL^^<COG>|...|<PID-32>
    PV1|1|N
    ORC|NW                                   (RO replacement, CA deletion)
    OBR|1|||<type code>^<libellé>^LN
    TXA|1|<type code>|TEXT|||||||||<doc id>|<replaced doc id>||||AU
    OBX|1|ED|<type code>^<libellé>^LN||^text^XML^Base64^<CDA>||||||F          (C replacement, D deletion)
    PRT||UC||SB^Send by^participation|<XCN>|||<XON>|||||||^^X.400^<From>
    PRT||UC||RCT^Result Copies To^participation|||||||||||^^X.400^<BAL applicative>
    PRT||UC||REPLY^Reply To^participation|||||||||||^^X.400^<Reply-To>    (one per Reply-To address)
    OBX|2|ED|<Message-ID>^<Subject>||^text^^Base64^<body>||||||F
    OBX|3|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F
    OBX|4|CWE|INVISIBLE_PATIENT^...        OBX|5|CWE|INVISIBLE_REP_LEGAUX^...        OBX|6|CWE|MODIF_CONF_CODE^...

Decisions (the examples and the text of the volet disagree in places, cisis-facts §7.5):

* ORC-1 is ``NW`` / ``RO`` / ``CA`` as the volet's ORC table says (and §7.1); the T02 example's ``SC`` is taken
  as an example slip, since ORC-1, OBX-11 and the event must agree (§7.1) and ``SC`` matches no event.
* Only the fields the volet lists are written (its tables say "seuls les segments et les champs indiqués ...
  sont à renseigner"); the examples' OBR placer numbers, TXA-4/TXA-22, PV1-3/19 come from a DPI's context the
  gateway does not have. PID per PAM-FR: every ``recordTarget/patientRole/id`` of the CDA in PID-3 (the volet
  requires PID-3 = those ids; INS with CX-4 ``ASIP-SANTE-INS-NIR|NIA&<OID>&ISO`` and CX-5 ``INS``, other ids
  CX-5 ``PI``), PID-5 ``L`` (birth names) and ``D`` (used names), PID-7, PID-8, PID-11 ``BDL`` (birthplace COG),
  PID-32 only when the identity status is known (the CDA does not carry it: the wiring may set
  ``patient.identity_status``; the receiving DPI qualifies the INS itself).
* TXA-12/13 follow the volet's rule: ``<extension>^^<root>^ISO`` when the CDA id has an extension, else the
  root alone in TXA-12.1 (the T10 example's ``<oid>^Organisation-Y`` contradicts that rule).
* The mail OBX (OBX 2): OBX-3.1 is the Message-ID as written in the header (with its angle brackets, as
  ``Original-Message-ID`` of an MDN carries it), OBX-3.2 the decoded subject. OBX-5 "contenu du courriel codé
  en base 64" has two readings, both supported by ``mail_obx``: ``"body"`` (default) puts the base64 of the
  text body (UTF-8), as the ANS examples do (``Q29ycHMgZHUgY291cnJpZWw=`` is "Corps du courriel"), with ED
  ``^text^^Base64^``; ``"rfc822"`` puts the base64 of the whole RFC 5322 mail as received (the reading of
  cisis-facts §7.4; it holds the XDM again, so the MDM grows by about 4/3 of the mail), with ED
  ``^text^RFC822^Base64^``: ED.2 stays ``text`` like the examples so that DPIs parsing them keep working, and
  ED.3 tells the two readings apart.
* Metadata OBX values come from :class:`gateway.delivery.mssante.inbound_mail.MaskingFlags` (derivation
  documented there: XDM/CDA confidentiality codes, N by default, MODIF_CONF_CODE always N).
* MSH-10 defaults to a digest of (Message-ID, document uniqueId, action): the same mail read twice gives the
  same control id, so the DPI can recognise a redelivery.
* Every value is ER7-escaped (:func:`gateway.formats.hl7v2.er7.escape`) component by component; HL7 strings
  taken from METADATA.XML (the SubmissionSet author XCN/XON) are split on ``^``/``&`` and each piece escaped,
  so a ``|``, ``~``, ``\\`` or line break in them cannot break the message. Base64 data is written as is: its
  alphabet holds no ER7 delimiter.

MSH-18 is ``UNICODE UTF-8``: encode the returned text as UTF-8.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from lxml import etree

from gateway.formats.cda.header import NS as CDA_NS
from gateway.formats.hl7v2.ack import msh_segment
from gateway.formats.hl7v2.er7 import Delimiters, escape, unescape
from gateway.model import INS_OIDS, Code, DocumentAction, InstanceId

if TYPE_CHECKING:  # types only: a format module does not depend on delivery at run time
    from gateway.delivery.mssante.inbound_mail import IncomingDocument, IncomingMail

VERSION = "2.6"
PROFILE = "1.1^CISIS_CDA_HL7_LPS"
MESSAGE_STRUCTURE = "MDM_T02"
#: action -> (MDM event, ORC-1, OBX-11 of the document OBX) [cisis-facts §7.1].
EVENTS: dict[DocumentAction, tuple[str, str, str]] = {
    DocumentAction.INITIAL: ("T02", "NW", "F"),
    DocumentAction.REPLACEMENT: ("T10", "RO", "C"),
    DocumentAction.DELETION: ("T04", "CA", "D"),
}
#: Type code systems (OBR-4.3 / OBX-3.3): LOINC and TRE_A05, the systems of JDV J07.
CODE_SYSTEM_NAMES = {"2.16.840.1.113883.6.1": "LN", "1.2.250.1.213.1.1.4.12": "TRE_A05"}
#: CX-4.1 namespace of each INS authority (the ANS examples use ASIP-SANTE-INS-NIR for NIR test OIDs too).
INS_NAMESPACES = {
    "1.2.250.1.213.1.4.8": "ASIP-SANTE-INS-NIR",
    "1.2.250.1.213.1.4.9": "ASIP-SANTE-INS-NIA",
    "1.2.250.1.213.1.4.10": "ASIP-SANTE-INS-NIR",
    "1.2.250.1.213.1.4.11": "ASIP-SANTE-INS-NIR",
}
META_SYSTEM = "MetaDMPMSS"
YES_NO_SYSTEM = "expandedYes-NoIndicator"
#: The four metadata OBX of the volet, in its order: (OBX-3.1, OBX-3.2, MaskingFlags field).
META_OBX: tuple[tuple[str, str, str], ...] = (
    ("MASQUE_PS", "Masqué aux professionnels de Santé", "masque_ps"),
    ("INVISIBLE_PATIENT", "Document Non Visible par le patient", "invisible_patient"),
    ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient", "invisible_rep_legaux"),
    ("MODIF_CONF_CODE", "Modification Confidentiality Code", "modif_conf_code"),
)
MailObx = Literal["body", "rfc822"]
D = Delimiters()


def _e(value: str | None) -> str:
    return escape(value or "", D)


def _comp(*components: str | None) -> str:
    """Escaped components joined with ``^``, trailing empty ones dropped."""
    return "^".join(_e(c) for c in components).rstrip("^")


def _reencode(hl7: str | None) -> str:
    """An HL7 composite read from outside (XCN/XON of METADATA.XML) rewritten with every piece escaped: each
    piece is unescaped first, so a sender's own ``\\S\\`` survives and a raw ``|`` or ``~`` cannot break out."""
    if not hl7:
        return ""
    return "^".join(
        "&".join(_e(unescape(sub, D)) for sub in comp.split("&")) for comp in hl7.split("^")
    ).rstrip("^")


def _segment(sid: str, fields: Sequence[str]) -> str:
    """``sid|f1|f2...`` with trailing empty fields dropped; ``fields[0]`` is field 1."""
    return "|".join([sid, *fields]).rstrip("|")


def _code(code: Code | None) -> str:
    if code is None:
        return ""
    system = CODE_SYSTEM_NAMES.get((code.code_system or "").strip(), code.code_system)
    return _comp(code.code, code.display, system)


def _ei(ii: InstanceId | None) -> str:
    """TXA-12/13 [cisis-facts §7.3]: ``ext^^root^ISO`` with an extension, else the root alone."""
    if ii is None:
        return ""
    return _comp(ii.extension, None, ii.root, "ISO") if ii.extension else _e(ii.root)


def _ts(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y%m%d%H%M%S") if moment.tzinfo else moment.strftime("%Y%m%d%H%M%S")
    )


def _text(el: etree._Element | None, path: str) -> list[str]:
    """Texts of the elements at ``path`` below ``el``."""
    if el is None:
        return []
    found = el.xpath(path, namespaces=CDA_NS)
    return [" ".join(f.text.split()) for f in found if f.text and f.text.strip()]


def _names(doc: IncomingDocument) -> str:
    """PID-5 [PAM-FR]: ``L`` birth family^first given^given list, then ``D`` used family^used given. Read from
    the CDA name so that a name without qualifiers (a non-INS CDA) still fills the ``L`` repetition."""
    tree = doc.header.tree
    name = (
        tree.getroot().find("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:name", CDA_NS)
        if tree is not None
        else None
    )
    birth = _text(name, "hl7:family[@qualifier='BR']") or _text(name, "hl7:family[not(@qualifier)]")
    first = _text(name, "hl7:given[@qualifier='BR']")
    given_list = _text(name, "hl7:given[not(@qualifier)]")
    used = _text(name, "hl7:family[@qualifier='CL']")
    used_given = _text(name, "hl7:given[@qualifier='CL']")
    reps: list[str] = []
    if birth:
        first_given = first[0] if first else (given_list[0].split()[0] if given_list else None)
        reps.append(
            _comp(birth[0], first_given, given_list[0] if given_list else None, None, None, None, "L")
        )
    if used:
        reps.append(_comp(used[0], used_given[0] if used_given else None, None, None, None, None, "D"))
    return "~".join(reps)


def _pid(doc: IncomingDocument) -> str:
    patient = doc.patient
    ids: list[str] = []
    ordered = sorted(doc.patient_ids, key=lambda ii: ii.root not in INS_OIDS)  # INS first, as PAM-FR shows
    for ii in ordered:
        if not ii.extension:
            continue
        # CX-4 has sub-components: each piece is escaped, the '&' between them is not.
        if ii.root in INS_OIDS:
            authority, id_type = f"{_e(INS_NAMESPACES[ii.root])}&{_e(ii.root)}&ISO", "INS"
        else:
            authority, id_type = f"&{_e(ii.root)}&ISO", "PI"
        ids.append(f"{_e(ii.extension)}^^^{authority}^{id_type}")
    fields = [""] * 32
    fields[2] = "~".join(ids)  # PID-3 (index = field - 1)
    fields[4] = _names(doc)  # PID-5
    fields[6] = _e(patient.birth_date)  # PID-7
    fields[7] = _e(patient.sex)  # PID-8
    if patient.birthplace_cog:
        fields[10] = f"^^^^^^BDL^^{_e(patient.birthplace_cog)}"  # PID-11
    fields[31] = _e(patient.identity_status)  # PID-32
    return _segment("PID", fields)


def _prt(role: str, label: str, address: str, person: str = "", organization: str = "") -> str:
    fields = [""] * 15
    fields[1] = "UC"  # PRT-2 action code: unchanged
    fields[3] = _comp(role, label, "participation")  # PRT-4
    fields[4] = person  # PRT-5 XCN
    fields[7] = organization  # PRT-8 XON
    fields[14] = f"^^X.400^{_e(address)}"  # PRT-15 XTN: .3 equipment type, .4 address
    return _segment("PRT", fields)


def _obx(set_id: int, value_type: str, identifier: str, value: str, status: str) -> str:
    fields = [""] * 11
    fields[0], fields[1], fields[2], fields[4], fields[10] = (
        str(set_id),
        value_type,
        identifier,
        value,
        status,
    )
    return _segment("OBX", fields)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def default_control_id(mail: IncomingMail, doc: IncomingDocument) -> str:
    """MSH-10 derived from the mail and the document, stable across redeliveries (20 hex characters)."""
    key = f"{mail.message_id}|{doc.unique_id}|{doc.action.value}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def build_lps_mdm(
    mail: IncomingMail,
    *,
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    document: IncomingDocument | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
    mail_obx: MailObx = "body",
    recipients: Sequence[str] | None = None,
    processing_id: str = "P",
) -> str:
    """The MDM (ER7 text, CR terminators) for ``document`` of ``mail``; ``document`` may be omitted when the
    mail holds a single CDA (otherwise use :func:`build_lps_mdms`, one MDM per document, as an MDM carries
    exactly one).

    ``recipients`` are the PRT RCT addresses: the BAL applicative the mail was read from; by default the mail's
    ``Original-Recipient``, else its To addresses."""
    if document is None:
        if len(mail.documents) != 1:
            raise ValueError(f"the mail holds {len(mail.documents)} documents: use build_lps_mdms")
        document = mail.documents[0]
    if mail_obx not in ("body", "rfc822"):
        raise ValueError("mail_obx must be 'body' or 'rfc822'")
    event, order_control, result_status = EVENTS[document.action]
    meta = document.header.metadata
    moment = now or datetime.now(UTC)
    ts = _ts(moment)
    lines = [
        msh_segment(
            sending=(_e(sending_app), _e(sending_facility)),
            receiving=(_e(receiving_app), _e(receiving_facility)),
            timestamp=ts,
            message_type=f"MDM^{event}^{MESSAGE_STRUCTURE}",
            control_id=_e(control_id or default_control_id(mail, document)),
            processing=_e(processing_id),
            version=VERSION,
            profile=PROFILE,
        ),
        # EVN-2 recorded now; EVN-6 the event itself: when the sender sent the mail.
        _segment("EVN", ["", ts, "", "", "", _ts(mail.headers.date) if mail.headers.date else ""]),
        _pid(document),
        "PV1|1|N",  # PV1-2 N (not applicable): the volet's fixed value, there is no venue
        f"ORC|{order_control}",
        _segment("OBR", ["1", "", "", _code(meta.type_code)]),
    ]
    txa = [""] * 17
    txa[0], txa[1], txa[2] = "1", _e(meta.type_code.code if meta.type_code else ""), "TEXT"
    txa[11] = _ei(meta.document_id)  # TXA-12
    if document.action is DocumentAction.REPLACEMENT:
        txa[12] = _ei(document.replaced_id)  # TXA-13, required on T10
    txa[16] = "AU"  # TXA-17 authenticated
    lines.append(_segment("TXA", txa))
    lines.append(
        _obx(1, "ED", _code(meta.type_code), f"^text^XML^Base64^{_b64(document.content)}", result_status)
    )

    headers = mail.headers
    lines.append(
        _prt(
            "SB",
            "Send by",
            mail.sender,
            person=_reencode(mail.sender_person),
            organization=_reencode(mail.sender_organization),
        )
    )
    if recipients is None:
        recipients = [headers.original_recipient] if headers.original_recipient else headers.to
    lines.extend(_prt("RCT", "Result Copies To", address) for address in recipients)
    lines.extend(_prt("REPLY", "Reply To", address) for address in headers.reply_to)

    if mail_obx == "rfc822":
        mail_value = f"^text^RFC822^Base64^{_b64(mail.raw)}"
    else:
        mail_value = f"^text^^Base64^{_b64(mail.body_text.encode('utf-8'))}"
    lines.append(_obx(2, "ED", _comp(mail.message_id, headers.subject), mail_value, "F"))
    for set_id, (code, label, flag) in enumerate(META_OBX, start=3):
        yes_no = "Y" if getattr(document.masking, flag) else "N"
        lines.append(_obx(set_id, "CWE", _comp(code, label, META_SYSTEM), f"{yes_no}^^{YES_NO_SYSTEM}", "F"))
    return "\r".join(lines) + "\r"


def build_lps_mdms(
    mail: IncomingMail,
    *,
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    control_id: str | None = None,
    now: datetime | None = None,
    mail_obx: MailObx = "body",
    recipients: Sequence[str] | None = None,
    processing_id: str = "P",
) -> list[str]:
    """One MDM per CDA of the mail, in the XDM's order. A given ``control_id`` gets ``-1``, ``-2``... when the
    mail holds several documents (MSH-10 must differ from message to message)."""
    several = len(mail.documents) > 1
    return [
        build_lps_mdm(
            mail,
            document=doc,
            sending_app=sending_app,
            sending_facility=sending_facility,
            receiving_app=receiving_app,
            receiving_facility=receiving_facility,
            control_id=(f"{control_id}-{n}" if several else control_id) if control_id else None,
            now=now,
            mail_obx=mail_obx,
            recipients=recipients,
            processing_id=processing_id,
        )
        for n, doc in enumerate(mail.documents, start=1)
    ]
