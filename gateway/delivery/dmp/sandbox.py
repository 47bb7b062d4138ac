"""A local DMP sandbox: an HTTP server that records what it receives, for the demo and the tests.

It behaves like the registry on the points the gateway relies on: a submission is identified by its
``Idempotency-Key`` (a replay of the same key answers 200 with ``Idempotent-Replay: true`` and records nothing
new), a second *initial* submission of an already registered uniqueId under another key is refused with 409
(the registry's XDSDuplicateUniqueIdInRegistry), and ``/fail`` switches let tests inject failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class SandboxState:
    submissions: list[dict] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    unique_ids: dict[str, str] = field(default_factory=dict)
    fail_next: int = 0
    fail_status: int = 503
    out_dir: Path | None = None

    def accepted_keys(self) -> list[str]:
        return [s["idempotencyKey"] for s in self.submissions]


def create_app(state: SandboxState) -> FastAPI:
    app = FastAPI(title="cisis-gateway DMP sandbox", docs_url=None, redoc_url=None)

    @app.post("/dmp/submissions")
    async def submit(request: Request) -> JSONResponse:
        if state.fail_next > 0:
            state.fail_next -= 1
            return JSONResponse({"error": "INJECTED_FAILURE"}, status_code=state.fail_status)
        key = request.headers.get("Idempotency-Key")
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "MALFORMED_REQUEST"}, status_code=400)
        if not key or not isinstance(body, dict) or not body.get("documents"):
            return JSONResponse({"error": "MALFORMED_REQUEST"}, status_code=400)
        if key in state.keys:
            return JSONResponse({"status": "Success"}, headers={"Idempotent-Replay": "true"})
        for doc in body["documents"]:
            uid = doc.get("uniqueId")
            if body.get("action") == "initial" and uid in state.unique_ids and state.unique_ids[uid] != key:
                return JSONResponse({"error": "XDSDuplicateUniqueIdInRegistry"}, status_code=409)
        state.keys.add(key)
        for doc in body["documents"]:
            state.unique_ids.setdefault(doc.get("uniqueId"), key)
        state.submissions.append(body)
        if state.out_dir is not None:
            state.out_dir.mkdir(parents=True, exist_ok=True)
            path = state.out_dir / f"{len(state.submissions):05d}.json"
            summary = {k: v for k, v in body.items() if k != "documents"}
            summary["documents"] = [{k: v for k, v in d.items() if k != "data"} for d in body["documents"]]
            path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return JSONResponse(
            {
                "status": "Success",
                "registryResponse": "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
            },
            status_code=201,
        )

    @app.get("/dmp/submissions")
    async def listing() -> dict:
        return {
            "count": len(state.submissions),
            "submissions": [
                {
                    "idempotencyKey": s["idempotencyKey"],
                    "action": s["action"],
                    "uniqueIds": [d["uniqueId"] for d in s["documents"]],
                }
                for s in state.submissions
            ],
        }

    @app.post("/fail")
    async def fail(count: int = 1, status: int = 503) -> dict:
        state.fail_next, state.fail_status = count, status
        return {"fail_next": count, "status": status}

    return app


class DmpSandbox:
    """Runs the sandbox inside the current event loop (uvicorn server task)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, out_dir: Path | None = None) -> None:
        self.state = SandboxState(out_dir=out_dir)
        config = uvicorn.Config(
            create_app(self.state),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/dmp/submissions"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                break
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("DMP sandbox did not start")
        sockets = [s for srv in self._server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
