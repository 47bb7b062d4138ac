"""The XDS DMP sandbox: a local stand-in for the DMP test platform (IHE XDS.b over SOAP 1.2/MTOM), for the demo
and the tests.

Two endpoints, like the platform's repository and registry services:

* ``POST /repository`` — ITI-41 Provide and Register Document Set-b (TD2.1, initial or RPLC replacement);
* ``POST /registry`` — ITI-18 Registry Stored Query (GetDocuments, FindDocuments; TD3.1) and ITI-57 Update
  Document Set (UpdateAvailabilityStatus to Deleted / Archived; TD3.3c/d), dispatched on ``wsa:Action``.

Requests are decoded with :func:`gateway.delivery.dmp.mtom.decode_mtom` (MTOM or plain ``application/soap+xml``),
answered in the same packaging with ``wsa:Action`` = the response action and ``wsa:RelatesTo`` = the request's
``wsa:MessageID``. A request that cannot be decoded (not MTOM, not SOAP, no body, unknown action) gets a SOAP 1.2
``Sender`` fault with HTTP 400. With ``client_ca_pem`` the server requires a TLS client certificate issued by
that CA (the platform authenticates the structure by its certificate); a client without one is refused during
the handshake, before any HTTP.

ITI-41 checks, in this order; the first failing family answers ``Failure`` (several errors of one family may be
listed). Each ``codeContext`` starts with the rule name and never quotes patient data (INS, names).

**Sandbox codes, not the DMPi list** (the DMPi annexe "Liste des codes d'erreurs" is not public here; IHE ITI
TF-3 Table 4.2.4.1-2 codes are used wherever one fits):

=============================================  ======================================  ==========================
Check                                          errorCode                               codeContext starts with
=============================================  ======================================  ==========================
injected (``state.registry_error``)            the injected code (``DMPClosed``...)    ``SANDBOX-INJECTED``
XDS.b schema (XOP infoset, documents inline)   ``XDSRegistryMetadataError``            ``SCHEMA-XDSB``
no SubmissionSet / no uniqueId / no patientId  ``XDSRegistryMetadataError``            ``METADATA-...``
VIHF absent                                    ``DMPAuthenticationError``              ``VIHF-MISSING``
VIHF signature / chain (``verify_vihf``)       ``DMPAuthenticationError``              ``VIHF-SIGNATURE``
VIHF Conditions outside their validity         ``DMPAuthenticationError``              ``VIHF-EXPIRED``
``Authentification_Mode`` ≠ ``INDIRECTE``      ``DMPAuthenticationError``              ``VIHF-AUTH-MODE``
``Ressource_URN`` ≠ ``urn:dmp``                ``DMPAuthenticationError``              ``VIHF-RESOURCE-URN``
VIHF resource-id ≠ SubmissionSet patientId     ``XDSPatientIdDoesNotMatch``            ``VIHF-RESOURCE-ID``
DocumentEntry patientId ≠ SubmissionSet's      ``XDSPatientIdDoesNotMatch``            ``PATIENT-ID``
entry without its xdsb:Document                ``XDSMissingDocument``                  ``DOCUMENT-MISSING``
xdsb:Document without its entry                ``XDSMissingDocumentMetadata``          ``DOCUMENT-METADATA``
``hash`` slot ≠ SHA-1 of the attachment        ``XDSRepositoryMetadataError``          ``HASH-MISMATCH``
``size`` slot ≠ length of the attachment       ``XDSRepositoryMetadataError``          ``SIZE-MISMATCH``
no DSG signature entry (``signs``)             ``XDSRegistryMetadataError``            ``DSG-MISSING``
DSG (``verify_dsg_signature``)                 ``XDSRegistryMetadataError``            ``DSG-...`` (its rule)
typeCode ∉ J66, classCode ∉ J57, formatCode    ``XDSRegistryMetadataError``            ``JDV-J66-TYPECODE``...
∉ J60, healthcareFacilityTypeCode ∉ J61
(a value set the terminology lacks is skipped)
test/démo INS with ``production_ins=True``     ``XDSUnknownPatientId``                 ``INS-TEST-OID``
uniqueId twice in the message                  ``XDSRegistryDuplicateUniqueIdInMessage``  ``UNIQUE-ID-IN-MESSAGE``
uniqueId already registered                    ``XDSDuplicateUniqueIdInRegistry``      ``UNIQUE-ID-REGISTERED``
RPLC target unknown / not Approved / other     ``XDSReplaceFailed``                    ``RPLC-UNKNOWN`` /
patient                                                                                ``RPLC-NOT-APPROVED`` /
                                                                                       ``RPLC-PATIENT``
ITI-18 unknown stored query / missing param    ``XDSUnknownStoredQuery`` /             ``QUERY-...``
                                               ``XDSStoredQueryMissingParam``
ITI-18 FindDocuments for another patient than  ``XDSPatientIdDoesNotMatch``            ``VIHF-RESOURCE-ID``
the VIHF's
ITI-57 malformed / unknown entry / status      ``XDSMetadataUpdateError``              ``UPDATE-...``
mismatch / other patient
ITI-57 NewStatus not Deleted / Archived        ``XDSMetadataUpdateOperationError``     ``UPDATE-NEW-STATUS``
=============================================  ======================================  ==========================

The VIHF is checked on the three transactions (ITI-18 and ITI-57 against the patient they touch). Stored
DocumentEntries (the Signature01 entry included, as the registry does) get a fresh ``urn:uuid:`` entryUUID and
status Approved; a replaced entry becomes Deprecated. With ``out_dir`` set, a JSON summary of every ITI-41
(accepted or refused, metadata and error codes, never document bytes) is written there.

Test hooks on :class:`XdsSandboxState` (like the JSON sandbox): ``fail_next`` / ``fail_status`` answer the next
requests with an HTTP 500/503 carrying a SOAP ``Receiver`` fault, ``delay_s`` slows every answer, and
``registry_error`` makes the next ITI-41 fail with that code. ``documents`` (uniqueId → :class:`StoredDocument`)
and ``requests`` (count per ``wsa:Action``) are there for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import re
import ssl
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from lxml import etree

from gateway.delivery.dmp import dsg, mtom, soap, vihf
from gateway.delivery.dmp.queries import (
    APPROVED,
    ARCHIVED,
    DELETED,
    DEPRECATED,
    FIND_DOCUMENTS,
    GET_DOCUMENTS,
    QUERY_NS,
    UPDATE_AVAILABILITY_STATUS,
)
from gateway.delivery.dmp.registry_response import (
    RS_NS,
    RegistryError,
    RegistryStatus,
    build_registry_response,
)
from gateway.delivery.dmp.xml_schemas import xdsb_schema
from gateway.delivery.mssante.xdm_metadata import (
    DE_CLASS_CODE,
    DE_FACILITY_TYPE_CODE,
    DE_FORMAT_CODE,
    DE_PATIENT_ID,
    DE_TYPE_CODE,
    DE_UNIQUE_ID,
    DOCUMENT_ENTRY_OBJECT_TYPE,
    LCM_NS,
    REPLACES,
    RIM_NS,
    SIGNS,
    SS_PATIENT_ID,
    SS_SOURCE_ID,
    SS_UNIQUE_ID,
)
from gateway.terminology import default_terminology

#: The XDS.b / ebRS 3.0 schemas shipped with the package (provenance in ``SOURCES.md``).

#: INS test and démo OIDs (cisis-facts §9); the same set as ``gateway.validation.ins.TEST_INS_OIDS``.
TEST_INS_OIDS = frozenset({"1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})

AUTH_ERROR = "DMPAuthenticationError"  # sandbox code (see the module docstring)
WSA_ACTION_NOT_SUPPORTED = f"{{{soap.WSA_NS}}}ActionNotSupported"

#: (classification scheme, JDV short id, name used in the codeContext).
_JDV_CHECKS = (
    (DE_TYPE_CODE, "J66", "TYPECODE"),
    (DE_CLASS_CODE, "J57", "CLASSCODE"),
    (DE_FORMAT_CODE, "J60", "FORMATCODE"),
    (DE_FACILITY_TYPE_CODE, "J61", "HEALTHCAREFACILITYTYPECODE"),
)
_NEW_STATUSES = frozenset({DELETED, ARCHIVED})
_R = f"{{{RIM_NS}}}"
_CX_OID = re.compile(r"^[^^]*\^\^\^&([0-9.]+)&ISO")


# ------------------------------------------------------------------------------------------------ state


@dataclass
class StoredDocument:
    """One registered DocumentEntry (the bytes stay in memory, never in ``out_dir``)."""

    entry_uuid: str
    unique_id: str
    patient_id: str
    status: str
    hash: str
    size: int
    mime_type: str
    submission_set_unique_id: str
    type_code: str | None = None
    replaces: str | None = None
    data: bytes = field(default=b"", repr=False)

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "data"}


@dataclass
class XdsSandboxState:
    documents: dict[str, StoredDocument] = field(default_factory=dict)  # uniqueId -> entry (unique here)
    requests: Counter = field(default_factory=Counter)  # wsa:Action -> count
    submissions: list[dict] = field(default_factory=list)  # ITI-41 summaries, accepted or not
    fail_next: int = 0
    fail_status: int = 503
    delay_s: float = 0.0
    registry_error: str | None = None
    out_dir: Path | None = None

    def by_unique_id(self, unique_id: str) -> StoredDocument | None:
        return self.documents.get(unique_id)

    def by_entry_uuid(self, entry_uuid: str) -> StoredDocument | None:
        return next((d for d in self.documents.values() if d.entry_uuid == entry_uuid), None)


# -------------------------------------------------------------------------------------------- helpers


class _Refused(Exception):
    """A check failed: the RegistryErrors to answer with (status Failure)."""

    def __init__(self, *errors: RegistryError) -> None:
        super().__init__(", ".join(e.code for e in errors))
        self.errors = list(errors)


def _error(code: str, context: str, location: str | None = None) -> RegistryError:
    return RegistryError(code=code, severity="error", context=context, location=location)


def _inline_xop(payload: etree._Element, attachments: dict[str, bytes]) -> etree._Element:
    """A copy of ``payload`` with each ``xop:Include`` replaced by the base64 of its part (the XOP infoset)."""
    inlined = copy.deepcopy(payload)
    for include in list(inlined.iter(f"{{{soap.XOP_NS}}}Include")):
        href = include.get("href") or ""
        data = attachments.get(unquote(href[4:]) if href.startswith("cid:") else "", b"")
        parent = include.getparent()
        parent.remove(include)
        parent.text = base64.b64encode(data).decode("ascii")
    return inlined


def _slot(obj: etree._Element, name: str) -> list[str]:
    return [
        (v.text or "").strip()
        for v in obj.iterfind(f"{_R}Slot[@name='{name}']/{_R}ValueList/{_R}Value")
        if v.text is not None
    ]


def _external_id(obj: etree._Element, scheme: str) -> str | None:
    for ext in obj.iterfind(f"{_R}ExternalIdentifier"):
        if ext.get("identificationScheme") == scheme:
            return ext.get("value")
    return None


def _coded(obj: etree._Element, scheme: str) -> tuple[str, str | None] | None:
    for cl in obj.iterfind(f"{_R}Classification"):
        if cl.get("classificationScheme") == scheme:
            systems = _slot(cl, "codingScheme")
            return cl.get("nodeRepresentation") or "", systems[0] if systems else None
    return None


def _ins_oid(cx: str) -> str | None:
    match = _CX_OID.match(cx or "")
    return match.group(1) if match else None


def _vihf_attributes(assertion: etree._Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for attr in assertion.iter(f"{{{vihf.SAML_NS}}}Attribute"):
        values = [(v.text or "").strip() for v in attr.iterfind(f"{{{vihf.SAML_NS}}}AttributeValue")]
        out.setdefault(attr.get("Name") or "", []).extend(values)
    return out


def _parse_instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _query_values(text: str) -> list[str]:
    """Values of a stored-query parameter: ``('a','b')`` or ``'a'`` (quotes doubled inside values)."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", text)]


# ------------------------------------------------------------------------------------------------ app


class _App:
    def __init__(self, state: XdsSandboxState, trust_ca_pem: bytes, production_ins: bool) -> None:
        self.state = state
        self.trust_ca_pem = trust_ca_pem
        self.production_ins = production_ins
        self.lock = asyncio.Lock()  # one transaction at a time: checks then store are atomic

    # ---------------------------------------------------------------------------------- transport

    async def handle(self, request: Request, endpoint: str) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if self.state.delay_s > 0:
            await asyncio.sleep(self.state.delay_s)
        try:
            env, attachments = mtom.decode_mtom(body, content_type)
            payload = soap.body_payload(env)
        except (mtom.MtomError, soap.SoapError) as exc:
            self.state.requests["<undecodable>"] += 1
            return self._fault("Sender", f"requête illisible ({exc.rule})", status=400)
        action = soap.header_value(env, soap.WSA_NS, "Action") or ""
        self.state.requests[action] += 1
        mtom_reply = content_type.lower().lstrip().startswith("multipart/related")
        if self.state.fail_next > 0:
            self.state.fail_next -= 1
            return self._fault("Receiver", "défaillance injectée (sandbox)", status=self.state.fail_status)
        allowed = {soap.ITI41_ACTION} if endpoint == "repository" else {soap.ITI18_ACTION, soap.ITI57_ACTION}
        if action not in allowed:
            return self._fault(
                "Sender", f"action non prise en charge par /{endpoint}", status=400,
                subcode=WSA_ACTION_NOT_SUPPORTED,
            )  # fmt: skip
        async with self.lock:
            if action == soap.ITI41_ACTION:
                response = self._iti41(env, payload, attachments)
            elif action == soap.ITI18_ACTION:
                response = self._iti18(env, payload)
            else:
                response = self._iti57(env, payload)
        return self._reply(response, soap.RESPONSE_ACTIONS[action], env, mtom_reply)

    @staticmethod
    def _fault(code: str, reason: str, *, status: int, subcode: str | None = None) -> Response:
        env = soap.build_fault(code, reason, subcode=subcode)
        return Response(
            etree.tostring(env, xml_declaration=True, encoding="UTF-8"),
            status_code=status,
            media_type=f"{mtom.SOAP12_MEDIA_TYPE}; charset=UTF-8",
        )

    @staticmethod
    def _reply(payload: etree._Element, action: str, request_env: etree._Element, as_mtom: bool) -> Response:
        env = etree.Element(
            f"{{{soap.SOAP12_NS}}}Envelope", nsmap={"soap": soap.SOAP12_NS, "wsa": soap.WSA_NS}
        )
        header = etree.SubElement(env, f"{{{soap.SOAP12_NS}}}Header")
        action_el = etree.SubElement(
            header, f"{{{soap.WSA_NS}}}Action", {f"{{{soap.SOAP12_NS}}}mustUnderstand": "true"}
        )
        action_el.text = action
        etree.SubElement(header, f"{{{soap.WSA_NS}}}MessageID").text = soap.new_message_id()
        relates_to = soap.header_value(request_env, soap.WSA_NS, "MessageID")
        if relates_to:
            etree.SubElement(header, f"{{{soap.WSA_NS}}}RelatesTo").text = relates_to
        etree.SubElement(env, f"{{{soap.SOAP12_NS}}}Body").append(payload)
        if as_mtom:
            body, content_type = mtom.encode_mtom(env, {})
        else:
            body = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
            content_type = f'{mtom.SOAP12_MEDIA_TYPE}; charset=UTF-8; action="{action}"'
        return Response(body, status_code=200, media_type=content_type)

    # ---------------------------------------------------------------------------------------- VIHF

    def _vihf(self, env: etree._Element) -> dict[str, list[str]]:
        """The attributes of the verified VIHF, or :class:`_Refused`."""
        security = env.find(f"{{{soap.SOAP12_NS}}}Header/{{{soap.WSSE_NS}}}Security")
        if security is None or security.find(f"{{{vihf.SAML_NS}}}Assertion") is None:
            raise _Refused(_error(AUTH_ERROR, "VIHF-MISSING: no saml2:Assertion in wsse:Security"))
        try:
            signed = vihf.verify_vihf(security, ca_pem=self.trust_ca_pem)
        except vihf.VihfError as exc:
            raise _Refused(_error(AUTH_ERROR, f"{exc.rule}: {exc.message}")) from None
        conditions = signed.find(f"{{{vihf.SAML_NS}}}Conditions")
        if conditions is not None:
            now = datetime.now(UTC)
            skew = timedelta(minutes=5)
            not_before = _parse_instant(conditions.get("NotBefore"))
            not_after = _parse_instant(conditions.get("NotOnOrAfter"))
            if (not_before and now + skew < not_before) or (not_after and now - skew >= not_after):
                raise _Refused(_error(AUTH_ERROR, "VIHF-EXPIRED: the assertion is outside its Conditions"))
        attrs = _vihf_attributes(signed)
        if attrs.get(vihf.A_AUTH_MODE) != ["INDIRECTE"]:
            raise _Refused(_error(AUTH_ERROR, "VIHF-AUTH-MODE: Authentification_Mode must be INDIRECTE"))
        if attrs.get(vihf.A_RESOURCE_URN) != ["urn:dmp"]:
            raise _Refused(_error(AUTH_ERROR, "VIHF-RESOURCE-URN: Ressource_URN must be urn:dmp"))
        if len(attrs.get(vihf.A_RESOURCE_ID, [])) != 1 or not attrs[vihf.A_RESOURCE_ID][0]:
            raise _Refused(_error(AUTH_ERROR, "VIHF-RESOURCE-ID: exactly one resource-id (the INS) expected"))
        return attrs

    # -------------------------------------------------------------------------------------- ITI-41

    def _iti41(
        self, env: etree._Element, payload: etree._Element, attachments: dict[str, bytes]
    ) -> etree._Element:
        summary: dict = {"receivedAt": datetime.now(UTC).isoformat(timespec="seconds")}
        try:
            stored = self._provide_and_register(env, payload, attachments, summary)
        except _Refused as refused:
            summary.update(status="Failure", errors=[f"{e.code}: {e.context}" for e in refused.errors])
            self._record(summary)
            return build_registry_response(RegistryStatus.FAILURE, refused.errors)
        summary.update(status="Success", documents=[d.summary() for d in stored])
        self._record(summary)
        return build_registry_response(RegistryStatus.SUCCESS)

    def _record(self, summary: dict) -> None:
        self.state.submissions.append(summary)
        if self.state.out_dir is not None:
            self.state.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.state.out_dir / f"{len(self.state.submissions):05d}.json"
            path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")

    def _provide_and_register(
        self, env: etree._Element, payload: etree._Element, attachments: dict[str, bytes], summary: dict
    ) -> list[StoredDocument]:
        if self.state.registry_error:
            code, self.state.registry_error = self.state.registry_error, None
            raise _Refused(_error(code, "SANDBOX-INJECTED: error injected by the test"))

        # 1. XDS.b schema, on the XOP infoset (documents inline as base64).
        schema = xdsb_schema()
        if not schema.validate(_inline_xop(payload, attachments)):
            raise _Refused(
                *(
                    _error("XDSRegistryMetadataError", f"SCHEMA-XDSB: line {e.line}: {e.type_name}")
                    for e in list(schema.error_log)[:5]
                )
            )
        sor = payload.find(f"{{{LCM_NS}}}SubmitObjectsRequest")
        objects = sor.find(f"{_R}RegistryObjectList") if sor is not None else None
        if objects is None:
            raise _Refused(_error("XDSRegistryMetadataError", "METADATA-NO-OBJECTS: no RegistryObjectList"))
        packages = [p for p in objects.iterfind(f"{_R}RegistryPackage") if _external_id(p, SS_UNIQUE_ID)]
        if len(packages) != 1:
            raise _Refused(
                _error("XDSRegistryMetadataError", f"METADATA-SUBMISSION-SET: {len(packages)} SubmissionSets")
            )
        package = packages[0]
        ss_uid = _external_id(package, SS_UNIQUE_ID) or ""
        ss_patient = _external_id(package, SS_PATIENT_ID)
        if not ss_patient:
            raise _Refused(_error("XDSRegistryMetadataError", "METADATA-PATIENT-ID: SubmissionSet patientId"))
        summary.update(
            submissionSetUniqueId=ss_uid,
            sourceId=_external_id(package, SS_SOURCE_ID),
            patientIdOid=_ins_oid(ss_patient),
        )

        # 2. VIHF: signed by a trusted seal certificate, indirect mode, for the DMP, for this patient.
        attrs = self._vihf(env)
        if attrs[vihf.A_RESOURCE_ID][0] != ss_patient:
            raise _Refused(
                _error(
                    "XDSPatientIdDoesNotMatch",
                    "VIHF-RESOURCE-ID: the VIHF resource-id is not the SubmissionSet patientId",
                )
            )

        # 3. Entries against documents.
        entries = [
            eo
            for eo in objects.iterfind(f"{_R}ExtrinsicObject")
            if eo.get("objectType") in (None, DOCUMENT_ENTRY_OBJECT_TYPE)
        ]
        try:
            sent = soap.documents(payload, attachments)
        except soap.SoapError as exc:
            raise _Refused(_error("XDSRepositoryMetadataError", f"{exc.rule}: {exc}")) from None
        entry_ids = {eo.get("id") for eo in entries}
        errors = [
            _error("XDSMissingDocument", "DOCUMENT-MISSING: an entry has no xdsb:Document", eo.get("id"))
            for eo in entries
            if eo.get("id") not in sent
        ]
        errors += [
            _error("XDSMissingDocumentMetadata", "DOCUMENT-METADATA: a document has no entry", doc_id)
            for doc_id in sent
            if doc_id not in entry_ids
        ]
        for eo in entries:
            if _external_id(eo, DE_PATIENT_ID) != ss_patient:
                errors.append(
                    _error(
                        "XDSPatientIdDoesNotMatch",
                        "PATIENT-ID: DocumentEntry patientId differs from the SubmissionSet's",
                        eo.get("id"),
                    )
                )
        if errors:
            raise _Refused(*errors)

        # 4. hash and size of each document against its attachment (the repository computes both).
        for eo in entries:
            data = sent[eo.get("id")]
            hashes, sizes = _slot(eo, "hash"), _slot(eo, "size")
            if hashes and hashes[0].lower() != hashlib.sha1(data).hexdigest():
                errors.append(
                    _error(
                        "XDSRepositoryMetadataError",
                        "HASH-MISMATCH: hash is not the SHA-1 of the document",
                        eo.get("id"),
                    )
                )
            if sizes and sizes[0] != str(len(data)):
                errors.append(
                    _error(
                        "XDSRepositoryMetadataError",
                        "SIZE-MISMATCH: size is not the length of the document",
                        eo.get("id"),
                    )
                )
        if errors:
            raise _Refused(*errors)

        # 5. The DSG signature of the submission set.
        associations = list(objects.iterfind(f"{_R}Association"))
        signature_ids = {
            a.get("sourceObject")
            for a in associations
            if a.get("associationType") == SIGNS and a.get("targetObject") == package.get("id")
        }
        unique_ids = {eo.get("id"): _external_id(eo, DE_UNIQUE_ID) or "" for eo in entries}
        if len(signature_ids) != 1 or next(iter(signature_ids)) not in sent:
            raise _Refused(
                _error("XDSRegistryMetadataError", "DSG-MISSING: exactly one signs association expected")
            )
        signature_id = next(iter(signature_ids))
        try:
            dsg.verify_dsg_signature(
                sent[signature_id],
                {unique_ids[i]: sent[i] for i in unique_ids if i != signature_id},
                ca_pem=self.trust_ca_pem,
                submission_set_unique_id=ss_uid,
            )
        except dsg.DsgError as exc:
            raise _Refused(
                _error("XDSRegistryMetadataError", f"{exc.rule}: the DSG signature is refused")
            ) from None

        # 6. Value sets of the DMP (only those the terminology knows).
        terminology = default_terminology()
        for eo in entries:
            for scheme, jdv, label in _JDV_CHECKS:
                coded = _coded(eo, scheme)
                if coded is None:
                    continue
                if terminology.contains(jdv, coded[0], coded[1]) is False:
                    errors.append(
                        _error(
                            "XDSRegistryMetadataError",
                            f"JDV-{jdv}-{label}: {coded[0]} is not in {jdv}",
                            eo.get("id"),
                        )
                    )
        if errors:
            raise _Refused(*errors)

        # 7. Patient identity.
        if self.production_ins and _ins_oid(ss_patient) in TEST_INS_OIDS:
            raise _Refused(
                _error("XDSUnknownPatientId", "INS-TEST-OID: a test or démo INS is not known in production")
            )

        # 8. uniqueIds.
        seen: set[str] = set()
        for entry_id, uid in unique_ids.items():
            if uid in seen:
                errors.append(
                    _error(
                        "XDSRegistryDuplicateUniqueIdInMessage",
                        "UNIQUE-ID-IN-MESSAGE: a uniqueId is used twice in the submission",
                        entry_id,
                    )
                )
            seen.add(uid)
            if self.state.by_unique_id(uid) is not None:
                errors.append(
                    _error(
                        "XDSDuplicateUniqueIdInRegistry",
                        "UNIQUE-ID-REGISTERED: a document with this uniqueId is already registered",
                        entry_id,
                    )
                )
        if errors:
            raise _Refused(*errors)

        # 9. Replacements.
        replaced: dict[str, str] = {}  # submission entry id -> replaced entryUUID
        for assoc in associations:
            if assoc.get("associationType") != REPLACES:
                continue
            source, target = assoc.get("sourceObject") or "", assoc.get("targetObject") or ""
            old = self.state.by_entry_uuid(target)
            if source not in unique_ids:
                errors.append(_error("XDSReplaceFailed", "RPLC-SOURCE: the RPLC source is not an entry"))
            elif old is None:
                errors.append(
                    _error("XDSReplaceFailed", "RPLC-UNKNOWN: the replaced entryUUID is unknown", source)
                )
            elif old.status != APPROVED:
                errors.append(
                    _error(
                        "XDSReplaceFailed", "RPLC-NOT-APPROVED: the replaced entry is not Approved", source
                    )
                )
            elif old.patient_id != ss_patient:
                errors.append(
                    _error(
                        "XDSReplaceFailed", "RPLC-PATIENT: the replaced entry is another patient's", source
                    )
                )
            else:
                replaced[source] = target
        if errors:
            raise _Refused(*errors)

        # Accepted: register the entries, deprecate what they replace.
        stored = []
        for eo in entries:
            entry_id = eo.get("id")
            data = sent[entry_id]
            type_code = _coded(eo, DE_TYPE_CODE)
            doc = StoredDocument(
                entry_uuid=f"urn:uuid:{uuid.uuid4()}",
                unique_id=unique_ids[entry_id],
                patient_id=ss_patient,
                status=APPROVED,
                hash=hashlib.sha1(data).hexdigest(),
                size=len(data),
                mime_type=eo.get("mimeType") or "",
                submission_set_unique_id=ss_uid,
                type_code=type_code[0] if type_code else None,
                replaces=replaced.get(entry_id),
                data=data,
            )
            self.state.documents[doc.unique_id] = doc
            stored.append(doc)
        for target in replaced.values():
            self.state.by_entry_uuid(target).status = DEPRECATED
        summary["replaced"] = sorted(replaced.values())
        return stored

    # -------------------------------------------------------------------------------------- ITI-18

    def _iti18(self, env: etree._Element, payload: etree._Element) -> etree._Element:
        try:
            found, return_type = self._stored_query(env, payload)
        except _Refused as refused:
            return self._adhoc_response(RegistryStatus.FAILURE, refused.errors, [], "LeafClass")
        return self._adhoc_response(RegistryStatus.SUCCESS, [], found, return_type)

    def _stored_query(self, env: etree._Element, payload: etree._Element) -> tuple[list[StoredDocument], str]:
        if payload.tag != f"{{{QUERY_NS}}}AdhocQueryRequest":
            raise _Refused(_error("XDSRegistryMetadataError", "QUERY-NOT-ADHOC: expected AdhocQueryRequest"))
        attrs = self._vihf(env)
        patient = attrs[vihf.A_RESOURCE_ID][0]
        option = payload.find(f"{{{QUERY_NS}}}ResponseOption")
        return_type = option.get("returnType", "ObjectRef") if option is not None else "ObjectRef"
        query = payload.find(f"{_R}AdhocQuery")
        if query is None:
            raise _Refused(_error("XDSRegistryMetadataError", "QUERY-NO-ADHOCQUERY: no rim:AdhocQuery"))
        params = {
            slot.get("name"): " ".join(_slot(query, slot.get("name") or ""))
            for slot in query.iterfind(f"{_R}Slot")
        }
        if query.get("id") == GET_DOCUMENTS:
            uids = _query_values(params.get("$XDSDocumentEntryUniqueId", ""))
            uuids = _query_values(params.get("$XDSDocumentEntryEntryUUID", ""))
            if not uids and not uuids:
                raise _Refused(
                    _error(
                        "XDSStoredQueryMissingParam",
                        "QUERY-MISSING-PARAM: $XDSDocumentEntryUniqueId or $XDSDocumentEntryEntryUUID",
                    )
                )
            found = [
                d
                for d in self.state.documents.values()
                if (d.unique_id in uids or d.entry_uuid in uuids) and d.patient_id == patient
            ]
        elif query.get("id") == FIND_DOCUMENTS:
            patients = _query_values(params.get("$XDSDocumentEntryPatientId", ""))
            statuses = _query_values(params.get("$XDSDocumentEntryStatus", ""))
            if len(patients) != 1 or not statuses:
                raise _Refused(
                    _error(
                        "XDSStoredQueryMissingParam",
                        "QUERY-MISSING-PARAM: $XDSDocumentEntryPatientId and $XDSDocumentEntryStatus",
                    )
                )
            if patients[0] != patient:
                raise _Refused(
                    _error(
                        "XDSPatientIdDoesNotMatch",
                        "VIHF-RESOURCE-ID: the query's patient is not the VIHF resource-id",
                    )
                )
            found = [
                d for d in self.state.documents.values() if d.patient_id == patient and d.status in statuses
            ]
        else:
            raise _Refused(_error("XDSUnknownStoredQuery", "QUERY-UNKNOWN: unsupported stored query id"))
        return found, return_type

    @staticmethod
    def _adhoc_response(
        status: RegistryStatus, errors: list[RegistryError], found: list[StoredDocument], return_type: str
    ) -> etree._Element:
        base = build_registry_response(status, errors)
        response = etree.Element(
            f"{{{QUERY_NS}}}AdhocQueryResponse",
            nsmap={"query": QUERY_NS, "rs": RS_NS, "rim": RIM_NS},
            status=base.get("status"),
        )
        error_list = base.find(f"{{{RS_NS}}}RegistryErrorList")
        if error_list is not None:
            response.append(error_list)
        object_list = etree.SubElement(response, f"{_R}RegistryObjectList")
        for doc in found:
            if return_type != "LeafClass":
                etree.SubElement(object_list, f"{_R}ObjectRef", id=doc.entry_uuid)
                continue
            eo = etree.SubElement(
                object_list, f"{_R}ExtrinsicObject", id=doc.entry_uuid, lid=doc.entry_uuid,
                mimeType=doc.mime_type or "application/octet-stream", objectType=DOCUMENT_ENTRY_OBJECT_TYPE,
                status=doc.status,
            )  # fmt: skip
            for name, value in (("hash", doc.hash), ("size", str(doc.size))):
                slot = etree.SubElement(eo, f"{_R}Slot", name=name)
                etree.SubElement(etree.SubElement(slot, f"{_R}ValueList"), f"{_R}Value").text = value
            for scheme, value in ((DE_PATIENT_ID, doc.patient_id), (DE_UNIQUE_ID, doc.unique_id)):
                etree.SubElement(
                    eo, f"{_R}ExternalIdentifier", id=f"urn:uuid:{uuid.uuid4()}", registryObject=doc.entry_uuid,
                    identificationScheme=scheme, value=value,
                )  # fmt: skip
        return response

    # -------------------------------------------------------------------------------------- ITI-57

    def _iti57(self, env: etree._Element, payload: etree._Element) -> etree._Element:
        try:
            self._update(env, payload)
        except _Refused as refused:
            return build_registry_response(RegistryStatus.FAILURE, refused.errors)
        return build_registry_response(RegistryStatus.SUCCESS)

    def _update(self, env: etree._Element, payload: etree._Element) -> None:
        objects = payload.find(f"{_R}RegistryObjectList")
        if payload.tag != f"{{{LCM_NS}}}SubmitObjectsRequest" or objects is None:
            raise _Refused(
                _error("XDSMetadataUpdateError", "UPDATE-MALFORMED: expected SubmitObjectsRequest")
            )
        packages = [p for p in objects.iterfind(f"{_R}RegistryPackage") if _external_id(p, SS_UNIQUE_ID)]
        if len(packages) != 1 or not _external_id(packages[0], SS_PATIENT_ID):
            raise _Refused(
                _error("XDSMetadataUpdateError", "UPDATE-SUBMISSION-SET: one SubmissionSet with a patientId")
            )
        ss_patient = _external_id(packages[0], SS_PATIENT_ID)
        attrs = self._vihf(env)
        if attrs[vihf.A_RESOURCE_ID][0] != ss_patient:
            raise _Refused(
                _error(
                    "XDSPatientIdDoesNotMatch",
                    "VIHF-RESOURCE-ID: the VIHF resource-id is not the SubmissionSet patientId",
                )
            )
        updates = [
            a
            for a in objects.iterfind(f"{_R}Association")
            if a.get("associationType") == UPDATE_AVAILABILITY_STATUS
        ]
        if not updates:
            raise _Refused(
                _error(
                    "XDSMetadataUpdateError", "UPDATE-NO-ASSOCIATION: no UpdateAvailabilityStatus association"
                )
            )
        changes: list[tuple[StoredDocument, str]] = []
        for assoc in updates:
            doc = self.state.by_entry_uuid(assoc.get("targetObject") or "")
            original, new = _slot(assoc, "OriginalStatus"), _slot(assoc, "NewStatus")
            if doc is None:
                raise _Refused(_error("XDSMetadataUpdateError", "UPDATE-UNKNOWN-ENTRY: unknown entryUUID"))
            if doc.patient_id != ss_patient:
                raise _Refused(
                    _error(
                        "XDSMetadataUpdateError",
                        "UPDATE-PATIENT: the entry is not the SubmissionSet patient's",
                    )
                )
            if original != [doc.status]:
                raise _Refused(
                    _error(
                        "XDSMetadataUpdateError",
                        "UPDATE-ORIGINAL-STATUS: OriginalStatus is not the entry's status",
                    )
                )
            if len(new) != 1 or new[0] not in _NEW_STATUSES:
                raise _Refused(
                    _error(
                        "XDSMetadataUpdateOperationError",
                        "UPDATE-NEW-STATUS: NewStatus must be the ci-sis Deleted or Archived status",
                    )
                )
            changes.append((doc, new[0]))
        for doc, new in changes:
            doc.status = new


def create_app(state: XdsSandboxState, *, trust_ca_pem: bytes, production_ins: bool = False) -> FastAPI:
    app = FastAPI(title="cisis-gateway XDS DMP sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    handler = _App(state, trust_ca_pem, production_ins)

    @app.post("/repository")
    async def repository(request: Request) -> Response:
        return await handler.handle(request, "repository")

    @app.post("/registry")
    async def registry(request: Request) -> Response:
        return await handler.handle(request, "registry")

    return app


class XdsSandbox:
    """Runs the XDS sandbox inside the current event loop (a uvicorn server task), like :class:`DmpSandbox`.

    ``server_cert_pem``/``server_key_pem`` switch HTTPS on (without them: plain HTTP, for the demo only);
    ``client_ca_pem`` then requires a client certificate issued by that CA. ``trust_ca_pem`` holds the anchors
    of the VIHF and DSG signatures (the structure's seal certificate chains to them)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        server_cert_pem: Path | None = None,
        server_key_pem: Path | None = None,
        client_ca_pem: Path | None = None,
        trust_ca_pem: bytes,
        production_ins: bool = False,
        out_dir: Path | None = None,
    ) -> None:
        if (server_cert_pem is None) != (server_key_pem is None):
            raise ValueError("server_cert_pem and server_key_pem go together")
        if client_ca_pem is not None and server_cert_pem is None:
            raise ValueError("client certificates need HTTPS: give server_cert_pem and server_key_pem")
        self.state = XdsSandboxState(out_dir=out_dir)
        tls: dict = {}
        if server_cert_pem is not None:
            tls = {"ssl_certfile": str(server_cert_pem), "ssl_keyfile": str(server_key_pem)}
            if client_ca_pem is not None:
                tls |= {"ssl_ca_certs": str(client_ca_pem), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            create_app(self.state, trust_ca_pem=trust_ca_pem, production_ins=production_ins),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            **tls,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task | None = None
        self.host = host
        self.port = port
        self.scheme = "https" if server_cert_pem is not None else "http"

    @property
    def repository_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/repository"

    @property
    def registry_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/registry"

    async def start(self) -> None:
        xdsb_schema()  # compile once up front: a broken schema folder fails here, not on the first request
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                break
            if self._task.done():
                self._task.result()
                raise RuntimeError("XDS sandbox stopped while starting")
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("XDS sandbox did not start")
        sockets = [s for srv in self._server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
