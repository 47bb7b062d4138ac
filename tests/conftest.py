"""Shared fixtures: paths to ../shared, broker/journal settings isolated per test, bounded waits."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tools.build_samples import with_document

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ANS_TRANS = (
    SHARED
    / "cisis/hl7v2/ansforge-hl7V2-exemples/Vague 2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
)
ANS_CDA = SHARED / "cisis/testcontenucda-3.0/ExemplesCDA"
SAMPLES = ROOT / "gateway/demo/samples"
AMQP_URL = os.environ.get("CISIS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_DSN = os.environ.get("CISIS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_shared() -> None:
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail("../shared is missing: CI must have the shared reference folder beside the clone")
        pytest.skip("../shared not present")


def ans_message(relative: str) -> bytes:
    require_shared()
    return (ANS_TRANS / relative).read_bytes()


def swap_document(
    message: bytes,
    cda_name: str,
    *,
    control_id: str | None = None,
    flags: dict[str, str] | None = None,
    txa12: str | None = None,
) -> bytes:
    """An ANS example message with its 2021-era CDA replaced by a conforming ANS example CDA (and optionally
    its MSH-10, MetaDMPMSS flags and TXA-12 changed): the same recipe as the demo samples."""
    require_shared()
    text = message.decode("utf-8")
    segs = [s for s in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if s]
    control_id = control_id or segs[0].split("|")[9]
    return with_document(segs, ANS_CDA / cda_name, control_id, flags=flags, txa12=txa12).encode("utf-8")


#: Flags of the volet's "PS only" legal combination, to make the ANS MDM examples routable.
PS_ONLY = {
    "MASQUE_PS": "N",
    "INVISIBLE_PATIENT": "Y",
    "INVISIBLE_REP_LEGAUX": "N",
    "CONNEXION_SECRETE": "N",
    "DESTMSSANTEPS": "Y",
    "DESTMSSANTEPAT": "N",
    "DESTDMP": "Y",
}


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout_s`` (a bound, never a synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
