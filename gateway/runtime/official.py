"""The official ANS schematrons as a runtime step, for routes that ask for ``validation: native+official``.

Saxon is CPU-heavy (tens of ms to seconds per document), so it runs in a process pool: the event loop never
waits on it. The pool uses the *spawn* start method because forking a process that holds broker and journal
threads is unsafe. Findings join the message's report; any error turns an accepted message into a rejected one
before its jobs are published, and its reply (ACK, JSON or OperationOutcome) is rebuilt with them.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from gateway.runtime.pipeline import Outcome

#: A minimal ClinicalDocument: enough to make the worker compile and run StrucMin once.
WARM_UP_CDA = b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3"/></ClinicalDocument>'


class OfficialStep:
    def __init__(self, kit_dir: Path, cache_dir: Path, workers: int = 1) -> None:
        self.kit_dir = kit_dir
        self.cache_dir = cache_dir
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        self._warming: Future | None = None

    def warm(self) -> None:
        """Start the worker process and compile StrucMin there now, at start-up: the process spawn costs the
        event loop ~10 ms and the compile ~10 s, neither of which should land on the first message."""
        from gateway.validation.official.validator import validate_in_worker

        self._warming = self.pool.submit(
            validate_in_worker, str(self.kit_dir), str(self.cache_dir), WARM_UP_CDA
        )

    async def apply(self, outcome: Outcome) -> None:
        decision = outcome.decision
        if not (outcome.accepted and decision is not None and decision.official and outcome.submission):
            return
        from gateway.validation.official import validate_official  # Saxon is imported only where it is used

        report = outcome.report
        for n, doc in enumerate(outcome.submission.documents, start=1):
            official = await validate_official(self.pool, self.kit_dir, self.cache_dir, doc.content.data)
            for f in official.findings:
                report.findings.append(f.model_copy(update={"location": f"document {n} {f.location}"}))
        if not report.valid:
            outcome.accepted = False
            outcome.jobs = []
            if outcome.rebuild_reply is not None:
                outcome.reply = outcome.rebuild_reply()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
