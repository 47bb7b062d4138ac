"""The CI-SIS MSSanté mail: one RFC 5322 message per job (PS recipients, or the patient), carrying IHE_XDM.ZIP.

From the BAL applicative, To the job's addresses, Reply-To from the REPLY PRT, a subject that starts with the XDM
convention, the body from CORPSMAIL_PS / CORPSMAIL_PATIENT or a default per action, ``X-MSS-CODECDA`` per
document, ``X-MSS-INS``, ``X-MSS-MES: FIN`` when the NTE asks for it, ``Disposition-Notification-To`` when
ACK_LECTURE_MSS=Y; attachments: ``IHE_XDM.ZIP`` (ITI-32: README.TXT, INDEX.HTM, METADATA.XML, the CDA) and,
for a non-structured document whose body is a PDF, the PDF itself alongside.

``X-MSS-INS``: the socle MSSanté requires it when a CDA travels in an XDM archive; the value is believed to say
whether the document carries the patient's INS (``O`` oui / ``N`` non — the one example seen has ``O``); an
assumption to check against the Référentiel socle MSSanté #2 (cisis-facts §8, §11.5).

The Message-ID is derived from the idempotency key, so a redelivered job produces the same Message-ID and a
receiving system can recognise the duplicate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from email import charset
from email.header import Header
from email.message import EmailMessage, MIMEPart
from email.policy import compat32
from email.utils import formatdate

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.xdm import build_xdm
from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from gateway.model import DocumentAction

XDM_SUBJECT = "XDM/1.0/DDM"
_UTF8_QP = charset.Charset("utf-8")
_UTF8_QP.body_encoding = charset.QP  # readable French text on the wire, 7-bit safe

DEFAULT_BODIES = {
    DocumentAction.INITIAL: "Veuillez trouver ci-joint un document de santé.",
    DocumentAction.REPLACEMENT: "Ce document de santé remplace une version précédemment transmise.",
    DocumentAction.DELETION: "Le document de santé ci-joint a été supprimé par son auteur ; merci de ne plus en tenir compte.",
}


def _pdf_rendering(cda: bytes) -> bytes | None:
    """The PDF inside an N1 CDA (nonXMLBody/text, representation B64), for the reader without an XDM viewer."""
    try:
        text = (
            parse_untrusted(cda)
            .getroot()
            .find("{urn:hl7-org:v3}component/{urn:hl7-org:v3}nonXMLBody/{urn:hl7-org:v3}text")
        )
    except UnsafeXMLError:
        return None
    if text is None or (text.get("representation") or "").upper() != "B64" or not text.text:
        return None
    try:
        return base64.b64decode("".join(text.text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def message_id_for(job: DeliveryJob, domain: str) -> str:
    return f"<{hashlib.sha256(job.idempotency_key.encode()).hexdigest()[:32]}@{domain}>"


def _subject(type_display: str) -> str:
    """``XDM/1.0/DDM <type>``. The prefix stays plain ASCII on the wire even when the type's French label is
    RFC 2047-encoded: operators' server rules match the raw subject's start to route XDM mails."""
    label = " ".join(type_display.split())
    if label.isascii():
        return f"{XDM_SUBJECT} {label}"
    header = Header(f"{XDM_SUBJECT} ", "us-ascii")
    header.append(label, "utf-8")
    return header.encode()


def _attachment(data: bytes, content_type: str, filename: str) -> MIMEPart:
    part = MIMEPart(policy=compat32)
    part["Content-Type"] = content_type
    part["Content-Disposition"] = f'attachment; filename="{filename}"'
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64.encodebytes(data).decode("ascii"))
    return part


def build_mail(job: DeliveryJob, sender: str) -> EmailMessage:
    """The job's mail. It is assembled with the ``compat32`` policy (headers stored as given, parts encoded
    here): the default policy parses every header it is given, which made the mail cost more to build than
    to send (bench/mssante_send.py). The result is still an ``EmailMessage`` (``iter_attachments`` etc.)."""
    sub = job.submission
    flags = sub.flags
    patient_mail = job.recipients_kind == "patient"
    msg = EmailMessage(policy=compat32)
    msg["From"] = sender
    msg["To"] = ", ".join(job.addresses)
    if sub.reply_to:
        msg["Reply-To"] = ", ".join(sub.reply_to)
    # OBR-4 / TXA-2 display when the sender gave one (TXA-2 often has none), else the CDA code's displayName.
    codes = [sub.type_code] + [d.metadata.type_code for d in sub.documents]
    type_display = next((c.display for c in codes if c and c.display), "Document")
    msg["Subject"] = _subject(type_display)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id_for(job, sender.rsplit("@", 1)[-1])
    for doc in sub.documents:
        if doc.metadata.type_code:
            msg["X-MSS-CODECDA"] = doc.metadata.type_code.code
    if patient_mail and flags.mes_fin:
        msg["X-MSS-MES"] = "FIN"
    if flags.ack_lecture_mss:
        msg["Disposition-Notification-To"] = sender
    msg["X-MSS-INS"] = "O" if sub.patient.ins_present else "N"
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "multipart/mixed"
    body = MIMEPart(policy=compat32)
    body.set_payload(
        (flags.corpsmail_patient if patient_mail else flags.corpsmail_ps) or DEFAULT_BODIES[sub.action],
        _UTF8_QP,
    )
    msg.attach(body)
    if sub.documents:  # (validation refuses a submission without a document; a test job may have none)
        msg.attach(_attachment(build_xdm(sub, sender_label=sender), "application/zip", "IHE_XDM.ZIP"))
    for n, doc in enumerate(sub.documents, start=1):
        pdf = _pdf_rendering(doc.content.data) if doc.metadata.body_media_type == "application/pdf" else None
        if pdf is not None:
            msg.attach(_attachment(pdf, "application/pdf", f"DOC{n:04d}.PDF"))
    return msg
