"""The DMP's TD2.1 request, assembled: ITI-41 Provide and Register Document Set-b, transport-free.

From one canonical submission: the DSG signature of the submission set (XAdES, ``dsg.py``), the ebRIM
SubmitObjectsRequest with the ``Signature01`` entry and, for a replacement, the RPLC association
(``xdm_metadata.build_submit_objects_request``), the ``ProvideAndRegisterDocumentSetRequest`` with one MTOM
part per document (``soap.py``), the signed VIHF token in ``wsse:Security`` (``vihf.py``), the SOAP 1.2
envelope and the MTOM body (``mtom.py``). ITI-18 and ITI-57 requests get the same envelope and token
(:func:`soap_request`). The HTTP exchange is ``xds_client.py``'s job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from gateway.delivery.dmp import dsg, mtom, soap, vihf
from gateway.delivery.mssante.xdm_metadata import SignatureEntry, build_submit_objects_request
from gateway.model import DocumentSubmission


@dataclass(frozen=True, slots=True, repr=False)
class SigningMaterial:
    """The structure's seal certificate (PEM, chain allowed) and key: signs the VIHF and the submission set."""

    cert_pem: bytes
    key_pem: bytes
    key_password: bytes | None = None

    def __repr__(self) -> str:  # never the key
        return "SigningMaterial(<certificate>, <key>)"


@dataclass(frozen=True, slots=True)
class Iti41Options:
    source_id: str  # XDSSubmissionSet.sourceId: the OID of this gateway (the LPS), assigned by the structure
    repository_url: str  # wsa:To of ITI-41
    registry_url: str  # wsa:To of ITI-18 / ITI-57
    vihf: vihf.VihfSettings
    signature_digest: str = "sha256"  # "sha1" only when the DMP platform asks for it (DRIM-M used SHA-1)
    signature_algorithm: str = "rsa-sha256"


@dataclass(frozen=True, slots=True)
class SoapRequest:
    body: bytes
    content_type: str
    action: str


@dataclass(frozen=True, slots=True)
class Iti41Request(SoapRequest):
    submission_unique_id: str
    signature_unique_id: str


def submission_oid(value: uuid.UUID | None = None) -> str:
    """A submission set uniqueId: an OID under 2.25 from a UUID (ITU-T X.667)."""
    return f"2.25.{(value or uuid.uuid4()).int}"


def _security(sub: DocumentSubmission, options: Iti41Options, signing: SigningMaterial, now: datetime):
    assertion = vihf.build_vihf(sub, options.vihf, issuer_dn=vihf.issuer_dn(signing.cert_pem), now=now)
    signed = vihf.sign_vihf(
        assertion,
        key_pem=signing.key_pem,
        cert_pem=signing.cert_pem,
        key_password=signing.key_password,
        algorithm=options.signature_algorithm,
    )
    return vihf.wsse_security(signed)


def soap_request(
    payload: etree._Element,
    *,
    action: str,
    to: str,
    sub: DocumentSubmission,
    options: Iti41Options,
    signing: SigningMaterial,
    now: datetime,
    attachments: dict[str, bytes] | None = None,
) -> SoapRequest:
    """Any DMP SOAP request (ITI-18 query, ITI-57 update, ITI-41 body) with the submission's VIHF, as MTOM."""
    env = soap.envelope(payload, action=action, to=to, security=_security(sub, options, signing, now))
    body, content_type = mtom.encode_mtom(env, attachments or {})
    return SoapRequest(body, content_type, action)


def build_iti41(
    sub: DocumentSubmission,
    options: Iti41Options,
    signing: SigningMaterial,
    *,
    now: datetime,
    replaced_entry_uuid: str | None = None,
    submission_unique_id: str | None = None,
) -> Iti41Request:
    """The TD2.1 request for ``sub`` (an initial document, or a replacement of ``replaced_entry_uuid``)."""
    ss_uid = submission_unique_id or submission_oid()
    documents = [(d.metadata.unique_id or "", d.content.data) for d in sub.documents]
    signature = dsg.build_dsg_signature(
        documents,
        key_pem=signing.key_pem,
        cert_pem=signing.cert_pem,
        key_password=signing.key_password,
        signing_time=now,
        submission_set_unique_id=ss_uid,  # the Manifest's SubmissionSet entry, as in DRIM-M
        digest=options.signature_digest,  # type: ignore[arg-type]
        algorithm=options.signature_algorithm,  # type: ignore[arg-type]
    )
    meta = dsg.signature_entry_metadata(signature)
    sor, entry_ids = build_submit_objects_request(
        sub,
        submission_unique_id=ss_uid,
        source_id=options.source_id,
        submission_time=now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
        replaced_entry_uuid=replaced_entry_uuid,
        signature=SignatureEntry(
            hash=meta.hash, size=meta.size, creation_time=meta.creation_time, unique_id=meta.unique_id
        ),
    )
    by_entry = {entry_id: doc.content.data for entry_id, doc in zip(entry_ids, sub.documents, strict=True)}
    by_entry["Signature01"] = signature
    request, attachments = soap.provide_and_register(sor, by_entry)
    built = soap_request(
        request,
        action=soap.ITI41_ACTION,
        to=options.repository_url,
        sub=sub,
        options=options,
        signing=signing,
        now=now,
        attachments=attachments,
    )
    return Iti41Request(built.body, built.content_type, built.action, ss_uid, meta.unique_id)
