"""The XDS DMP sandbox over real HTTPS with client certificates: TD2.1 requests built by the gateway
(``build_iti41``) are accepted, replaced, found and deleted; tampered or non-conforming ones are refused with
the documented codes; TLS without a client certificate and the injected faults behave as the client will see
them."""

from __future__ import annotations

import functools
import hashlib
import json
import ssl
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import trustme
from lxml import etree

from gateway.delivery.dmp import mtom, queries, soap, vihf
from gateway.delivery.dmp.iti41 import SigningMaterial, build_iti41, soap_request, submission_oid
from gateway.delivery.dmp.registry_response import QUERY_NS, RegistryResult, parse_registry_response
from gateway.delivery.dmp.xds_sandbox import XdsSandbox
from gateway.delivery.mssante.xdm_metadata import RIM_NS, patient_cx
from gateway.model import Code, DocumentSubmission
from tests.test_iti41_metadata import dmp_submission
from tests.test_iti41_request import OPTIONS
from tests.test_xdm_schema import SCHEMAS, errors, load_schema

R = f"{{{RIM_NS}}}"
INITIAL = "01_ORU_R01_initial_CR-BIO.hl7"
REPLACEMENT = "02_ORU_R01_replacement_CR-BIO.hl7"
TIMEOUT = httpx.Timeout(20.0)


@functools.cache
def submission(name: str) -> DocumentSubmission:
    return dmp_submission(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two RSA CAs: the TLS one (server and client certificates) and the IGC-Santé stand-in (seal)."""
    folder = tmp_path_factory.mktemp("pki")
    tls_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    seal_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = tls_ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)
    client = tls_ca.issue_cert("gateway.hopital.example", key_type=trustme.KeyType.RSA)
    seal = seal_ca.issue_cert("cachet.hopital.example", key_type=trustme.KeyType.RSA)
    paths = {}
    for name, blob in {
        "tls_ca.pem": tls_ca.cert_pem.bytes(),
        "server.pem": b"".join(p.bytes() for p in server.cert_chain_pems),
        "server.key": server.private_key_pem.bytes(),
        "client.pem": b"".join(p.bytes() for p in client.cert_chain_pems),
        "client.key": client.private_key_pem.bytes(),
    }.items():
        (folder / name).write_bytes(blob)
        paths[name] = folder / name
    signing = SigningMaterial(
        cert_pem=b"".join(p.bytes() for p in seal.cert_chain_pems), key_pem=seal.private_key_pem.bytes()
    )
    return paths, seal_ca.cert_pem.bytes(), signing


@pytest.fixture
async def start(pki):
    """Factory: a started sandbox (HTTPS, client certificate required); all are stopped at teardown."""
    paths, trust, _ = pki
    started: list[XdsSandbox] = []

    async def _start(**kw) -> XdsSandbox:
        sandbox = XdsSandbox(
            server_cert_pem=paths["server.pem"],
            server_key_pem=paths["server.key"],
            client_ca_pem=paths["tls_ca.pem"],
            trust_ca_pem=trust,
            **kw,
        )
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield _start
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def sandbox(start):
    return await start()


def tls_context(paths, *, with_client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths["tls_ca.pem"]))
    if with_client_cert:
        ctx.load_cert_chain(str(paths["client.pem"]), str(paths["client.key"]))
    return ctx


@pytest.fixture
async def client(pki):
    async with httpx.AsyncClient(verify=tls_context(pki[0]), timeout=TIMEOUT) as c:
        yield c


# ---------------------------------------------------------------------------------------------- helpers


def iti41(pki, sub: DocumentSubmission, **kw):
    return build_iti41(sub, OPTIONS, pki[2], now=datetime.now(UTC), **kw)


async def exchange(client: httpx.AsyncClient, url: str, body: bytes, content_type: str, action: str):
    """POST, check the SOAP answer (status, wsa:Action, RelatesTo = our MessageID) and parse it."""
    request_env, _ = mtom.decode_mtom(body, content_type)
    response = await client.post(url, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text[:500]
    env, _ = mtom.decode_mtom(response.content, response.headers["content-type"])
    assert soap.header_value(env, soap.WSA_NS, "Action") == soap.RESPONSE_ACTIONS[action]
    assert soap.header_value(env, soap.WSA_NS, "RelatesTo") == soap.header_value(
        request_env, soap.WSA_NS, "MessageID"
    )
    return env, parse_registry_response(env)


async def send(client, sandbox: XdsSandbox, req) -> RegistryResult:
    return (await exchange(client, sandbox.repository_url, req.body, req.content_type, req.action))[1]


async def registry_call(client, sandbox, pki, payload: etree._Element, action: str, sub: DocumentSubmission):
    req = soap_request(
        payload, action=action, to=sandbox.registry_url, sub=sub, options=OPTIONS, signing=pki[2],
        now=datetime.now(UTC),
    )  # fmt: skip
    return await exchange(client, sandbox.registry_url, req.body, req.content_type, action)


def rewrite(req, *, envelope=None, parts=None) -> tuple[bytes, str]:
    """Decode the built request, let ``envelope(env)`` / ``parts(env, attachments)`` edit it, re-encode it."""
    env, attachments = mtom.decode_mtom(req.body, req.content_type)
    if envelope:
        envelope(env)
    if parts:
        parts(env, attachments)
    return mtom.encode_mtom(env, attachments)


def document_cid(env: etree._Element, entry_id: str) -> str:
    doc = env.find(f".//{{{soap.XDSB_NS}}}Document[@id='{entry_id}']")
    return doc.find(f"{{{soap.XOP_NS}}}Include").get("href").removeprefix("cid:")


def failure(result: RegistryResult, code: str, context_prefix: str) -> None:
    assert not result.ok, "the sandbox accepted a request it should refuse"
    assert (result.errors[0].code, result.errors[0].context.split(":")[0]) == (code, context_prefix), (
        result.errors
    )


def with_type_code(sub: DocumentSubmission, code: Code) -> DocumentSubmission:
    doc = sub.documents[0]
    doc = doc.model_copy(update={"metadata": doc.metadata.model_copy(update={"type_code": code})})
    return sub.model_copy(update={"documents": [doc]})


def patient_of(sub: DocumentSubmission) -> str:
    return patient_cx(sub.patient.ins, sub.patient.ins_oid)


# ----------------------------------------------------------------------------------------- acceptance


async def test_initial_is_accepted_and_stored_approved(pki, start, client, tmp_path):
    sandbox = await start(out_dir=tmp_path / "out")
    sub = submission(INITIAL)
    req = iti41(pki, sub)
    result = await send(client, sandbox, req)
    assert result.ok, result.errors
    uid = sub.documents[0].metadata.unique_id
    doc = sandbox.state.by_unique_id(uid)
    assert doc is not None and doc.status == queries.APPROVED
    assert doc.entry_uuid.startswith("urn:uuid:") and doc.patient_id == patient_of(sub)
    assert doc.hash == hashlib.sha1(sub.documents[0].content.data).hexdigest()
    assert doc.size == len(sub.documents[0].content.data)
    # the DSG signature entry is registered too, with the uniqueId the request gave it
    assert sandbox.state.by_unique_id(req.signature_unique_id) is not None
    assert len(sandbox.state.documents) == 2
    assert sandbox.state.requests[soap.ITI41_ACTION] == 1
    # one summary per submission, with the metadata and no document bytes
    (written,) = sorted((tmp_path / "out").glob("*.json"))
    summary = json.loads(written.read_text(encoding="utf-8"))
    assert summary["status"] == "Success" and summary["submissionSetUniqueId"] == req.submission_unique_id
    assert {d["unique_id"] for d in summary["documents"]} == {
        uid,
        req.signature_unique_id,
    }
    assert "ClinicalDocument" not in written.read_text(encoding="utf-8")


async def test_n1_pdf_document_is_accepted(pki, sandbox, client):
    sub = submission("04_MDM_T02_initial_CR-IMG_PS_only.hl7")
    assert sub.documents[0].metadata.level == "N1"
    result = await send(client, sandbox, iti41(pki, sub))
    assert result.ok, result.errors
    assert sandbox.state.documents[sub.documents[0].metadata.unique_id].status == queries.APPROVED


async def test_replacement_deprecates_the_replaced_entry(pki, sandbox, client):
    assert (await send(client, sandbox, iti41(pki, submission(INITIAL)))).ok
    old = sandbox.state.by_unique_id(submission(INITIAL).documents[0].metadata.unique_id)
    result = await send(
        client, sandbox, iti41(pki, submission(REPLACEMENT), replaced_entry_uuid=old.entry_uuid)
    )
    assert result.ok, result.errors
    new = sandbox.state.by_unique_id(submission(REPLACEMENT).documents[0].metadata.unique_id)
    assert (old.status, new.status, new.replaces) == (queries.DEPRECATED, queries.APPROVED, old.entry_uuid)
    # a deprecated entry cannot be replaced again
    again = submission(REPLACEMENT).model_copy(deep=True)
    again.documents[0].metadata.unique_id = "1.2.250.1.213.1.1.1.55.2021.6.3"
    failure(
        await send(client, sandbox, iti41(pki, again, replaced_entry_uuid=old.entry_uuid)),
        "XDSReplaceFailed",
        "RPLC-NOT-APPROVED",
    )


async def test_iti18_get_documents_and_find_documents(pki, sandbox, client):
    sub = submission(INITIAL)
    assert (await send(client, sandbox, iti41(pki, sub))).ok
    uid = sub.documents[0].metadata.unique_id
    stored = sandbox.state.by_unique_id(uid)
    env, result = await registry_call(
        client, sandbox, pki, queries.get_documents_by_unique_id([uid]), soap.ITI18_ACTION, sub
    )
    assert result.ok, result.errors
    assert [(d.entry_uuid, d.unique_id, d.status) for d in result.documents] == [
        (stored.entry_uuid, uid, queries.APPROVED)
    ]
    response = soap.body_payload(env)
    assert response.tag == f"{{{QUERY_NS}}}AdhocQueryResponse"
    assert errors(load_schema(SCHEMAS / "ebrs30" / "query.xsd")[0], response) == []
    # FindDocuments by the patient: both entries (document and signature), as ObjectRefs
    _, found = await registry_call(
        client, sandbox, pki, queries.find_documents(patient_of(sub)), soap.ITI18_ACTION, sub
    )
    assert found.ok and {d.entry_uuid for d in found.documents} == {
        d.entry_uuid for d in sandbox.state.documents.values()
    }
    # an unknown uniqueId finds nothing
    _, none = await registry_call(
        client, sandbox, pki, queries.get_documents_by_unique_id(["1.2.3.4"]), soap.ITI18_ACTION, sub
    )
    assert none.ok and none.documents == []
    assert sandbox.state.requests[soap.ITI18_ACTION] == 3


async def test_iti57_deletes_then_refuses_a_stale_original_status(pki, sandbox, client):
    sub = submission(INITIAL)
    assert (await send(client, sandbox, iti41(pki, sub))).ok
    stored = sandbox.state.by_unique_id(sub.documents[0].metadata.unique_id)

    def update(entry_uuid: str) -> etree._Element:
        return queries.update_availability_status(
            entry_uuid=entry_uuid, patient_id=patient_of(sub), submission_unique_id=submission_oid(),
            source_id=OPTIONS.source_id, submission_time=datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
        )  # fmt: skip

    _, result = await registry_call(client, sandbox, pki, update(stored.entry_uuid), soap.ITI57_ACTION, sub)
    assert result.ok, result.errors
    assert stored.status == queries.DELETED
    # OriginalStatus Approved no longer matches
    _, again = await registry_call(client, sandbox, pki, update(stored.entry_uuid), soap.ITI57_ACTION, sub)
    failure(again, "XDSMetadataUpdateError", "UPDATE-ORIGINAL-STATUS")
    _, unknown = await registry_call(
        client, sandbox, pki, update(f"urn:uuid:{uuid.uuid4()}"), soap.ITI57_ACTION, sub
    )
    failure(unknown, "XDSMetadataUpdateError", "UPDATE-UNKNOWN-ENTRY")


# ------------------------------------------------------------------------------------------ rejections


async def test_tampered_vihf_is_refused(pki, sandbox, client):
    req = iti41(pki, submission(INITIAL))

    def other_ins(env):
        (value,) = [
            a.find(f"{{{vihf.SAML_NS}}}AttributeValue")
            for a in env.iter(f"{{{vihf.SAML_NS}}}Attribute")
            if a.get("Name") == vihf.A_RESOURCE_ID
        ]
        value.text = value.text.replace("279035121518989", "162018885045327")

    body, content_type = rewrite(req, envelope=other_ins)
    _, result = await exchange(client, sandbox.repository_url, body, content_type, soap.ITI41_ACTION)
    failure(result, "DMPAuthenticationError", "VIHF-SIGNATURE")
    assert "279035121518989" not in result.errors[0].context
    assert sandbox.state.documents == {}


async def test_vihf_signed_by_an_untrusted_seal_is_refused(pki, sandbox, client):
    rogue = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert("rogue.example", key_type=trustme.KeyType.RSA)
    signing = SigningMaterial(
        cert_pem=b"".join(p.bytes() for p in rogue.cert_chain_pems), key_pem=rogue.private_key_pem.bytes()
    )
    req = build_iti41(submission(INITIAL), OPTIONS, signing, now=datetime.now(UTC))
    failure(await send(client, sandbox, req), "DMPAuthenticationError", "VIHF-SIGNATURE")


async def test_document_changed_after_signing_is_refused(pki, sandbox, client):
    req = iti41(pki, submission(INITIAL))

    def flip_a_byte(env, attachments):
        cid = document_cid(env, "Document01")
        data = bytearray(attachments[cid])
        data[-10] ^= 0x01
        attachments[cid] = bytes(data)

    body, content_type = rewrite(req, parts=flip_a_byte)
    _, result = await exchange(client, sandbox.repository_url, body, content_type, soap.ITI41_ACTION)
    failure(result, "XDSRepositoryMetadataError", "HASH-MISMATCH")
    assert result.errors[0].location == "Document01"
    assert sandbox.state.documents == {}


async def test_document_and_metadata_changed_after_signing_fail_the_dsg_signature(pki, sandbox, client):
    """The hash and size slots follow the new bytes: only the DSG Manifest still knows the signed ones."""
    req = iti41(pki, submission(INITIAL))

    def swap_document(env, attachments):
        cid = document_cid(env, "Document01")
        data = attachments[cid].replace(b"</ClinicalDocument>", b"<!-- x --></ClinicalDocument>")
        assert data != attachments[cid]
        attachments[cid] = data
        entry = env.find(f".//{R}ExtrinsicObject[@id='Document01']")
        entry.find(f"{R}Slot[@name='hash']/{R}ValueList/{R}Value").text = hashlib.sha1(data).hexdigest()
        entry.find(f"{R}Slot[@name='size']/{R}ValueList/{R}Value").text = str(len(data))

    body, content_type = rewrite(req, parts=swap_document)
    _, result = await exchange(client, sandbox.repository_url, body, content_type, soap.ITI41_ACTION)
    failure(result, "XDSRegistryMetadataError", "DSG-DIGEST-MISMATCH")


async def test_schema_invalid_request_is_refused(pki, sandbox, client):
    req = iti41(pki, submission(INITIAL))

    def drop_document_id(env, _attachments):
        del env.find(f".//{{{soap.XDSB_NS}}}Document").attrib["id"]

    body, content_type = rewrite(req, parts=drop_document_id)
    _, result = await exchange(client, sandbox.repository_url, body, content_type, soap.ITI41_ACTION)
    failure(result, "XDSRegistryMetadataError", "SCHEMA-XDSB")


async def test_type_code_outside_j66_is_refused(pki, sandbox, client):
    # EXPORT_DUI is in the CI-SIS J07 but not in the DMP's J66
    sub = with_type_code(submission(INITIAL), Code(code="EXPORT_DUI", code_system="1.2.250.1.213.1.1.4.12"))
    failure(await send(client, sandbox, iti41(pki, sub)), "XDSRegistryMetadataError", "JDV-J66-TYPECODE")
    assert sandbox.state.documents == {}


async def test_test_ins_is_unknown_to_a_production_registry(pki, start, client):
    sandbox = await start(production_ins=True)
    assert submission(INITIAL).patient.ins_oid == "1.2.250.1.213.1.4.10"
    failure(
        await send(client, sandbox, iti41(pki, submission(INITIAL))), "XDSUnknownPatientId", "INS-TEST-OID"
    )


async def test_replacement_of_an_unknown_entry_is_refused(pki, sandbox, client):
    req = iti41(pki, submission(REPLACEMENT), replaced_entry_uuid=f"urn:uuid:{uuid.uuid4()}")
    failure(await send(client, sandbox, req), "XDSReplaceFailed", "RPLC-UNKNOWN")
    assert sandbox.state.documents == {}


async def test_duplicate_unique_id_is_refused(pki, sandbox, client):
    assert (await send(client, sandbox, iti41(pki, submission(INITIAL)))).ok
    result = await send(client, sandbox, iti41(pki, submission(INITIAL)))
    failure(result, "XDSDuplicateUniqueIdInRegistry", "UNIQUE-ID-REGISTERED")
    assert len(sandbox.state.documents) == 2  # nothing new stored


# ------------------------------------------------------------------------------------- transport, faults


async def test_client_without_certificate_is_refused_at_tls(pki, sandbox):
    req = iti41(pki, submission(INITIAL))
    async with httpx.AsyncClient(verify=tls_context(pki[0], with_client_cert=False), timeout=TIMEOUT) as c:
        with pytest.raises(httpx.TransportError):
            await c.post(sandbox.repository_url, content=req.body, headers={"Content-Type": req.content_type})
    assert sum(sandbox.state.requests.values()) == 0


async def test_undecodable_request_and_wrong_endpoint_get_sender_faults(pki, sandbox, client):
    response = await client.post(
        sandbox.repository_url, content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 400
    parsed = soap.fault(mtom.decode_mtom(response.content, response.headers["content-type"])[0])
    assert parsed.code == "Sender" and not parsed.transient
    req = iti41(pki, submission(INITIAL))
    response = await client.post(
        sandbox.registry_url, content=req.body, headers={"Content-Type": req.content_type}
    )
    parsed = soap.fault(mtom.decode_mtom(response.content, response.headers["content-type"])[0])
    assert (response.status_code, parsed.code, parsed.subcode) == (
        400,
        "Sender",
        f"{{{soap.WSA_NS}}}ActionNotSupported",
    )


async def test_injected_503_then_success(pki, sandbox, client):
    sandbox.state.fail_next, sandbox.state.fail_status = 1, 503
    req = iti41(pki, submission(INITIAL))
    response = await client.post(
        sandbox.repository_url, content=req.body, headers={"Content-Type": req.content_type}
    )
    assert response.status_code == 503
    parsed = soap.fault(mtom.decode_mtom(response.content, response.headers["content-type"])[0])
    assert parsed.code == "Receiver" and parsed.transient
    assert sandbox.state.documents == {}
    assert (await send(client, sandbox, req)).ok  # the same request, resent
    assert sandbox.state.requests[soap.ITI41_ACTION] == 2


async def test_injected_registry_error_is_one_shot(pki, sandbox, client):
    sandbox.state.registry_error = "DMPClosed"
    req = iti41(pki, submission(INITIAL))
    result = await send(client, sandbox, req)
    failure(result, "DMPClosed", "SANDBOX-INJECTED")
    assert not result.transient and sandbox.state.documents == {}
    sandbox.state.registry_error = "XDSRegistryBusy"
    busy = await send(client, sandbox, req)
    assert busy.codes == ["XDSRegistryBusy"] and busy.transient
    assert (await send(client, sandbox, req)).ok


async def test_slow_answer_times_the_client_out(pki, sandbox):
    sandbox.state.delay_s = 1.0
    req = iti41(pki, submission(INITIAL))
    async with httpx.AsyncClient(verify=tls_context(pki[0]), timeout=httpx.Timeout(0.3)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(sandbox.repository_url, content=req.body, headers={"Content-Type": req.content_type})


async def test_plain_http_and_plain_soap(pki):
    """Without a server certificate (demo only) the sandbox speaks HTTP; a plain application/soap+xml request
    gets a plain answer."""
    sandbox = XdsSandbox(trust_ca_pem=pki[1])
    await sandbox.start()
    try:
        assert sandbox.repository_url.startswith("http://127.0.0.1:")
        assert sandbox.registry_url.endswith("/registry")
        sub = submission(INITIAL)
        async with httpx.AsyncClient(timeout=TIMEOUT) as c:
            req = iti41(pki, sub)
            _, result = await exchange(c, sandbox.repository_url, req.body, req.content_type, req.action)
            assert result.ok, result.errors
            query = soap_request(
                queries.get_documents_by_unique_id([sub.documents[0].metadata.unique_id]),
                action=soap.ITI18_ACTION, to=sandbox.registry_url, sub=sub, options=OPTIONS, signing=pki[2],
                now=datetime.now(UTC),
            )  # fmt: skip
            env, _ = mtom.decode_mtom(query.body, query.content_type)
            plain = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
            response = await c.post(
                sandbox.registry_url, content=plain, headers={"Content-Type": "application/soap+xml"}
            )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/soap+xml")
        found = parse_registry_response(
            mtom.decode_mtom(response.content, response.headers["content-type"])[0]
        )
        assert found.ok and len(found.documents) == 1
    finally:
        await sandbox.stop()
