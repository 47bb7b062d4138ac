"""PDSm (FHIR) submissions through the pipeline and the broker: PDSm checks, structuration minimale on the CDA
in the Binary, the same routes, and an OperationOutcome as the reply."""

from __future__ import annotations

import json

import pytest

from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ROOT, wait_until
from tests.conftest import require_shared as _need_shared
from tests.harness import make_harness
from tests.test_fhir_pdsm import CDA, _bundle

PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")
FHIR_JSON = "application/fhir+json"


def bundle_bytes(cda: bytes) -> bytes:
    return json.dumps(_bundle(cda)).encode()


def test_conforming_pdsm_bundle_is_routed_to_the_dmp_with_an_operation_outcome():
    _need_shared()
    cda = CDA.read_bytes()
    out = PIPELINE.process(Envelope(body=bundle_bytes(cda), content_type=FHIR_JSON))
    assert out.accepted, out.report.rule_codes()
    assert [j.destination for j in out.jobs] == ["dmp"]
    assert out.jobs[0].submission.documents[0].content.data == cda
    oo = json.loads(out.reply)
    assert oo["resourceType"] == "OperationOutcome" and out.reply_content_type == "application/fhir+json"
    assert all(i["severity"] != "error" for i in oo["issue"])


def test_cda_in_the_binary_goes_through_structuration_minimale():
    _need_shared()
    broken = CDA.read_bytes().replace(b'<languageCode code="fr-FR"', b'<languageCode code="fr"', 1)
    out = PIPELINE.process(Envelope(body=bundle_bytes(broken), content_type=FHIR_JSON))
    assert not out.accepted and "STRUCMIN-LANGUAGECODE" in out.report.rule_codes()
    oo = json.loads(out.reply)
    issue = next(i for i in oo["issue"] if "STRUCMIN-LANGUAGECODE" in json.dumps(i))
    assert issue["severity"] == "error" and "languageCode" in issue["expression"][0]


def test_unreadable_fhir_is_rejected_as_such():
    out = PIPELINE.process(Envelope(body=b'{"resourceType": ', content_type=FHIR_JSON))
    assert not out.accepted and out.report.ack_code() == "AR"
    assert json.loads(out.reply)["issue"][0]["severity"] == "error"


@pytest.mark.broker
async def test_pdsm_bundle_through_the_broker_reaches_the_dmp(prefix, tmp_path):
    _need_shared()
    h = await make_harness(prefix, tmp_path)
    try:
        await h.start_gateway()
        cid = await h.publish(bundle_bytes(CDA.read_bytes()), message_id="fhir-1", content_type=FHIR_JSON)
        await wait_until(lambda: cid in h.acks, what="the OperationOutcome")
        assert json.loads(h.acks[cid].raw)["resourceType"] == "OperationOutcome"
        await wait_until(lambda: len(h.sandbox.state.submissions) == 1, what="the DMP submission")

        async def delivered() -> bool:
            return (await h.journal.get("fhir-1")).status == "delivered"

        await wait_until(delivered, what="journal status delivered")
        assert (await h.journal.get("fhir-1")).message_type == "FHIR"
    finally:
        await h.close()
