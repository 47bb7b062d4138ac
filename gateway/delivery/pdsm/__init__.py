"""PDSm delivery (cisis-facts §6): the FHIR/MHD alternative to the DMP's XDS.b — an ITI-65 Provide Document
Bundle written from the canonical model, the Flux 03 PATCH of a deletion, and the registry's answer read back."""

from gateway.delivery.pdsm.bundle import (
    DeletionStyle,
    PdsmBuildError,
    build_deletion_patch,
    build_iti65_bundle,
)
from gateway.delivery.pdsm.response import Issue, PdsmResponse, read_response

__all__ = [
    "DeletionStyle",
    "Issue",
    "PdsmBuildError",
    "PdsmResponse",
    "build_deletion_patch",
    "build_iti65_bundle",
    "read_response",
]
