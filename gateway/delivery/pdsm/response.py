"""The answer of a PDSm registry to ITI-65 (a ``transaction-response`` Bundle, PDSm Flux 02) or to a Flux 03
PATCH (the patched DocumentReference), or an ``OperationOutcome`` alone (a 4xx/5xx), read into a
:class:`PdsmResponse` shaped like :class:`~gateway.delivery.result.DeliveryResult` (``ok``, ``permanent``,
``detail``) so the client turns it into one with :meth:`PdsmResponse.to_delivery_result`.

Classification, the same as the DMP client's: success when the HTTP status and every entry's
``response.status`` are 2xx; HTTP 408 / 425 / 429 / 5xx are transient (the same request may succeed later);
any other 4xx is permanent (the registry refused this content: 400, 403 not the author, 404 unknown uniqueId,
405 patch of a forbidden element, 412 ambiguous conditional patch, 422 business rule). A failed entry inside a
2xx transaction-response is classified by its own status the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.delivery.result import DeliveryResult

TRANSIENT_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Issue:
    """One ``OperationOutcome.issue``; ``entry`` is the Bundle entry index it came from (None: top level)."""

    severity: str | None
    code: str | None
    details: tuple[str, ...] = ()
    diagnostics: str | None = None
    expression: tuple[str, ...] = ()
    entry: int | None = None

    def summary(self) -> dict[str, Any]:
        """The journal-safe part: codes and FHIRPath expressions, not ``diagnostics`` (free text from the
        registry, which may quote patient data)."""
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.details:
            out["details"] = list(self.details)
        if self.expression:
            out["expression"] = list(self.expression)
        if self.entry is not None:
            out["entry"] = self.entry
        return out


@dataclass(frozen=True, slots=True)
class PdsmResponse:
    ok: bool
    permanent: bool = False
    http_status: int | None = None
    #: ``response.status`` of each entry of a transaction-response, in request order ("201 Created"...).
    entry_statuses: tuple[str, ...] = ()
    #: ``response.location`` of each entry (the ids the registry assigned), None where absent.
    locations: tuple[str | None, ...] = ()
    issues: tuple[Issue, ...] = ()
    #: Why the body could not be understood, when it could not.
    problem: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity in ("fatal", "error"))

    def to_delivery_result(self) -> DeliveryResult:
        if self.ok:
            return DeliveryResult.delivered(**self.detail)
        if self.permanent:
            return DeliveryResult.refused(**self.detail)
        return DeliveryResult.transient(**self.detail)


def status_code(value: Any) -> int | None:
    """The number of a Bundle ``response.status`` ("201 Created", "422", 201)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        head = value.strip().split(" ", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def is_transient(code: int) -> bool:
    return code in TRANSIENT_STATUSES or code >= 500


def _issues(outcome: Any, entry: int | None) -> list[Issue]:
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    out: list[Issue] = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
        codes = tuple(
            c["code"]
            for c in details.get("coding") or []
            if isinstance(c, dict) and isinstance(c.get("code"), str)
        )
        # R4 keeps the deprecated ``location`` beside ``expression``; either may be all a server sends.
        where = [e for e in (issue.get("expression") or issue.get("location") or []) if isinstance(e, str)]
        out.append(
            Issue(
                severity=issue.get("severity"),
                code=issue.get("code"),
                details=codes,
                diagnostics=issue.get("diagnostics"),
                expression=tuple(where),
                entry=entry,
            )
        )
    return out


def _load(body: bytes | str | dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    if body is None or (isinstance(body, bytes | str) and not body.strip()):
        return None, None
    if isinstance(body, dict):
        return body, None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not FHIR JSON: {type(exc).__name__}"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("resourceType"), str):
        return None, "not a FHIR resource"
    return parsed, None


def read_response(
    http_status: int,
    body: bytes | str | dict[str, Any] | None,
    *,
    expected_entries: int | None = None,
) -> PdsmResponse:
    """Read the registry's answer. ``expected_entries``: the number of entries sent, to check that the
    transaction-response answers each (FHIR returns one entry per request entry, in order)."""
    resource, problem = _load(body)
    issues: list[Issue] = []
    statuses: list[str] = []
    locations: list[str | None] = []
    codes: list[int | None] = []
    kind = resource.get("resourceType") if resource else None

    if kind == "OperationOutcome":
        issues = _issues(resource, None)
    elif kind == "Bundle" and resource.get("type") in ("transaction-response", "batch-response"):
        for i, entry in enumerate(resource.get("entry") or []):
            response = entry.get("response") if isinstance(entry, dict) else None
            response = response if isinstance(response, dict) else {}
            raw = response.get("status")
            statuses.append(str(raw) if raw is not None else "")
            locations.append(response.get("location"))
            codes.append(status_code(raw))
            issues += _issues(response.get("outcome"), i)
        if expected_entries is not None and len(statuses) != expected_entries and 200 <= http_status < 300:
            problem = f"{len(statuses)} response entries for {expected_entries} request entries"
    elif kind == "Bundle":
        problem = f"a Bundle of type {resource.get('type')!r}, not a transaction-response"

    detail: dict[str, Any] = {"status": http_status}
    if statuses:
        detail["entries"] = statuses
    if issues:
        detail["issues"] = [i.summary() for i in issues]

    def result(ok: bool, permanent: bool, why: str | None = problem) -> PdsmResponse:
        if why:
            detail["problem"] = why
        return PdsmResponse(
            ok=ok,
            permanent=permanent,
            http_status=http_status,
            entry_statuses=tuple(statuses),
            locations=tuple(locations),
            issues=tuple(issues),
            problem=why,
            detail=detail,
        )

    if not 200 <= http_status < 300:
        return result(False, not is_transient(http_status))
    failed = [c for c in codes if c is None or not 200 <= c < 300]
    if failed:
        # Unreadable entry statuses count as transient: nothing says the registry refused the content.
        permanent = all(c is not None and not is_transient(c) for c in failed)
        return result(False, permanent, problem or "an entry of the transaction failed")
    if problem:
        # A 2xx whose body says nothing usable: the transaction may or may not be committed. Retrying is safe
        # (a second copy of the same uniqueId is refused by the registry) where assuming success is not.
        return result(False, False)
    return result(True, False)


__all__ = ["Issue", "PdsmResponse", "is_transient", "read_response", "status_code"]
