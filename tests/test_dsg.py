"""IHE DSG submission-set signature (gateway.delivery.dmp.dsg) against a throwaway PKI and the DRIM-M request."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from gateway.delivery.dmp import dsg
from gateway.delivery.dmp.dsg import (
    DsgError,
    build_dsg_signature,
    signature_entry_metadata,
    verify_dsg_signature,
)
from tests.conftest import ANS_CDA, SHARED, require_shared

DRIMM = SHARED / "cisis/dmp-xds/drimm-DMP-ITI41-ProvideAndRegister-KOS-with-VIHF.mime.txt"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
XADES = "{http://uri.etsi.org/01903/v1.1.1#}"
CDA_UID = "1.2.250.1.999.1.1.8121.1.42"
PDF_UID = "1.2.250.1.999.1.1.8121.1.43"
SS_UID = "1.2.250.1.999.1.1.8121.5.7122"
PARIS = timezone(timedelta(hours=1))
SIGNING_TIME = datetime(2023, 11, 14, 14, 44, 58, 150000, tzinfo=PARIS)


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("dsg-signer.example", key_type=trustme.KeyType.RSA)
    other = trustme.CA(key_type=trustme.KeyType.RSA)
    return {
        "key": leaf.private_key_pem.bytes(),
        "cert": leaf.cert_chain_pems[0].bytes(),
        "ca": ca.cert_pem.bytes(),
        "other_ca": other.cert_pem.bytes(),
    }


@pytest.fixture(scope="module")
def docs() -> dict[str, bytes]:
    require_shared()
    return {
        CDA_UID: (ANS_CDA / "VAC-NOTE_2023.01.xml").read_bytes(),
        PDF_UID: b"%PDF-1.4\n% a second document\n",
    }


def _sign(pki: dict[str, bytes], docs: dict[str, bytes], **kwargs) -> bytes:
    return build_dsg_signature(
        list(docs.items()), key_pem=pki["key"], cert_pem=pki["cert"], signing_time=SIGNING_TIME, **kwargs
    )


def _resign(signature: bytes, key_pem: bytes, mutate: Callable[[etree._Element], None]) -> bytes:
    """Apply ``mutate`` to the signature tree, then recompute the SignedInfo digests and value (a well-signed
    but otherwise altered signature, to reach the checks that come after the cryptographic ones)."""
    root = etree.fromstring(signature)
    mutate(root)
    signed_info = root.find(f"{DS}SignedInfo")
    for ref in signed_info.findall(f"{DS}Reference"):
        target = root.xpath("//*[@Id=$id]", id=ref.get("URI")[1:])[0]
        ref.find(f"{DS}DigestValue").text = base64.b64encode(
            hashlib.sha256(dsg._c14n(target, dsg.C14N)).digest()
        ).decode()
    key = serialization.load_pem_private_key(key_pem, password=None)
    value = key.sign(dsg._c14n(signed_info, dsg.C14N_WITH_COMMENTS), padding.PKCS1v15(), hashes.SHA256())
    root.find(f"{DS}SignatureValue").text = base64.b64encode(value).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _drimm_parts() -> tuple[etree._Element, etree._Element]:
    """(SOAP envelope, signature) of the DRIM-M request. The signature part is indented in the file; the
    original was emitted without whitespace (that is how its SignedInfo digests come out), so it is compacted."""
    require_shared()
    raw = DRIMM.read_text(encoding="utf-8")
    soap = raw.split("Content-ID: <0.1>", 1)[1].split("--MIMEBoundary_Bound", 1)[0].strip()
    part = raw.split("Content-ID: <0.3>", 1)[1].split("--MIMEBoundary_Bound", 1)[0].strip()
    sig = re.sub(r">\s+<", "><", part[part.index("<Signature") :])
    return etree.fromstring(soap.encode()), etree.fromstring(sig.encode())


def _tag_paths(root: etree._Element) -> list[str]:
    out = []
    for el in root.iter(etree.Element):
        names = [el.tag, *(a.tag for a in el.iterancestors())]
        out.append("/".join(reversed(names)))
    return out


def _rule(exc: pytest.ExceptionInfo[DsgError]) -> str:
    return exc.value.rule


# ---------------------------------------------------------------------------------------------------- tests


def test_sign_then_verify_ok(pki, docs):
    sig = _sign(pki, docs, submission_set_unique_id=SS_UID)
    verify_dsg_signature(sig, docs, ca_pem=pki["ca"], submission_set_unique_id=SS_UID)
    root = etree.fromstring(sig)
    assert (
        root.find(f"{DS}SignedInfo/{DS}SignatureMethod").get("Algorithm") == dsg.SIGNATURE_URIS["rsa-sha256"]
    )
    uris = [r.get("URI") for r in root.findall(f"{DS}Object/{DS}Manifest/{DS}Reference")]
    assert uris == [f"urn:oid:{SS_UID}", f"urn:oid:{CDA_UID}", f"urn:oid:{PDF_UID}"]
    cda_ref = root.find(f"{DS}Object/{DS}Manifest/{DS}Reference[@URI='urn:oid:{CDA_UID}']")
    assert base64.b64decode(cda_ref.findtext(f"{DS}DigestValue")) == hashlib.sha256(docs[CDA_UID]).digest()
    assert root.findtext(f".//{XADES}SigningTime") == "2023-11-14T14:44:58.150+01:00"


def test_modified_document_is_a_digest_mismatch_naming_it(pki, docs):
    sig = _sign(pki, docs)
    altered = {**docs, CDA_UID: docs[CDA_UID].replace(b"<title>", b"<title>X", 1)}
    assert altered[CDA_UID] != docs[CDA_UID]
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, altered, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_DIGEST_MISMATCH
    assert CDA_UID in str(exc.value) and PDF_UID not in str(exc.value)


def test_modified_signing_time_breaks_the_signature(pki, docs):
    sig = _sign(pki, docs)
    tampered = sig.replace(b"2023-11-14T14:44:58.150+01:00", b"2023-11-15T14:44:58.150+01:00")
    assert tampered != sig
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(tampered, docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_SIGNATURE_INVALID


def test_modified_signature_value_is_invalid(pki, docs):
    sig = _sign(pki, docs)
    root = etree.fromstring(sig)
    value = bytearray(base64.b64decode(root.findtext(f"{DS}SignatureValue")))
    value[10] ^= 0x01
    root.find(f"{DS}SignatureValue").text = base64.b64encode(bytes(value)).decode()
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(etree.tostring(root), docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_SIGNATURE_INVALID


def test_other_ca_is_untrusted(pki, docs):
    sig = _sign(pki, docs)
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["other_ca"])
    assert _rule(exc) == dsg.RULE_CERT_UNTRUSTED


def test_signing_time_outside_certificate_validity_is_untrusted(pki, docs):
    sig = build_dsg_signature(
        list(docs.items()),
        key_pem=pki["key"],
        cert_pem=pki["cert"],
        signing_time=datetime(1999, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_CERT_UNTRUSTED


def test_missing_and_unsigned_documents(pki, docs):
    sig = _sign(pki, docs)
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, {CDA_UID: docs[CDA_UID]}, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_DOCUMENT_MISSING and PDF_UID in str(exc.value)
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, {**docs, "1.2.3.4": b"extra"}, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_DOCUMENT_NOT_SIGNED and "1.2.3.4" in str(exc.value)
    # The SubmissionSet entry is required when asked for, and absent here.
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["ca"], submission_set_unique_id=SS_UID)
    assert _rule(exc) == dsg.RULE_DOCUMENT_MISSING and SS_UID in str(exc.value)


def test_signed_properties_missing(pki, docs):
    def drop_signed_properties(root: etree._Element) -> None:
        signed_info = root.find(f"{DS}SignedInfo")
        for ref in signed_info.findall(f"{DS}Reference"):
            if ref.get("URI") == f"#{dsg.SIGNED_PROPERTIES_ID}":
                signed_info.remove(ref)

    sig = _resign(_sign(pki, docs), pki["key"], drop_signed_properties)
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_SIGNED_PROPERTIES_MISSING


def test_signing_certificate_must_designate_the_signer(pki, docs):
    def wrong_serial(root: etree._Element) -> None:
        root.find(f".//{DS}X509SerialNumber").text = "12345"

    sig = _resign(_sign(pki, docs), pki["key"], wrong_serial)
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_SIGNING_CERT_MISMATCH


def test_purpose_of_signature_is_checked(pki, docs):
    sig = _sign(pki, docs).replace(b">1.2.840.10065.1.12.1.14<", b">1.2.840.10065.1.12.1.1<")
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_PURPOSE


def test_duplicate_id_is_refused(pki, docs):
    # A second element carrying Id="IHEManifest" (signature wrapping): the reference no longer resolves.
    sig = _sign(pki, docs).replace(
        b"</Signature>", b'<Object><Manifest Id="IHEManifest"/></Object></Signature>'
    )
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_SIGNATURE_INVALID


def test_c14n_transform_on_a_cda_reference_is_honoured(pki, docs):
    """DRIMbox / ASIP samples digest a CDA after C14N WithComments, with a Transform saying so."""

    def canonicalized_cda(root: etree._Element) -> None:
        ref = root.find(f"{DS}Object/{DS}Manifest/{DS}Reference[@URI='urn:oid:{CDA_UID}']")
        transforms = etree.Element(f"{DS}Transforms")
        etree.SubElement(transforms, f"{DS}Transform", Algorithm=dsg.C14N_WITH_COMMENTS)
        ref.insert(0, transforms)
        c14n = etree.tostring(
            etree.fromstring(docs[CDA_UID]).getroottree(), method="c14n", with_comments=True
        )
        ref.find(f"{DS}DigestValue").text = base64.b64encode(hashlib.sha256(c14n).digest()).decode()

    sig = _resign(_sign(pki, docs), pki["key"], canonicalized_cda)
    verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    with pytest.raises(DsgError) as exc:
        verify_dsg_signature(sig, {**docs, CDA_UID: docs[CDA_UID] + b"<!-- x -->"}, ca_pem=pki["ca"])
    assert _rule(exc) == dsg.RULE_DIGEST_MISMATCH


def test_malformed_input(pki, docs):
    for data in (b"<notasignature/>", b"not xml", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'):
        with pytest.raises(DsgError) as exc:
            verify_dsg_signature(data, docs, ca_pem=pki["ca"])
        assert _rule(exc) == dsg.RULE_MALFORMED


def test_sha1_mode_uses_the_sha1_uris(pki, docs):
    sig = _sign(pki, docs, digest="sha1", algorithm="rsa-sha1")
    verify_dsg_signature(sig, docs, ca_pem=pki["ca"])
    root = etree.fromstring(sig)
    assert root.find(f"{DS}SignedInfo/{DS}SignatureMethod").get("Algorithm") == (
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    )
    methods = {m.get("Algorithm") for m in root.iter(f"{DS}DigestMethod", f"{XADES}DigestMethod")}
    assert methods == {"http://www.w3.org/2000/09/xmldsig#sha1"}
    assert len(list(root.iter(f"{DS}DigestMethod", f"{XADES}DigestMethod"))) == 5  # 2 signed + 2 docs + cert
    default = etree.fromstring(_sign(pki, docs))
    assert {m.get("Algorithm") for m in default.iter(f"{DS}DigestMethod")} == {dsg.DIGEST_URIS["sha256"]}


def test_arguments_are_checked(pki, docs):
    with pytest.raises(ValueError, match="timezone"):
        build_dsg_signature(
            list(docs.items()), key_pem=pki["key"], cert_pem=pki["cert"], signing_time=datetime(2024, 1, 1)
        )
    with pytest.raises(ValueError, match="distinct"):
        build_dsg_signature(
            [(CDA_UID, b"a"), (CDA_UID, b"b")],
            key_pem=pki["key"],
            cert_pem=pki["cert"],
            signing_time=SIGNING_TIME,
        )
    ec = trustme.CA().issue_cert("ec.example")  # trustme's default key type is ECDSA
    with pytest.raises(ValueError, match="RSA"):
        build_dsg_signature(
            list(docs.items()),
            key_pem=ec.private_key_pem.bytes(),
            cert_pem=ec.cert_chain_pems[0].bytes(),
            signing_time=SIGNING_TIME,
        )


def test_structure_matches_the_drimm_signature(pki, docs):
    """Same elements, namespaces, nesting and order as the DRIM-M signature (values and attributes ignored):
    one signed document plus the SubmissionSet entry gives the same two Manifest references as DRIM-M."""
    _, drimm = _drimm_parts()
    ours = etree.fromstring(
        _sign(
            pki,
            {CDA_UID: docs[CDA_UID]},
            submission_set_unique_id=SS_UID,
            digest="sha1",
            algorithm="rsa-sha1",
        )
    )
    assert _tag_paths(ours) == _tag_paths(drimm)
    # Same attributes where they carry protocol meaning.
    for path in (
        f"{DS}SignedInfo/{DS}CanonicalizationMethod",
        f"{DS}SignedInfo/{DS}SignatureMethod",
        f"{DS}Object/{DS}SignatureProperties/{DS}SignatureProperty",
        f"{DS}Object/{DS}Manifest",
    ):
        assert {k: v for k, v in ours.find(path).attrib.items() if "schemaLocation" not in k} == {
            k: v.replace(drimm.get("Id"), ours.get("Id"))
            for k, v in drimm.find(path).attrib.items()
            if "schemaLocation" not in k
        }, path
    assert [(r.get("Type"), r.get("URI")) for r in ours.findall(f"{DS}SignedInfo/{DS}Reference")] == [
        (r.get("Type"), r.get("URI")) for r in drimm.findall(f"{DS}SignedInfo/{DS}Reference")
    ]
    assert ours.find(f"{DS}Object/{DS}Manifest/{DS}Reference").findtext(f"{DS}DigestValue") == "AA=="
    assert drimm.find(f"{DS}Object/{DS}Manifest/{DS}Reference").findtext(f"{DS}DigestValue") == "AA=="


def test_c14n_reproduces_the_drimm_signed_info_digests():
    """Our canonicalization gives back the SHA-1 digests DRIM-M put in SignedInfo (lxml's own inclusive C14N
    of a subtree does not: it adds xmlns="" to descendants)."""
    _, drimm = _drimm_parts()
    for ref in drimm.findall(f"{DS}SignedInfo/{DS}Reference"):
        target = drimm.xpath("//*[@Id=$id]", id=ref.get("URI")[1:])[0]
        digest = base64.b64encode(hashlib.sha1(dsg._c14n(target, dsg.C14N)).digest()).decode()
        assert digest == ref.findtext(f"{DS}DigestValue"), ref.get("URI")
    manifest = drimm.find(f"{DS}Object/{DS}Manifest")
    naive = base64.b64encode(hashlib.sha1(etree.tostring(manifest, method="c14n")).digest()).decode()
    assert naive != drimm.find(f"{DS}SignedInfo/{DS}Reference").findtext(f"{DS}DigestValue")


def test_signature_entry_metadata_matches_drimm(pki, docs):
    sig = _sign(pki, docs, signature_id="2.25.253872960909518376796861585574417771331")
    md = signature_entry_metadata(sig)
    assert md.unique_id == "2.25.253872960909518376796861585574417771331"
    assert md.hash == hashlib.sha1(sig).hexdigest() and md.size == len(sig)
    assert md.creation_time == "20231114134458"  # SigningTime 14:44:58+01:00 in UTC

    soap, _ = _drimm_parts()
    rim = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"
    entry = soap.find(f".//{rim}ExtrinsicObject[@id='Signature01']")
    assert entry.get("mimeType") == md.mime_type

    def coded(scheme: str) -> list[tuple[str, str, str]]:
        out = []
        for cl in entry.findall(f"{rim}Classification[@classificationScheme='{scheme}']"):
            out.append(
                (
                    cl.get("nodeRepresentation"),
                    cl.findtext(f"{rim}Slot[@name='codingScheme']/{rim}ValueList/{rim}Value"),
                    cl.find(f"{rim}Name/{rim}LocalizedString").get("value"),
                )
            )
        return out

    def triple(code) -> tuple[str, str, str]:
        return (code.code, code.code_system, code.display)

    assert coded("urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a") == [triple(md.class_code)]
    assert coded("urn:uuid:f0306f51-975f-434e-a61c-c59651d33983") == [triple(md.type_code)]
    assert coded("urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d") == [triple(md.format_code)]
    assert coded("urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4") == [triple(c) for c in md.event_codes]
    slot = entry.findtext(f"{rim}Slot[@name='languageCode']/{rim}ValueList/{rim}Value")
    assert slot == md.language_code
    assert entry.find(f"{rim}Name/{rim}LocalizedString").get("value") == md.title
    signs = soap.find(f".//{rim}Association[@sourceObject='Signature01'][@targetObject='SubmissionSet01']")
    assert signs.get("associationType") == md.association_type
    # DRIM-M's uniqueId is the Signature Id, like ours.
    uid = entry.find(
        f"{rim}ExternalIdentifier[@identificationScheme='urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']"
    )
    assert uid.get("value") == md.unique_id


def test_signature_entry_metadata_needs_an_oid(pki, docs):
    sig = _sign(pki, docs, signature_id="sig-1")
    with pytest.raises(ValueError, match="OID"):
        signature_entry_metadata(sig)
    assert signature_entry_metadata(sig, unique_id="1.2.3.4").unique_id == "1.2.3.4"
