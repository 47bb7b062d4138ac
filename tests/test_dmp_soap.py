"""SOAP 1.2 + MTOM/XOP codec for the DMP (ITI-41/18/57) and ebRS RegistryResponse parsing.

The reference is the DRIM-M ITI-41 request sent to the DMP test platform. The shared copy is a
*documentation dump*, not wire bytes: no HTTP headers, boundary and part-header lines indented, whitespace
before the root part's XML declaration, LF line ends, and the KOS part's base64 elided. :func:`drimm_wire`
undoes exactly those artefacts (and nothing else) so the real envelope, VIHF, metadata and signature part
go through the production decoder unchanged.
"""

from __future__ import annotations

import base64
import copy
import re
from email.message import Message

import pytest
from lxml import etree

from gateway.delivery.dmp import soap
from gateway.delivery.dmp.mtom import MtomError, MtomLimits, decode_mtom, encode_mtom, split_parts
from gateway.delivery.dmp.registry_response import (
    STATUS_FAILURE,
    TRANSIENT_CODES,
    RegistryError,
    RegistryResponseError,
    RegistryStatus,
    build_registry_response,
    parse_registry_response,
)
from tests.conftest import SHARED, require_shared
from tests.test_xdm_schema import errors, lcm_schema, valid_metadata, xdsb_schema

DRIMM = SHARED / "cisis/dmp-xds/drimm-DMP-ITI41-ProvideAndRegister-KOS-with-VIHF.mime.txt"
DRIMM_BOUNDARY = "MIMEBoundary_Bound"
# The HTTP Content-Type DRIM-M's sender (Axis2) used, rebuilt from the root part: the dump has no HTTP headers.
DRIMM_CONTENT_TYPE = (
    f'multipart/related; type="application/xop+xml"; start="<0.1>"; start-info="application/soap+xml"; '
    f'action="urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"; boundary={DRIMM_BOUNDARY}'
)
# Stands in for the elided KOS (a DICOM file: 128-byte preamble + "DICM"); CR, LF and NUL bytes on purpose.
KOS = b"\x00" * 128 + b"DICM\x02\x00\x00\x00UL\x04\x00\r\n\r\n--MIMEBoundary\xff\xfe"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
S12 = f"{{{soap.SOAP12_NS}}}"
WSA = f"{{{soap.WSA_NS}}}"


def drimm_wire(line_end: bytes = b"\r\n") -> bytes:
    """The DRIM-M dump turned back into the bytes its sender put on the wire (see the module docstring)."""
    require_shared()
    out: list[bytes] = []
    in_headers = root_xml_next = False
    delimiters = 0
    for line in DRIMM.read_bytes().split(b"\n"):
        bare = line.lstrip(b" ")
        if bare.startswith(b"--" + DRIMM_BOUNDARY.encode()):
            out.append(bare)
            in_headers = True
            delimiters += 1
        elif in_headers:
            out.append(bare)
            if not bare:
                in_headers = False
                root_xml_next = delimiters == 1  # the root part's content comes next
        elif root_xml_next:
            out.append(bare)  # nothing may precede an XML declaration
            root_xml_next = False
        elif bare.startswith(b"[ELIDED"):
            out.append(base64.encodebytes(KOS).strip())
        else:
            out.append(line)
    return line_end.join(out)


def drimm_schema_errors(schema: etree.XMLSchema, el: etree._Element) -> list[str]:
    """The id of the ExtrinsicObject of each schema error, after checking the error is the known one."""
    schema.validate(el)
    by_line = {x.sourceline: x for x in el.iter(f"{{{RIM}}}Slot")}
    out = []
    for error in schema.error_log:
        slot = by_line[error.line]
        assert slot.get("name") == "urn:ihe:iti:xds:2013:referenceIdList", error.message
        assert etree.QName(slot.getprevious()).localname == "Classification"
        out.append(slot.getparent().get("id"))
    return out


@pytest.fixture(scope="module")
def drimm() -> tuple[etree._Element, dict[str, bytes]]:
    return decode_mtom(drimm_wire(), DRIMM_CONTENT_TYPE)


def vihf_security() -> etree._Element:
    security = etree.Element(f"{{{soap.WSSE_NS}}}Security", nsmap={"wsse": soap.WSSE_NS})
    assertion = etree.SubElement(
        security, f"{{{SAML}}}Assertion", ID="_a1", Version="2.0", nsmap={"saml2": SAML}
    )
    etree.SubElement(assertion, f"{{{SAML}}}Issuer").text = "CN=PFI TEST"
    return security


def iti41_message(documents: dict[str, bytes] | None = None) -> tuple[etree._Element, dict[str, bytes]]:
    metadata = etree.fromstring(valid_metadata())
    entry_id = metadata.find(f".//{{{RIM}}}ExtrinsicObject").get("id")
    body, attachments = soap.provide_and_register(metadata, documents or {entry_id: b"<ClinicalDocument/>"})
    env = soap.envelope(
        body,
        action=soap.ITI41_ACTION,
        to="https://dev9.lps2.dmp.gouv.fr/si-dmp-server/v2/services/repository",
        message_id="urn:uuid:a6ba8f7f-b214-4a2d-96f1-54293d537ce3",
        security=vihf_security(),
    )
    return env, attachments


def ctype(value: str) -> Message:
    msg = Message()
    msg["Content-Type"] = value
    return msg


# ----------------------------------------------------------------------------------- the real DRIM-M request


def test_decode_drimm_envelope_and_ws_addressing(drimm):
    env, _ = drimm
    assert env.tag == f"{S12}Envelope"
    assert soap.header_value(env, soap.WSA_NS, "Action") == soap.ITI41_ACTION
    assert soap.header_value(env, soap.WSA_NS, "MessageID") == "urn:uuid:a6ba8f7f-b214-4a2d-96f1-54293d537ce3"
    assert soap.header_value(env, soap.WSA_NS, "To").endswith("/si-dmp-server/v2/services/repository")
    assert soap.fault(env) is None


def test_decode_drimm_vihf_in_wsse_security(drimm):
    env, _ = drimm
    assertion = env.find(f"{S12}Header/{{{soap.WSSE_NS}}}Security/{{{SAML}}}Assertion")
    assert assertion is not None
    attrs = {
        a.get("Name"): a.findtext(f"{{{SAML}}}AttributeValue") for a in assertion.iter(f"{{{SAML}}}Attribute")
    }
    assert attrs["VIHF_Version"] == "3.0"
    assert attrs["Authentification_Mode"] == "INDIRECTE"
    assert attrs["urn:oasis:names:tc:xacml:2.0:resource:resource-id"].endswith("&1.2.250.1.213.1.4.10&ISO^NH")
    assert assertion.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None


def test_decode_drimm_submit_objects_request_and_documents(drimm):
    env, attachments = drimm
    request = soap.body_payload(env)
    assert request.tag == f"{{{soap.XDSB_NS}}}ProvideAndRegisterDocumentSetRequest"
    sor = request.find(f"{{{LCM}}}SubmitObjectsRequest")
    assert [e.get("id") for e in sor.iter(f"{{{RIM}}}ExtrinsicObject")] == ["DocumentKOS", "Signature01"]
    # DRIM-M's own quirk, kept visible: a referenceIdList Slot after the Classifications in both entries.
    assert drimm_schema_errors(lcm_schema(), sor) == ["DocumentKOS", "Signature01"]
    assert set(attachments) == {"0.2", "0.3"}
    docs = soap.documents(env, attachments)
    assert docs["DocumentKOS"] == KOS  # the BASE64 part decoded back to the binary bytes
    signature = docs["Signature01"]  # the binary part, byte for byte as in the file
    assert b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"' in signature
    assert b'URI="#IHEManifest"' in signature and signature.rstrip().endswith(b"</Signature>")
    assert signature.replace(b"\r\n", b"\n") in DRIMM.read_bytes()  # the file has LF, our wire CRLF


def test_decode_drimm_accepts_bare_lf_line_ends(drimm):
    env, attachments = decode_mtom(drimm_wire(b"\n"), DRIMM_CONTENT_TYPE)
    assert etree.tostring(env) == etree.tostring(drimm[0])
    assert attachments["0.2"] == KOS  # base64: line ends are not content
    assert attachments["0.3"] == drimm[1]["0.3"].replace(b"\r\n", b"\n")  # binary: they are


def test_drimm_request_inlined_validates_against_xds_b_schema():
    env, _ = decode_mtom(drimm_wire(), DRIMM_CONTENT_TYPE, inline=True)
    request = soap.body_payload(env)
    # Only DRIM-M's misplaced referenceIdList Slots (see above): the inlined Documents are valid base64Binary.
    assert drimm_schema_errors(xdsb_schema(), request) == ["DocumentKOS", "Signature01"]
    assert base64.b64decode(request.find(f"{{{soap.XDSB_NS}}}Document[@id='DocumentKOS']").text) == KOS


# ---------------------------------------------------------------------------------------- building ITI-41


def test_envelope_headers():
    env, _ = iti41_message()
    header = env.find(f"{S12}Header")
    assert [etree.QName(c).localname for c in header] == ["MessageID", "To", "Action", "ReplyTo", "Security"]
    action = header.find(f"{WSA}Action")
    assert action.get(f"{S12}mustUnderstand") == "true" and action.text == soap.ITI41_ACTION
    assert header.findtext(f"{WSA}ReplyTo/{WSA}Address") == soap.WSA_ANONYMOUS
    assert header.find(f"{{{soap.WSSE_NS}}}Security/{{{SAML}}}Assertion").get("ID") == "_a1"
    generated = soap.envelope(etree.Element("x"), action=soap.ITI18_ACTION, to="https://x")
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", soap.header_value(generated, soap.WSA_NS, "MessageID"))
    assert generated.find(f"{S12}Header/{{{soap.WSSE_NS}}}Security") is None


def test_envelope_copies_its_inputs_and_refuses_a_wrong_security_element():
    security, body = vihf_security(), etree.Element("payload")
    soap.envelope(body, action=soap.ITI57_ACTION, to="https://x", security=security)
    assert security.getparent() is None and len(security) == 1 and body.getparent() is None
    with pytest.raises(soap.SoapError) as exc:
        soap.envelope(body, action=soap.ITI57_ACTION, to="https://x", security=etree.Element("Assertion"))
    assert exc.value.rule == "SOAP-SECURITY"


def test_action_constants():
    assert soap.RESPONSE_ACTIONS == {
        "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b": "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse",
        "urn:ihe:iti:2007:RegistryStoredQuery": "urn:ihe:iti:2007:RegistryStoredQueryResponse",
        "urn:ihe:iti:2010:UpdateDocumentSet": "urn:ihe:iti:2010:UpdateDocumentSetResponse",
    }


def test_provide_and_register_has_xop_includes_and_validates_once_inlined():
    env, attachments = iti41_message({"Document01": b"<ClinicalDocument/>", "Signature01": b"<Signature/>"})
    request = soap.body_payload(env)
    docs = request.findall(f"{{{soap.XDSB_NS}}}Document")
    assert [d.get("id") for d in docs] == ["Document01", "Signature01"]
    hrefs = [d.find(f"{{{soap.XOP_NS}}}Include").get("href") for d in docs]
    assert hrefs == [f"cid:{cid}" for cid in attachments]
    assert list(attachments.values()) == [b"<ClinicalDocument/>", b"<Signature/>"]
    # The schema checks the XOP infoset (base64 text where the includes are): round-trip with inline=True.
    wire, content_type = encode_mtom(env, attachments)
    inlined, _ = decode_mtom(wire, content_type, inline=True)
    assert errors(xdsb_schema(), soap.body_payload(inlined)) == []
    assert errors(lcm_schema(), soap.body_payload(inlined)[0]) == []
    with pytest.raises(soap.SoapError):
        soap.provide_and_register(etree.Element("notMetadata"), {})


# --------------------------------------------------------------------------------------------------- MTOM


def test_encode_decode_round_trip():
    env, attachments = iti41_message({"Document01": KOS, "Signature01": b"<Signature/>"})
    wire, content_type = encode_mtom(env, attachments)
    decoded, decoded_attachments = decode_mtom(wire, content_type)
    assert etree.tostring(decoded, method="c14n") == etree.tostring(env, method="c14n")
    assert decoded_attachments == attachments
    assert soap.documents(decoded, decoded_attachments) == {"Document01": KOS, "Signature01": b"<Signature/>"}


def test_multipart_layout_matches_drimm():
    env, attachments = iti41_message()
    wire, content_type = encode_mtom(env, attachments, root_cid="0.1@cisis-gateway")
    ours, theirs = ctype(content_type), ctype(DRIMM_CONTENT_TYPE)
    assert ours.get_content_type() == "multipart/related"
    for param in ("type", "start-info", "action"):
        assert ours.get_param(param) == theirs.get_param(param), param
    assert ours.get_param("start") == "<0.1@cisis-gateway>"
    boundary = ours.get_param("boundary")
    assert boundary.startswith("MIMEBoundary_") and len(boundary) <= 70
    # parameter order as the brief's layout: type, start, start-info, action, boundary
    assert [p.split("=")[0].strip() for p in content_type.split(";")[1:]] == [
        "type", "start", "start-info", "action", "boundary"
    ]  # fmt: skip
    assert wire.startswith(f"--{boundary}\r\n".encode()) and wire.endswith(f"\r\n--{boundary}--\r\n".encode())

    our_parts, drimm_parts = split_parts(wire, boundary), split_parts(drimm_wire(), DRIMM_BOUNDARY)
    assert [[n for n, _ in p.headers] for p in our_parts] == [
        ["Content-Type", "Content-Transfer-Encoding", "Content-ID"]
    ] * 2
    assert [n for n, _ in drimm_parts[0].headers] == [
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-ID",
    ]
    ours_root, theirs_root = (
        ctype(our_parts[0].header("Content-Type")),
        ctype(drimm_parts[0].header("Content-Type")),
    )
    assert ours_root.get_content_type() == theirs_root.get_content_type() == "application/xop+xml"
    assert ours_root.get_param("charset") == theirs_root.get_param("charset") == "UTF-8"
    assert ours_root.get_param("type") == theirs_root.get_param("type") == "application/soap+xml"
    assert ours_root.get_param("action") == soap.ITI41_ACTION  # DRIM-M: an Axis2 operation name (see mtom.py)
    assert our_parts[0].header("Content-ID") == "<0.1@cisis-gateway>"
    assert our_parts[0].header("Content-Transfer-Encoding") == drimm_parts[0].header(
        "Content-Transfer-Encoding"
    )
    assert (
        our_parts[1].header("Content-Type")
        == drimm_parts[1].header("Content-Type")
        == "application/octet-stream"
    )
    assert our_parts[1].header("Content-Transfer-Encoding") == "binary"
    assert our_parts[1].header("Content-ID") == f"<{next(iter(attachments))}>"
    assert our_parts[0].content.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")


def test_plain_soap_body_without_attachments():
    env = soap.envelope(build_registry_response("success"), action=soap.ITI41_RESPONSE_ACTION, to="x")
    decoded, attachments = decode_mtom(etree.tostring(env), 'application/soap+xml; charset=UTF-8; action="x"')
    assert attachments == {} and parse_registry_response(decoded).ok


def bad(wire: bytes, content_type: str, **limits) -> str:
    with pytest.raises(MtomError) as exc:
        decode_mtom(wire, content_type, limits=MtomLimits(**limits))
    return exc.value.rule


def test_malformed_mtom_is_refused_with_a_rule():
    env, attachments = iti41_message()
    wire, content_type = encode_mtom(env, attachments, boundary="MIMEBoundary_T", root_cid="0.1@x")
    assert decode_mtom(wire, content_type)[1] == attachments
    no_boundary = content_type.replace("; boundary=MIMEBoundary_T", "")
    assert bad(wire, no_boundary) == "MTOM-NO-BOUNDARY"
    assert bad(wire, content_type.replace("boundary=MIMEBoundary_T", "boundary=Other")) == "MTOM-NO-DELIMITER"
    assert bad(wire, content_type.replace('start="<0.1@x>"', 'start="<9@x>"')) == "MTOM-NO-ROOT"
    cid = next(iter(attachments))
    dangling = wire.replace(f"Content-ID: <{cid}>".encode(), b"Content-ID: <other@x>")
    assert bad(dangling, content_type) == "MTOM-DANGLING-CID"
    assert bad(wire, content_type, max_body_bytes=len(wire) - 1) == "MTOM-TOO-LARGE"
    assert bad(wire, content_type, max_part_bytes=10) == "MTOM-PART-TOO-LARGE"
    assert bad(wire, content_type, max_parts=1) == "MTOM-TOO-MANY-PARTS"
    assert bad(wire[: len(wire) // 2], content_type) == "MTOM-NO-CLOSE-DELIMITER"
    assert bad(wire, "application/json") == "MTOM-CONTENT-TYPE"
    assert bad(wire.replace(b"application/xop+xml;", b"text/plain;", 1), content_type) == "MTOM-ROOT-TYPE"
    no_cid = wire.replace(f"Content-ID: <{cid}>\r\n".encode(), b"")
    assert bad(no_cid, content_type) == "MTOM-NO-CONTENT-ID"
    assert bad(wire.replace(b"Content-Transfer-Encoding: binary\r\nContent-ID: <" + cid.encode(),
                            b"Content-Transfer-Encoding: base64\r\nContent-ID: <" + cid.encode()),
               content_type) == "MTOM-ENCODING"  # fmt: skip
    no_blank_line = wire.replace(b"Content-ID: <0.1@x>\r\n\r\n", b"Content-ID: <0.1@x>\r\n")
    assert bad(no_blank_line, content_type) == "MTOM-PART-HEADERS"
    assert bad(b"preamble only, no delimiter", content_type) == "MTOM-NO-DELIMITER"


def test_hostile_xml_in_the_root_part_is_refused():
    doctype = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x "boom">]><e>&x;</e>'
    env_ct = "application/soap+xml"
    assert bad(doctype, env_ct) == "MTOM-XML"
    assert bad(b"<soap:Envelope xmlns:soap='urn:not-soap'/>", env_ct) == "MTOM-NOT-SOAP"
    assert bad(b"<Envelope", env_ct) == "MTOM-XML"
    big = etree.tostring(soap.envelope(etree.Element("p"), action="a", to="t"))
    assert bad(big, env_ct, max_xml_bytes=100) == "MTOM-XML"


def test_encoder_refuses_unsafe_inputs():
    env, attachments = iti41_message()
    with pytest.raises(MtomError) as exc:
        encode_mtom(env, {"bad id\r\nX-Injected: 1": b""})
    assert exc.value.rule == "MTOM-BAD-CID"
    with pytest.raises(MtomError) as exc:
        encode_mtom(env, {**attachments, "z@x": b"...--MIMEBoundary_T..."}, boundary="MIMEBoundary_T")
    assert exc.value.rule == "MTOM-BOUNDARY-IN-CONTENT"
    no_action = copy.deepcopy(env)
    header = no_action.find(f"{S12}Header")
    header.remove(header.find(f"{WSA}Action"))
    with pytest.raises(MtomError) as exc:
        encode_mtom(no_action, attachments)
    assert exc.value.rule == "MTOM-NO-ACTION"


# ------------------------------------------------------------------------------------------- SOAP faults


def test_soap12_fault_parsing():
    env = soap.build_fault(
        "Sender",
        "Assertion VIHF invalide",
        subcode="{http://docs.oasis-open.org/wss/2004/01/"
        "oasis-200401-wss-wssecurity-secext-1.0.xsd}FailedAuthentication",
    )
    wire = etree.tostring(env)
    decoded, _ = decode_mtom(wire, "application/soap+xml")
    f = soap.fault(decoded)
    assert f == soap.SoapFault(
        code="Sender",
        subcode=f"{{{soap.WSSE_NS}}}FailedAuthentication",
        reason="Assertion VIHF invalide",
        detail=None,
    )
    assert not f.transient
    assert soap.fault(soap.build_fault("Receiver", "Service indisponible")).transient


def test_soap12_fault_from_a_server_nested_subcodes_and_languages():
    xml = b"""<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
        xmlns:wsa="http://www.w3.org/2005/08/addressing"><env:Body><env:Fault>
      <env:Code><env:Value>env:Sender</env:Value>
        <env:Subcode><env:Value>wsa:InvalidAddressingHeader</env:Value>
          <env:Subcode><env:Value>wsa:InvalidCardinality</env:Value></env:Subcode></env:Subcode></env:Code>
      <env:Reason><env:Text xml:lang="en">Bad header</env:Text><env:Text xml:lang="fr">En-tete invalide</env:Text>
      </env:Reason><env:Detail><wsa:ProblemHeaderQName>wsa:MessageID</wsa:ProblemHeaderQName></env:Detail>
    </env:Fault></env:Body></env:Envelope>"""
    f = soap.fault(etree.fromstring(xml))
    assert (f.code, f.subcode, f.reason) == ("Sender", f"{WSA}InvalidCardinality", "En-tete invalide")
    assert f.detail is not None and not f.transient


def test_soap11_fault_fallback():
    xml = b"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
      <faultcode>s:Server</faultcode><faultstring>Internal error</faultstring></s:Fault></s:Body></s:Envelope>"""
    f = soap.fault(decode_mtom(xml, "text/xml; charset=utf-8")[0])
    assert (f.code, f.subcode, f.reason, f.transient) == ("Server", None, "Internal error", True)


# ----------------------------------------------------------------------------------------- RegistryResponse


def test_registry_response_success():
    result = parse_registry_response(build_registry_response(RegistryStatus.SUCCESS))
    assert result.ok and result.errors == [] and not result.transient


def test_registry_response_failure_permanent_in_a_soap_envelope():
    errs = [
        RegistryError(
            "XDSDuplicateUniqueIdInRegistry", "error", "UniqueId 1.2.3 already registered", "1.2.3"
        ),
        RegistryError("XDSExtraMetadataNotSaved", "warning", "slot ignored"),
    ]
    env = soap.envelope(build_registry_response("failure", errs), action=soap.ITI41_RESPONSE_ACTION, to="x")
    wire, content_type = encode_mtom(env, {})
    result = parse_registry_response(decode_mtom(wire, content_type)[0])
    assert result.status is RegistryStatus.FAILURE and not result.ok
    assert result.errors == errs
    assert not result.transient


def test_registry_response_failure_transient_only_if_every_error_is():
    busy = RegistryError("XDSRegistryBusy", "error", "busy")
    result = parse_registry_response(build_registry_response("failure", [busy]))
    assert result.transient and result.codes == ["XDSRegistryBusy"]
    mixed = [busy, RegistryError("XDSPatientIdDoesNotMatch", "error", "patient")]
    assert not parse_registry_response(build_registry_response("failure", mixed)).transient
    warning_only = [busy, RegistryError("XDSUnknownThing", "warning", "w")]
    assert parse_registry_response(build_registry_response("failure", warning_only)).transient
    for code in ("DMPClosed", "XDSUnknownPatientId", "XDSRegistryMetadataError", "SomethingNew"):
        one = [RegistryError(code, "error", "x")]
        assert not parse_registry_response(build_registry_response("failure", one)).transient, code
    assert {"XDSRegistryBusy", "XDSRepositoryBusy", "XDSRegistryOutOfResources"} <= TRANSIENT_CODES
    assert not parse_registry_response(build_registry_response("failure")).transient  # no error: permanent


def test_registry_response_partial_from_server_xml():
    xml = f"""<rs:RegistryResponse xmlns:rs="{RS}" status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess">
      <rs:RegistryErrorList highestSeverity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error">
        <rs:RegistryError errorCode="XDSRepositoryOutOfResources" codeContext="disk full"
          location="Repository" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>
      </rs:RegistryErrorList></rs:RegistryResponse>"""
    result = parse_registry_response(etree.fromstring(xml))
    assert result.status is RegistryStatus.PARTIAL and result.transient
    assert result.errors == [RegistryError("XDSRepositoryOutOfResources", "error", "disk full", "Repository")]


def test_adhoc_query_response_document_refs():
    xml = f"""<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}"
        status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"><rim:RegistryObjectList>
      <rim:ExtrinsicObject id="urn:uuid:11111111-1111-1111-1111-111111111111" mimeType="text/xml"
          objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
          status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved">
        <rim:ExternalIdentifier id="e1" registryObject="urn:uuid:11111111-1111-1111-1111-111111111111"
          identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value="279035121518989^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH"/>
        <rim:ExternalIdentifier id="e2" registryObject="urn:uuid:11111111-1111-1111-1111-111111111111"
          identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="1.2.250.1.213.1.1.1.45.2024.2.1"/>
      </rim:ExtrinsicObject>
      <rim:ObjectRef id="urn:uuid:22222222-2222-2222-2222-222222222222"/>
    </rim:RegistryObjectList></query:AdhocQueryResponse>"""
    env = soap.envelope(etree.fromstring(xml), action=soap.ITI18_RESPONSE_ACTION, to="x")
    result = parse_registry_response(env)
    assert result.ok
    assert [(d.entry_uuid, d.unique_id, d.status) for d in result.documents] == [
        ("urn:uuid:11111111-1111-1111-1111-111111111111", "1.2.250.1.213.1.1.1.45.2024.2.1",
         "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"),
        ("urn:uuid:22222222-2222-2222-2222-222222222222", None, None),
    ]  # fmt: skip


def test_registry_response_errors():
    with pytest.raises(RegistryResponseError) as exc:
        parse_registry_response(etree.Element("nothing"))
    assert exc.value.rule == "RR-NOT-RESPONSE"
    with pytest.raises(RegistryResponseError) as exc:
        parse_registry_response(etree.Element(f"{{{RS}}}RegistryResponse", status="Ok"))
    assert exc.value.rule == "RR-STATUS"
    assert build_registry_response("failure").get("status") == STATUS_FAILURE


def test_built_registry_response_is_schema_valid():
    from tests.test_xdm_schema import SCHEMAS, load_schema

    schema = load_schema(SCHEMAS / "ebrs30" / "rs.xsd")[0]
    errs = [RegistryError("XDSRegistryBusy", "error", "busy", "here"), RegistryError("W", "warning", "w")]
    for status in RegistryStatus:
        assert errors(schema, build_registry_response(status, errs)) == []


def test_rfc2046_tolerances_preamble_padding_folding_epilogue():
    env, attachments = iti41_message()
    wire, content_type = encode_mtom(env, attachments, boundary="MIMEBoundary_T", root_cid="0.1@x")
    cid = next(iter(attachments))
    tolerant = (
        b"This is a preamble.\r\n"
        + wire.replace(b"--MIMEBoundary_T\r\n", b"--MIMEBoundary_T  \t\r\n")  # transport padding
        .replace(b"Content-Type: application/octet-stream", b"Content-Type:\r\n application/octet-stream")
        .replace(f"<{cid}>".encode(), f"< {cid} >".encode())
        + b"epilogue, ignored\r\n"
    )
    decoded, decoded_attachments = decode_mtom(tolerant, content_type)
    assert decoded_attachments == attachments
    assert soap.documents(decoded, decoded_attachments) == soap.documents(env, attachments)
