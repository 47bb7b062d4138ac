"""SOAP 1.2 envelopes for the DMP's IHE XDS.b transactions (ITI-41, ITI-18, ITI-57) — no transport here.

One concern per module, as in IPF: this one builds and reads envelopes (WS-Addressing 1.0 headers, the
``wsse:Security`` header that carries the VIHF, the ITI-41 body with ``xop:Include`` references) and parses
SOAP faults. MIME packaging is :mod:`gateway.delivery.dmp.mtom`, ebRS answers are
:mod:`gateway.delivery.dmp.registry_response`; the httpx client glues them together.

Layout follows the DRIM-M ITI-41 request sent to the DMP test platform (CI-SIS facts §5): header children
``wsa:MessageID``, ``wsa:To``, ``wsa:Action``, then ``wsse:Security`` with the SAML 2.0 VIHF assertion.
Two deliberate differences, both in the direction of the standards:

* DRIM-M writes ``mustUnderstand="true"`` without a namespace; SOAP 1.2 only honours the attribute in the
  envelope namespace (``soap:mustUnderstand``), so that is what we emit.
* DRIM-M omits ``wsa:ReplyTo``; IHE ITI TF-2 Appendix V asks for it (anonymous = synchronous answer on the
  same HTTP connection), and IPF/CXF send it, so we do too.
"""

from __future__ import annotations

import base64
import binascii
import copy
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

from lxml import etree

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSA_NS = "http://www.w3.org/2005/08/addressing"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
XOP_NS = "http://www.w3.org/2004/08/xop/include"
XDSB_NS = "urn:ihe:iti:xds-b:2007"
LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"

WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"

# WS-Addressing actions, IHE ITI TF-2 (request, then the response the registry/repository answers with).
ITI41_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI41_RESPONSE_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ITI18_ACTION = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI18_RESPONSE_ACTION = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
ITI57_ACTION = "urn:ihe:iti:2010:UpdateDocumentSet"
ITI57_RESPONSE_ACTION = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
RESPONSE_ACTIONS = {
    ITI41_ACTION: ITI41_RESPONSE_ACTION,
    ITI18_ACTION: ITI18_RESPONSE_ACTION,
    ITI57_ACTION: ITI57_RESPONSE_ACTION,
}

# The domain part keeps our Content-IDs globally unique (RFC 2392) and recognisable in a capture.
CID_DOMAIN = "cisis-gateway"


class SoapError(ValueError):
    """The XML is not the SOAP message expected (not an envelope, no body...). ``rule`` is a stable code."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def envelope(
    body: etree._Element,
    *,
    action: str,
    to: str,
    message_id: str | None = None,
    security: etree._Element | None = None,
) -> etree._Element:
    """A SOAP 1.2 envelope around ``body`` with WS-Addressing 1.0 headers and, if given, ``wsse:Security``.

    ``body`` and ``security`` are copied, never moved: the caller keeps its trees intact (a signed VIHF
    assertion may be reused for several requests while it is valid).
    """
    if security is not None and security.tag != _q(WSSE_NS, "Security"):
        raise SoapError(
            "SOAP-SECURITY", f"the security header must be a wsse:Security element, got {security.tag}"
        )
    env = etree.Element(_q(SOAP12_NS, "Envelope"), nsmap={"soap": SOAP12_NS, "wsa": WSA_NS})
    header = etree.SubElement(env, _q(SOAP12_NS, "Header"))
    etree.SubElement(header, _q(WSA_NS, "MessageID")).text = message_id or new_message_id()
    etree.SubElement(header, _q(WSA_NS, "To")).text = to
    # Action is the only header the service must process to dispatch; hence mustUnderstand on it alone.
    action_el = etree.SubElement(header, _q(WSA_NS, "Action"), {_q(SOAP12_NS, "mustUnderstand"): "true"})
    action_el.text = action
    reply_to = etree.SubElement(header, _q(WSA_NS, "ReplyTo"))
    etree.SubElement(reply_to, _q(WSA_NS, "Address")).text = WSA_ANONYMOUS
    if security is not None:
        header.append(copy.deepcopy(security))
    etree.SubElement(env, _q(SOAP12_NS, "Body")).append(copy.deepcopy(body))
    return env


def new_cid(index: int) -> str:
    """A Content-ID (without angle brackets): ``<index>.<uuid>@cisis-gateway``, numbered like DRIM-M's."""
    return f"{index}.{uuid.uuid4().hex}@{CID_DOMAIN}"


def provide_and_register(
    submit_objects_request: etree._Element, documents: dict[str, bytes]
) -> tuple[etree._Element, dict[str, bytes]]:
    """The ITI-41 body and its MTOM attachments.

    ``documents`` maps each DocumentEntry id (the ``ExtrinsicObject/@id`` of the SubmitObjectsRequest) to
    its bytes. Returns the ``xdsb:ProvideAndRegisterDocumentSetRequest`` — the SubmitObjectsRequest, then
    one ``xdsb:Document id=...`` per document holding an ``xop:Include href="cid:..."`` — and the mapping
    Content-ID → bytes to hand to :func:`gateway.delivery.dmp.mtom.encode_mtom`.
    """
    if submit_objects_request.tag != _q(LCM_NS, "SubmitObjectsRequest"):
        raise SoapError(
            "SOAP-ITI41-METADATA", f"expected lcm:SubmitObjectsRequest, got {submit_objects_request.tag}"
        )
    request = etree.Element(_q(XDSB_NS, "ProvideAndRegisterDocumentSetRequest"), nsmap={"xdsb": XDSB_NS})
    request.append(copy.deepcopy(submit_objects_request))
    attachments: dict[str, bytes] = {}
    # Index 0 is left to the MTOM root part, as in DRIM-M (0.1 root, 0.2 and 0.3 the documents).
    for index, (entry_id, data) in enumerate(documents.items(), start=1):
        cid = new_cid(index)
        document = etree.SubElement(request, _q(XDSB_NS, "Document"), id=entry_id)
        etree.SubElement(document, _q(XOP_NS, "Include"), nsmap={"xop": XOP_NS}, href=f"cid:{cid}")
        attachments[cid] = data
    return request, attachments


def body_payload(env: etree._Element) -> etree._Element:
    """The single child of ``soap:Body`` (SOAP 1.2, or 1.1 for a server that answers in the old version)."""
    ns = etree.QName(env).namespace
    if etree.QName(env).localname != "Envelope" or ns not in (SOAP12_NS, SOAP11_NS):
        raise SoapError("SOAP-NOT-ENVELOPE", f"not a SOAP envelope: {env.tag}")
    body = env.find(_q(ns, "Body"))
    if body is None:
        raise SoapError("SOAP-NO-BODY", "the SOAP envelope has no Body")
    children = [c for c in body if isinstance(c.tag, str)]
    if len(children) != 1:
        raise SoapError("SOAP-BODY-CHILDREN", f"the SOAP Body has {len(children)} elements, expected 1")
    return children[0]


def header_value(env: etree._Element, ns: str, tag: str) -> str | None:
    """Text of a ``soap:Header`` child (e.g. ``wsa:Action``, ``wsa:RelatesTo``), or None."""
    el = env.find(f"{{{etree.QName(env).namespace}}}Header/{{{ns}}}{tag}")
    return None if el is None or el.text is None else el.text.strip()


def documents(request: etree._Element, attachments: dict[str, bytes]) -> dict[str, bytes]:
    """``xdsb:Document/@id`` → bytes of an ITI-41 request, inline base64 or ``xop:Include`` (MTOM).

    ``request`` is the ProvideAndRegisterDocumentSetRequest or an envelope containing it; ``attachments``
    is what :func:`gateway.delivery.dmp.mtom.decode_mtom` returned. Used by the sandbox to get back what
    the gateway sent.
    """
    if request.tag != _q(XDSB_NS, "ProvideAndRegisterDocumentSetRequest"):
        request = body_payload(request)
    out: dict[str, bytes] = {}
    for document in request.iterfind(_q(XDSB_NS, "Document")):
        entry_id = document.get("id") or ""
        include = document.find(_q(XOP_NS, "Include"))
        if include is not None:
            href = include.get("href") or ""
            cid = unquote(href[4:]) if href.startswith("cid:") else ""
            if cid not in attachments:
                raise SoapError(
                    "SOAP-DANGLING-CID", f"Document {entry_id!r} references a missing part {href!r}"
                )
            out[entry_id] = attachments[cid]
        else:
            try:
                out[entry_id] = base64.b64decode("".join((document.text or "").split()), validate=True)
            except binascii.Error:
                raise SoapError(
                    "SOAP-DOCUMENT-BASE64", f"Document {entry_id!r} is not valid base64"
                ) from None
    return out


# ------------------------------------------------------------------------------------------------ faults


@dataclass(frozen=True)
class SoapFault:
    """A SOAP fault. ``code`` is the local name of the top code (SOAP 1.2 ``Sender``/``Receiver``/
    ``MustUnderstand``/``VersionMismatch``/``DataEncodingUnknown``; SOAP 1.1 ``Client``/``Server``...),
    ``subcode`` the innermost subcode as ``{ns}local`` (e.g. a WS-Security or WS-Addressing fault), ``reason``
    the first Reason text (French if the server gave one)."""

    code: str
    subcode: str | None
    reason: str
    detail: etree._Element | None = None

    @property
    def transient(self) -> bool:
        # Receiver/Server means the service failed while the message was fine: sending it again may work.
        # Every Sender-side fault (bad VIHF, bad action, schema error) repeats until the request changes.
        return self.code in ("Receiver", "Server")


def _qname_text(el: etree._Element | None) -> str | None:
    """A QName-valued element (``soap:Value``, ``faultcode``) resolved with the element's prefixes."""
    if el is None or not el.text:
        return None
    text = el.text.strip()
    prefix, _, local = text.rpartition(":")
    ns = el.nsmap.get(prefix or None)
    return f"{{{ns}}}{local}" if ns else text


def fault(env: etree._Element) -> SoapFault | None:
    """The fault carried by ``env`` (SOAP 1.2, or SOAP 1.1 as a fallback), or None if the body is no fault."""
    payload = body_payload(env)
    qname = etree.QName(payload)
    if qname.localname != "Fault":
        return None
    if qname.namespace == SOAP12_NS:
        code = _qname_text(payload.find(f"{{{SOAP12_NS}}}Code/{{{SOAP12_NS}}}Value"))
        subcode = None
        node = payload.find(_q(SOAP12_NS, "Code"))
        while node is not None and (node := node.find(_q(SOAP12_NS, "Subcode"))) is not None:
            subcode = _qname_text(node.find(_q(SOAP12_NS, "Value"))) or subcode
        texts = payload.findall(f"{{{SOAP12_NS}}}Reason/{{{SOAP12_NS}}}Text")
        french = [
            t for t in texts if (t.get("{http://www.w3.org/XML/1998/namespace}lang") or "").startswith("fr")
        ]
        reason = ((french or texts)[0].text or "").strip() if texts else ""
        detail = payload.find(_q(SOAP12_NS, "Detail"))
    elif qname.namespace == SOAP11_NS:
        code = _qname_text(payload.find("faultcode"))
        subcode = None
        reason = (payload.findtext("faultstring") or "").strip()
        detail = payload.find("detail")
    else:
        return None
    # An unresolvable prefix leaves "x:Receiver": the local name is still what the policy keys on.
    local = etree.QName(code).localname if code and code.startswith("{") else (code or "").rpartition(":")[2]
    return SoapFault(code=local, subcode=subcode, reason=reason, detail=detail)


def build_fault(code: str, reason: str, *, subcode: str | None = None, lang: str = "fr") -> etree._Element:
    """A SOAP 1.2 envelope holding a fault (for the sandbox). ``subcode`` is ``{ns}local`` or a plain name."""
    env = etree.Element(_q(SOAP12_NS, "Envelope"), nsmap={"soap": SOAP12_NS})
    fault_el = etree.SubElement(etree.SubElement(env, _q(SOAP12_NS, "Body")), _q(SOAP12_NS, "Fault"))
    code_el = etree.SubElement(fault_el, _q(SOAP12_NS, "Code"))
    etree.SubElement(code_el, _q(SOAP12_NS, "Value")).text = f"soap:{code}"
    if subcode:
        qn = etree.QName(subcode) if subcode.startswith("{") else None
        sub = etree.SubElement(code_el, _q(SOAP12_NS, "Subcode"))
        value = etree.SubElement(sub, _q(SOAP12_NS, "Value"), nsmap={"sc": qn.namespace} if qn else None)
        value.text = f"sc:{qn.localname}" if qn else subcode
    text = etree.SubElement(etree.SubElement(fault_el, _q(SOAP12_NS, "Reason")), _q(SOAP12_NS, "Text"))
    text.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
    text.text = reason
    return env
