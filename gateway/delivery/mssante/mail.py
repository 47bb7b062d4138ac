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
from email.message import EmailMessage
from email.utils import formatdate

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.xdm import build_xdm
from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from gateway.model import DocumentAction

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


def build_mail(job: DeliveryJob, sender: str) -> EmailMessage:
    sub = job.submission
    flags = sub.flags
    patient_mail = job.recipients_kind == "patient"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(job.addresses)
    if sub.reply_to:
        msg["Reply-To"] = ", ".join(sub.reply_to)
    # OBR-4 / TXA-2 display when the sender gave one (TXA-2 often has none), else the CDA code's displayName.
    codes = [sub.type_code] + [d.metadata.type_code for d in sub.documents]
    type_display = next((c.display for c in codes if c and c.display), "Document")
    msg["Subject"] = f"XDM/1.0/DDM {type_display}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id_for(job, sender.rsplit("@", 1)[-1])
    for doc in sub.documents:
        if doc.metadata.type_code:
            msg["X-MSS-CODECDA"] = doc.metadata.type_code.code
    if patient_mail and flags.mes_fin:
        msg["X-MSS-MES"] = "FIN"
    if flags.ack_lecture_mss:
        msg["Disposition-Notification-To"] = sender
    body = (flags.corpsmail_patient if patient_mail else flags.corpsmail_ps) or DEFAULT_BODIES[sub.action]
    msg.set_content(body)
    msg["X-MSS-INS"] = "O" if sub.patient.ins_present else "N"
    if sub.documents:  # (validation refuses a submission without a document; a test job may have none)
        msg.add_attachment(
            build_xdm(sub, sender_label=sender), maintype="application", subtype="zip", filename="IHE_XDM.ZIP"
        )
    for n, doc in enumerate(sub.documents, start=1):
        pdf = _pdf_rendering(doc.content.data) if doc.metadata.body_media_type == "application/pdf" else None
        if pdf is not None:
            msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"DOC{n:04d}.PDF")
    return msg
