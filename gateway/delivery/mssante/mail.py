"""The spine's MSSanté mail: one RFC 5322 message per job, with the CDA attached.

Minimal and documented as such: From the BAL applicative, To the job's addresses, Reply-To from the REPLY PRT,
a subject that starts with the XDM convention, the body from CORPSMAIL_PS / CORPSMAIL_PATIENT or a default
per action, ``X-MSS-CODECDA`` per document, ``X-MSS-MES: FIN`` when the NTE asks for it, and
``Disposition-Notification-To`` when ACK_LECTURE_MSS=Y. The complete CI-SIS mail (IHE_XDM.ZIP with
METADATA.XML, X-MSS-INS, DSN/MDN handling) is its own issue; here the document is attached as plain XML.

The Message-ID is derived from the idempotency key, so a redelivered job produces the same Message-ID and a
receiving system can recognise the duplicate.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate

from gateway.delivery.jobs import DeliveryJob
from gateway.model import DocumentAction

DEFAULT_BODIES = {
    DocumentAction.INITIAL: "Veuillez trouver ci-joint un document de santé.",
    DocumentAction.REPLACEMENT: "Ce document de santé remplace une version précédemment transmise.",
    DocumentAction.DELETION: "Le document de santé ci-joint a été supprimé par son auteur ; merci de ne plus en tenir compte.",
}


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
    for n, doc in enumerate(sub.documents, start=1):
        msg.add_attachment(doc.content.data, maintype="text", subtype="xml", filename=f"DOC{n:04d}.XML")
    return msg
