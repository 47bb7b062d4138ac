"""The VIHF token (SAML 2.0 assertion of TD2.1): content from a real submission, signature, failure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from gateway.delivery.dmp import vihf as v
from gateway.model import Code, DocumentSubmission
from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ROOT, SAMPLES, SHARED

IG_EXAMPLE = SHARED / "cisis/dmp-xds/vihf-example-automate-from-IG-transmission-cda-hl7v2.xml"
NOW = datetime(2026, 1, 2, 10, 30, 0, 123456, tzinfo=UTC)
INS = "279035121518989"  # sample 01 (INS-NIR test authority)
SAML = f"{{{v.SAML_NS}}}"
HL7 = f"{{{v.HL7_NS}}}"
SETTINGS = v.VihfSettings(
    lps_name="cisis-gateway",
    lps_version="1.4.0",
    lps_homologation_id="HOM-TEST-01",
    secteur_activite="SA07",
    profession_role=Code(code="10", code_system="1.2.250.1.71.1.2.7", display="Médecin"),
    savoir_faire_role=Code(code="SM26", code_system="1.2.250.1.71.4.2.5"),
)


@pytest.fixture(scope="module")
def submission() -> DocumentSubmission:
    pipeline = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")
    out = pipeline.process(
        Envelope(
            body=(SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(),
            message_id="vihf-01",
            received_at=datetime(2026, 1, 2, tzinfo=UTC),
        )
    )
    assert out.accepted
    (job,) = [j for j in out.jobs if j.destination == "dmp"]
    return job.submission


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA, organization_name="IGC-SANTE TEST")


@pytest.fixture(scope="module")
def seal(ca: trustme.CA) -> trustme.LeafCert:
    """The structure's *certificat de cachet* (organisation seal certificate)."""
    return ca.issue_cert(
        common_name="CISIS GATEWAY SIGN",
        organization_name="CH DEMO",
        organization_unit_name="1120459876",
        key_type=trustme.KeyType.RSA,
    )


def cert_pem(leaf: trustme.LeafCert) -> bytes:
    return leaf.cert_chain_pems[0].bytes()


def build(sub: DocumentSubmission, settings: v.VihfSettings = SETTINGS, **kw) -> etree._Element:
    return v.build_vihf(sub, settings, issuer_dn="CN=CISIS GATEWAY SIGN, O=CH DEMO", now=NOW, **kw)


def signed(sub: DocumentSubmission, seal: trustme.LeafCert, **kw) -> etree._Element:
    assertion = v.build_vihf(sub, SETTINGS, issuer_dn=v.issuer_dn(cert_pem(seal)), now=NOW)
    return v.sign_vihf(assertion, key_pem=seal.private_key_pem.bytes(), cert_pem=cert_pem(seal), **kw)


def attributes(assertion: etree._Element) -> dict[str, list[etree._Element]]:
    return {a.get("Name"): list(a.iter(f"{SAML}AttributeValue")) for a in assertion.iter(f"{SAML}Attribute")}


def text_of(assertion: etree._Element, name: str) -> str:
    (value,) = attributes(assertion)[name]
    return value.text


def codes(assertion: etree._Element, name: str) -> list[tuple[str, str]]:
    return [(c.get("code"), c.get("codeSystem")) for val in attributes(assertion)[name] for c in val]


def with_patient(sub: DocumentSubmission, **update) -> DocumentSubmission:
    return sub.model_copy(update={"patient": sub.patient.model_copy(update=update)})


def with_sender(sub: DocumentSubmission, **update) -> DocumentSubmission:
    return sub.model_copy(update={"sender": sub.sender.model_copy(update=update)})


def test_person_vihf_from_sample_01_has_every_attribute_of_the_mapping(submission):
    a = build(submission, assertion_id="_vihf-1")
    assert a.tag == f"{SAML}Assertion" and a.nsmap["saml2"] == v.SAML_NS
    assert (a.get("ID"), a.get("Version"), a.get("IssueInstant")) == (
        "_vihf-1",
        "2.0",
        "2026-01-02T10:30:00.123Z",
    )
    issuer = a.find(f"{SAML}Issuer")
    assert issuer.get("Format") == "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
    assert issuer.text == "CN=CISIS GATEWAY SIGN, O=CH DEMO"
    assert a.findtext(f"{SAML}Subject/{SAML}NameID") == "801234567866"  # PRT-5.1 of the SB PRT
    assert a.find(f"{SAML}Subject/{SAML}SubjectConfirmation") is None  # as both examples
    conditions = a.find(f"{SAML}Conditions")
    assert conditions.get("NotBefore") == "2026-01-02T10:29:00.123Z"
    assert conditions.get("NotOnOrAfter") == "2026-01-02T10:35:00.123Z"
    assert a.find(f"{SAML}AuthnStatement").get("AuthnInstant") == "2026-01-02T10:30:00.123Z"
    assert a.findtext(f".//{SAML}AuthnContextClassRef") == "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient"
    assert [c.tag for c in a] == [
        f"{SAML}{t}" for t in ("Issuer", "Subject", "Conditions", "AuthnStatement", "AttributeStatement")
    ]

    assert text_of(a, "VIHF_Version") == "3.0"
    assert text_of(a, "Authentification_Mode") == "INDIRECTE"
    assert text_of(a, "Secteur_Activite") == "SA07^1.2.250.1.71.4.2.4"
    assert text_of(a, v.A_RESOURCE_ID) == f"{INS}^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert text_of(a, "Ressource_URN") == "urn:dmp"
    assert text_of(a, v.A_SUBJECT_ID) == "DIAZ, Thierry"
    assert text_of(a, "Identifiant_Structure") == "1120459876"  # PRT-8.10
    assert text_of(a, "LPS_Version") == "1.4.0"
    assert text_of(a, "LPS_Nom") == "cisis-gateway"
    assert text_of(a, "LPS_ID_HOMOLOGATION_DMP") == "HOM-TEST-01"
    assert "LPS_ID" not in attributes(a)  # optional, not configured
    assert v.A_CONFIDENTIALITY not in attributes(a)  # CONNEXION_SECRETE=N in sample 01
    (purpose,) = attributes(a)[v.A_PURPOSE][0]
    assert purpose.tag == f"{HL7}PurposeOfUse" and purpose.get(f"{{{v.XSI_NS}}}type") == "CE"
    assert (purpose.get("code"), purpose.get("codeSystem")) == ("normal", "1.2.250.1.213.1.1.4.248")
    assert purpose.get("codeSystemName") == "mode acces VIHF 1.0"
    roles = [r for val in attributes(a)[v.A_ROLE] for r in val]
    assert [r.tag for r in roles] == [f"{HL7}Role", f"{HL7}Role"]
    assert codes(a, v.A_ROLE) == [("10", "1.2.250.1.71.1.2.7"), ("SM26", "1.2.250.1.71.4.2.5")]
    assert all(r.get(f"{{{v.XSI_NS}}}type") == "CE" and r.nsmap[None] == v.HL7_NS for r in roles)


def test_attribute_names_and_order_are_those_of_the_ig_example(submission):
    example = etree.parse(str(IG_EXAMPLE)).getroot()
    expected = [a.get("Name") for a in example.iter("{*}Attribute")]
    secret = submission.model_copy(
        update={"flags": submission.flags.model_copy(update={"connexion_secrete": True})}
    )
    ours = build(secret, SETTINGS.model_copy(update={"lps_id": "1.2.250.1.259.1.1.42"}))
    names = [a.get("Name") for a in ours.iter(f"{SAML}Attribute")]
    # confidentiality-code: in neither example (only for a connexion secrète); placed after purposeofuse.
    assert names.index(v.A_CONFIDENTIALITY) == names.index(v.A_PURPOSE) + 1
    assert [n for n in names if n != v.A_CONFIDENTIALITY] == expected
    assert all(a.get("NameFormat") is None for a in ours.iter(f"{SAML}Attribute"))  # as the examples


def test_connexion_secrete_adds_the_confidentiality_code(submission):
    secret = submission.model_copy(
        update={"flags": submission.flags.model_copy(update={"connexion_secrete": True})}
    )
    a = build(secret)
    assert codes(a, v.A_CONFIDENTIALITY) == [("R", "2.16.840.1.113883.5.25")]
    assert attributes(a)[v.A_CONFIDENTIALITY][0][0].tag == f"{HL7}ConfidentialityCode"


def test_version_4_setting_changes_vihf_version(submission):
    a = build(submission, SETTINGS.model_copy(update={"version": "4.0"}))
    assert text_of(a, "VIHF_Version") == "4.0"
    with pytest.raises(ValueError):
        v.VihfSettings(**{**SETTINGS.model_dump(), "version": "5.0"})


def test_automate_mode_gives_the_automate_role_and_the_software_name(submission):
    settings = SETTINGS.model_copy(update={"mode": "automate", "responsible_person_id": "899700367909"})
    a = build(submission, settings)
    assert codes(a, v.A_ROLE) == [("AUTOMATE", "1.2.250.1.213.1.1.4.6")]
    assert text_of(a, v.A_SUBJECT_ID) == "cisis-gateway"
    assert a.findtext(f"{SAML}Subject/{SAML}NameID") == "801234567866"  # the PRT-5 person wins
    no_person = with_sender(submission, person=None, device="SIL-Y")
    assert build(no_person, settings).findtext(f"{SAML}Subject/{SAML}NameID") == "899700367909"
    labelled = settings.model_copy(update={"automate_label": "SIL-Y, Automate 3000, Biologie"})
    assert text_of(build(no_person, labelled), v.A_SUBJECT_ID) == "SIL-Y, Automate 3000, Biologie"


def test_roles_come_from_the_sender_author_specialty_when_the_sender_is_an_author(submission):
    author = submission.documents[0].metadata.authors[0].person  # G15_10/SM03 in the sample CDA
    sub = with_sender(submission, person=submission.sender.person.model_copy(update={"id": author.id}))
    assert codes(build(sub), v.A_ROLE) == [("10", "1.2.250.1.71.1.2.7"), ("SM03", "1.2.250.1.71.4.2.5")]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda s: with_patient(s, ins=None), "VIHF-INS"),
        (lambda s: with_patient(s, ins_oid="1.2.3.4"), "VIHF-INS"),
        (lambda s: s.model_copy(update={"sender": None}), "VIHF-SENDER"),
        (lambda s: with_sender(s, organization=None), "VIHF-STRUCTURE"),
        (lambda s: with_sender(s, person=None, device="SIL-Y"), "VIHF-SENDER-ID"),
        (lambda s: with_sender(s, person=s.sender.person.model_copy(update={"family": None, "given": None})),
         "VIHF-SUBJECT-NAME"),
    ],
)  # fmt: skip
def test_missing_inputs_raise_a_vihf_error_with_its_rule(submission, change, rule):
    with pytest.raises(v.VihfError) as err:
        build(change(submission))
    assert err.value.rule == rule
    assert INS not in str(err.value) and "DIAZ" not in str(err.value)  # no patient/PS data in messages


def test_other_errors_have_rules_too(submission):
    no_roles = SETTINGS.model_copy(update={"profession_role": None, "savoir_faire_role": None})
    cases = [
        (lambda: build(submission, no_roles), "VIHF-ROLE"),
        (
            lambda: v.build_vihf(submission, SETTINGS, issuer_dn="CN=x", now=NOW.replace(tzinfo=None)),
            "VIHF-TIME",
        ),
        (lambda: build(submission, assertion_id="1-starts-with-a-digit"), "VIHF-ID"),
    ]
    for call, rule in cases:
        with pytest.raises(v.VihfError) as err:
            call()
        assert err.value.rule == rule
    assert build(submission).get("ID").startswith("_")


def test_signature_is_after_issuer_references_the_id_and_verifies_inside_wsse_security(submission, seal, ca):
    token = signed(submission, seal)
    assert [c.tag for c in token][:3] == [f"{SAML}Issuer", f"{{{v.DS_NS}}}Signature", f"{SAML}Subject"]
    sig = token.find(f"{{{v.DS_NS}}}Signature")
    assert sig.find(f".//{{{v.DS_NS}}}Reference").get("URI") == f"#{token.get('ID')}"
    assert sig.find(f".//{{{v.DS_NS}}}SignatureMethod").get("Algorithm").endswith("#rsa-sha256")
    assert sig.find(f".//{{{v.DS_NS}}}CanonicalizationMethod").get("Algorithm") == v.EXC_C14N
    assert sig.find(f".//{{{v.DS_NS}}}X509Certificate") is not None
    assert token.findtext(f"{SAML}Issuer") == "CN=CISIS GATEWAY SIGN, OU=1120459876, O=CH DEMO"

    header = v.wsse_security(token)
    assert header.tag == f"{{{v.WSSE_NS}}}Security" and header[0].get("ID") == token.get("ID")
    # Exclusive c14n: moving the assertion into another document (the SOAP header) keeps it valid.
    envelope = etree.Element(f"{{{v.SOAP12_NS}}}Envelope", nsmap={"soap": v.SOAP12_NS})
    etree.SubElement(envelope, f"{{{v.SOAP12_NS}}}Header").append(header)
    checked = v.verify_vihf(etree.tostring(envelope), ca_pem=ca.cert_pem.bytes())
    assert text_of(checked, v.A_RESOURCE_ID).startswith(INS)
    assert v.verify_vihf(token, ca_pem=ca.cert_pem.bytes()).get("ID") == token.get("ID")
    must = v.wsse_security(token, must_understand=True)
    assert must.get(f"{{{v.SOAP12_NS}}}mustUnderstand") == "true"


def test_envelope_declaring_the_hl7_namespace_under_a_prefix_breaks_an_lxml_append(submission, seal, ca):
    """Pins the pitfall documented in ``wsse_security``: the DRIM-M envelope declares ``xmlns:urn`` = HL7 v3, and
    lxml rebinds the moved ``Role``/``PurposeOfUse`` to that prefix; splicing the bytes keeps the token valid."""
    token = signed(submission, seal)
    header = v.wsse_security(token)
    nsmap = {"soap": v.SOAP12_NS, "urn": v.HL7_NS}
    envelope = etree.Element(f"{{{v.SOAP12_NS}}}Envelope", nsmap=nsmap)
    etree.SubElement(envelope, f"{{{v.SOAP12_NS}}}Header").append(header)
    assert b"<urn:Role" in etree.tostring(envelope)
    with pytest.raises(v.VihfError, match="VIHF-SIGNATURE"):
        v.verify_vihf(etree.tostring(envelope), ca_pem=ca.cert_pem.bytes())
    spliced = (
        f'<soap:Envelope xmlns:soap="{v.SOAP12_NS}" xmlns:urn="{v.HL7_NS}"><soap:Header>'.encode()
        + etree.tostring(v.wsse_security(token))  # a fresh header: ``header`` now lives in ``envelope``
        + b"</soap:Header></soap:Envelope>"
    )
    assert v.verify_vihf(spliced, ca_pem=ca.cert_pem.bytes()) is not None


def test_tampering_with_the_ins_breaks_the_signature(submission, seal, ca):
    data = etree.tostring(signed(submission, seal))
    forged = data.replace(INS.encode(), b"180000000000042")
    assert forged != data
    with pytest.raises(v.VihfError) as err:
        v.verify_vihf(forged, ca_pem=ca.cert_pem.bytes())
    assert err.value.rule == "VIHF-SIGNATURE"


def test_a_certificate_from_another_ca_is_rejected(submission, seal):
    other = trustme.CA(key_type=trustme.KeyType.RSA)
    with pytest.raises(v.VihfError, match="VIHF-SIGNATURE"):
        v.verify_vihf(signed(submission, seal), ca_pem=other.cert_pem.bytes())
    rogue = other.issue_cert(common_name="CISIS GATEWAY SIGN", key_type=trustme.KeyType.RSA)
    token = signed(submission, rogue)
    with pytest.raises(v.VihfError, match="VIHF-SIGNATURE"):
        v.verify_vihf(token, ca_pem=trustme.CA().cert_pem.bytes())


def test_rsa_sha1_only_when_asked_and_accepted_only_when_allowed(submission, seal, ca):
    token = signed(submission, seal, algorithm="rsa-sha1")
    method = token.find(f".//{{{v.DS_NS}}}SignatureMethod").get("Algorithm")
    assert method == "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    with pytest.raises(v.VihfError):
        v.verify_vihf(token, ca_pem=ca.cert_pem.bytes())
    assert v.verify_vihf(token, ca_pem=ca.cert_pem.bytes(), allow_sha1=True) is not None
    with pytest.raises(v.VihfError) as err:
        signed(submission, seal, algorithm="dsa-sha1")
    assert err.value.rule == "VIHF-SIGN-ALG"


def test_encrypted_key_and_non_rsa_key(submission, seal, ca):
    key = serialization.load_pem_private_key(seal.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    assertion = build(submission)
    token = v.sign_vihf(assertion, key_pem=encrypted, cert_pem=cert_pem(seal), key_password=b"s3cret")
    assert v.verify_vihf(token, ca_pem=ca.cert_pem.bytes()) is not None
    with pytest.raises(v.VihfError) as err:
        v.sign_vihf(assertion, key_pem=encrypted, cert_pem=cert_pem(seal), key_password=b"wrong")
    assert err.value.rule == "VIHF-SIGN-KEY"
    ec_leaf = ca.issue_cert(common_name="EC", key_type=trustme.KeyType.ECDSA)
    with pytest.raises(v.VihfError) as err:
        v.sign_vihf(assertion, key_pem=ec_leaf.private_key_pem.bytes(), cert_pem=cert_pem(ec_leaf))
    assert err.value.rule == "VIHF-SIGN-KEY"
    assert assertion.find(f"{{{v.DS_NS}}}Signature") is None  # the input is left unsigned
    with pytest.raises(v.VihfError, match="already signed"):
        v.sign_vihf(token, key_pem=encrypted, cert_pem=cert_pem(seal), key_password=b"s3cret")


def test_issuer_dn_is_rfc4514_ordered_like_the_drimm_request():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Paris (75)"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CABINET M DOC0036790"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "499700367909006"),
            x509.NameAttribute(NameOID.COMMON_NAME, "DRIMbox, test"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    dn = v.issuer_dn(cert.public_bytes(serialization.Encoding.PEM))
    assert dn == r"CN=DRIMbox\, test, OU=499700367909006, O=CABINET M DOC0036790, ST=Paris (75), C=FR"
    with pytest.raises(v.VihfError) as err:
        v.issuer_dn(b"not a certificate")
    assert err.value.rule == "VIHF-CERT"


def test_no_patient_data_in_reprs(submission):
    assert INS not in repr(SETTINGS) and INS not in repr(build(submission))
