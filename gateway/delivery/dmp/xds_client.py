"""The DMP over IHE XDS.b: TD2.1 (ITI-41) for an initial document or a replacement, TD3.1 (ITI-18) to find the
entryUUID a replacement or a deletion designates, TD3.3c (ITI-57) for a deletion. HTTPS with the structure's
client certificate, pooled connections (httpx), the request built off the event loop (RSA signatures, c14n).

The answer becomes a :class:`DeliveryResult` for the worker's ack policy: Success → delivered; a Failure whose
errors are all transient (registry busy...) or a 5xx / network error → transient (retried); anything else →
refused, with the registry error codes kept (``detail["codes"]``, first one in ``detail["error"]``: the ZAM^Z01
ERR-5 ``DMP_ERROR_CODE``). A retried ITI-41 that meets ``XDSDuplicateUniqueIdInRegistry`` asks the registry:
if the document is there, Approved, the first attempt did land and the delivery is reported as a replay.
Logs and details carry codes and ids, never patient data.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from gateway.delivery.dmp import mtom, queries, soap
from gateway.delivery.dmp.iti41 import (
    Iti41Options,
    SigningMaterial,
    SoapRequest,
    build_iti41,
    soap_request,
    submission_oid,
)
from gateway.delivery.dmp.registry_response import (
    RegistryResponseError,
    RegistryResult,
    parse_registry_response,
)
from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.xdm_metadata import patient_cx
from gateway.delivery.result import DeliveryResult
from gateway.model import DocumentAction, DocumentSubmission

log = logging.getLogger("cisis.dmp")

DUPLICATE = "XDSDuplicateUniqueIdInRegistry"
#: Error codes of this client itself (the registry never sent them): the entry to replace/delete is not there.
NOT_FOUND = "XDSDocumentUniqueIdError"


class XdsDmpClient:
    def __init__(
        self,
        options: Iti41Options,
        signing: SigningMaterial,
        *,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = 30.0,
        max_connections: int = 4,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.options = options
        self.signing = signing
        self.clock = clock
        self._client = client or httpx.AsyncClient(
            verify=tls if tls is not None else True,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- HTTP ------------------------------------------------------------------------------------------------

    async def _exchange(self, url: str, request: SoapRequest) -> RegistryResult | DeliveryResult:
        """POST one SOAP request; a RegistryResult, or the DeliveryResult that ends the delivery here."""
        try:
            response = await self._client.post(
                url, content=request.body, headers={"Content-Type": request.content_type}
            )
        except httpx.HTTPError as exc:
            return DeliveryResult.transient(error=type(exc).__name__)
        code = response.status_code
        try:
            envelope, _ = mtom.decode_mtom(response.content, response.headers.get("content-type", ""))
        except mtom.MtomError as exc:
            if code >= 500 or code in (408, 429):
                return DeliveryResult.transient(status=code)
            return DeliveryResult.refused(status=code, error=exc.rule)
        fault = soap.fault(envelope)
        if fault is not None:
            detail = {"status": code, "error": fault.subcode or fault.code}
            return DeliveryResult.transient(**detail) if fault.transient else DeliveryResult.refused(**detail)
        try:
            return parse_registry_response(envelope)
        except (RegistryResponseError, soap.SoapError) as exc:
            return DeliveryResult.refused(status=code, error=getattr(exc, "rule", "XDS-RESPONSE"))

    @staticmethod
    def _outcome(result: RegistryResult, **extra: object) -> DeliveryResult:
        detail = {"registry": str(result.status), "codes": result.codes, **extra}
        if result.ok:
            return DeliveryResult.delivered(**detail)
        detail["error"] = result.codes[0] if result.codes else "XDSRegistryError"
        return DeliveryResult.transient(**detail) if result.transient else DeliveryResult.refused(**detail)

    async def _request(self, build: Callable[[], SoapRequest]) -> SoapRequest:
        # RSA signatures and canonicalisation take milliseconds: off the event loop.
        return await asyncio.to_thread(build)

    async def _registry(
        self, payload, action: str, sub: DocumentSubmission, now: datetime
    ) -> RegistryResult | DeliveryResult:
        """An ITI-18 / ITI-57 exchange with the registry, under the submission's VIHF."""
        url = self.options.registry_url

        def build() -> SoapRequest:
            return soap_request(
                payload, action=action, to=url, sub=sub, options=self.options, signing=self.signing, now=now
            )

        return await self._exchange(url, await self._request(build))

    # -- TD3.1: find an entry -----------------------------------------------------------------------------

    async def find_entry(self, sub: DocumentSubmission, unique_id: str) -> str | DeliveryResult:
        """The entryUUID of the Approved document ``unique_id`` (ITI-18 GetDocuments)."""
        query = queries.get_documents_by_unique_id([unique_id])
        answer = await self._registry(query, soap.ITI18_ACTION, sub, self.clock())
        if isinstance(answer, DeliveryResult):
            return answer
        if not answer.ok:
            return self._outcome(answer, step="iti18")
        approved = [d for d in answer.documents if d.status in (None, queries.APPROVED)]
        if not approved:
            return DeliveryResult.refused(error=NOT_FOUND, step="iti18", found=len(answer.documents))
        return approved[0].entry_uuid

    # -- delivery ------------------------------------------------------------------------------------------

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        sub = job.submission
        if sub.action is DocumentAction.DELETION:
            return await self._delete(sub)
        replaced = None
        if sub.action is DocumentAction.REPLACEMENT:
            if not sub.replaced_document_id:
                return DeliveryResult.refused(error=NOT_FOUND, step="iti18", reason="no replaced uniqueId")
            found = await self.find_entry(sub, sub.replaced_document_id)
            if isinstance(found, DeliveryResult):
                return found
            replaced = found
        now = self.clock()
        request = await self._request(
            lambda: build_iti41(sub, self.options, self.signing, now=now, replaced_entry_uuid=replaced)
        )
        answer = await self._exchange(self.options.repository_url, request)
        if isinstance(answer, DeliveryResult):
            return answer
        if not answer.ok and DUPLICATE in answer.codes and sub.document_unique_id:
            # Our earlier attempt may have landed before its answer was lost: is the document there?
            found = await self.find_entry(sub, sub.document_unique_id)
            if isinstance(found, str):
                return DeliveryResult.delivered(registry="Success", replay=True, entry_uuid=found)
        return self._outcome(answer, step="iti41", submission=request.submission_unique_id)

    async def _delete(self, sub: DocumentSubmission) -> DeliveryResult:
        uid = sub.document_unique_id
        if not uid:
            return DeliveryResult.refused(error=NOT_FOUND, step="iti57", reason="no uniqueId")
        found = await self.find_entry(sub, uid)
        if isinstance(found, DeliveryResult):
            return found
        now = self.clock()
        sender = sub.sender
        update = queries.update_availability_status(
            entry_uuid=found,
            patient_id=patient_cx(sub.patient.ins, sub.patient.ins_oid) or "",
            submission_unique_id=submission_oid(),
            source_id=self.options.source_id,
            submission_time=now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
            author=sender.person if sender else None,
            institution=sender.organization if sender else None,
        )
        answer = await self._registry(update, soap.ITI57_ACTION, sub, now)
        if isinstance(answer, DeliveryResult):
            return answer
        return self._outcome(answer, step="iti57", entry_uuid=found)
