"""The DMP's replacement and deletion helpers, transport-free: ITI-18 stored queries (TD3.1) and the ITI-57
availability-status update (TD3.3c), as ebRS 3.0 elements a SOAP envelope will carry.

- A **replacement** (TD2.1) needs the entryUUID of the document it replaces, which the CDA does not carry (only
  its uniqueId, in ``relatedDocument/parentDocument/id``): :func:`get_documents_by_unique_id` asks the registry
  (stored query GetDocuments, ``$XDSDocumentEntryUniqueId``; ObjectRef is enough to learn the entryUUID,
  LeafClass also returns the status).
- A **deletion** is not a deletion in XDS: the DMP marks the entry ``urn:asip:ci-sis:2010:StatusType:Deleted``
  through ITI-57 Update Document Set (cisis-facts §4.3): :func:`update_availability_status` builds the
  SubmitObjectsRequest with a SubmissionSet and an ``UpdateAvailabilityStatus`` association from it to the
  entry, slots ``OriginalStatus`` / ``NewStatus`` (ITI TF-2b 3.57.4.1.3.3.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from lxml import etree

from gateway.delivery.mssante.xdm_metadata import (
    LCM_NS,
    RIM_NS,
    SS_AUTHOR,
    SS_PATIENT_ID,
    SS_SOURCE_ID,
    SS_UNIQUE_ID,
    SUBMISSION_SET_NODE,
    xcn,
    xon,
)
from gateway.model import Organization, Person

QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"

_R = f"{{{RIM_NS}}}"


def _quoted(values: Iterable[str]) -> str:
    """A stored-query multi-value: ``('a','b')``, single quotes doubled inside values."""
    return "(" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, f"{_R}Slot", name=name)
    value_list = etree.SubElement(slot, f"{_R}ValueList")
    for value in values:
        etree.SubElement(value_list, f"{_R}Value").text = value


def _adhoc(query_id: str, return_type: str, slots: dict[str, str]) -> etree._Element:
    root = etree.Element(f"{{{QUERY_NS}}}AdhocQueryRequest", nsmap={"query": QUERY_NS, "rim": RIM_NS})
    etree.SubElement(
        root, f"{{{QUERY_NS}}}ResponseOption", returnComposedObjects="true", returnType=return_type
    )
    query = etree.SubElement(root, f"{_R}AdhocQuery", id=query_id)
    for name, value in slots.items():
        _slot(query, name, value)
    return root


def get_documents_by_unique_id(
    unique_ids: Iterable[str], *, return_type: Literal["LeafClass", "ObjectRef"] = "LeafClass"
) -> etree._Element:
    """ITI-18 GetDocuments by uniqueId (TD3.1): the entries (with their entryUUID, status) of these documents."""
    ids = [u for u in unique_ids if u]
    if not ids:
        raise ValueError("GetDocuments needs at least one uniqueId")
    return _adhoc(GET_DOCUMENTS, return_type, {"$XDSDocumentEntryUniqueId": _quoted(ids)})


def find_documents(
    patient_id: str,
    *,
    statuses: Iterable[str] = (APPROVED,),
    return_type: Literal["LeafClass", "ObjectRef"] = "ObjectRef",
) -> etree._Element:
    """ITI-18 FindDocuments for a patient (CX with the INS OID)."""
    return _adhoc(
        FIND_DOCUMENTS,
        return_type,
        {"$XDSDocumentEntryPatientId": f"'{patient_id}'", "$XDSDocumentEntryStatus": _quoted(statuses)},
    )


def update_availability_status(
    *,
    entry_uuid: str,
    patient_id: str,
    submission_unique_id: str,
    source_id: str,
    submission_time: str,
    new_status: str = DELETED,
    original_status: str = APPROVED,
    author: Person | None = None,
    institution: Organization | None = None,
) -> etree._Element:
    """ITI-57 (TD3.3c for ``DELETED``, TD3.3d for ``ARCHIVED``): a SubmissionSet and the
    UpdateAvailabilityStatus association from it to the entry ``entry_uuid``."""
    if not entry_uuid.startswith("urn:uuid:"):
        raise ValueError("ITI-57 designates the entry by its entryUUID (urn:uuid:...)")
    root = etree.Element(f"{{{LCM_NS}}}SubmitObjectsRequest", nsmap={"lcm": LCM_NS, "rim": RIM_NS})
    objects = etree.SubElement(root, f"{_R}RegistryObjectList")
    ss = "SubmissionSet01"
    package = etree.SubElement(objects, f"{_R}RegistryPackage", id=ss)
    _slot(package, "submissionTime", submission_time)
    person, org = xcn(author), xon(institution)
    if person or org:
        cl = etree.SubElement(
            package, f"{_R}Classification", id="cl01", classificationScheme=SS_AUTHOR, classifiedObject=ss,
            nodeRepresentation="",
        )  # fmt: skip
        if person:
            _slot(cl, "authorPerson", person)
        if org:
            _slot(cl, "authorInstitution", org)
    for n, (scheme, value) in enumerate(
        ((SS_UNIQUE_ID, submission_unique_id), (SS_SOURCE_ID, source_id), (SS_PATIENT_ID, patient_id)),
        start=1,
    ):
        etree.SubElement(
            package, f"{_R}ExternalIdentifier", id=f"ei{n:02d}", registryObject=ss, identificationScheme=scheme,
            value=value,
        )  # fmt: skip
    etree.SubElement(
        objects, f"{_R}Classification", id="cl02", classifiedObject=ss, classificationNode=SUBMISSION_SET_NODE
    )
    assoc = etree.SubElement(
        objects, f"{_R}Association", id="as01", associationType=UPDATE_AVAILABILITY_STATUS, sourceObject=ss,
        targetObject=entry_uuid,
    )  # fmt: skip
    _slot(assoc, "OriginalStatus", original_status)
    _slot(assoc, "NewStatus", new_status)
    return root
