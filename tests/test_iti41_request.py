"""The assembled TD2.1 request: what the DMP receives, decoded back and checked piece by piece (MTOM, the
XDS.b schema, the VIHF signature, the DSG signature over the documents)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trustme
from lxml import etree

from gateway.delivery.dmp import dsg, mtom, soap, vihf
from gateway.delivery.dmp.iti41 import Iti41Options, SigningMaterial, build_iti41
from gateway.model import Code
from tests.test_iti41_metadata import dmp_submission
from tests.test_xdm_schema import errors, xdsb_schema

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki():
    ca = trustme.CA(key_type=trustme.KeyType.RSA)  # the DMP's PKI (IGC-Santé) is RSA
    seal = ca.issue_cert("gateway.hopital.example", key_type=trustme.KeyType.RSA)
    signing = SigningMaterial(
        cert_pem=b"".join(p.bytes() for p in seal.cert_chain_pems), key_pem=seal.private_key_pem.bytes()
    )
    return ca.cert_pem.bytes(), signing


OPTIONS = Iti41Options(
    source_id="1.2.250.1.999.1.1.8121",
    repository_url="https://dmp.test/repository",
    registry_url="https://dmp.test/registry",
    vihf=vihf.VihfSettings(
        lps_name="cisis-gateway",
        lps_version="0.1",
        lps_homologation_id="HOMOLOG-TEST",
        secteur_activite="SA01",
        profession_role=Code(code="10", code_system="1.2.250.1.71.1.2.7", display="Médecin"),
    ),
)


def test_iti41_request_decodes_validates_and_both_signatures_verify(pki):
    ca_pem, signing = pki
    sub = dmp_submission("01_ORU_R01_initial_CR-BIO.hl7")
    req = build_iti41(sub, OPTIONS, signing, now=NOW)
    assert (
        req.content_type.startswith("multipart/related") and 'type="application/xop+xml"' in req.content_type
    )
    env, parts = mtom.decode_mtom(req.body, req.content_type)
    assert soap.header_value(env, soap.WSA_NS, "Action") == soap.ITI41_ACTION
    # the XDS.b schema sees the XOP infoset: documents inline as base64
    inlined, _ = mtom.decode_mtom(req.body, req.content_type, inline=True)
    assert errors(xdsb_schema(), soap.body_payload(inlined)) == []
    sent = soap.documents(soap.body_payload(env), parts)
    assert sent["Document01"] == sub.documents[0].content.data
    vihf.verify_vihf(env, ca_pem=ca_pem)  # raises on a bad token
    uid = sub.documents[0].metadata.unique_id
    dsg.verify_dsg_signature(
        sent["Signature01"],
        {uid: sent["Document01"]},
        ca_pem=ca_pem,
        submission_set_unique_id=req.submission_unique_id,
    )
    with pytest.raises(dsg.DsgError):
        dsg.verify_dsg_signature(sent["Signature01"], {uid: sent["Document01"] + b" "}, ca_pem=ca_pem)
    # the signature entry points at the signature document by its uniqueId
    text = etree.tostring(env).decode()
    assert req.signature_unique_id in text and req.submission_unique_id in text
