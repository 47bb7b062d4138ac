"""The canonical document model: the one shape every input format (HL7v2, CDA, FHIR) turns into.

Stages after `normalise` see only these classes, so a new input format touches `formats/` alone and a new
destination touches `delivery/` alone. Each field names its CI-SIS source (`../shared/reference/cisis-facts.md`
sections in brackets). Patient data fields are declared with ``repr=False`` so that a model printed by
accident in a traceback or a log line does not leak an INS, a name or a birth date.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

#: OIDs of the INS assigning authorities [§1, §9]: NIR, NIA, NIR test, NIR démo.
INS_OIDS: dict[str, str] = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR-TEST",
    "1.2.250.1.213.1.4.11": "INS-NIR-DEMO",
}

#: Identity statuses (RNIV, PID-32) under which an INS may be used [§9]. The RNIV reserves the INS to
#: qualified identities (QUAL); the ANS HL7v2 examples and FR Core send VALI. Both are accepted on input
#: (cisis-facts §9 "Conflict"); the routing condition ``ins_qualified`` uses this set.
QUALIFIED_IDENTITY_STATUSES: frozenset[str] = frozenset({"QUAL", "VALI"})


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, ser_json_bytes="base64", val_json_bytes="base64"
    )


class Code(_Model):
    """A coded value (HL7v2 CE/CWE, CDA CD/CE): code, code system (OID or HL7 table name), display name."""

    code: str
    code_system: str | None = None
    display: str | None = None


class InstanceId(_Model):
    """An instance identifier: CDA II (root + extension) or HL7v2 EI / CX (id + assigning authority OID)."""

    root: str
    extension: str | None = None

    def xds_unique_id(self) -> str:
        """XDS uniqueId [§4.1]: ``root^extension`` when there is an extension, else the root alone."""
        return f"{self.root}^{self.extension}" if self.extension else self.root


class DocumentAction(StrEnum):
    """What the sender asks for [§7.1]: OBX-11 F/C/D, ORC-1 NW/RO/CA, MDM T02/T10/T04."""

    INITIAL = "initial"
    REPLACEMENT = "replacement"
    DELETION = "deletion"


class PatientIdentity(_Model):
    """The patient: INS with its OID and identity status, local IPP, and the INS traits [§2.2, §9, §7.3 PID]."""

    ins: str | None = Field(
        None,
        repr=False,
        description="INS matricule (NIR or NIA, 15 chars). PID-3 with CX.5=INS; CDA patientRole/id with an INS root.",
    )
    ins_oid: str | None = Field(
        None,
        description="INS assigning authority OID (1.2.250.1.213.1.4.8/9/10/11). PID-3 CX.4.2; CDA patientRole/id/@root.",
    )
    identity_status: str | None = Field(
        None, description="Identity status (PROV, VALI, RECUP, QUAL). PID-32 (HL7 table 0445 FR)."
    )
    ipp: InstanceId | None = Field(
        None,
        repr=False,
        description="Local patient id (IPP): PID-3 with CX.5=PI; CDA patientRole/id that is not an INS.",
    )
    birth_family_name: str | None = Field(
        None, repr=False, description="Nom de naissance. PID-5 (type L) .1; CDA family[@qualifier='BR']."
    )
    used_family_name: str | None = Field(
        None, repr=False, description="Nom utilisé. PID-5 type D; CDA family[@qualifier='CL']."
    )
    first_given_name: str | None = Field(
        None, repr=False, description="Premier prénom de naissance. PID-5.2; CDA given[@qualifier='BR']."
    )
    given_names: str | None = Field(
        None, repr=False, description="Liste des prénoms de naissance. PID-5.3; CDA given without qualifier."
    )
    birth_date: str | None = Field(
        None, repr=False, description="Birth date, YYYYMMDD. PID-7; CDA patient/birthTime/@value."
    )
    sex: str | None = Field(
        None, description="Administrative sex M/F/U. PID-8; CDA administrativeGenderCode (J143)."
    )
    birthplace_cog: str | None = Field(
        None,
        repr=False,
        description="Birthplace INSEE COG code. PID-11 type BDL .9; CDA birthplace/place/addr/county.",
    )

    @property
    def ins_present(self) -> bool:
        return bool(self.ins and self.ins_oid in INS_OIDS)

    @property
    def ins_qualified(self) -> bool:
        """INS present and the identity status allows using it [§9]."""
        return self.ins_present and (self.identity_status or "").upper() in QUALIFIED_IDENTITY_STATUSES

    def patient_key(self) -> str | None:
        """The identifier the journal hashes for search: the INS matricule alone (so that a search needs no OID),
        else ``ipp:<authority>|<id>``."""
        if self.ins_present:
            return self.ins
        if self.ipp:
            return f"ipp:{self.ipp.root}|{self.ipp.extension or ''}"
        return None


class Person(_Model):
    """A person (HL7v2 XCN, CDA assignedPerson) [§4.3]."""

    id: str | None = Field(
        None, description="XCN.1 (IdNat_PS, e.g. 8+RPPS); CDA assignedEntity/id/@extension."
    )
    id_authority: str | None = Field(
        None, description="XCN.9.2 assigning authority OID (1.2.250.1.71.4.2.1 for IdNat_PS)."
    )
    id_type: str | None = Field(None, description="XCN.13 identifier type (IDNPS, RPPS, INS, RI...).")
    family: str | None = Field(None, repr=False)
    given: str | None = Field(None, repr=False)
    prefix: str | None = None


class Organization(_Model):
    """An organisation (HL7v2 XON, CDA representedOrganization) [§4.3]."""

    name: str | None = None
    id: str | None = Field(
        None, description="XON.10 (IdNat_Struct, e.g. 1+FINESS); CDA representedOrganization/id/@extension."
    )
    id_authority: str | None = Field(
        None, description="XON.6.2 assigning authority OID (1.2.250.1.71.4.2.2)."
    )
    id_type: str | None = Field(None, description="XON.7 identifier type (FINEG, FINEJ, IDNST, UF, SVR).")


class Author(_Model):
    """A document author [§2.3, §4.1]: CDA author/assignedAuthor."""

    time: str | None = None
    person: Person | None = None
    device: str | None = Field(None, description="assignedAuthoringDevice softwareName (automated author).")
    organization: Organization | None = None
    specialty: Code | None = Field(None, description="assignedAuthor/code (J01 AuthorSpecialty).")
    function: Code | None = Field(None, description="functionCode (J47).")


class ParticipantRole(StrEnum):
    """PRT-4 participation [§7.3]: SB sender, RCT recipient, REPLY reply-to."""

    SENDER = "SB"
    RECIPIENT = "RCT"
    REPLY_TO = "REPLY"


class Participant(_Model):
    """A PRT segment pre-adopted from HL7 v2.9 [§7.3]: sender, recipient or reply-to."""

    role: ParticipantRole = Field(description="PRT-4.1.")
    person: Person | None = Field(None, description="PRT-5 (XCN): a health professional or the patient.")
    organization: Organization | None = Field(None, description="PRT-8 (XON).")
    device: str | None = Field(None, description="PRT-10 (device / application id).")
    address: str | None = Field(
        None, repr=False, description="PRT-15.4 with PRT-15.3 = X.400: the MSSanté address."
    )

    @property
    def is_patient(self) -> bool:
        """A recipient whose PRT-5.13 is INS, or whose address is a patient mailbox (Mon espace santé)."""
        if self.person and (self.person.id_type or "").upper() == "INS":
            return True
        return bool(self.address and self.address.lower().endswith("@patient.mssante.fr"))


class MetaFlags(_Model):
    """The MetaDMPMSS OBX groups [§7.3]: OBX-3.3 = MetaDMPMSS, OBX-5 = Y/N (HL7 table 0136).

    ``None`` means the OBX was absent; validation decides whether that is allowed (R vs O in the volet).
    """

    masque_ps: bool | None = Field(None, description="MASQUE_PS (R): hidden from health professionals.")
    invisible_patient: bool | None = Field(
        None, description="INVISIBLE_PATIENT (R): not visible to the patient."
    )
    invisible_rep_legaux: bool | None = Field(
        None, description="INVISIBLE_REP_LEGAUX (R): not visible to legal representatives."
    )
    connexion_secrete: bool | None = Field(None, description="CONNEXION_SECRETE (R).")
    modif_conf_code: bool | None = Field(None, description="MODIF_CONF_CODE (R).")
    destdmp: bool | None = Field(None, description="DESTDMP (R): send to the DMP.")
    destmssanteps: bool | None = Field(
        None, description="DESTMSSANTEPS (R): mail the PS/organisation/BAL applicative recipients."
    )
    destmssantepat: bool | None = Field(
        None, description="DESTMSSANTEPAT (R): mail the patient (Mon espace santé)."
    )
    ack_reception: bool | None = Field(
        None, description="ACK_RECEPTION (O): the sender wants reception business acks (ZAM)."
    )
    ack_lecture_mss: bool | None = Field(
        None, description="ACK_LECTURE_MSS (O): the sender wants an MSSanté read receipt (MDN)."
    )
    corpsmail_ps: str | None = Field(
        None, repr=False, description="CORPSMAIL_PS (O): mail body for professionals (ED, base64)."
    )
    corpsmail_patient: str | None = Field(
        None, repr=False, description="CORPSMAIL_PATIENT (O): mail body for the patient."
    )
    mes_fin: bool = Field(
        False,
        description="NTE-4 = FIN after DESTMSSANTEPAT: header X-MSS-MES: FIN (the patient cannot reply).",
    )

    #: The OBX-3.1 codes of the volet, in the order the volet lists them, mapped to field names.
    CODES: ClassVar[dict[str, str]] = {
        "MASQUE_PS": "masque_ps",
        "INVISIBLE_PATIENT": "invisible_patient",
        "INVISIBLE_REP_LEGAUX": "invisible_rep_legaux",
        "CONNEXION_SECRETE": "connexion_secrete",
        "MODIF_CONF_CODE": "modif_conf_code",
        "DESTDMP": "destdmp",
        "DESTMSSANTEPS": "destmssanteps",
        "DESTMSSANTEPAT": "destmssantepat",
        "ACK_RECEPTION": "ack_reception",
        "ACK_LECTURE_MSS": "ack_lecture_mss",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REP_LEGAUX",
        "CONNEXION_SECRETE",
        "MODIF_CONF_CODE",
        "DESTDMP",
        "DESTMSSANTEPS",
        "DESTMSSANTEPAT",
    )

    def by_code(self, code: str) -> bool | None:
        return getattr(self, self.CODES[code.upper()])


class DocumentMetadata(_Model):
    """The XDS DocumentEntry fields derived from the CDA header [§4.1, §2]."""

    unique_id: str = Field(
        description="XDS uniqueId: CDA ClinicalDocument/id as root or root^extension [§4.1]."
    )
    document_id: InstanceId = Field(description="CDA ClinicalDocument/id.")
    set_id: InstanceId | None = Field(None, description="CDA setId (required by structuration minimale).")
    version_number: int | None = Field(None, description="CDA versionNumber/@value.")
    type_code: Code | None = Field(
        None, description="typeCode: CDA code (LOINC or TRE_A05, JDV J07; J66 for the DMP)."
    )
    class_code: Code | None = Field(
        None, description="classCode: derived from typeCode via ASS_X04 (J06/J57)."
    )
    confidentiality: list[Code] = Field(
        default_factory=list, description="CDA confidentialityCode, then the masking flags [§4.1]."
    )
    creation_time: str | None = Field(None, description="CDA effectiveTime/@value.")
    format_code: Code | None = Field(None, description="N1: ASS_A12 by mediaType; N3: ASS_A11 by templateId.")
    healthcare_facility_type: Code | None = Field(
        None, description="componentOf/encompassingEncounter/location/healthCareFacility/code (J02)."
    )
    practice_setting: Code | None = Field(
        None, description="documentationOf/serviceEvent/performer/.../standardIndustryClassCode (J04)."
    )
    authors: list[Author] = Field(default_factory=list, description="CDA author/assignedAuthor.")
    legal_authenticator: Person | None = Field(None, description="CDA legalAuthenticator/assignedEntity.")
    service_start: str | None = Field(
        None, description="documentationOf/serviceEvent/effectiveTime/low/@value."
    )
    service_stop: str | None = Field(
        None, description="documentationOf/serviceEvent/effectiveTime/high/@value."
    )
    title: str | None = Field(None, repr=False, description="CDA title.")
    mime_type: str = Field("text/xml", description="text/xml for a CDA [§4.1].")
    language_code: str | None = Field(None, description="CDA languageCode/@code (fr-FR).")
    template_ids: list[str] = Field(
        default_factory=list, description="CDA templateId/@root values (volet, N1 XDS-SD)."
    )
    replaced_document_id: InstanceId | None = Field(
        None, description="relatedDocument[@typeCode='RPLC']/parentDocument/id."
    )
    level: str = Field("N3", description="N1 (nonXMLBody) or N3 (structuredBody).")
    body_media_type: str | None = Field(
        None, description="nonXMLBody/text/@mediaType for N1 documents [§2.4]."
    )


class Content(_Model):
    """The document bytes as received (the decoded OBX-5 ED data), never altered by the gateway."""

    data: bytes = Field(repr=False)
    media_type: str = "text/xml"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha1(self) -> str:
        """XDS hash [§4.1]."""
        return hashlib.sha1(self.data, usedforsecurity=False).hexdigest()


class Document(_Model):
    metadata: DocumentMetadata
    content: Content


class Provenance(_Model):
    """Where the message came from: broker properties and the HL7 MSH."""

    message_id: str = Field(description="Gateway message id: AMQP message_id, else sha256 of the body.")
    received_at: datetime
    source: str = Field("amqp", description="amqp, mllp or cli.")
    content_type: str | None = Field(None, description="AMQP content_type.")
    correlation_id: str | None = None
    reply_to: str | None = None
    control_id: str | None = Field(None, description="MSH-10.")
    message_type: str | None = Field(None, description="MSH-9 as sent, e.g. ORU^R01^ORU_R01.")
    version: str | None = Field(None, description="MSH-12.1.")
    profile: str | None = Field(None, description="MSH-21 (2.1^CISIS_CDA_HL7_V2).")
    sending_application: str | None = Field(None, description="MSH-3.1.")
    sending_facility: str | None = Field(None, description="MSH-4.1.")
    receiving_application: str | None = Field(None, description="MSH-5.1.")
    receiving_facility: str | None = Field(None, description="MSH-6.1.")
    processing_id: str | None = Field(None, description="MSH-11 (P, T, D).")


class DocumentSubmission(_Model):
    """One submission: one patient, one action, one or two documents (N1 + N3 of the same content in an ORU),
    with the MetaDMPMSS flags and the PRT participants. This is what routing and delivery see."""

    provenance: Provenance
    patient: PatientIdentity
    action: DocumentAction
    documents: list[Document] = Field(default_factory=list)
    replaced_document_id: str | None = Field(
        None, description="uniqueId of the replaced document: TXA-13 (MDM T10) or CDA relatedDocument RPLC."
    )
    flags: MetaFlags = Field(default_factory=MetaFlags)
    sender: Participant | None = Field(None, description="PRT with PRT-4 = SB (required for the DMP).")
    recipients: list[Participant] = Field(
        default_factory=list, description="PRT with PRT-4 = RCT (required for MSSanté)."
    )
    reply_to: list[str] = Field(
        default_factory=list, repr=False, description="PRT-15.4 of the PRT with PRT-4 = REPLY."
    )
    patient_class: str | None = Field(
        None, description="PV1-2 (I, O, E, R, N): drives contentTypeCode [§4.2]."
    )
    type_code: Code | None = Field(
        None, description="OBR-4 / OBX-3 (ORU) or TXA-2 (MDM) of the document [§7.3]."
    )

    @property
    def primary(self) -> Document | None:
        return self.documents[0] if self.documents else None

    @property
    def document_unique_id(self) -> str | None:
        return self.primary.metadata.unique_id if self.primary else None
