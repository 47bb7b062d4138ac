"""Canonical model shared by every stage (imports nothing else of the gateway)."""

from gateway.model.document import (
    INS_OIDS,
    Author,
    Code,
    Content,
    Document,
    DocumentAction,
    DocumentMetadata,
    DocumentSubmission,
    InstanceId,
    MetaFlags,
    Organization,
    Participant,
    ParticipantRole,
    PatientIdentity,
    Person,
    Provenance,
)
from gateway.model.report import Finding, Severity, ValidationReport

__all__ = [
    "INS_OIDS",
    "Author",
    "Code",
    "Content",
    "Document",
    "DocumentAction",
    "DocumentMetadata",
    "DocumentSubmission",
    "Finding",
    "InstanceId",
    "MetaFlags",
    "Organization",
    "Participant",
    "ParticipantRole",
    "PatientIdentity",
    "Person",
    "Provenance",
    "Severity",
    "ValidationReport",
]
