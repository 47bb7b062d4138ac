"""ebRS 3.0 answers of the DMP registry/repository → :class:`RegistryResult`, and the reverse for the sandbox.

Handles ``rs:RegistryResponse`` (ITI-41 and ITI-57 answer with it directly in the SOAP Body) and
``query:AdhocQueryResponse`` (ITI-18, an extension of RegistryResponseType: same status and error list, plus
a ``rim:RegistryObjectList`` whose DocumentEntries are returned as :class:`DocumentRef`).

Retry policy: :attr:`RegistryResult.transient` tells the delivery worker whether sending the *same*
request again can succeed. It is true only when every error of severity Error has a code that
:data:`TRANSIENT_CODES` lists — an overloaded or temporarily unavailable registry/repository. Everything
else, including codes we do not know (DMP codes from the DMPi annexe "Liste des codes d'erreurs" that is
not public here), is permanent: resending unchanged metadata to a registry that refused it cannot succeed,
and a wrongly permanent error reaches a human via the dead-letter queue instead of looping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lxml import etree

RS_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"

STATUS_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
STATUS_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
STATUS_PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"
DOCUMENT_ENTRY_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"


class RegistryStatus(StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILURE = "failure"


_STATUS_URNS = {
    STATUS_SUCCESS: RegistryStatus.SUCCESS,
    STATUS_PARTIAL: RegistryStatus.PARTIAL,
    STATUS_FAILURE: RegistryStatus.FAILURE,
}
_URN_BY_STATUS = {v: k for k, v in _STATUS_URNS.items()}

# Error codes for which a later retry of the same request can succeed (IHE ITI TF-3 Table 4.2.4.1-2).
# XDSRegistryError / XDSRepositoryError are IHE's "internal error" catch-alls: a server-side failure, so
# retried — the worker's bounded attempts cap the cost if a server misuses them for a metadata problem.
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "XDSRegistryBusy",
        "XDSRepositoryBusy",
        "XDSRegistryOutOfResources",
        "XDSRepositoryOutOfResources",
        "XDSRegistryNotAvailable",  # the repository could not reach the registry (ITI-42 leg)
        "XDSRegistryError",
        "XDSRepositoryError",
        "XDSUnavailableCommunity",
    }
)
# Permanent codes, listed to document the decision (anything absent from TRANSIENT_CODES is permanent).
PERMANENT_CODES: frozenset[str] = frozenset(
    {
        # IHE metadata / identity errors: the request itself is wrong.
        "XDSRegistryMetadataError",
        "XDSRepositoryMetadataError",
        "XDSDuplicateUniqueIdInRegistry",
        "XDSRegistryDuplicateUniqueIdInMessage",
        "XDSRepositoryDuplicateUniqueIdInMessage",
        "XDSPatientIdDoesNotMatch",
        "XDSUnknownPatientId",
        "XDSUnknownRepositoryId",
        "XDSMissingDocument",
        "XDSMissingDocumentMetadata",
        "XDSNonIdenticalHash",
        "XDSNonIdenticalSize",
        "XDSDocumentUniqueIdError",
        "XDSReplaceFailed",
        "XDSPartialReplaceContentNotProcessed",
        "XDSTooManyResults",
        "XDSUnknownStoredQuery",
        "XDSStoredQueryParamNumber",
        "XDSStoredQueryMissingParam",
        "XDSResultNotSinglePatient",
        # ITI-57 (Restricted Metadata Update).
        "XDSMetadataUpdateError",
        "XDSMetadataUpdateOperationError",
        "XDSMetadataVersionError",
        "XDSMetadataIdentifierError",
        # DMP: the patient's DMP is closed (code seen in the CI-SIS HL7v2 ZAM examples). Opposition,
        # access-right and "DMP inexistant" codes of the DMPi annexe are permanent by the unknown-code rule.
        "DMPClosed",
    }
)


@dataclass(frozen=True)
class RegistryError:
    code: str
    severity: str  # "error" or "warning"
    context: str  # codeContext: the human-readable explanation
    location: str | None = None

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES


@dataclass(frozen=True)
class DocumentRef:
    """A DocumentEntry found by ITI-18: what a replacement (RPLC) or an ITI-57 update needs."""

    entry_uuid: str
    unique_id: str | None
    status: str | None  # availabilityStatus URN (Approved, Deprecated, ci-sis Archived/Deleted)


@dataclass(frozen=True)
class RegistryResult:
    status: RegistryStatus
    errors: list[RegistryError] = field(default_factory=list)
    documents: list[DocumentRef] = field(default_factory=list)
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is RegistryStatus.SUCCESS

    @property
    def transient(self) -> bool:
        """Whether resending the same request may succeed (see the module docstring)."""
        if self.ok:
            return False
        blocking = [e for e in self.errors if e.severity == "error"] or self.errors
        return bool(blocking) and all(e.transient for e in blocking)

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]


class RegistryResponseError(ValueError):
    """The XML is not an ebRS RegistryResponse/AdhocQueryResponse. ``rule`` is a stable code."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _find_response(root: etree._Element) -> etree._Element:
    """The response element itself, or the one inside a SOAP envelope/body (whatever the SOAP version)."""
    wanted = (f"{{{RS_NS}}}RegistryResponse", f"{{{QUERY_NS}}}AdhocQueryResponse")
    if root.tag in wanted:
        return root
    for el in root.iter(*wanted):
        return el
    raise RegistryResponseError(
        "RR-NOT-RESPONSE", f"no rs:RegistryResponse or query:AdhocQueryResponse in {root.tag}"
    )


def _severity(urn: str | None) -> str:
    # ebRS defaults a missing severity to Error; a Warning never makes a result fail.
    return "warning" if urn and urn.endswith(":Warning") else "error"


def _document_refs(response: etree._Element) -> list[DocumentRef]:
    refs = []
    object_list = response.find(f"{{{RIM_NS}}}RegistryObjectList")
    if object_list is None:
        return refs
    for obj in object_list:
        if obj.tag == f"{{{RIM_NS}}}ExtrinsicObject":
            unique_id = None
            for ext in obj.iterfind(f"{{{RIM_NS}}}ExternalIdentifier"):
                if ext.get("identificationScheme") == DOCUMENT_ENTRY_UNIQUE_ID:
                    unique_id = ext.get("value")
            refs.append(DocumentRef(obj.get("id") or "", unique_id, obj.get("status")))
        elif obj.tag == f"{{{RIM_NS}}}ObjectRef":  # returnType=ObjectRef: only the entryUUID comes back
            refs.append(DocumentRef(obj.get("id") or "", None, None))
    return refs


def parse_registry_response(root: etree._Element) -> RegistryResult:
    """A :class:`RegistryResult` from a RegistryResponse / AdhocQueryResponse or an envelope holding one.

    Parse the bytes first with :func:`gateway.delivery.dmp.mtom.decode_mtom` (hardened parsing)."""
    response = _find_response(root)
    status_urn = response.get("status")
    if status_urn not in _STATUS_URNS:
        raise RegistryResponseError("RR-STATUS", f"unknown RegistryResponse status {status_urn!r}")
    errors = [
        RegistryError(
            code=(el.get("errorCode") or "").strip(),
            severity=_severity(el.get("severity")),
            context=(el.get("codeContext") or el.text or "").strip(),
            location=el.get("location"),
        )
        for el in response.iterfind(f"{{{RS_NS}}}RegistryErrorList/{{{RS_NS}}}RegistryError")
    ]
    return RegistryResult(
        status=_STATUS_URNS[status_urn],
        errors=errors,
        documents=_document_refs(response),
        request_id=response.get("requestId"),
    )


def build_registry_response(
    status: RegistryStatus | str, errors: list[RegistryError] | None = None
) -> etree._Element:
    """An ``rs:RegistryResponse`` (sandbox): ``status`` success/partial/failure, optional errors."""
    status = RegistryStatus(status)
    response = etree.Element(
        f"{{{RS_NS}}}RegistryResponse", nsmap={"rs": RS_NS}, status=_URN_BY_STATUS[status]
    )
    if errors:
        severities = [SEVERITY_WARNING if e.severity == "warning" else SEVERITY_ERROR for e in errors]
        highest = SEVERITY_ERROR if SEVERITY_ERROR in severities else SEVERITY_WARNING
        error_list = etree.SubElement(response, f"{{{RS_NS}}}RegistryErrorList", highestSeverity=highest)
        for error, severity in zip(errors, severities, strict=True):
            el = etree.SubElement(
                error_list,
                f"{{{RS_NS}}}RegistryError",
                errorCode=error.code,
                codeContext=error.context,
                severity=severity,
            )
            if error.location:
                el.set("location", error.location)
    return response
