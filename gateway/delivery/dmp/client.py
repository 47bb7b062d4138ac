"""Sends a DMP job over HTTP (httpx) and classifies the answer for the worker's ack policy."""

from __future__ import annotations

import httpx

from gateway.delivery.dmp.payload import build_payload
from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.result import DeliveryResult


class DmpClient:
    def __init__(self, url: str, *, timeout_s: float = 15.0, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        try:
            response = await self._client.post(
                self.url, json=build_payload(job), headers={"Idempotency-Key": job.idempotency_key}
            )
        except httpx.HTTPError as exc:
            return DeliveryResult.transient(error=type(exc).__name__)
        code = response.status_code
        if 200 <= code < 300:
            return DeliveryResult.delivered(
                status=code, replay=response.headers.get("Idempotent-Replay") == "true"
            )
        if code in (408, 425, 429) or code >= 500:
            return DeliveryResult.transient(status=code)
        # Other 4xx: the DMP refused this submission; sending it again unchanged cannot succeed.
        error = None
        if response.headers.get("content-type", "").startswith("application/json"):
            error = (response.json() or {}).get("error")
        return DeliveryResult.refused(status=code, error=error)
