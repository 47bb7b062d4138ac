"""Reads a mail received in the BAL applicative (applicative mailbox) for the reverse flow of the volet
"Transmission au LPS d'un document CDA provenant d'un courriel MSSanté" (cisis-facts §7.4 last bullet, §8).

:func:`read_incoming_mail` takes the RFC 5322 bytes as fetched from the mailbox and returns an
:class:`IncomingMail`: the headers the MDM and the error MDN need (Message-ID, From, Reply-To, Subject, Date,
Disposition-Notification-To, Original-Recipient, X-MSS-*), the text body, the ``IHE_XDM.ZIP`` attachment read by
:func:`gateway.delivery.mssante.xdm.read_xdm`, every CDA inside it read by
:func:`gateway.formats.cda.header.read_cda`, and the PDF attachments. No I/O: the IMAP reading and the wiring
live elsewhere.

Anything that prevents building the MDM raises :class:`MailRefused` (``rule``, ``location``, ``message``) with
the headers that could be read, so that the caller can still answer with an error MDN
(:mod:`gateway.delivery.mssante.error_mdn`). Rule codes are stable:

* ``MSS-IN-NOT-MIME``: empty input, or no header section at all (not an RFC 5322 message);
* ``MSS-IN-TOO-LARGE``: more than ``max_bytes``; only the header section is read;
* ``MSS-IN-TOO-COMPLEX``: more than :data:`MAX_PARTS` MIME parts or nesting deeper than :data:`MAX_DEPTH`;
* ``MSS-IN-REPORT``: a DSN/MDN (``multipart/report``): it belongs to
  :func:`gateway.delivery.mssante.receipts.parse_receipt` and must never be answered (mail loops);
* ``MSS-IN-NO-FROM``: no usable From address (the sender PRT requires it);
* ``MSS-IN-NO-XDM``: no ``IHE_XDM.ZIP`` attachment, and no other zip attachment that reads as XDM;
* ``MSS-IN-SEVERAL-XDM``: more than one ``IHE_XDM.ZIP``;
* ``MSS-IN-XDM-<...>``: the XDM reader refused the zip; ``<...>`` is :class:`XdmError`'s rule without its
  ``XDM-`` prefix (``MSS-IN-XDM-UNSAFE-PATH``, ``MSS-IN-XDM-NO-METADATA``, ``MSS-IN-XDM-TOO-LARGE``...);
  ``MSS-IN-XDM-ACTION`` is an action slot that is neither ``C`` nor ``D``;
* ``MSS-IN-NO-CDA``: the XDM holds no CDA document;
* ``MSS-IN-CDA-<...>``: a CDA of the XDM is unreadable (``MSS-IN-CDA-XML-NOT-WELL-FORMED``,
  ``MSS-IN-CDA-ROOT``, ``MSS-IN-CDA-ID``...: :class:`CdaReadError`'s rule without its ``CDA-`` prefix);
* ``MSS-IN-REPLACEMENT-NO-PARENT``: a replacement whose CDA has no ``relatedDocument[@typeCode='RPLC']``
  (TXA-13 is required on a T10 and the receiver finds the replaced document there, cisis-facts §7.3);
* ``MSS-IN-PATIENT-MISMATCH``: the XDM DocumentEntry patientId is an INS other than the CDA's INS.

``location`` names where: ``From``, ``/`` (the whole mail), ``IHE_XDM.ZIP > IHE_XDM/SUBSET01/DOC0001.XML >
/ClinicalDocument/id``... (attachment, then zip entry, then XPath or line).

Decisions where the volet says nothing:

* The XDM is the attachment whose file name is ``IHE_XDM.ZIP`` in any case; failing that, a zip attachment
  (by type, ``.zip`` name or ``PK`` signature) is accepted when it reads as XDM; a zip that is not XDM (no
  ``METADATA.XML``) is then ignored, but one that does hold an ``IHE_XDM/`` tree and is refused for safety
  (zip-slip, bomb...) is reported with its XDM rule. Embedded ``message/rfc822`` parts (forwarded mails) are not
  searched: the document must come from the mail's own sender.
* Action: the XDM extra-metadata slot :data:`ACTION_SLOT` (``C`` replacement, ``D`` deletion, as
  :mod:`xdm_metadata` writes it) wins; without it, a CDA with ``relatedDocument[@typeCode='RPLC']`` is a
  replacement, anything else an initial transmission. The slot name is the gateway's assumption (cisis-facts
  §7.3 [B]): another PFI may signal a replacement by the CDA alone, hence the fallback. It has a cost: a sender
  that transmits a new version as "initial" (the gateway's own forward flow writes no slot for an initial
  transmission, e.g. demo sample 04 whose N1 CR-IMG carries an RPLC) is read as a replacement (T10).
  ``read_incoming_mail(..., replacement_from_cda=False)`` makes the slot the only source (no slot = T02).
* All or nothing: a mail whose XDM holds an unreadable CDA is refused as a whole, even if another CDA is fine, so
  that one error MDN describes one mail. DocumentEntries that are not CDA (a PDF rendering declared in the XDM)
  are skipped with a warning.
* Masking flags (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX) are Y when the DocumentEntry's
  confidentialityCode classifications (or, should a sender put them there, the CDA confidentialityCode) carry
  the TRE_A07 code of the same name (``1.2.250.1.213.1.1.4.13``; ``INVISIBLE_REPRESENTANTS_LEGAUX`` for the
  legal representatives); N otherwise. The CDA's own N/R/V level is not mapped to any of them: the CI-SIS keeps
  masking in the XDS metadata only. MODIF_CONF_CODE ("the transaction updates the visibility metadata") is
  always N: nothing in an MSSanté mail or XDM says that a transmission only changes a confidentiality code.
* A mail without Message-ID gets a deterministic one derived from its bytes (warning ``MSS-IN-NO-MESSAGE-ID``):
  the MDM's mail OBX-3.1 needs one, and the same mail fetched twice gets the same id.
* The sender identity for the PRT SB (PS and/or structure) is the XDM SubmissionSet author (authorPerson XCN,
  authorInstitution XON) when present: a declaration of the sending system, as the volet's PRT-5/PRT-8 are
  "requis si connu". The mail From address is the authenticated part (MSSanté operators check it).

``repr`` of every class here shows counts and codes only: no names, INS, addresses, subjects or bodies.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import errors as email_errors
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import getaddresses
from typing import Literal

from lxml import etree

from gateway.delivery.mssante.xdm import (
    MAX_ENTRY_BYTES,
    MAX_TOTAL_BYTES,
    XdmEntry,
    XdmError,
    XdmPackage,
    read_xdm,
)
from gateway.delivery.mssante.xdm_metadata import (
    ACTION_SLOT,
    DE_CONFIDENTIALITY_CODE,
    DE_UNIQUE_ID,
    RIM_NS,
    SS_AUTHOR,
)
from gateway.formats.cda.header import NS as CDA_NS
from gateway.formats.cda.header import CdaHeader, CdaReadError, read_cda
from gateway.formats.cda.standalone import is_cda
from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from gateway.model import INS_OIDS, Code, DocumentAction, InstanceId, PatientIdentity

#: Largest mail accepted (RFC 5322 bytes as fetched); the header section of a larger one is still read.
MAX_BYTES = 25 * 1024 * 1024
#: Bounds on the MIME tree: a real MSSanté mail has a body, an XDM and a PDF or two.
MAX_PARTS = 200
MAX_DEPTH = 10
#: How much of a too-large mail is read to find its header section.
HEAD_BYTES = 256 * 1024
XDM_FILENAME = "ihe_xdm.zip"
ZIP_TYPES = frozenset(
    {"application/zip", "application/x-zip", "application/x-zip-compressed", "multipart/x-zip"}
)
#: TRE_A07 masking codes (cisis-facts §1) -> :class:`MaskingFlags` field. The HL7v2 OBX spells the third one
#: ``INVISIBLE_REP_LEGAUX``; both spellings are read.
MASKING_SYSTEM = "1.2.250.1.213.1.1.4.13"
MASKING_CODES = {
    "MASQUE_PS": "masque_ps",
    "INVISIBLE_PATIENT": "invisible_patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "invisible_rep_legaux",
    "INVISIBLE_REP_LEGAUX": "invisible_rep_legaux",
}
ACTIONS = {"C": DocumentAction.REPLACEMENT, "D": DocumentAction.DELETION}
#: Rules after which no error notification may be sent: nobody to answer, or answering would loop.
SILENT_RULES = frozenset({"MSS-IN-NOT-MIME", "MSS-IN-REPORT"})

Warn = tuple[str, str, str]
_PATIENT_IDS = etree.XPath("hl7:recordTarget/hl7:patientRole/hl7:id", namespaces=CDA_NS)
_METADATA_NAME = re.compile(r"(?:^|/)ihe_xdm/([^/]+)/metadata\.xml$", re.IGNORECASE)
_R = f"{{{RIM_NS}}}"
# What the email package may raise while parsing a malformed header value lazily, on first access.
_HEADER_ERRORS = (email_errors.MessageError, IndexError, ValueError, TypeError, AttributeError, LookupError)


class MailRefused(ValueError):
    """The mail cannot become an MDM. ``rule`` is a stable code (module docstring), ``location`` where the
    problem is, ``headers`` what could be read of the mail (None when not even that), for the error MDN."""

    def __init__(self, rule: str, location: str, message: str, *, headers: MailHeaders | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.location = location
        self.headers = headers

    @property
    def notifiable(self) -> bool:
        """Whether an error MDN / error mail may be sent back: the headers were read, the mail is not a report
        (answering a DSN/MDN loops) and there is an address to answer."""
        return (
            self.rule not in SILENT_RULES and self.headers is not None and bool(self.headers.reply_address())
        )

    def __repr__(
        self,
    ) -> str:  # locations may quote zip entry names, which senders sometimes build from names
        return f"MailRefused(rule={self.rule!r})"


@dataclass(slots=True, repr=False)
class MailHeaders:
    """The header fields the reverse flow uses, decoded (RFC 2047) and unfolded; addresses as addr-specs."""

    message_id: str | None = None
    sender: str | None = None  # From
    reply_to: list[str] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subject: str = ""
    date: datetime | None = None
    disposition_notification_to: list[str] = field(default_factory=list)
    original_recipient: str | None = None  # the address part of ``Original-Recipient: rfc822; <addr>``
    return_path: str | None = None
    auto_submitted: str | None = None
    #: ``X-MSS-*`` fields by upper-cased name (``X-MSS-CODECDA`` may repeat: one value per CDA).
    x_mss: dict[str, list[str]] = field(default_factory=dict)
    #: The header section as received (CRLF or LF), for a ``text/rfc822-headers`` part.
    raw: bytes = b""

    def reply_address(self, *, mdn: bool = True) -> str | None:
        """Where an error notification goes: Disposition-Notification-To (only for an MDN), else Reply-To, else
        From."""
        if mdn and self.disposition_notification_to:
            return self.disposition_notification_to[0]
        if self.reply_to:
            return self.reply_to[0]
        return self.sender

    def __repr__(self) -> str:
        return (
            f"MailHeaders(x_mss={sorted(self.x_mss)}, mdn_requested={bool(self.disposition_notification_to)})"
        )


@dataclass(slots=True, repr=False)
class MailAttachment:
    filename: str | None
    content_type: str
    data: bytes

    def __repr__(self) -> str:  # file names are often built from the patient's name
        return f"MailAttachment({self.content_type}, {len(self.data)} bytes)"


@dataclass(slots=True)
class MaskingFlags:
    """The four MetaDMPMSS flags of the LPS MDM (module docstring for how they are derived)."""

    masque_ps: bool = False
    invisible_patient: bool = False
    invisible_rep_legaux: bool = False
    modif_conf_code: bool = False


@dataclass(slots=True, repr=False)
class IncomingDocument:
    """One CDA of the XDM, with what the MDM needs."""

    path: str  # entry name in the zip (IHE_XDM/SUBSET01/DOC0001.XML)
    content: bytes  # the CDA bytes exactly as in the zip
    header: CdaHeader
    action: DocumentAction
    action_source: Literal["xdm", "cda", "default"]
    entry: XdmEntry
    confidentiality: list[Code] = field(default_factory=list)  # DocumentEntry confidentialityCode(s)
    masking: MaskingFlags = field(default_factory=MaskingFlags)
    patient_ids: list[InstanceId] = field(default_factory=list)  # every recordTarget/patientRole/id

    @property
    def patient(self) -> PatientIdentity:
        return self.header.patient

    @property
    def unique_id(self) -> str:
        return self.header.metadata.unique_id

    @property
    def replaced_id(self) -> InstanceId | None:
        return self.header.metadata.replaced_document_id

    def __repr__(self) -> str:
        return (
            f"IncomingDocument(action={self.action.value}, from={self.action_source}, "
            f"level={self.header.metadata.level}, {len(self.content)} bytes)"
        )


@dataclass(slots=True, repr=False)
class IncomingMail:
    raw: bytes
    headers: MailHeaders
    body_text: str
    xdm: MailAttachment
    package: XdmPackage
    documents: list[IncomingDocument]
    pdfs: list[MailAttachment] = field(default_factory=list)
    #: XDM SubmissionSet author: HL7v2 XCN / XON strings as METADATA.XML holds them (not yet ER7-escaped).
    sender_person: str | None = None
    sender_organization: str | None = None
    warnings: list[Warn] = field(default_factory=list)

    @property
    def message_id(self) -> str:
        return self.headers.message_id or ""

    @property
    def subject(self) -> str:
        return self.headers.subject

    @property
    def sender(self) -> str:
        return self.headers.sender or ""

    @property
    def reply_to(self) -> list[str]:
        return self.headers.reply_to

    @property
    def disposition_notification_to(self) -> list[str]:
        """Non-empty when the sender asked for an MDN."""
        return self.headers.disposition_notification_to

    def __repr__(self) -> str:
        actions = ",".join(d.action.value for d in self.documents)
        return (
            f"IncomingMail({len(self.raw)} bytes, documents=[{actions}], pdfs={len(self.pdfs)}, "
            f"warnings={[w[0] for w in self.warnings]})"
        )


# ------------------------------------------------------------------------------------------------ headers


def _addresses(msg: Message, name: str) -> list[str]:
    """The addr-specs of an address header (``getaddresses`` also reads fields the policy leaves unstructured,
    such as Disposition-Notification-To and Return-Path)."""
    try:
        values = [str(v) for v in msg.get_all(name) or []]
    except _HEADER_ERRORS:
        return []
    out: list[str] = []
    for _, spec in getaddresses(values):
        spec = spec.strip()
        if "@" in spec and spec not in out:
            out.append(spec)
    return out


def _text(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except _HEADER_ERRORS:
        return None
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _date(msg: Message) -> datetime | None:
    try:
        value = msg.get("Date")
        return getattr(value, "datetime", None) if value is not None else None
    except _HEADER_ERRORS:
        return None


def _head(raw: bytes) -> bytes:
    """The header section: everything before the first empty line (bounded)."""
    head = raw[:HEAD_BYTES]
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = head.find(sep)
        if i >= 0:
            return head[: i + len(sep)]
    return head


def _headers(msg: Message, raw: bytes) -> MailHeaders:
    message_id = _text(msg, "Message-ID")
    original = _text(msg, "Original-Recipient")
    if original and ";" in original:
        original = original.split(";", 1)[1].strip()
    x_mss: dict[str, list[str]] = {}
    for name in dict.fromkeys(n.upper() for n in msg if n.upper().startswith("X-MSS-")):
        # get_all is case-insensitive: one pass per distinct name, in order of first appearance.
        x_mss[name] = [" ".join(str(v).split()) for v in msg.get_all(name) or [] if str(v).strip()]
    senders = _addresses(msg, "From")
    return MailHeaders(
        message_id=message_id.split()[0] if message_id else None,
        sender=senders[0] if senders else None,
        reply_to=_addresses(msg, "Reply-To"),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        subject=_text(msg, "Subject") or "",
        date=_date(msg),
        disposition_notification_to=_addresses(msg, "Disposition-Notification-To"),
        original_recipient=original or None,
        return_path=(_addresses(msg, "Return-Path") or [None])[0],
        auto_submitted=_text(msg, "Auto-Submitted"),
        x_mss=x_mss,
        raw=_head(raw),
    )


def read_headers(raw: bytes) -> MailHeaders | None:
    """Only the header section of ``raw`` (for a mail refused before it could be parsed); None if there is
    none."""
    head = _head(raw)
    try:
        msg = message_from_bytes(head if head.endswith(b"\n") else head + b"\n\n", policy=policy.default)
    except (email_errors.MessageError, ValueError, LookupError, TypeError):
        return None
    return _headers(msg, raw) if len(msg) else None


# ------------------------------------------------------------------------------------------------ MIME walk


def _leaves(msg: Message, headers: MailHeaders) -> Iterator[Message]:
    """Non-multipart parts, depth-first in order; ``message/rfc822`` parts are leaves (not searched)."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > MAX_PARTS or depth > MAX_DEPTH:
            raise MailRefused(
                "MSS-IN-TOO-COMPLEX",
                "/",
                f"more than {MAX_PARTS} MIME parts or nesting deeper than {MAX_DEPTH}",
                headers=headers,
            )
        if part.get_content_maintype() == "multipart":
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
            continue
        yield part


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except _HEADER_ERRORS:
        return None
    return name.strip() if name else None


def _body_text(msg: Message) -> str:
    """The text/plain body (text/html when there is no plain one), decoded, without its final line break;
    '' when there is none."""
    if not isinstance(msg, EmailMessage):
        return ""
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, UnicodeError, KeyError, ValueError):
        # Unknown or lying charset: keep the text readable rather than refuse the document for its body.
        return _payload(body).decode("utf-8", "replace").rstrip("\r\n")
    # The line break that ends every MIME text part is transport, not text (the ANS example's OBX carries
    # "Corps du courriel" without one).
    return content.rstrip("\r\n") if isinstance(content, str) else ""


def _is_zip(part: Message, name: str | None, data: bytes) -> bool:
    return (
        part.get_content_type() in ZIP_TYPES
        or bool(name and name.lower().endswith(".zip"))
        or data.startswith(b"PK\x03\x04")
    )


def _is_pdf(part: Message, name: str | None, data: bytes) -> bool:
    return (
        part.get_content_type() == "application/pdf"
        or bool(name and name.lower().endswith(".pdf"))
        or data.startswith(b"%PDF-")
    )


# ------------------------------------------------------------------------------------------------ XDM extras


@dataclass(slots=True)
class _Extras:
    """What :func:`read_xdm` does not expose: confidentiality classifications and the SubmissionSet author."""

    confidentiality: dict[tuple[str, str], list[Code]] = field(default_factory=dict)  # (subset, key) -> codes
    author_person: str | None = None
    author_institution: str | None = None


def _slot_values(el: etree._Element, name: str) -> list[str]:
    return [
        (v.text or "").strip()
        for v in el.iterfind(f"{_R}Slot[@name='{name}']/{_R}ValueList/{_R}Value")
        if (v.text or "").strip()
    ]


def _extras(data: bytes) -> _Extras:
    """Second look at the METADATA.XML files of a zip :func:`read_xdm` has accepted (so names and sizes are
    known to be safe); reads are still bounded and the XML still goes through the hardened parser."""
    extras = _Extras()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            m = _METADATA_NAME.search(info.filename)
            if not m or "__macosx/" in info.filename.lower():
                continue
            subset = m.group(1).lower()
            with zf.open(info) as fh:
                xml = fh.read(MAX_ENTRY_BYTES + 1)
            root = parse_untrusted(xml, max_bytes=MAX_ENTRY_BYTES).getroot()
            for package in root.iter(f"{_R}RegistryPackage"):
                for cl in package.iterfind(f"{_R}Classification[@classificationScheme='{SS_AUTHOR}']"):
                    extras.author_person = extras.author_person or next(
                        iter(_slot_values(cl, "authorPerson")), None
                    )
                    extras.author_institution = extras.author_institution or next(
                        iter(_slot_values(cl, "authorInstitution")), None
                    )
            for eo in root.iter(f"{_R}ExtrinsicObject"):
                codes = [
                    Code(
                        code=cl.get("nodeRepresentation", "").strip(),
                        code_system=next(iter(_slot_values(cl, "codingScheme")), None),
                    )
                    for cl in eo.iterfind(
                        f"{_R}Classification[@classificationScheme='{DE_CONFIDENTIALITY_CODE}']"
                    )
                    if cl.get("nodeRepresentation", "").strip()
                ]
                keys = [f"uri:{u}" for u in _slot_values(eo, "URI")[:1]]
                for ei in eo.iterfind(f"{_R}ExternalIdentifier[@identificationScheme='{DE_UNIQUE_ID}']"):
                    if ei.get("value"):
                        keys.append(f"uid:{ei.get('value')}")
                for key in keys:
                    extras.confidentiality[(subset, key)] = codes
    return extras


# ------------------------------------------------------------------------------------------------ documents


def _masking(codes: list[Code]) -> MaskingFlags:
    flags = MaskingFlags()
    for code in codes:
        name = MASKING_CODES.get(code.code.strip().upper())
        # A masking code from another system would be a different concept: only TRE_A07 (or no system given).
        if name and (code.code_system or MASKING_SYSTEM).strip() == MASKING_SYSTEM:
            setattr(flags, name, True)
    return flags


def _cx_ins(cx: str | None) -> tuple[str, str] | None:
    """``<id>^^^&<OID>&ISO^<type>`` -> (id, OID) when the OID is an INS authority."""
    if not cx:
        return None
    parts = cx.split("^")
    authority = parts[3].split("&") if len(parts) > 3 else []
    oid = authority[1].strip() if len(authority) > 1 else ""
    return (parts[0].strip(), oid) if oid in INS_OIDS and parts[0].strip() else None


def _action_values(slots: dict[str, list[str]]) -> list[str]:
    """The action extra metadata. The IG names no slot (cisis-facts §7.3, §11.4): ours is :data:`ACTION_SLOT`;
    another sender's slot called ``action`` or ``...:action`` (any case) is read the same way."""
    if ACTION_SLOT in slots:
        return slots[ACTION_SLOT]
    for name, values in slots.items():
        lowered = name.lower()
        if lowered == "action" or lowered.endswith((":action", ".action", "/action")):
            return values
    return []


def _document(
    content: bytes,
    entry: XdmEntry,
    path: str,
    where: str,
    extras: _Extras,
    headers: MailHeaders,
    warnings: list[Warn],
    replacement_from_cda: bool,
) -> IncomingDocument:
    try:
        header = read_cda(content)
    except CdaReadError as exc:
        rule = exc.rule.removeprefix("CDA-")
        raise MailRefused(
            f"MSS-IN-CDA-{rule}", f"{where} > {exc.location}", f"CDA: {exc}", headers=headers
        ) from None
    meta = header.metadata
    slot = [v.strip().upper() for v in _action_values(entry.slots) if v.strip()]
    action_source: Literal["xdm", "cda", "default"]
    if slot:
        if slot[0] not in ACTIONS:
            raise MailRefused(
                "MSS-IN-XDM-ACTION",
                f"{where} ({ACTION_SLOT})",
                f"action slot value must be C or D (got {slot[0][:5]!r})",
                headers=headers,
            )
        action, action_source = ACTIONS[slot[0]], "xdm"
    elif replacement_from_cda and meta.replaced_document_id is not None:
        action, action_source = DocumentAction.REPLACEMENT, "cda"
    else:
        action, action_source = DocumentAction.INITIAL, "default"
    if action is DocumentAction.REPLACEMENT and meta.replaced_document_id is None:
        raise MailRefused(
            "MSS-IN-REPLACEMENT-NO-PARENT",
            f"{where} > /ClinicalDocument/relatedDocument",
            "replacement requested but the CDA names no replaced document (relatedDocument RPLC)",
            headers=headers,
        )
    xdm_ins = _cx_ins(entry.patient_id)
    patient = header.patient
    if xdm_ins and patient.ins_present and xdm_ins[0] != patient.ins:
        # The MDM's PID comes from the CDA: refuse rather than file a document under the wrong patient.
        raise MailRefused(
            "MSS-IN-PATIENT-MISMATCH",
            f"{where} > /ClinicalDocument/recordTarget/patientRole/id",
            "the XDM DocumentEntry patientId is not the CDA's INS",
            headers=headers,
        )
    if entry.unique_id and entry.unique_id != meta.unique_id:
        warnings.append(("MSS-IN-UNIQUE-ID-MISMATCH", where, "XDM uniqueId differs from the CDA id"))
    subset = entry.subset.lower()
    confidentiality = extras.confidentiality.get(
        (subset, f"uid:{entry.unique_id}")
    ) or extras.confidentiality.get((subset, f"uri:{entry.uri}"), [])
    root = header.tree.getroot() if header.tree is not None else None
    patient_ids = [
        InstanceId(root=el.get("root", ""), extension=el.get("extension") or None)
        for el in (_PATIENT_IDS(root) if root is not None else [])
        if el.get("root")
    ]
    return IncomingDocument(
        path=path,
        content=content,
        header=header,
        action=action,
        action_source=action_source,
        entry=entry,
        confidentiality=list(confidentiality),
        masking=_masking(list(confidentiality) + list(meta.confidentiality)),
        patient_ids=patient_ids,
    )


def _find_xdm(
    leaves: list[tuple[Message, str | None, bytes]], headers: MailHeaders, limits: dict[str, int]
) -> tuple[Message, MailAttachment, XdmPackage]:
    named = [(p, n, d) for p, n, d in leaves if n and n.lower() == XDM_FILENAME]
    if len(named) > 1:
        raise MailRefused(
            "MSS-IN-SEVERAL-XDM", "/", f"{len(named)} IHE_XDM.ZIP attachments, expected one", headers=headers
        )
    candidates = named or [(p, n, d) for p, n, d in leaves if _is_zip(p, n, d)]
    for part, name, data in candidates:
        label = name or "(zip attachment)"
        try:
            package = read_xdm(data, **limits)
        except XdmError as exc:
            # An unnamed zip that is simply not XDM is someone else's attachment; anything else is a refusal.
            if not named and exc.rule in ("XDM-NOT-ZIP", "XDM-NO-METADATA"):
                continue
            rule = exc.rule.removeprefix("XDM-")
            raise MailRefused(
                f"MSS-IN-XDM-{rule}", f"{label} > {exc.location}", f"IHE_XDM: {exc}", headers=headers
            ) from None
        except UnsafeXMLError as exc:  # not expected (read_xdm converts them), kept as a safety net
            raise MailRefused(
                f"MSS-IN-XDM-{exc.rule}", f"{label} > {exc.location}", f"IHE_XDM: {exc}", headers=headers
            ) from None
        return part, MailAttachment(name, part.get_content_type(), data), package
    raise MailRefused(
        "MSS-IN-NO-XDM",
        "/",
        "no IHE_XDM.ZIP attachment (nor any zip holding IHE_XDM metadata)",
        headers=headers,
    )


def read_incoming_mail(
    raw: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_uncompressed_bytes: int = MAX_TOTAL_BYTES,
    replacement_from_cda: bool = True,
) -> IncomingMail:
    """Parse a mail of the BAL applicative into an :class:`IncomingMail`, or raise :class:`MailRefused`.

    ``max_bytes`` bounds the mail, ``max_uncompressed_bytes`` what its XDM zip may expand to (per entry and in
    total, checked as declared and while decompressing). ``replacement_from_cda``: without an XDM action slot, a
    CDA with ``relatedDocument RPLC`` is a replacement (default) or an initial transmission (False)."""
    raw = bytes(raw)
    if not raw.strip():
        raise MailRefused("MSS-IN-NOT-MIME", "/", "empty input")
    if len(raw) > max_bytes:
        raise MailRefused(
            "MSS-IN-TOO-LARGE",
            "/",
            f"mail of {len(raw)} bytes exceeds the {max_bytes}-byte limit",
            headers=read_headers(raw),
        )
    try:
        msg = message_from_bytes(raw, policy=policy.default)
    except (email_errors.MessageError, ValueError, LookupError, TypeError, RecursionError):
        raise MailRefused("MSS-IN-NOT-MIME", "/", "not an RFC 5322 message") from None
    if not len(msg):
        raise MailRefused("MSS-IN-NOT-MIME", "/", "no header section: not an RFC 5322 message")
    headers = _headers(msg, raw)
    warnings: list[Warn] = []
    if msg.get_content_type() == "multipart/report":
        raise MailRefused(
            "MSS-IN-REPORT",
            "Content-Type",
            "a delivery or disposition report is not a document",
            headers=headers,
        )
    if not headers.sender:
        raise MailRefused("MSS-IN-NO-FROM", "From", "no usable From address", headers=headers)
    if not headers.message_id:
        headers.message_id = f"<{hashlib.sha256(raw).hexdigest()[:32]}@cisis-gateway.invalid>"
        warnings.append(("MSS-IN-NO-MESSAGE-ID", "Message-ID", "no Message-ID: one derived from the mail"))

    leaves = [(p, _filename(p), _payload(p)) for p in _leaves(msg, headers)]
    limits = {
        "max_entry_bytes": min(MAX_ENTRY_BYTES, max_uncompressed_bytes),
        "max_total_bytes": max_uncompressed_bytes,
    }
    xdm_part, xdm, package = _find_xdm(leaves, headers, limits)
    xdm_label = xdm.filename or "(zip attachment)"
    try:
        extras = _extras(xdm.data)
    except (UnsafeXMLError, zipfile.BadZipFile, OSError, ValueError) as exc:  # read_xdm parsed them already
        raise MailRefused(
            "MSS-IN-XDM-METADATA", xdm_label, f"IHE_XDM metadata: {exc}", headers=headers
        ) from None

    documents: list[IncomingDocument] = []
    for entry in package.entries:
        content = package.documents[entry.uri]
        path = f"IHE_XDM/{entry.subset}/{entry.uri}"
        where = f"{xdm_label} > {path}"
        if not is_cda(content, entry.mime_type):
            warnings.append(("MSS-IN-NOT-CDA", where, f"DocumentEntry of type {entry.mime_type} skipped"))
            continue
        documents.append(
            _document(content, entry, path, where, extras, headers, warnings, replacement_from_cda)
        )
    if not documents:
        raise MailRefused(
            "MSS-IN-NO-CDA", xdm_label, "the IHE_XDM archive holds no CDA document", headers=headers
        )

    codes = {d.header.metadata.type_code.code for d in documents if d.header.metadata.type_code}
    declared = set(headers.x_mss.get("X-MSS-CODECDA", []))
    if declared and declared != codes:
        warnings.append(
            ("MSS-IN-CODECDA-MISMATCH", "X-MSS-CODECDA", "X-MSS-CODECDA differs from the CDA codes")
        )
    pdfs = [
        MailAttachment(n, p.get_content_type(), d)
        for p, n, d in leaves
        if p is not xdm_part and _is_pdf(p, n, d)
    ]
    return IncomingMail(
        raw=raw,
        headers=headers,
        body_text=_body_text(msg),
        xdm=xdm,
        package=package,
        documents=documents,
        pdfs=pdfs,
        sender_person=extras.author_person,
        sender_organization=extras.author_institution,
        warnings=warnings,
    )
