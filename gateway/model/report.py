"""The validation report: what each rule found, where, and what the sender's ACK must say about it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


#: HL7 table 0357 conditions that make the message unprocessable as a whole: ACK code AR (reject),
#: as opposed to AE (error in an otherwise understood message) [cisis-facts §7.4].
REJECT_CONDITIONS: frozenset[int] = frozenset({200, 201, 202, 203})


class Finding(BaseModel):
    """One rule outcome. ``message`` is for a person fixing the sender; it must never quote patient data."""

    rule: str = Field(description="Stable rule code, e.g. TRANS-MSS-FLAGS, ER7-MSH2, CDA-HEADER-SETID.")
    severity: Severity = Severity.ERROR
    location: str = Field(
        description="Segment-field (OBX[7]-5), XPath (/ClinicalDocument/setId) or JSON path."
    )
    message: str
    condition: int = Field(207, description="HL7 table 0357 message error condition for ERR-3.")
    application_code: str | None = Field(None, description="HL7 table 0533 application error code for ERR-5.")
    source: str | None = Field(None, description="The volet / specification that states the rule.")


class ValidationReport(BaseModel):
    findings: list[Finding] = Field(default_factory=list)
    unreadable: bool = Field(False, description="The message could not be parsed at all: its ACK is AR.")

    def add(
        self,
        rule: str,
        location: str,
        message: str,
        *,
        severity: Severity = Severity.ERROR,
        condition: int = 207,
        application_code: str | None = None,
        source: str | None = None,
    ) -> Finding:
        finding = Finding(
            rule=rule,
            severity=severity,
            location=location,
            message=message,
            condition=condition,
            application_code=application_code,
            source=source,
        )
        self.findings.append(finding)
        return finding

    def extend(self, other: ValidationReport) -> None:
        self.findings.extend(other.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def valid(self) -> bool:
        return not self.errors

    def ack_code(self) -> str:
        """AA when valid; AR when an error makes the message unprocessable (0357 200-203); AE otherwise."""
        if self.valid:
            return "AA"
        if self.unreadable or any(f.condition in REJECT_CONDITIONS for f in self.errors):
            return "AR"
        return "AE"

    def rule_codes(self) -> list[str]:
        return [f.rule for f in self.errors]
