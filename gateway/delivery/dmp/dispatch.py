"""One DMP destination, several transports: a route may send a document by XDS.b (TD2.1) or by PDSm (MHD
ITI-65) (``send: [{to: dmp, via: pdsm}]``); jobs without a choice take ``CISIS_DMP_TRANSPORT``. All go through
the one ``out.dmp`` queue, so ordering, retries and dead letters are the same whichever way a document leaves."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Protocol

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.result import DeliveryResult


class _Destination(Protocol):
    async def deliver(self, job: DeliveryJob) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


class DmpDispatch:
    def __init__(self, default: str, transports: Mapping[str, _Destination]) -> None:
        if default not in transports:
            raise ValueError(f"the default DMP transport {default!r} has no client")
        self.default = default
        self.transports = dict(transports)

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        via = job.via or self.default
        client = self.transports.get(via)
        if client is None:  # a route names a transport this gateway is not configured for
            return DeliveryResult.refused(error="DMP-TRANSPORT-UNCONFIGURED", via=via)
        result = await client.deliver(job)
        return DeliveryResult(result.ok, result.permanent, {**result.detail, "via": via})

    async def aclose(self) -> None:
        for client in self.transports.values():
            with contextlib.suppress(Exception):
                await client.aclose()
