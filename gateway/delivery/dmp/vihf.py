"""The VIHF token (*Vecteur d'Identification et d'Habilitation Formelles*, the DMP's SAML 2.0 identity assertion).

In TD2.1 (*alimentation du DMP en authentification indirecte*, feeding the DMP with indirect authentication) the
gateway speaks for a health professional or an automated process of the structure: it builds a SAML 2.0
``Assertion`` describing who sends (PRT SB of the message), for which patient (INS), from which structure and
software, signs it with the structure's *certificat de cachet* (organisation seal certificate) and puts it in the
``wsse:Security`` SOAP header of the ITI-41 request [cisis-facts §5].

Sources and the choices made where they disagree (see ``../shared/reference/cisis-facts.md`` §5):

- **Two real examples**: the IG "transmission CDA en HL7v2" automate example (2024, default namespace, no
  prefix) and the DRIM-M ITI-41 request sent to the DMP test platform (2023, ``saml2:`` prefix). We serialise
  like DRIM-M (``saml2``/``ds`` prefixes: it is the one that was actually sent to the DMP); prefixes do not
  change the signed infoset under exclusive c14n anyway.
- **``VIHF_Version``**: the IG table says constant ``4.0``, both examples send ``3.0``. Configurable
  (:attr:`VihfSettings.version`), default ``3.0`` like the examples, until the current DMPi spec settles it.
- **Attribute order**: the IG example's order (the two examples differ; SAML does not care, a picky DMP
  parser might, and the IG is the volet this gateway implements). ``confidentiality-code`` (absent from both
  examples) goes right after ``purposeofuse``; ``LPS_ID`` is omitted when not configured.
- **No ``NameFormat``** on ``Attribute`` and no ``Format`` on ``NameID``: neither example has them.
- **``SubjectConfirmation``**: neither example has one; off by default, ``subject_confirmation_bearer`` adds
  the SAML bearer method for a platform that wants it.
- **``Conditions``**: absent from both examples, *facultatif* in the IG table; we send NotBefore/NotOnOrAfter
  (``validity_s``, ``None`` to omit) because a bounded token is what a replay-conscious receiver expects.
- **``subject-id``** of a person: the IG table says PRT-5.2 and PRT-5.3 (``Nom, Prénom``), DRIM-M sends
  ``Prénom NOM``; we follow the table. For an automate (automated process): the software name (IG: "Nom du
  logiciel, Nom du modèle et Service" -> :attr:`VihfSettings.automate_label`, default ``lps_name``).
- **Role ``codeSystemName``**: DRIM-M sends an empty one, the IG none; we send none.
- **``Issuer``** DN: DRIM-M writes RFC 4514 order with ``", "`` (``CN=…, OU=…, C=FR``), the IG the reverse
  (``C=FR, …, CN=…``); we follow DRIM-M (RFC 4514 order, readable separator), see :func:`issuer_dn`.
- **Signature**: IG RSA-SHA256 with an ``InclusiveNamespaces`` list, DRIM-M RSA-SHA1 without. We sign
  RSA-SHA256/SHA-256 with plain exclusive c14n (no prefix list is needed: every namespace we use is visibly
  utilised where it is used); RSA-SHA1 only on explicit request.
- **``confidentiality-code``** value (connexion secrète, secret connection): no example. Sent as an HL7
  ``ConfidentialityCode`` CE like ``PurposeOfUse``/``Role``, code configurable, default ``R``@HL7 Confidentiality
  -- *believed, not verified* against the DMPi spec.

Nothing here logs, and :class:`VihfError` messages never quote patient data (INS, names).
"""

from __future__ import annotations

import re
import tempfile
import uuid
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLSigner, XMLVerifier
from signxml.exceptions import InvalidInput

from gateway.delivery.mssante.xdm_metadata import patient_cx
from gateway.model import INS_OIDS, Code, DocumentSubmission, Person

SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
HL7_NS = "urn:hl7-org:v3"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

ISSUER_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

# Attribute names [§5], in the IG example's order (module docstring).
A_VERSION = "VIHF_Version"
A_AUTH_MODE = "Authentification_Mode"
A_SECTEUR = "Secteur_Activite"
A_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
A_RESOURCE_URN = "Ressource_URN"
A_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
A_STRUCTURE = "Identifiant_Structure"
A_LPS_VERSION = "LPS_Version"
A_LPS_ID = "LPS_ID"
A_LPS_NOM = "LPS_Nom"
A_LPS_HOMOLOGATION = "LPS_ID_HOMOLOGATION_DMP"
A_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
A_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
A_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"

#: JDV_J61 healthcare facility type (*secteur d'activité*) code system.
SECTEUR_ACTIVITE_SYSTEM = "1.2.250.1.71.4.2.4"
#: TRE_G15 profession (1st role occurrence) and TRE_R01 *savoir-faire* (specialty, 2nd occurrence) [§5].
PROFESSION_SYSTEM = "1.2.250.1.71.1.2.7"
SAVOIR_FAIRE_SYSTEM = "1.2.250.1.71.4.2.5"
#: TRE_R38 "G15_<profession>/<savoir-faire>" author specialty (CDA assignedAuthor/code, JDV J01).
AUTHOR_SPECIALTY_SYSTEM = "1.2.250.1.213.1.1.4.5"
AUTOMATE_ROLE = Code(code="AUTOMATE", code_system="1.2.250.1.213.1.1.4.6", display="AUTOMATE")

_SIGNATURE_ALGORITHMS: dict[str, tuple[SignatureMethod, DigestAlgorithm]] = {
    "rsa-sha256": (SignatureMethod.RSA_SHA256, DigestAlgorithm.SHA256),
    "rsa-sha512": (SignatureMethod.RSA_SHA512, DigestAlgorithm.SHA512),
    "rsa-sha1": (SignatureMethod.RSA_SHA1, DigestAlgorithm.SHA1),
}
_NCNAME_START = re.compile(r"^[A-Za-z_]")


class VihfError(ValueError):
    """A VIHF cannot be built or checked. ``rule`` is a stable code for reports and tests; the message never
    contains patient data."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message


class VihfSettings(BaseModel):
    """Per-deployment VIHF constants (the PFI's *paramétrage*, i.e. the integration platform's configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal["3.0", "4.0"] = Field(
        "3.0",
        description="VIHF_Version: the IG table says 4.0, both real examples send 3.0 (cisis-facts §5).",
    )
    lps_name: str = Field(description="LPS_Nom: name of the software (LPS) that builds the token.")
    lps_version: str = Field(description="LPS_Version.")
    lps_homologation_id: str = Field(description="LPS_ID_HOMOLOGATION_DMP: the DMP homologation number.")
    lps_id: str | None = Field(None, description="LPS_ID (optional), e.g. 1.2.250.1.259.1.1.<n>.")
    secteur_activite: str = Field(description="Secteur_Activite: JDV_J61 code of the structure, e.g. SA07.")
    secteur_activite_system: str = SECTEUR_ACTIVITE_SYSTEM
    mode: Literal["personne", "automate"] = Field(
        "personne",
        description="personne: the PRT SB person is the subject; automate: role AUTOMATE, subject-id = software.",
    )
    profession_role: Code | None = Field(
        None,
        description="1st role (TRE_G15 profession) when it cannot be derived from the sender's specialty.",
    )
    savoir_faire_role: Code | None = Field(
        None, description="2nd role (TRE_R01 savoir-faire, médecins/pharmaciens) when it cannot be derived."
    )
    responsible_person_id: str | None = Field(
        None,
        description="automate mode: NameID when the sender PRT names no person (responsible of processing).",
    )
    automate_label: str | None = Field(
        None,
        description="automate mode: subject-id ('Nom du logiciel, Nom du modèle et Service'); lps_name if unset.",
    )
    purpose_of_use: str = "normal"
    purpose_of_use_system: str = "1.2.250.1.213.1.1.4.248"
    purpose_of_use_system_name: str = "mode acces VIHF 1.0"
    purpose_of_use_display: str = "Accès normal"
    secret_confidentiality: Code = Field(
        Code(code="R", code_system="2.16.840.1.113883.5.25", display="Restricted"),
        description="confidentiality-code value sent for a connexion secrète (believed, not verified).",
    )
    authn_context: str = "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient"
    validity_s: int | None = Field(
        300, gt=0, description="Conditions NotOnOrAfter - IssueInstant; None omits."
    )
    clock_skew_s: int = Field(60, ge=0, description="NotBefore is set this much before IssueInstant.")
    subject_confirmation_bearer: bool = Field(
        False, description="Add SubjectConfirmation bearer (no example has)."
    )


def _saml(tag: str) -> str:
    return f"{{{SAML_NS}}}{tag}"


def _instant(moment: datetime) -> str:
    """xs:dateTime in UTC with milliseconds and ``Z``, as both examples (``2024-09-02T13:22:25.789Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hl7_ce(parent: etree._Element, tag: str, code: Code, system_name: str | None = None) -> None:
    """An HL7 v3 CE element in its own default namespace, as both examples write ``Role``/``PurposeOfUse``.

    ``xsi:type="CE"`` is a QName resolved against the default namespace, hence ``nsmap={None: HL7}``."""
    attrs = {"code": code.code, "codeSystem": code.code_system or ""}
    if system_name is not None:
        attrs["codeSystemName"] = system_name
    if code.display:
        attrs["displayName"] = code.display
    el = etree.SubElement(parent, f"{{{HL7_NS}}}{tag}", nsmap={None: HL7_NS, "xsi": XSI_NS})
    for name, value in attrs.items():
        el.set(name, value)
    el.set(f"{{{XSI_NS}}}type", "CE")


def _person_roles(sub: DocumentSubmission, person: Person, settings: VihfSettings) -> list[Code]:
    """Roles of a professional [§5]: profession (TRE_G15) then savoir-faire (TRE_R01).

    The PRT segment carries no profession; when the sender is also a CDA author whose specialty is a TRE_R38
    ``G15_<profession>/<savoir-faire>`` code, both are derived from it; otherwise the configured roles are used."""
    for doc in sub.documents:
        for author in doc.metadata.authors:
            spec = author.specialty
            if not (author.person and author.person.id == person.id and spec):
                continue
            match = re.fullmatch(r"G15_(\w+)(?:/(SM\w+))?", spec.code)
            if spec.code_system == AUTHOR_SPECIALTY_SYSTEM and match:
                roles = [Code(code=match.group(1), code_system=PROFESSION_SYSTEM)]
                if match.group(2):
                    roles.append(Code(code=match.group(2), code_system=SAVOIR_FAIRE_SYSTEM))
                return roles
    roles = [r for r in (settings.profession_role, settings.savoir_faire_role) if r is not None]
    if not roles:
        raise VihfError(
            "VIHF-ROLE",
            "no role for the sender: its CDA author specialty is not a G15 code and "
            "VihfSettings.profession_role is not set",
        )
    return roles


def build_vihf(
    sub: DocumentSubmission,
    settings: VihfSettings,
    *,
    issuer_dn: str,
    now: datetime,
    assertion_id: str | None = None,
) -> etree._Element:
    """The unsigned ``saml2:Assertion`` for one submission (sign it with :func:`sign_vihf`).

    ``issuer_dn`` is the subject DN of the signing certificate (:func:`issuer_dn`); ``now`` must be aware."""
    if now.tzinfo is None:
        raise VihfError("VIHF-TIME", "now must be a timezone-aware datetime")
    if assertion_id is None:
        assertion_id = f"_{uuid.uuid4()}"  # xs:ID is an NCName: a bare UUID may start with a digit
    elif not _NCNAME_START.match(assertion_id):
        raise VihfError("VIHF-ID", "the assertion ID must be an NCName (start with a letter or '_')")
    if not issuer_dn:
        raise VihfError("VIHF-ISSUER", "the issuer DN (signing certificate subject) is empty")

    patient = sub.patient
    if not (patient.ins and patient.ins_oid in INS_OIDS):
        raise VihfError("VIHF-INS", "the patient has no INS with an INS assigning authority OID (PID-3)")
    resource_id = patient_cx(patient.ins, patient.ins_oid)

    sender = sub.sender
    if sender is None:
        raise VihfError("VIHF-SENDER", "the submission has no sender PRT (PRT-4 = SB)")
    if not (sender.organization and sender.organization.id):
        raise VihfError("VIHF-STRUCTURE", "the sender PRT names no structure id (PRT-8.10, IdNat_Struct)")
    person = sender.person if sender.person and sender.person.id else None

    if settings.mode == "automate":
        name_id = person.id if person else settings.responsible_person_id
        if not name_id:
            raise VihfError(
                "VIHF-SENDER-ID",
                "automate mode: the sender PRT has no PS id (PRT-5.1) and no responsible_person_id is configured",
            )
        subject_id = settings.automate_label or settings.lps_name
        roles = [AUTOMATE_ROLE]
    else:
        if person is None:
            raise VihfError("VIHF-SENDER-ID", "the sender PRT has no PS identifier (PRT-5.1, IdNat_PS)")
        name_id = person.id
        if not (person.family or person.given):
            raise VihfError("VIHF-SUBJECT-NAME", "the sender PRT has no name (PRT-5.2/5.3) for subject-id")
        subject_id = ", ".join(p for p in (person.family, person.given) if p)
        roles = _person_roles(sub, person, settings)

    instant = _instant(now)
    root = etree.Element(
        _saml("Assertion"),
        nsmap={"saml2": SAML_NS, "xsi": XSI_NS},
        attrib={"ID": assertion_id, "IssueInstant": instant, "Version": "2.0"},
    )
    issuer = etree.SubElement(root, _saml("Issuer"), Format=ISSUER_FORMAT)
    issuer.text = issuer_dn

    subject = etree.SubElement(root, _saml("Subject"))
    etree.SubElement(subject, _saml("NameID")).text = name_id
    if settings.subject_confirmation_bearer:
        etree.SubElement(subject, _saml("SubjectConfirmation"), Method=BEARER)

    if settings.validity_s is not None:
        etree.SubElement(
            root,
            _saml("Conditions"),
            NotBefore=_instant(now - timedelta(seconds=settings.clock_skew_s)),
            NotOnOrAfter=_instant(now + timedelta(seconds=settings.validity_s)),
        )

    # No interactive login in a PFI: the "authentication" is the TLS client certificate of this request.
    authn = etree.SubElement(root, _saml("AuthnStatement"), AuthnInstant=instant)
    context = etree.SubElement(authn, _saml("AuthnContext"))
    etree.SubElement(context, _saml("AuthnContextClassRef")).text = settings.authn_context

    statement = etree.SubElement(root, _saml("AttributeStatement"))

    def attribute(name: str, *texts: str) -> etree._Element:
        attr = etree.SubElement(statement, _saml("Attribute"), Name=name)
        for text in texts:
            etree.SubElement(attr, _saml("AttributeValue")).text = text
        return attr

    attribute(A_VERSION, settings.version)
    attribute(A_AUTH_MODE, "INDIRECTE")
    attribute(A_SECTEUR, f"{settings.secteur_activite}^{settings.secteur_activite_system}")
    attribute(A_RESOURCE_ID, resource_id or "")
    attribute(A_RESOURCE_URN, "urn:dmp")
    attribute(A_SUBJECT_ID, subject_id)
    attribute(A_STRUCTURE, sender.organization.id)
    attribute(A_LPS_VERSION, settings.lps_version)
    if settings.lps_id:
        attribute(A_LPS_ID, settings.lps_id)
    attribute(A_LPS_NOM, settings.lps_name)
    attribute(A_LPS_HOMOLOGATION, settings.lps_homologation_id)
    purpose = attribute(A_PURPOSE)
    _hl7_ce(
        etree.SubElement(purpose, _saml("AttributeValue")),
        "PurposeOfUse",
        Code(
            code=settings.purpose_of_use,
            code_system=settings.purpose_of_use_system,
            display=settings.purpose_of_use_display,
        ),
        settings.purpose_of_use_system_name,
    )
    if sub.flags.connexion_secrete:
        conf = attribute(A_CONFIDENTIALITY)
        _hl7_ce(
            etree.SubElement(conf, _saml("AttributeValue")),
            "ConfidentialityCode",
            settings.secret_confidentiality,
        )
    role_attr = attribute(A_ROLE)
    for role in roles:
        _hl7_ce(etree.SubElement(role_attr, _saml("AttributeValue")), "Role", role)
    return root


def _load_cert(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise VihfError("VIHF-CERT", "the certificate is not a PEM X.509 certificate") from exc


def issuer_dn(cert_pem: bytes) -> str:
    """The certificate subject as the ``Issuer`` text: RFC 4514 (most specific RDN first, RFC 4514 escaping),
    RDNs separated by ``", "`` like the DRIM-M request (``CN=DRIMbox, OU=…, O=…, ST=Paris (75), C=FR``)."""
    subject = _load_cert(cert_pem).subject
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(subject.rdns))


class _Sha1Signer(XMLSigner):
    """signxml refuses SHA-1 outright; the DRIM-M request (2023) was RSA-SHA1, so a platform that still wants it
    can get it, but only through an explicit ``algorithm="rsa-sha1"``."""

    def check_deprecated_methods(self) -> None:
        return None


def sign_vihf(
    assertion: etree._Element,
    *,
    key_pem: bytes,
    cert_pem: bytes,
    key_password: bytes | None = None,
    algorithm: str = "rsa-sha256",
) -> etree._Element:
    """Sign the assertion (XML-DSig enveloped, exclusive c14n, ``Reference URI="#<ID>"``, X509Certificate in
    KeyInfo) with the structure's seal certificate; the ``ds:Signature`` goes right after ``Issuer`` as the
    SAML schema requires. Returns a new, signed element (the input is left untouched)."""
    if algorithm not in _SIGNATURE_ALGORITHMS:
        raise VihfError("VIHF-SIGN-ALG", f"unsupported signature algorithm {algorithm!r}")
    method, digest = _SIGNATURE_ALGORITHMS[algorithm]
    assertion_id = assertion.get("ID")
    issuer = assertion.find(_saml("Issuer"))
    if assertion.tag != _saml("Assertion") or not assertion_id or issuer is None:
        raise VihfError("VIHF-SIGN-INPUT", "not an unsigned saml2:Assertion with an ID and an Issuer")
    if assertion.find(f"{{{DS_NS}}}Signature") is not None:
        raise VihfError("VIHF-SIGN-INPUT", "the assertion is already signed")

    try:
        key = serialization.load_pem_private_key(key_pem, password=key_password)
    except (ValueError, TypeError) as exc:  # bad PEM, wrong or missing password
        raise VihfError("VIHF-SIGN-KEY", f"cannot load the private key ({type(exc).__name__})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise VihfError(
            "VIHF-SIGN-KEY", f"{algorithm} needs an RSA key (IGC-Santé seal certificates are RSA)"
        )
    _load_cert(cert_pem)

    data = deepcopy(assertion)
    # signxml puts an enveloped signature in place of a placeholder, else as last child (invalid for SAML).
    placeholder = etree.Element(f"{{{DS_NS}}}Signature", Id="placeholder", nsmap={"ds": DS_NS})
    data.find(_saml("Issuer")).addnext(placeholder)
    signer_class = _Sha1Signer if algorithm == "rsa-sha1" else XMLSigner
    signer = signer_class(signature_algorithm=method, digest_algorithm=digest, c14n_algorithm=EXC_C14N)
    try:
        return signer.sign(
            data,
            key=key,
            cert=cert_pem.decode("ascii"),
            reference_uri=f"#{assertion_id}",
            always_add_key_value=False,
        )
    except (InvalidInput, ValueError, TypeError) as exc:
        raise VihfError("VIHF-SIGN", f"signing failed ({type(exc).__name__})") from exc


def verify_vihf(
    element_or_bytes: etree._Element | bytes, *, ca_pem: bytes, allow_sha1: bool = False
) -> etree._Element:
    """Check a signed VIHF against ``ca_pem`` (trust anchors) and return the *signed* assertion as signxml
    re-parsed it (use that, never the input: it defeats signature-wrapping attacks).

    The input may be the assertion or any element/document containing one (``wsse:Security``, SOAP envelope).
    Raises :class:`VihfError` ``VIHF-SIGNATURE`` when the signature, the digest or the certificate chain fails."""
    if isinstance(element_or_bytes, bytes):
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        try:
            root = etree.fromstring(element_or_bytes, parser)
        except etree.XMLSyntaxError as exc:
            raise VihfError("VIHF-SIGNATURE", "the VIHF is not well-formed XML") from exc
    else:
        root = element_or_bytes
    assertion = root if root.tag == _saml("Assertion") else root.find(f".//{_saml('Assertion')}")
    if assertion is None:
        raise VihfError("VIHF-SIGNATURE", "no saml2:Assertion found")
    config = SignatureConfiguration(expect_references=1)
    if allow_sha1:
        config = SignatureConfiguration(
            expect_references=1,
            signature_methods=frozenset(SignatureMethod),
            digest_algorithms=frozenset(DigestAlgorithm),
        )
    # signxml reads trust anchors from a file only.
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = Path(tmp) / "ca.pem"
        ca_file.write_bytes(ca_pem)
        try:
            # The whole document, not the assertion alone: serialising a sub-element makes lxml rebind its
            # namespaces to the ancestors' prefixes (see wsse_security), which would change the c14n.
            result = XMLVerifier().verify(
                assertion.getroottree().getroot(), ca_pem_file=str(ca_file), expect_config=config
            )
        except Exception as exc:  # signxml raises InvalidSignature/InvalidCertificate/InvalidDigest/...
            raise VihfError("VIHF-SIGNATURE", f"VIHF signature rejected ({type(exc).__name__})") from exc
    signed = result.signed_xml  # type: ignore[union-attr]
    if signed is None or signed.tag != _saml("Assertion") or signed.get("ID") != assertion.get("ID"):
        raise VihfError("VIHF-SIGNATURE", "the signature does not cover the assertion itself")
    return signed


def wsse_security(assertion: etree._Element, *, must_understand: bool = False) -> etree._Element:
    """The WS-Security 1.0 ``wsse:Security`` header block holding (a copy of) the signed assertion, as in the
    DRIM-M request; the SOAP 1.2 envelope is another module's job. ``must_understand`` adds
    ``soap:mustUnderstand="true"`` (the DRIM-M request does not).

    Pitfall for the envelope builder: when an element moves into another tree, lxml rebinds its namespaces to
    the *ancestors'* prefixes for the same URI. The DRIM-M envelope declares ``xmlns:urn="urn:hl7-org:v3"``;
    appending this block under such an envelope rewrites ``<Role xmlns="urn:hl7-org:v3">`` as ``<urn:Role>``,
    which changes the exclusive c14n and breaks the signature (and the meaning of ``xsi:type="CE"``). Do not
    declare the HL7, SAML, ds or xsi namespaces under other prefixes above the header, or splice the serialised
    bytes; and never pretty-print a signed token. ``tests/test_vihf.py`` pins this behaviour."""
    security = etree.Element(f"{{{WSSE_NS}}}Security", nsmap={"wsse": WSSE_NS})
    if must_understand:
        security.set(f"{{{SOAP12_NS}}}mustUnderstand", "true")
    security.append(deepcopy(assertion))
    return security
