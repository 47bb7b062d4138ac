"""The submission-set signature of a DMP feed: IHE DSG (Document Digital Signature), XML-DSig + XAdES.

What the DMP receives [cisis-facts §5, DRIM-M ``drimm-DMP-ITI41-ProvideAndRegister-KOS-with-VIHF``]: an extra
DocumentEntry ``Signature01`` (``text/xml``) whose content is a *detached* ``ds:Signature``:

* ``SignedInfo`` signs exactly two same-document references: ``#IHEManifest`` (``Type`` ``…xmldsig#Manifest``)
  and the XAdES ``#S0-SignedProperties`` (``Type`` ``http://uri.etsi.org/01903/v1.1.1#SignedProperties``);
* ``Object/Manifest Id="IHEManifest"`` lists one ``Reference URI="urn:oid:<uniqueId>"`` per document with the
  digest of its bytes (the Manifest is signed, each document digest is checked by the application — that is
  what makes the signature "detached" and survive the MTOM transport); the DMP examples (DRIM-M and the ASIP
  sample code) also list the SubmissionSet's own uniqueId with the placeholder digest ``AA==`` (one zero byte);
* ``Object/SignatureProperties/SignatureProperty Id="purposeOfSignature"`` = ``1.2.840.10065.1.12.1.14``
  (ASTM E1762 "Source"); like in DRIM-M it is *not* covered by SignedInfo;
* ``Object/QualifyingProperties`` in the **XAdES v1.1.1** namespace (``http://uri.etsi.org/01903/v1.1.1#``, as
  the DRIM-M request — not signxml's v1.3.2) with SigningTime, SigningCertificate (cert digest + issuer/serial)
  and ``SignaturePolicyImplied``.

How it is signed: by hand with lxml + ``cryptography``, not signxml. signxml's ``XAdESSigner`` hard-codes the
v1.3.2 namespace and ``SigningCertificateV2``, adds a reference to ``KeyInfo``, takes SigningTime from the clock,
cannot emit ``SignaturePolicyImplied`` and has no notion of a ``Manifest`` object or of a ``Type`` on the
references — i.e. it cannot produce DSG's layout. The canonicalization is the DRIM-M one, inclusive C14N 1.0
(``…REC-xml-c14n-20010315#WithComments`` on SignedInfo; the same-document references have no Transforms, so
their digests use inclusive C14N 1.0 by the XML-DSig default). lxml's inclusive C14N of a *subtree* is wrong
(it emits spurious ``xmlns=""`` on descendants), so :func:`_c14n` re-roots the subtree with its in-scope
namespaces first; the tests check it reproduces the two SignedInfo digests of the DRIM-M example.

The document digests are over the document bytes as sent (no Transform), like the KOS reference of DRIM-M and
the XDS ``hash``. :func:`verify_dsg_signature` also accepts references carrying a C14N Transform (the DRIMbox
and ASIP samples canonicalize CDA documents before digesting).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from gateway.model import Code

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
#: XAdES namespace of the DRIM-M request; v1.3.2 / v1.2.2 are accepted when verifying.
XADES_NS = "http://uri.etsi.org/01903/v1.1.1#"
_XADES_NAMESPACES = (XADES_NS, "http://uri.etsi.org/01903/v1.2.2#", "http://uri.etsi.org/01903/v1.3.2#")

MANIFEST_ID = "IHEManifest"
SIGNED_PROPERTIES_ID = "S0-SignedProperties"
MANIFEST_TYPE = f"{DS_NS}Manifest"
SIGNED_PROPERTIES_TYPE = f"{XADES_NS}SignedProperties"
#: ASTM E1762 / ISO 17090 "Source" signature: the purpose DSG gives a submission-set signature.
PURPOSE_OF_SIGNATURE = "1.2.840.10065.1.12.1.14"
#: Digest of the SubmissionSet reference in the Manifest: one zero byte (``AA==``), as DRIM-M / ASIP samples.
SUBMISSION_SET_PLACEHOLDER_DIGEST = b"\x00"

C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_WITH_COMMENTS = f"{C14N}#WithComments"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_WITH_COMMENTS = f"{EXC_C14N}WithComments"
# algorithm URI -> (exclusive, with_comments)
_C14N_ALGORITHMS = {
    C14N: (False, False),
    C14N_WITH_COMMENTS: (False, True),
    EXC_C14N: (True, False),
    EXC_C14N_WITH_COMMENTS: (True, True),
}

DIGEST_URIS = {
    "sha1": "http://www.w3.org/2000/09/xmldsig#sha1",
    "sha256": "http://www.w3.org/2001/04/xmlenc#sha256",
}
SIGNATURE_URIS = {
    "rsa-sha1": "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "rsa-sha256": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
}
_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    DIGEST_URIS["sha1"]: hashes.SHA1,
    DIGEST_URIS["sha256"]: hashes.SHA256,
    "http://www.w3.org/2001/04/xmlenc#sha512": hashes.SHA512,
}
_SIGNATURE_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    SIGNATURE_URIS["rsa-sha1"]: hashes.SHA1,
    SIGNATURE_URIS["rsa-sha256"]: hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
}

# Stable rule codes of DsgError.
RULE_MALFORMED = "DSG-MALFORMED"
RULE_UNSUPPORTED_ALGORITHM = "DSG-UNSUPPORTED-ALGORITHM"
RULE_SIGNATURE_INVALID = "DSG-SIGNATURE-INVALID"
RULE_CERT_UNTRUSTED = "DSG-CERT-UNTRUSTED"
RULE_SIGNED_PROPERTIES_MISSING = "DSG-SIGNED-PROPERTIES-MISSING"
RULE_SIGNING_CERT_MISMATCH = "DSG-SIGNING-CERT-MISMATCH"
RULE_PURPOSE = "DSG-PURPOSE"
RULE_DIGEST_MISMATCH = "DSG-DIGEST-MISMATCH"
RULE_DOCUMENT_MISSING = "DSG-DOCUMENT-MISSING"
RULE_DOCUMENT_NOT_SIGNED = "DSG-DOCUMENT-NOT-SIGNED"

_MAX_CHAIN = 8


class DsgError(ValueError):
    """The DSG signature is refused. ``rule`` is a stable code (``DSG-…``), the message says what and where."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message


def _ds(tag: str) -> str:
    return f"{{{DS_NS}}}{tag}"


def _xades(tag: str, ns: str = XADES_NS) -> str:
    return f"{{{ns}}}{tag}"


def _c14n(element: etree._Element, algorithm: str) -> bytes:
    """Canonical form of ``element``'s subtree under ``algorithm`` (a key of ``_C14N_ALGORITHMS``)."""
    exclusive, with_comments = _C14N_ALGORITHMS[algorithm]
    if exclusive:
        return etree.tostring(element, method="c14n", exclusive=True, with_comments=with_comments)
    # Inclusive C14N renders the whole namespace axis of the apex; lxml gets it wrong on a subtree (spurious
    # xmlns="" on descendants), right on a document root: re-root a copy carrying every in-scope namespace.
    copy = deepcopy(element)
    root = etree.Element(copy.tag, attrib=dict(copy.attrib), nsmap=element.nsmap)
    root.text = copy.text
    root.extend(list(copy))
    return etree.tostring(
        etree.ElementTree(root), method="c14n", exclusive=False, with_comments=with_comments
    )


def _b64digest(data: bytes, algorithm: Callable[[], hashes.HashAlgorithm]) -> str:
    h = hashes.Hash(algorithm())
    h.update(data)
    return base64.b64encode(h.finalize()).decode("ascii")


def _oid_from_uuid(value: uuid.UUID | None = None) -> str:
    """An OID under the ITU-T 2.25 arc (X.667): how DRIM-M names its signature (Signature/@Id = its uniqueId)."""
    return f"2.25.{(value or uuid.uuid4()).int}"


def _reference(
    parent: etree._Element, uri: str, digest_uri: str, digest_b64: str, type_: str | None = None
) -> etree._Element:
    ref = etree.SubElement(parent, _ds("Reference"))
    if type_:
        ref.set("Type", type_)
    ref.set("URI", uri)
    etree.SubElement(ref, _ds("DigestMethod"), Algorithm=digest_uri)
    etree.SubElement(ref, _ds("DigestValue")).text = digest_b64
    return ref


def build_dsg_signature(
    documents: list[tuple[str, bytes]],
    *,
    key_pem: bytes,
    cert_pem: bytes,
    key_password: bytes | None = None,
    signing_time: datetime,
    signature_id: str | None = None,
    submission_set_unique_id: str | None = None,
    digest: Literal["sha256", "sha1"] = "sha256",
    algorithm: Literal["rsa-sha256", "rsa-sha1"] = "rsa-sha256",
) -> bytes:
    """The DSG signature document (UTF-8 XML bytes) over ``documents`` = ``[(uniqueId, bytes), …]``.

    ``cert_pem`` is the signer's certificate, optionally followed by its intermediates (all go to KeyInfo).
    ``signature_id`` is the Signature ``Id``; DRIM-M uses the signature document's own uniqueId there, so the
    default is a fresh ``2.25.<uuid>`` OID to be used as that uniqueId (see :func:`signature_entry_metadata`).
    ``submission_set_unique_id``, when given, adds the SubmissionSet reference with the ``AA==`` placeholder
    digest first in the Manifest, as the DMP examples do (pass it for the DMP).
    SHA-1 / RSA-SHA1 (what DRIM-M used) only when asked for explicitly.
    """
    if not documents:
        raise ValueError("a DSG signature needs at least one document")
    unique_ids = [uid for uid, _ in documents]
    if len(set(unique_ids)) != len(unique_ids) or any(not uid for uid in unique_ids):
        raise ValueError("document uniqueIds must be non-empty and distinct")
    if signing_time.tzinfo is None or signing_time.utcoffset() is None:
        raise ValueError("signing_time must be timezone-aware (xs:dateTime with offset)")
    if digest not in DIGEST_URIS or algorithm not in SIGNATURE_URIS:
        raise ValueError(f"unsupported digest/algorithm {digest!r}/{algorithm!r}")
    key = serialization.load_pem_private_key(key_pem, password=key_password)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the DSG signing key must be RSA (rsa-sha256 / rsa-sha1)")
    certs = x509.load_pem_x509_certificates(cert_pem)
    signer = certs[0]
    if signer.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError("the certificate does not match the private key")

    digest_uri = DIGEST_URIS[digest]
    digest_alg = _DIGESTS[digest_uri]
    sig_id = signature_id or _oid_from_uuid()

    # Element order and namespaces follow the DRIM-M signature. Everything is built namespace-clean (the
    # ds default namespace on Signature, the XAdES default namespace on QualifyingProperties) and serialized
    # without indentation, so the digests computed on this tree are those of the emitted bytes.
    sig = etree.Element(_ds("Signature"), nsmap={None: DS_NS}, Id=sig_id)
    signed_info = etree.SubElement(sig, _ds("SignedInfo"))
    etree.SubElement(signed_info, _ds("CanonicalizationMethod"), Algorithm=C14N_WITH_COMMENTS)
    etree.SubElement(signed_info, _ds("SignatureMethod"), Algorithm=SIGNATURE_URIS[algorithm])
    signature_value = etree.SubElement(sig, _ds("SignatureValue"))
    x509_data = etree.SubElement(etree.SubElement(sig, _ds("KeyInfo")), _ds("X509Data"))
    for cert in certs:
        etree.SubElement(x509_data, _ds("X509Certificate")).text = base64.b64encode(
            cert.public_bytes(serialization.Encoding.DER)
        ).decode("ascii")

    props = etree.SubElement(etree.SubElement(sig, _ds("Object")), _ds("SignatureProperties"))
    purpose = etree.SubElement(props, _ds("SignatureProperty"), Id="purposeOfSignature", Target=f"#{sig_id}")
    purpose.text = PURPOSE_OF_SIGNATURE

    manifest = etree.SubElement(etree.SubElement(sig, _ds("Object")), _ds("Manifest"), Id=MANIFEST_ID)
    if submission_set_unique_id:
        _reference(
            manifest,
            f"urn:oid:{submission_set_unique_id}",
            digest_uri,
            base64.b64encode(SUBMISSION_SET_PLACEHOLDER_DIGEST).decode("ascii"),
        )
    for uid, content in documents:
        _reference(manifest, f"urn:oid:{uid}", digest_uri, _b64digest(content, digest_alg))

    qualifying = etree.SubElement(
        etree.SubElement(sig, _ds("Object")),
        _xades("QualifyingProperties"),
        nsmap={None: XADES_NS},
        Target=f"#{sig_id}",
    )
    signed_props = etree.SubElement(qualifying, _xades("SignedProperties"), Id=SIGNED_PROPERTIES_ID)
    ssp = etree.SubElement(signed_props, _xades("SignedSignatureProperties"))
    etree.SubElement(ssp, _xades("SigningTime")).text = signing_time.isoformat(timespec="milliseconds")
    cert_el = etree.SubElement(etree.SubElement(ssp, _xades("SigningCertificate")), _xades("Cert"))
    cert_digest = etree.SubElement(cert_el, _xades("CertDigest"))
    # XAdES v1.1.1's DigestAlgAndValueType declares DigestMethod/DigestValue as *local* (xades) elements,
    # while IssuerSerial is ds:X509IssuerSerialType (ds children) — exactly what DRIM-M carries.
    etree.SubElement(cert_digest, _xades("DigestMethod"), Algorithm=digest_uri)
    etree.SubElement(cert_digest, _xades("DigestValue")).text = _b64digest(
        signer.public_bytes(serialization.Encoding.DER), digest_alg
    )
    issuer_serial = etree.SubElement(cert_el, _xades("IssuerSerial"))
    etree.SubElement(
        issuer_serial, _ds("X509IssuerName"), nsmap={None: DS_NS}
    ).text = signer.issuer.rfc4514_string()
    etree.SubElement(issuer_serial, _ds("X509SerialNumber"), nsmap={None: DS_NS}).text = str(
        signer.serial_number
    )
    policy = etree.SubElement(ssp, _xades("SignaturePolicyIdentifier"))
    etree.SubElement(policy, _xades("SignaturePolicyImplied"))
    etree.SubElement(signed_props, _xades("SignedDataObjectProperties"))

    # No Transforms on the two references: XML-DSig then digests the node-set with inclusive C14N 1.0.
    _reference(
        signed_info,
        f"#{MANIFEST_ID}",
        digest_uri,
        _b64digest(_c14n(manifest, C14N), digest_alg),
        MANIFEST_TYPE,
    )
    _reference(
        signed_info,
        f"#{SIGNED_PROPERTIES_ID}",
        digest_uri,
        _b64digest(_c14n(signed_props, C14N), digest_alg),
        SIGNED_PROPERTIES_TYPE,
    )
    signed_info_c14n = _c14n(signed_info, C14N_WITH_COMMENTS)
    value = key.sign(signed_info_c14n, padding.PKCS1v15(), _SIGNATURE_HASHES[SIGNATURE_URIS[algorithm]]())
    signature_value.text = base64.b64encode(value).decode("ascii")
    return etree.tostring(sig, xml_declaration=True, encoding="UTF-8")


# --------------------------------------------------------------------------------------------------- verify


def _one(parent: etree._Element, path: str, rule: str, what: str) -> etree._Element:
    found = parent.findall(path)
    if len(found) != 1:
        raise DsgError(rule, f"expected exactly one {what}, found {len(found)}")
    return found[0]


def _alg(element: etree._Element | None, table: dict, what: str) -> str:
    uri = element.get("Algorithm") if element is not None else None
    if uri not in table:
        raise DsgError(RULE_UNSUPPORTED_ALGORITHM, f"{what} algorithm {uri!r} is not supported")
    return uri


def _b64decode(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except ValueError:
        raise DsgError(RULE_MALFORMED, f"{what} is not valid base64") from None


def _reference_digest_matches(ref: etree._Element, data: bytes) -> bool:
    expected = _b64decode(ref.findtext(_ds("DigestValue")), "DigestValue")
    h = hashes.Hash(_DIGESTS[_alg(ref.find(_ds("DigestMethod")), _DIGESTS, "DigestMethod")]())
    h.update(data)
    return h.finalize() == expected


def _document_octets(ref: etree._Element, uid: str, content: bytes) -> bytes:
    """The bytes a Manifest reference digests: the document as is, or its C14N when a Transform asks for it."""
    transforms = ref.findall(f"{_ds('Transforms')}/{_ds('Transform')}")
    for transform in transforms:
        algorithm = _alg(transform, _C14N_ALGORITHMS, "Transform")
        try:
            root = parse_untrusted(content).getroot()
        except UnsafeXMLError as exc:
            raise DsgError(
                RULE_DIGEST_MISMATCH, f"document {uid} is not XML but its reference c14n's it"
            ) from exc
        exclusive, with_comments = _C14N_ALGORITHMS[algorithm]
        content = etree.tostring(
            root.getroottree(), method="c14n", exclusive=exclusive, with_comments=with_comments
        )
    return content


def _trusted(
    signer: x509.Certificate, pool: list[x509.Certificate], anchors: list[x509.Certificate], at: datetime
) -> None:
    """Path from ``signer`` to one of ``anchors`` through ``pool`` (KeyInfo certs): signatures, CA flag of
    every issuer, validity at ``at`` (the SigningTime). No revocation check (no CRL/OCSP in the sandbox)."""

    def valid_at(cert: x509.Certificate) -> bool:
        return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc

    def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def is_ca(cert: x509.Certificate) -> bool:
        try:
            return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        except x509.ExtensionNotFound:
            return False

    if not valid_at(signer):
        raise DsgError(RULE_CERT_UNTRUSTED, f"the signing certificate is not valid at the signing time {at}")
    anchor_der = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    current = signer
    for _ in range(_MAX_CHAIN):
        if current.public_bytes(serialization.Encoding.DER) in anchor_der:
            return
        for anchor in anchors:
            if anchor.subject == current.issuer and issued_by(current, anchor):
                return
        parents = [c for c in pool if c.subject == current.issuer and c != current and is_ca(c)]
        parents = [c for c in parents if valid_at(c) and issued_by(current, c)]
        if not parents:
            break
        current = parents[0]
    raise DsgError(
        RULE_CERT_UNTRUSTED,
        f"the signing certificate ({signer.subject.rfc4514_string()}) does not chain to ca_pem",
    )


def verify_dsg_signature(
    signature: bytes,
    documents: dict[str, bytes],
    *,
    ca_pem: bytes,
    submission_set_unique_id: str | None = None,
) -> None:
    """Check a DSG submission-set signature against the submitted ``documents`` (``{uniqueId: bytes}``) and the
    trust anchors ``ca_pem``; return ``None`` or raise :class:`DsgError` with the first failed rule.

    Checked: the XML-DSig signature value over SignedInfo with the KeyInfo certificate; the digests of the two
    signed references (Manifest and XAdES SignedProperties, both required); the certificate path to ``ca_pem``
    at the SigningTime; SigningCertificate = that certificate; the purposeOfSignature; every Manifest reference
    against its document, every submitted document listed. A reference whose digest is the one-zero-byte
    placeholder is the SubmissionSet's (required to be ``submission_set_unique_id`` when given)."""
    try:
        root = parse_untrusted(signature).getroot()
    except UnsafeXMLError as exc:
        raise DsgError(RULE_MALFORMED, f"the signature is not acceptable XML ({exc.rule})") from exc
    if root.tag != _ds("Signature"):
        raise DsgError(RULE_MALFORMED, f"the root element is {root.tag}, not ds:Signature")

    # 1. SignatureValue over the canonical SignedInfo.
    signed_info = _one(root, _ds("SignedInfo"), RULE_MALFORMED, "ds:SignedInfo")
    c14n_uri = _alg(
        signed_info.find(_ds("CanonicalizationMethod")), _C14N_ALGORITHMS, "CanonicalizationMethod"
    )
    sig_uri = _alg(signed_info.find(_ds("SignatureMethod")), _SIGNATURE_HASHES, "SignatureMethod")
    cert_texts = root.findall(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}")
    if not cert_texts:
        raise DsgError(RULE_MALFORMED, "no ds:KeyInfo/X509Data/X509Certificate")
    try:
        certs = [x509.load_der_x509_certificate(_b64decode(c.text, "X509Certificate")) for c in cert_texts]
    except ValueError as exc:
        raise DsgError(RULE_MALFORMED, "an X509Certificate is not a DER certificate") from exc
    signer = certs[0]
    public_key = signer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise DsgError(RULE_UNSUPPORTED_ALGORITHM, "only RSA signing certificates are supported")
    value = _b64decode(
        _one(root, _ds("SignatureValue"), RULE_MALFORMED, "ds:SignatureValue").text, "SignatureValue"
    )
    try:
        public_key.verify(
            value, _c14n(signed_info, c14n_uri), padding.PKCS1v15(), _SIGNATURE_HASHES[sig_uri]()
        )
    except InvalidSignature:
        raise DsgError(RULE_SIGNATURE_INVALID, "the SignatureValue does not verify over SignedInfo") from None

    # 2. The signed references. Ids are resolved inside this document only, and must be unique (a duplicate Id
    # is how signature-wrapping attacks make the checker and the reader look at different elements).
    manifest: etree._Element | None = None
    signed_props: etree._Element | None = None
    for ref in signed_info.findall(_ds("Reference")):
        uri = ref.get("URI") or ""
        if not uri.startswith("#"):
            raise DsgError(RULE_MALFORMED, f"SignedInfo reference {uri!r} is not a same-document reference")
        targets = root.xpath("//*[@Id=$id]", id=uri[1:])
        if len(targets) != 1:
            raise DsgError(RULE_SIGNATURE_INVALID, f"reference {uri} resolves to {len(targets)} elements")
        target = targets[0]
        transforms = ref.findall(f"{_ds('Transforms')}/{_ds('Transform')}")
        if len(transforms) > 1:
            raise DsgError(
                RULE_UNSUPPORTED_ALGORITHM, f"reference {uri}: only one C14N transform is supported"
            )
        # No Transform: the XML-DSig default for a same-document reference, inclusive C14N 1.0 without comments.
        algorithm = _alg(transforms[0], _C14N_ALGORITHMS, "Transform") if transforms else C14N
        if not _reference_digest_matches(ref, _c14n(target, algorithm)):
            raise DsgError(RULE_SIGNATURE_INVALID, f"the digest of the signed reference {uri} does not match")
        if target.tag == _ds("Manifest") and target.getparent() is not None:
            manifest = target
        elif etree.QName(target).localname == "SignedProperties" and etree.QName(target).namespace in (
            _XADES_NAMESPACES
        ):
            signed_props = target
    if manifest is None:
        raise DsgError(
            RULE_MALFORMED, f"no signed ds:Manifest (Id {MANIFEST_ID}) is referenced by SignedInfo"
        )
    if signed_props is None:
        raise DsgError(
            RULE_SIGNED_PROPERTIES_MISSING, "no XAdES SignedProperties is referenced by SignedInfo"
        )

    # 3. XAdES signed properties: SigningTime, SigningCertificate, implied policy.
    xns = etree.QName(signed_props).namespace
    ssp = signed_props.find(_xades("SignedSignatureProperties", xns))
    signing_time_text = ssp.findtext(_xades("SigningTime", xns)) if ssp is not None else None
    cert_el = (
        ssp.find(f"{_xades('SigningCertificate', xns)}/{_xades('Cert', xns)}") if ssp is not None else None
    )
    if not signing_time_text or cert_el is None:
        raise DsgError(RULE_SIGNED_PROPERTIES_MISSING, "SigningTime or SigningCertificate/Cert is missing")
    if (
        ssp.find(f"{_xades('SignaturePolicyIdentifier', xns)}/{_xades('SignaturePolicyImplied', xns)}")
        is None
    ):
        raise DsgError(
            RULE_SIGNED_PROPERTIES_MISSING, "SignaturePolicyIdentifier/SignaturePolicyImplied is missing"
        )
    try:
        signing_time = datetime.fromisoformat(signing_time_text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DsgError(RULE_MALFORMED, f"SigningTime {signing_time_text!r} is not an xs:dateTime") from None
    if signing_time.tzinfo is None:
        signing_time = signing_time.replace(tzinfo=UTC)

    # 4. Certificate path (after the signature: an untrusted but intact signature says "untrusted").
    _trusted(signer, certs[1:], x509.load_pem_x509_certificates(ca_pem), signing_time)

    # XAdES v1.1.1 puts DigestMethod/DigestValue in its own namespace, later versions in ds: accept both.
    digest_el = cert_el.find(_xades("CertDigest", xns))
    method = None if digest_el is None else digest_el.find(_xades("DigestMethod", xns))
    method = method if method is not None or digest_el is None else digest_el.find(_ds("DigestMethod"))
    dvalue = None if digest_el is None else digest_el.find(_xades("DigestValue", xns))
    dvalue = dvalue if dvalue is not None or digest_el is None else digest_el.find(_ds("DigestValue"))
    if method is None or dvalue is None:
        raise DsgError(RULE_SIGNED_PROPERTIES_MISSING, "SigningCertificate/Cert/CertDigest is incomplete")
    h = hashes.Hash(_DIGESTS[_alg(method, _DIGESTS, "CertDigest DigestMethod")]())
    h.update(signer.public_bytes(serialization.Encoding.DER))
    serial = cert_el.findtext(f"{_xades('IssuerSerial', xns)}/{_ds('X509SerialNumber')}")
    if h.finalize() != _b64decode(dvalue.text, "CertDigest") or (serial or "").strip() != str(
        signer.serial_number
    ):
        raise DsgError(
            RULE_SIGNING_CERT_MISMATCH, "SigningCertificate does not designate the KeyInfo certificate"
        )

    # 5. purposeOfSignature (not covered by SignedInfo in the DSG/DRIM-M layout: checked for presence only).
    purposes = [
        (p.text or "").strip()
        for p in root.findall(f"{_ds('Object')}/{_ds('SignatureProperties')}/{_ds('SignatureProperty')}")
        if p.get("Id") == "purposeOfSignature"
    ]
    if purposes != [PURPOSE_OF_SIGNATURE]:
        raise DsgError(RULE_PURPOSE, f"purposeOfSignature must be {PURPOSE_OF_SIGNATURE}, found {purposes}")

    # 6. The Manifest against the documents.
    listed: set[str] = set()
    for ref in manifest.findall(_ds("Reference")):
        uri = ref.get("URI") or ""
        if not uri.startswith("urn:oid:"):
            raise DsgError(RULE_MALFORMED, f"Manifest reference {uri!r} is not urn:oid:<uniqueId>")
        uid = uri.removeprefix("urn:oid:")
        listed.add(uid)
        placeholder = (
            _b64decode(ref.findtext(_ds("DigestValue")), "DigestValue") == SUBMISSION_SET_PLACEHOLDER_DIGEST
        )
        if uid not in documents and placeholder:
            continue  # the SubmissionSet's own entry: it has no content to digest
        if uid not in documents:
            raise DsgError(
                RULE_DOCUMENT_MISSING, f"the Manifest signs {uid} but no such document was submitted"
            )
        if not _reference_digest_matches(ref, _document_octets(ref, uid, documents[uid])):
            raise DsgError(RULE_DIGEST_MISMATCH, f"the digest of document {uid} does not match the Manifest")
    unsigned = sorted(set(documents) - listed)
    if unsigned:
        raise DsgError(RULE_DOCUMENT_NOT_SIGNED, f"documents not in the Manifest: {', '.join(unsigned)}")
    if submission_set_unique_id and submission_set_unique_id not in listed:
        raise DsgError(
            RULE_DOCUMENT_MISSING, f"the Manifest does not list the SubmissionSet {submission_set_unique_id}"
        )


# ------------------------------------------------------------------------------------------ ebRIM metadata

SIGNATURE_MIME_TYPE = "text/xml"
SIGNATURE_CLASS_CODE = Code(
    code="urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", code_system="URN", display="Digital Signature"
)
SIGNATURE_TYPE_CODE = Code(code="E1762", code_system="ASTM", display="Full Document")
SIGNATURE_FORMAT_CODE = Code(code=f"{DS_NS}", code_system="URN", display="Default Signature Style")
SIGNATURE_EVENT_CODE = Code(code=PURPOSE_OF_SIGNATURE, code_system="1.2.840.10065.1.12", display="Source")
SIGNATURE_LANGUAGE_CODE = "art"  # ISO 639-2 "artificial languages": DSG's languageCode for a signature
SIGNS_ASSOCIATION = "urn:ihe:iti:2007:AssociationType:signs"

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class SignatureEntryMetadata:
    """The DSG-specific values of the ``Signature01`` DocumentEntry and of its ``signs`` association (source =
    the signature entry, target = the SubmissionSet), as in the DRIM-M request. The entry's patient ids,
    author, legalAuthenticator, confidentiality, facility/practice codes and referenceIdList are copied from
    the signed submission by the ebRIM module (DRIM-M copies them from the KOS) and are not repeated here."""

    unique_id: str
    hash: str  # SHA-1 hex of the signature bytes (XDS ``hash``)
    size: int  # byte length of the signature (XDS ``size``)
    creation_time: (
        str  # SigningTime in UTC, ``YYYYMMDDhhmmss``; DRIM-M also uses it for serviceStart/StopTime
    )
    mime_type: str = SIGNATURE_MIME_TYPE
    title: str = "Source"
    language_code: str = SIGNATURE_LANGUAGE_CODE
    class_code: Code = field(default_factory=lambda: SIGNATURE_CLASS_CODE.model_copy())
    type_code: Code = field(default_factory=lambda: SIGNATURE_TYPE_CODE.model_copy())
    format_code: Code = field(default_factory=lambda: SIGNATURE_FORMAT_CODE.model_copy())
    event_codes: tuple[Code, ...] = field(default_factory=lambda: (SIGNATURE_EVENT_CODE.model_copy(),))
    association_type: str = SIGNS_ASSOCIATION


def signature_entry_metadata(signature: bytes, *, unique_id: str | None = None) -> SignatureEntryMetadata:
    """The DocumentEntry values for ``signature`` (bytes of :func:`build_dsg_signature`). The uniqueId is the
    Signature ``Id`` (DRIM-M's convention) unless ``unique_id`` is given; it must be an OID either way."""
    root = parse_untrusted(signature).getroot()
    uid = unique_id or root.get("Id") or ""
    if not _OID.match(uid):
        raise ValueError(f"the signature uniqueId {uid!r} is not an OID; pass unique_id=")
    signing_time = root.findtext(f".//{_xades('SigningTime')}") or ""
    try:
        creation = datetime.fromisoformat(signing_time.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"SigningTime {signing_time!r} is not an xs:dateTime") from None
    if creation.tzinfo is None:
        raise ValueError("SigningTime has no offset")
    return SignatureEntryMetadata(
        unique_id=uid,
        hash=hashlib.sha1(signature).hexdigest(),
        size=len(signature),
        creation_time=creation.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
    )
