"""The DMP over XDS.b end to end: the ANS-derived samples go through RabbitMQ and the gateway to the XDS sandbox
(HTTPS with client certificate, ITI-41/18/57, VIHF and XAdES checked), and come back as ZAM^Z01."""

from __future__ import annotations

import base64

import pytest
import trustme

from gateway.delivery.dmp.queries import APPROVED, DELETED, DEPRECATED
from gateway.delivery.dmp.xds_sandbox import XdsSandbox
from gateway.formats.hl7v2.er7 import parse_message
from tests.conftest import SAMPLES, wait_until
from tests.harness import make_harness

pytestmark = pytest.mark.broker

UID_01 = "1.2.250.1.213.1.1.1.55.2021.6.1"
PARENT_OF_02 = "1.2.250.1.213.1.1.1.55.12345.8"  # the document sample 02 replaces
FINAL = {"rejected", "delivered", "partially_delivered", "dead_lettered"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("dmp-pki")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(d / "ca.pem")
    server = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    server.cert_chain_pems[0].write_to_path(d / "server.pem")
    server.private_key_pem.write_to_path(d / "server.key")
    # the structure's certificate: TLS client authentication and seal (VIHF, submission-set signature)
    seal = ca.issue_cert("gateway.hopital.example", key_type=trustme.KeyType.RSA)
    seal.cert_chain_pems[0].write_to_path(d / "client.pem")
    seal.private_key_pem.write_to_path(d / "client.key")
    return d


@pytest.fixture
async def sandbox(pki):
    box = XdsSandbox(
        server_cert_pem=pki / "server.pem",
        server_key_pem=pki / "server.key",
        client_ca_pem=pki / "ca.pem",
        trust_ca_pem=(pki / "ca.pem").read_bytes(),
    )
    await box.start()
    yield box
    await box.stop()


@pytest.fixture
async def h(prefix, tmp_path, pki, sandbox):
    harness = await make_harness(
        prefix,
        tmp_path,
        dmp_transport="xds",
        dmp_repository_url=sandbox.repository_url,
        dmp_registry_url=sandbox.registry_url,
        dmp_ca_file=pki / "ca.pem",
        dmp_cert_file=pki / "client.pem",
        dmp_key_file=pki / "client.key",
        vihf_profession_role="10^1.2.250.1.71.1.2.7",
        vihf_lps_homologation_id="HOMOLOG-TEST",
    )
    try:
        yield harness
    finally:
        await harness.close()


def with_document_id(body: bytes, old: str, new: str, control_id: str) -> bytes:
    """The sample with its CDA id (and MSH-10) changed: another document for the same patient."""
    segs = body.decode("utf-8").split("\r")
    for n, seg in enumerate(segs):
        f = seg.split("|")
        if f[0] == "MSH":
            f[9] = control_id
        elif f[0] == "OBX" and f[2] == "ED" and "MetaDMPMSS" not in f[3]:
            c = f[5].split("^")
            cda = base64.b64decode(c[4])
            assert f'<id root="{old}"/>'.encode() in cda
            c[4] = base64.b64encode(
                cda.replace(f'<id root="{old}"/>'.encode(), f'<id root="{new}"/>'.encode(), 1)
            ).decode()
            f[5] = "^".join(c)
        segs[n] = "|".join(f)
    return "\r".join(segs).encode("utf-8")


async def settled(h, message_id: str) -> bool:
    record = await h.journal.get(message_id)
    return record is not None and record.status in FINAL


def dmp_delivery(deliveries):
    return next(d for d in deliveries if d.destination == "dmp")


async def test_initial_replacement_and_deletion_reach_the_dmp_and_z01_comes_back(h, sandbox):
    await h.start_gateway()
    await h.publish((SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(), message_id="m-01")
    await wait_until(lambda: settled(h, "m-01"), what="sample 01 settled")
    assert dmp_delivery(await h.journal.deliveries("m-01")).status == "delivered"
    stored = sandbox.state.documents[UID_01]
    assert stored.status == APPROVED
    await wait_until(lambda: any(parse_message(z).msh.get(9, 1, 2) == "Z01" for z in h.zam_raw), what="Z01")
    z01 = next(parse_message(z) for z in h.zam_raw if parse_message(z).msh.get(9, 1, 2) == "Z01")
    assert (z01.segment("OBX").get(4), z01.segment("OBX").get(5)) == ("DEMO-0001", "Y")

    # the document sample 02 replaces, then sample 02: RPLC on the entryUUID found by ITI-18
    parent = with_document_id(
        (SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(), UID_01, PARENT_OF_02, "DEMO-PARENT"
    )
    await h.publish(parent, message_id="m-parent")
    await wait_until(lambda: settled(h, "m-parent"), what="the parent settled")
    await h.publish((SAMPLES / "02_ORU_R01_replacement_CR-BIO.hl7").read_bytes(), message_id="m-02")
    await wait_until(lambda: settled(h, "m-02"), what="sample 02 settled")
    assert dmp_delivery(await h.journal.deliveries("m-02")).status == "delivered"
    assert sandbox.state.documents[PARENT_OF_02].status == DEPRECATED
    replacement_uid = "1.2.250.1.213.1.1.1.55.2021.6.2"
    assert sandbox.state.documents[replacement_uid].status == APPROVED

    # sample 05 deletes the replacement: ITI-57 to the DMP's Deleted status
    await h.publish((SAMPLES / "05_ORU_R01_deletion_CR-BIO.hl7").read_bytes(), message_id="m-05")
    await wait_until(lambda: settled(h, "m-05"), what="sample 05 settled")
    assert dmp_delivery(await h.journal.deliveries("m-05")).status == "delivered"
    assert sandbox.state.documents[replacement_uid].status == DELETED


async def test_a_replacement_without_its_prior_document_is_refused_with_the_registry_code(h, sandbox):
    await h.start_gateway()
    await h.publish((SAMPLES / "02_ORU_R01_replacement_CR-BIO.hl7").read_bytes(), message_id="m-orphan")
    await wait_until(lambda: settled(h, "m-orphan"), what="the orphan replacement settled")
    dmp = dmp_delivery(await h.journal.deliveries("m-orphan"))
    assert dmp.status == "dead_lettered" and dmp.detail["reason"] == "refused"
    assert dmp.detail["error"] == "XDSDocumentUniqueIdError" and dmp.detail["step"] == "iti18"
    assert "1.2.250.1.213.1.1.1.55.2021.6.2" not in sandbox.state.documents


async def test_registry_busy_is_retried_and_a_closed_dmp_is_refused_with_z01_n(h, sandbox):
    await h.start_gateway()
    sandbox.state.registry_error = "XDSRegistryBusy"
    await h.publish((SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes(), message_id="m-busy")
    await wait_until(lambda: settled(h, "m-busy"), what="delivery after a busy registry")
    dmp = dmp_delivery(await h.journal.deliveries("m-busy"))
    assert dmp.status == "delivered" and dmp.attempts == 2

    sandbox.state.registry_error = "DMPClosed"
    await h.publish((SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(), message_id="m-closed")
    await wait_until(lambda: settled(h, "m-closed"), what="the closed DMP's refusal")
    dmp = dmp_delivery(await h.journal.deliveries("m-closed"))
    assert dmp.status == "dead_lettered" and dmp.detail["error"] == "DMPClosed"
    await wait_until(lambda: any(b"ACK_RECEPTION_DMP" in z and b"|N^^" in z for z in h.zam_raw), what="Z01 N")
    z01 = next(parse_message(z) for z in h.zam_raw if b"|N^^" in z)
    assert z01.segment("ERR").get(5) == "DMPClosed" and z01.segment("ERR").get(5, 1, 3) == "DMP_ERROR_CODE"
