"""A validation report as a FHIR R4 OperationOutcome (the body of a 4xx answer to ITI-65 / ITI-105)."""

from __future__ import annotations

from typing import Any

from gateway.model.report import Severity, ValidationReport

RULE_SYSTEM = "urn:cisis-gateway:rule"
_SEVERITY = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "information"}


def _issue_code(rule: str) -> str:
    """FHIR IssueType for a rule id (http://hl7.org/fhir/issue-type)."""
    if rule.endswith(
        ("-REQUIRED", "-COUNT", "-SOURCE", "-DESIGNATION", "-SOURCEID", "-INS")
    ) and not rule.startswith("PDSM-CDA-"):
        return "required"
    if rule in ("PDSM-FHIR-STRUCTURE", "PDSM-JSON-INVALID", "PDSM-XML-INVALID") or rule.startswith(
        "PDSM-INPUT"
    ):
        return "invalid" if rule != "PDSM-FHIR-STRUCTURE" else "structure"
    if rule in ("PDSM-ATTACHMENT-URL", "PDSM-BINARY-UNUSED", "PDSM-CDA-READ"):
        return "processing"
    return "value"


def operation_outcome(report: ValidationReport) -> dict[str, Any]:
    """One issue per finding; an ``informational`` issue when the report is empty (issue is 1..*)."""
    issues: list[dict[str, Any]] = []
    for finding in report.findings:
        issues.append(
            {
                "severity": _SEVERITY[finding.severity],
                "code": _issue_code(finding.rule),
                "details": {"coding": [{"system": RULE_SYSTEM, "code": finding.rule}], "text": finding.rule},
                "diagnostics": finding.message,
                "expression": [finding.location],
            }
        )
    if not issues:
        issues.append({"severity": "information", "code": "informational", "diagnostics": "no issue found"})
    return {"resourceType": "OperationOutcome", "issue": issues}
