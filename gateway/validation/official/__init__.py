"""Official ANS CI-SIS schematrons (StrucMin header + volet), compiled to XSLT 2 and run with Saxon."""

from gateway.validation.official.compiler import SchematronCompileError, compiled_xslt, generate_xslt
from gateway.validation.official.validator import (
    OfficialValidator,
    VoletSchematron,
    validate_in_worker,
    validate_official,
)

__all__ = [
    "OfficialValidator",
    "SchematronCompileError",
    "VoletSchematron",
    "compiled_xslt",
    "generate_xslt",
    "validate_in_worker",
    "validate_official",
]
