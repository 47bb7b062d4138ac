"""cisis-gateway: HL7v2 / CDA / FHIR to the DMP and MSSanté, validated against the ANS CI-SIS."""

__version__ = "0.1.0"
