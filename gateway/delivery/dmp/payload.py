"""The spine's DMP payload: an honest, minimal JSON rendering of the XDS submission.

This is *not* the DMP protocol: the real feed is an IHE XDS.b ITI-41 (TD2.1) over SOAP 1.2/MTOM with a VIHF
token and a signed submission set (its own issue). It carries the same facts — patient id as an XDS CX, the
sender, the DocumentEntry fields read from the CDA header, the document bytes with their SHA-1 and size — so
the flow can be exercised end to end against the local sandbox.
"""

from __future__ import annotations

import base64

from gateway.delivery.jobs import DeliveryJob

#: PV1-2 -> SubmissionSet contentTypeCode (TRE_R209, JDV J59), the transmission volet's proposed mapping [§4.2].
CONTENT_TYPE_BY_PATIENT_CLASS = {"I": "03", "O": "07", "R": "19", "N": "97", "E": "07"}


def patient_cx(ins: str | None, oid: str | None) -> str | None:
    """XDS patientId [§4.1, §4.3]: ``<matricule>^^^&<OID>&ISO^NH``."""
    return f"{ins}^^^&{oid}&ISO^NH" if ins and oid else None


def build_payload(job: DeliveryJob) -> dict:
    sub = job.submission
    sender = sub.sender
    return {
        "idempotencyKey": job.idempotency_key,
        "messageId": job.message_id,
        "action": sub.action.value,
        "replacedDocumentId": sub.replaced_document_id,
        "submissionSet": {
            "patientId": patient_cx(sub.patient.ins, sub.patient.ins_oid),
            "authorPerson": sender.person.id if sender and sender.person else None,
            "authorInstitution": sender.organization.id if sender and sender.organization else None,
            "contentTypeCode": CONTENT_TYPE_BY_PATIENT_CLASS.get(sub.patient_class or ""),
        },
        "documents": [
            {
                "uniqueId": doc.metadata.unique_id,
                "typeCode": doc.metadata.type_code.code if doc.metadata.type_code else None,
                "confidentialityCode": [c.code for c in doc.metadata.confidentiality]
                + [
                    code
                    for code, on in (
                        ("MASQUE_PS", sub.flags.masque_ps),
                        ("INVISIBLE_PATIENT", sub.flags.invisible_patient),
                        ("INVISIBLE_REPRESENTANTS_LEGAUX", sub.flags.invisible_rep_legaux),
                    )
                    if on
                ],
                "creationTime": doc.metadata.creation_time,
                "mimeType": doc.metadata.mime_type,
                "level": doc.metadata.level,
                "hash": doc.content.sha1,
                "size": doc.content.size,
                "data": base64.b64encode(doc.content.data).decode("ascii"),
            }
            for doc in sub.documents
        ],
    }
