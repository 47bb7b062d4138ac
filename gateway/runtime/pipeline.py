"""The pure part of handling one inbound message: bytes in, decision out. No I/O here.

ingest (ER7) -> normalise (transmission volet -> canonical model) -> validate -> route -> jobs + ACK.
Keeping it free of the broker, the journal and the network makes it unit-testable, usable by
``cisis-gateway validate`` without a broker, and movable to a process pool for large messages.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.delivery.jobs import DeliveryJob, JobError, build_jobs
from gateway.formats.cda.standalone import is_cda, map_cda
from gateway.formats.fhir import operation_outcome, read_pdsm
from gateway.formats.hl7v2.ack import build_ack
from gateway.formats.hl7v2.er7 import ER7Error, Message, parse_message
from gateway.formats.hl7v2.transmission import map_transmission, provenance_from_msh
from gateway.model import DocumentSubmission, Provenance, Severity, ValidationReport
from gateway.privacy import patient_hash
from gateway.routing.matcher import RoutingDecision, decide
from gateway.routing.schema import RouteTable
from gateway.routing.transformers import Transformer
from gateway.terminology import Terminology, default_terminology
from gateway.validation.cda_document import validate_cda_message
from gateway.validation.fhir_document import normalise_fhir, validate_fhir_submission
from gateway.validation.transmission import validate_transmission

ER7_CONTENT_TYPES = {"x-application/hl7-v2+er7", "application/hl7-v2", "application/hl7-v2+er7", "text/hl7v2"}
_MSH10 = re.compile(rb"MSH(.)(?:[^\r\n]*?\1){8}([^\r\n|^]{0,64})")


@dataclass(slots=True)
class Envelope:
    """An inbound message as the transport delivered it."""

    body: bytes
    message_id: str | None = None
    content_type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str = "amqp"
    headers: dict = field(default_factory=dict)

    def provenance(self, message_id: str, message_type: str | None = None) -> Provenance:
        """What the transport tells about the message; the format adds the rest (MSH for HL7v2)."""
        return Provenance(
            message_id=message_id,
            received_at=self.received_at,
            source=self.source,
            content_type=self.content_type,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            message_type=message_type,
        )

    def gateway_id(self) -> str:
        """The broker message id when the producer set one, else a hash of the body (stable across redeliveries)."""
        return self.message_id or "sha256:" + hashlib.sha256(self.body).hexdigest()


@dataclass(slots=True)
class Outcome:
    message_id: str
    accepted: bool
    report: ValidationReport
    submission: DocumentSubmission | None = None
    decision: RoutingDecision | None = None
    jobs: list[DeliveryJob] = field(default_factory=list)
    reply: bytes | None = None
    #: rebuilds ``reply`` from the report, for findings added after the pipeline (official schematrons)
    rebuild_reply: Callable[[], bytes | None] | None = None
    reply_content_type: str = "x-application/hl7-v2+er7"
    fields: dict[str, str | None] = field(default_factory=dict)


def json_reply(outcome: Outcome) -> bytes:
    """The answer to a non-HL7 sender: the ACK code's meaning and the findings, as JSON."""
    report = outcome.report
    return json.dumps(
        {
            "messageId": outcome.message_id,
            "ack": report.ack_code(),
            "accepted": outcome.accepted,
            "findings": report.model_dump(mode="json")["findings"],
        }
    ).encode("utf-8")


def is_fhir(body: bytes, content_type: str | None) -> bool:
    if content_type and "fhir" in content_type.lower():
        return True
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") or (head.startswith(b"<") and b"http://hl7.org/fhir" in body[:2048])


def sniff_er7(body: bytes, content_type: str | None) -> bool:
    if content_type and content_type.split(";")[0].strip().lower() in ER7_CONTENT_TYPES:
        return True
    return body.lstrip(b"\xef\xbb\xbf\x0b\r\n \t")[:3] == b"MSH"


class Pipeline:
    def __init__(
        self,
        routes: RouteTable,
        transformers: dict[str, Transformer],
        hash_key: str,
        max_message_bytes: int = 16 * 1024 * 1024,
        *,
        terminology: Terminology | None = None,
        ins_production: bool = False,
    ) -> None:
        self.routes = routes
        self.transformers = transformers
        self.hash_key = hash_key
        self.max_message_bytes = max_message_bytes
        self.terminology = terminology or default_terminology()
        self.ins_production = ins_production

    def process(self, env: Envelope) -> Outcome:
        message_id = env.gateway_id()
        report = ValidationReport()
        outcome = Outcome(message_id=message_id, accepted=False, report=report)
        if not sniff_er7(env.body, env.content_type):
            if is_fhir(env.body, env.content_type):
                return self._process_fhir(env, outcome)
            if is_cda(env.body, env.content_type):
                return self._process_cda(env, outcome)
        if not sniff_er7(env.body, env.content_type):
            report.add(
                "INGEST-CONTENT-TYPE",
                "/",
                f"content type {(env.content_type or 'unknown')[:60]} is not "
                "handled yet: send HL7v2 ER7 (x-application/hl7-v2+er7)",
                condition=200,
            )
            return outcome
        try:
            message = parse_message(env.body, max_bytes=self.max_message_bytes)
        except ER7Error as exc:
            report.unreadable = True
            report.add(exc.rule, exc.location, str(exc.message), condition=exc.condition, source="HL7 v2 ER7")
            # When the MSH itself was readable the ACK echoes it (MSA-2 = MSH-10); otherwise MSH-10 is
            # recovered from the raw bytes when possible, so the sender can still correlate the AR.
            control_id = exc.header.get(10).strip() if exc.header is not None else None
            if not control_id:
                m = _MSH10.search(env.body[:4096])
                control_id = m.group(2).decode("latin-1") if m else None
            outcome.fields["control_id"] = control_id
            outcome.reply = build_ack(None, report, control_id=control_id).encode("utf-8")
            return outcome
        return self._process_er7(env, message, outcome)

    def _process_er7(self, env: Envelope, message: Message, outcome: Outcome) -> Outcome:
        report = outcome.report
        provenance = provenance_from_msh(message, env.provenance(outcome.message_id))
        outcome.fields.update(
            control_id=provenance.control_id,
            message_type=provenance.message_type,
            sending_application=provenance.sending_application,
            sending_facility=provenance.sending_facility,
        )
        for rule, location, text in message.warnings:  # tolerated quirks: the sender learns of them in ERR W
            report.add(rule, location, text, severity=Severity.WARNING, condition=199, source="HL7 v2 ER7")
        mapped = map_transmission(message, provenance)
        report.extend(mapped.report)
        report.extend(
            validate_transmission(
                message, mapped, terminology=self.terminology, ins_production=self.ins_production
            )
        )
        sub = mapped.submission
        if sub is not None:
            outcome.submission = sub
            outcome.fields.update(
                document_id=sub.document_unique_id,
                action=sub.action.value,
                patient_hash=patient_hash(self.hash_key, sub.patient.patient_key()),
            )
        if sub is not None:
            self._route(outcome, sub)
        outcome.rebuild_reply = lambda: build_ack(message, report).encode("utf-8")
        outcome.reply = outcome.rebuild_reply()
        return outcome

    def _accept_submission(self, outcome: Outcome, sub: DocumentSubmission) -> None:
        """Journal fields of a submission, then routing (CDA and FHIR paths)."""
        outcome.submission = sub
        outcome.fields.update(
            document_id=sub.document_unique_id,
            action=sub.action.value,
            patient_hash=patient_hash(self.hash_key, sub.patient.patient_key()),
        )
        self._route(outcome, sub)

    def _route(self, outcome: Outcome, sub: DocumentSubmission) -> None:
        """Routing, transformers and jobs for a valid submission; sets ``outcome.accepted``."""
        report = outcome.report
        if report.valid:
            decision = decide(self.routes, sub)
            outcome.decision = decision
            if decision.rejection is not None:
                r = decision.rejection
                report.add(
                    r.rule,
                    f"routes.yaml:{decision.rejected_by or 'unmatched'}",
                    r.message,
                    condition=r.condition,
                    application_code=r.application_code,
                    source="routes.yaml",
                )
            else:
                self._check_dmp_type_code(sub, decision, report)
                sub = self._transform(sub, decision, report)
                if report.valid:
                    try:
                        outcome.jobs = build_jobs(outcome.message_id, sub, decision)
                        outcome.submission = sub
                    except JobError as exc:
                        report.add(exc.rule, "routes.yaml", str(exc), condition=207, source="gateway")
        outcome.accepted = report.valid and bool(outcome.jobs)

    def _process_cda(self, env: Envelope, outcome: Outcome) -> Outcome:
        """A CDA sent alone: routing hints from AMQP headers; the reply is the JSON report (no HL7 ACK)."""
        report = outcome.report
        provenance = env.provenance(outcome.message_id, message_type="CDA")
        mapped = map_cda(env.body, env.headers, provenance)
        report.extend(mapped.report)
        report.extend(
            validate_cda_message(mapped, terminology=self.terminology, ins_production=self.ins_production)
        )
        outcome.fields["message_type"] = "CDA"
        if mapped.submission is not None:
            self._accept_submission(outcome, mapped.submission)
        return outcome

    def _process_fhir(self, env: Envelope, outcome: Outcome) -> Outcome:
        """PDSm (ITI-65 Bundle or ITI-105 DocumentReference): the reply is an OperationOutcome."""
        report = outcome.report
        provenance = env.provenance(outcome.message_id, message_type="FHIR")
        mapped = read_pdsm(env.body, env.content_type, provenance)
        report.extend(mapped.report)
        report.unreadable = report.unreadable or mapped.report.unreadable
        normalise_fhir(mapped)
        report.extend(
            validate_fhir_submission(mapped, terminology=self.terminology, ins_production=self.ins_production)
        )
        outcome.fields["message_type"] = "FHIR"
        if mapped.submission is not None:
            self._accept_submission(outcome, mapped.submission)
        outcome.rebuild_reply = lambda: json.dumps(operation_outcome(report)).encode("utf-8")
        outcome.reply = outcome.rebuild_reply()
        outcome.reply_content_type = "application/fhir+json"
        return outcome

    def _check_dmp_type_code(
        self, sub: DocumentSubmission, decision: RoutingDecision, report: ValidationReport
    ) -> None:
        """The DMP accepts only the type codes of JDV J66 (TypeCode-DMP): checked once a route sends to the DMP."""
        if not any(t.destination == "dmp" for t in decision.targets):
            return
        for n, doc in enumerate(sub.documents, start=1):
            code = doc.metadata.type_code
            if code is not None and self.terminology.contains("J66", code.code) is False:
                report.add(
                    "TRANS-TYPECODE-J66",
                    f"document {n} /ClinicalDocument/code",
                    f"type code {code.code[:20]} is not accepted by the DMP (JDV J66 TypeCode-DMP)",
                    condition=103,
                    source="CI-SIS Transmission de documents CDA en HL7v2 2.1",
                )

    def _transform(
        self, sub: DocumentSubmission, decision: RoutingDecision, report: ValidationReport
    ) -> DocumentSubmission:
        for name in decision.transforms:
            fn = self.transformers.get(name)
            if fn is None:
                report.add(
                    "ROUTE-TRANSFORMER-MISSING", f"routes.yaml:{name}", f"transformer {name} is not loaded"
                )
                return sub
            try:
                sub = fn(sub)
            except Exception as exc:  # a plugin bug rejects this message, it does not stop the gateway
                report.add(
                    "ROUTE-TRANSFORMER-FAILED",
                    f"transformers/{name}.py",
                    f"transformer {name} raised {type(exc).__name__}",
                )
                return sub
        return sub
