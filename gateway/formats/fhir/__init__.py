"""FHIR input formats: PDSm (MHD ITI-65 / ITI-105) submissions."""

from gateway.formats.fhir.outcome import operation_outcome
from gateway.formats.fhir.pdsm import FhirSubmission, read_pdsm

__all__ = ["FhirSubmission", "operation_outcome", "read_pdsm"]
