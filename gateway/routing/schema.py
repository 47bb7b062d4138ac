"""The schema of ``routes.yaml``: routes, their conditions (``when``) and their actions (send, transform, reject).

Every model forbids unknown keys, so a typo (``flag:`` for ``flags:``) is an error with a line number rather than
a condition silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.model import DocumentAction, MetaFlags

Destination = Literal["dmp", "mssante"]
RecipientKind = Literal["ps", "patient"]
DmpTransport = Literal["xds", "pdsm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _listify(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    return [value]


def _yes_no(value: Any) -> bool:
    """Flags are written as the volet writes them (Y/N); YAML booleans are accepted too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in ("Y", "N"):
        return value.strip().upper() == "Y"
    raise ValueError("a flag value is Y or N")


class Reject(_Strict):
    """Reject the message: the sender gets an ACK AE (or AR) whose ERR names ``rule``."""

    rule: str = Field(min_length=1, description="Stable rule code written in ERR-7 and the journal.")
    message: str = Field(min_length=1, description="What is wrong, for the person fixing the sender.")
    condition: int = Field(207, description="HL7 table 0357 condition for ERR-3 (200-203 make the ACK AR).")
    application_code: str | None = Field(None, description="HL7 table 0533 code for ERR-5 (CI-SIS 900-906).")


class Send(_Strict):
    """Send to a destination kind. For MSSanté, ``recipients`` says which mails: PS recipients (PRT RCT), the
    patient (<INS>@patient.mssante.fr), or both as separate mails."""

    to: Destination
    recipients: list[RecipientKind] | None = None
    via: DmpTransport | None = Field(
        None,
        description="dmp only: xds (IHE XDS.b TD2.1) or pdsm (MHD ITI-65); default CISIS_DMP_TRANSPORT.",
    )

    @model_validator(mode="after")
    def _recipients_only_for_mail(self) -> Send:
        if self.to == "dmp" and self.recipients:
            raise ValueError("recipients apply to mssante only")
        if self.to != "dmp" and self.via:
            raise ValueError("via applies to dmp only")
        if self.to == "mssante" and not self.recipients:
            raise ValueError("mssante needs recipients: [ps], [patient] or [ps, patient]")
        return self


class When(_Strict):
    """Conditions, all of which must hold. A list means "any of these values"."""

    message_type: list[str] | None = Field(None, description="MSH-9.1 or MSH-9.1^9.2: ORU, MDM^T10.")
    event: list[str] | None = Field(None, description="MSH-9.2 trigger event: R01, T02, T10, T04.")
    type_code: list[str] | None = Field(None, description="Document type code (LOINC / J07), e.g. 11502-2.")
    flags: dict[str, bool] | None = Field(None, description="MetaDMPMSS flags, e.g. {DESTDMP: Y}.")
    confidentiality: list[str] | None = Field(None, description="CDA confidentialityCode: N, R, V.")
    sending_application: list[str] | None = Field(None, description="MSH-3.1, shell-style patterns allowed.")
    sending_facility: list[str] | None = Field(None, description="MSH-4.1, shell-style patterns allowed.")
    ins_present: bool | None = None
    ins_qualified: bool | None = Field(None, description="INS present and identity status QUAL or VALI.")
    action: list[DocumentAction] | None = None
    all_of: list[When] | None = Field(None, alias="all")
    any_of: list[When] | None = Field(None, alias="any")
    not_: When | None = Field(None, alias="not")

    _list_fields = field_validator(
        "message_type",
        "event",
        "type_code",
        "confidentiality",
        "sending_application",
        "sending_facility",
        "action",
        mode="before",
    )(_listify)

    @field_validator("flags", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("flags is a mapping such as {DESTDMP: Y}")
        out = {}
        for code, flag in value.items():
            name = str(code).strip().upper()
            if name not in MetaFlags.CODES:
                raise ValueError(f"unknown MetaDMPMSS flag {code!r}; known: {', '.join(MetaFlags.CODES)}")
            out[name] = _yes_no(flag)
        return out


class Route(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    enabled: bool = True
    when: When = Field(default_factory=When)
    transform: list[str] = Field(default_factory=list, description="Transformer plugins applied, in order.")
    send: list[Send] = Field(default_factory=list)
    reject: Reject | None = None
    validation: Literal["native", "native+official"] = Field(
        "native", description="native+official also runs the official ANS schematrons (Saxon) on the CDA."
    )

    @model_validator(mode="after")
    def _one_kind_of_action(self) -> Route:
        if self.reject and (self.send or self.transform):
            raise ValueError("a route that rejects cannot also send or transform")
        if not (self.reject or self.send or self.transform):
            raise ValueError("a route needs an action: send, transform or reject")
        return self


class RouteTable(_Strict):
    version: Literal[1] = 1
    definitions: Any = Field(None, description="Free space for YAML anchors reused by routes; not read.")
    unmatched: Reject = Field(
        default_factory=lambda: Reject(rule="ROUTE-NO-MATCH", message="no route sends this message anywhere")
    )
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> RouteTable:
        seen: set[str] = set()
        for route in self.routes:
            if route.name in seen:
                raise ValueError(f"route name {route.name!r} is used twice")
            seen.add(route.name)
        return self

    def wants_official(self) -> bool:
        return any(r.validation == "native+official" for r in self.routes if r.enabled)

    def dmp_transports(self) -> set[str]:
        """The DMP transports enabled routes ask for by name (``via``)."""
        return {s.via for r in self.routes if r.enabled for s in r.send if s.to == "dmp" and s.via}

    def transformer_names(self) -> set[str]:
        return {name for route in self.routes for name in route.transform}
