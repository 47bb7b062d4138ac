"""Delivery jobs: what the router puts on an outbound queue, one per destination and mail.

A job is self-contained (the submission travels with it, document bytes included) so a destination worker
needs neither the journal nor the inbox message to deliver it. Its ``idempotency_key`` (document uniqueId +
action + destination + recipients) is how the gateway and the destinations recognise a redelivery.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from gateway.model import DocumentSubmission
from gateway.routing.matcher import RoutingDecision

PATIENT_DOMAIN = "patient.mssante.fr"


class DeliveryJob(BaseModel):
    message_id: str = Field(description="The inbound message this job comes from.")
    idempotency_key: str
    destination: str = Field(description="dmp or mssante.")
    recipients_kind: str | None = Field(None, description="mssante: ps or patient (one mail each).")
    addresses: list[str] = Field(default_factory=list, repr=False, description="mssante: the To addresses.")
    route: str
    via: str | None = Field(None, description="dmp: xds or pdsm when the route chose one.")
    submission: DocumentSubmission

    def recipient_label(self) -> str | None:
        """What the journal stores as the recipient. The patient mailbox contains the INS, so it is never stored
        nor hashed (an unkeyed hash of an INS can be brute-forced): the label is just ``patient``. PS mailboxes
        are professional addresses: a short hash identifies the recipient set."""
        if not self.addresses or self.recipients_kind == "patient":
            return self.recipients_kind
        return f"{self.recipients_kind}:{_digest(self.addresses)}"


class JobError(ValueError):
    """A target that cannot become a job (e.g. a patient mail without an INS)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _digest(addresses: list[str]) -> str:
    return hashlib.sha256("|".join(addresses).encode()).hexdigest()[:16]


def patient_mailbox(sub: DocumentSubmission) -> str:
    return f"{sub.patient.ins}@{PATIENT_DOMAIN}"


def _key(sub: DocumentSubmission, destination: str, group: str) -> str:
    uid = sub.document_unique_id or sub.provenance.message_id
    return f"{uid}|{sub.action.value}|{destination}|{group}"


def build_jobs(message_id: str, sub: DocumentSubmission, decision: RoutingDecision) -> list[DeliveryJob]:
    """Turn routing targets into jobs. Raises :class:`JobError` when a target cannot be served safely."""
    jobs: list[DeliveryJob] = []
    for target in decision.targets:
        if target.destination == "dmp":
            jobs.append(
                DeliveryJob(
                    message_id=message_id,
                    idempotency_key=_key(sub, "dmp", "dmp"),
                    destination="dmp",
                    route=target.route,
                    via=target.via,
                    submission=sub,
                )
            )
            continue
        if target.recipients == "patient":
            # Never mail a document to someone it is invisible to, whatever the routes say.
            if sub.flags.invisible_patient:
                raise JobError(
                    "MSS-INVISIBLE-PATIENT",
                    "the document is invisible to the patient "
                    "(INVISIBLE_PATIENT=Y) and cannot be mailed to the patient",
                )
            if not sub.patient.ins_present:
                raise JobError("MSS-PATIENT-INS", "a patient mail needs the patient's INS")
            addresses = [patient_mailbox(sub)]
        else:
            addresses = sorted({r.address for r in sub.recipients if r.address and not r.is_patient})
            if not addresses:
                raise JobError("MSS-NO-RECIPIENT", "no PS recipient address (PRT RCT, PRT-15.4)")
        # The document's uniqueId already fixes the patient: the patient mail's key needs no address in it.
        group = "patient" if target.recipients == "patient" else f"ps:{_digest(addresses)}"
        jobs.append(
            DeliveryJob(
                message_id=message_id,
                idempotency_key=_key(sub, "mssante", group),
                destination="mssante",
                recipients_kind=target.recipients,
                addresses=addresses,
                route=target.route,
                submission=sub,
            )
        )
    return jobs
