"""What a destination answered, in the terms the worker's ack policy needs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """``ok``: delivered (or already there: an idempotent replay). ``permanent``: retrying cannot help (the
    destination refused the content), so the job is dead-lettered at once. ``detail`` goes to the journal and
    must hold no patient data (status codes, error codes, ids)."""

    ok: bool
    permanent: bool = False
    detail: dict = field(default_factory=dict)

    @classmethod
    def delivered(cls, **detail: object) -> DeliveryResult:
        return cls(True, False, dict(detail))

    @classmethod
    def transient(cls, **detail: object) -> DeliveryResult:
        return cls(False, False, dict(detail))

    @classmethod
    def refused(cls, **detail: object) -> DeliveryResult:
        return cls(False, True, dict(detail))
