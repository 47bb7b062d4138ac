"""MTOM/XOP (SOAP 1.2) packaging of an envelope and its binary parts — bytes in, bytes out, no transport.

Wire layout, as in the DRIM-M ITI-41 request to the DMP test platform (Axis2-style)::

    Content-Type: multipart/related; type="application/xop+xml"; start="<0.x@cisis-gateway>";
                  start-info="application/soap+xml"; action="urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b";
                  boundary=MIMEBoundary_<hex>

    --MIMEBoundary_<hex>
    Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"; action="<wsa:Action>"
    Content-Transfer-Encoding: binary
    Content-ID: <0.x@cisis-gateway>

    <?xml version='1.0' encoding='UTF-8'?><soap:Envelope ...>...<xop:Include href="cid:1.y@cisis-gateway"/>
    --MIMEBoundary_<hex>
    Content-Type: application/octet-stream
    Content-Transfer-Encoding: binary
    Content-ID: <1.y@cisis-gateway>

    <document bytes>
    --MIMEBoundary_<hex>--

DRIM-M puts an Axis2 operation name in the root part's ``action`` (``DocumentRepository_...``); we put the
envelope's ``wsa:Action`` there, which is what RFC 3902 means by it.

The decoder reads what comes back from the DMP (and what the sandbox receives). It is hardened because
those bytes come from outside: size limits checked before work, a bounded number of parts, the XML parsed by
:func:`gateway.formats.cda.xml_safety.parse_untrusted` (no DTD, no entities, no network), every
``xop:Include`` required to point at a part that exists. Every refusal is an :class:`MtomError` whose
``rule`` is a stable code. It tolerates bare-LF line ends, transport padding after a delimiter, a preamble and
an epilogue (RFC 2046), and base64 parts (DRIM-M's KOS part is declared ``BASE64``).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote

from lxml import etree

from gateway.delivery.dmp.soap import SOAP11_NS, SOAP12_NS, WSA_NS, XOP_NS, new_cid
from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted

XOP_MEDIA_TYPE = "application/xop+xml"
SOAP12_MEDIA_TYPE = "application/soap+xml"
ATTACHMENT_MEDIA_TYPE = "application/octet-stream"
BOUNDARY_PREFIX = "MIMEBoundary_"  # DRIM-M's (and Axis2's) prefix; the rest is random

_CRLF = b"\r\n"
# RFC 2045 token characters for a Content-ID we write; anything else in a caller's cid is refused.
_CID_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~@]+$")
_HEADER_NAME_RE = re.compile(rb"^[!-9;-~]+$")


class MtomError(ValueError):
    """The MTOM message is refused (or cannot be built). ``rule`` is a stable code, e.g. ``MTOM-NO-ROOT``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message


@dataclass(frozen=True)
class MtomLimits:
    """Bounds on what :func:`decode_mtom` accepts. The defaults leave room for a large N1 CDA with its PDF
    (the DMP itself caps documents well below this) while refusing a body built to exhaust memory."""

    max_body_bytes: int = 96 * 1024 * 1024
    max_parts: int = 64
    max_part_bytes: int = 64 * 1024 * 1024
    max_xml_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 8 * 1024  # one part's header block


DEFAULT_LIMITS = MtomLimits()


@dataclass(frozen=True)
class MimePart:
    """One body part: its headers in wire order (names as written) and its decoded content."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    content: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def content_id(self) -> str | None:
        value = self.header("Content-ID")
        return None if value is None else value.strip().removeprefix("<").removesuffix(">").strip()


def _content_type(value: str) -> Message:
    # email.message does RFC 2045 parameter parsing (quoted strings, case-insensitive names) for us.
    msg = Message()
    msg["Content-Type"] = value
    return msg


# ---------------------------------------------------------------------------------------------- encoding


def _wsa_action(envelope: etree._Element) -> str | None:
    el = envelope.find(f"{{{SOAP12_NS}}}Header/{{{WSA_NS}}}Action")
    return None if el is None or not el.text else el.text.strip()


def _quoted(value: str) -> str:
    if '"' in value or "\\" in value or "\r" in value or "\n" in value:
        raise MtomError("MTOM-HEADER-VALUE", f"cannot put {value!r} in a quoted header parameter")
    return f'"{value}"'


def encode_mtom(
    envelope: etree._Element,
    attachments: dict[str, bytes],
    *,
    action: str | None = None,
    boundary: str | None = None,
    root_cid: str | None = None,
    content_types: dict[str, str] | None = None,
) -> tuple[bytes, str]:
    """``(body, Content-Type header value)`` of the MTOM message: the envelope as root part, then one binary
    part per attachment (Content-ID → bytes, as :func:`gateway.delivery.dmp.soap.provide_and_register`
    returns). ``action`` defaults to the envelope's ``wsa:Action``; ``boundary`` and ``root_cid`` are
    random unless given (tests); ``content_types`` overrides ``application/octet-stream`` per part."""
    action = action or _wsa_action(envelope)
    if not action:
        raise MtomError("MTOM-NO-ACTION", "the envelope has no wsa:Action and no action was given")
    root_cid = root_cid or new_cid(0)
    for cid in (root_cid, *attachments):
        if not _CID_RE.match(cid):
            raise MtomError(
                "MTOM-BAD-CID", f"Content-ID {cid!r} has characters not allowed in a header token"
            )
    if root_cid in attachments:
        raise MtomError("MTOM-DUPLICATE-CONTENT-ID", f"Content-ID {root_cid!r} is used twice")
    xml = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    contents = [xml, *attachments.values()]
    boundary = boundary or f"{BOUNDARY_PREFIX}{uuid.uuid4().hex}"
    delimiter = f"--{boundary}".encode("ascii")
    # A random 128-bit boundary inside a document is improbable, not impossible: checking costs one scan.
    if any(delimiter in content for content in contents):
        raise MtomError("MTOM-BOUNDARY-IN-CONTENT", f"boundary {boundary!r} occurs inside a part")

    root_type = (
        f"{XOP_MEDIA_TYPE}; charset=UTF-8; type={_quoted(SOAP12_MEDIA_TYPE)}; action={_quoted(action)}"
    )
    parts = [(root_type, root_cid, xml)]
    types = content_types or {}
    parts += [(types.get(cid, ATTACHMENT_MEDIA_TYPE), cid, data) for cid, data in attachments.items()]
    out = bytearray()
    for media_type, cid, data in parts:
        out += delimiter + _CRLF
        out += f"Content-Type: {media_type}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n".encode()
        out += data + _CRLF
    out += delimiter + b"--" + _CRLF
    content_type = (
        f"multipart/related; type={_quoted(XOP_MEDIA_TYPE)}; start={_quoted(f'<{root_cid}>')}; "
        f"start-info={_quoted(SOAP12_MEDIA_TYPE)}; action={_quoted(action)}; boundary={boundary}"
    )
    return bytes(out), content_type


# ---------------------------------------------------------------------------------------------- decoding


def _is_delimiter_end(body: bytes, pos: int) -> bool:
    """After ``--boundary`` only ``--``, padding or a line end may follow; else it is content by chance."""
    return (
        pos >= len(body) or body[pos : pos + 2] == b"--" or body[pos : pos + 1] in (b"\r", b"\n", b" ", b"\t")
    )


def _find_delimiter(body: bytes, delimiter: bytes, start: int) -> tuple[int, int]:
    """``(start of the line break before the delimiter, index just after the delimiter)``, or (-1, -1).

    The line break belongs to the delimiter (RFC 2046 §5.1.1); CRLF or bare LF are both accepted."""
    if start == 0 and body.startswith(delimiter) and _is_delimiter_end(body, len(delimiter)):
        return 0, len(delimiter)
    pos = start
    while (hit := body.find(b"\n" + delimiter, pos)) != -1:
        after = hit + 1 + len(delimiter)
        if _is_delimiter_end(body, after):
            line_start = hit - 1 if hit > 0 and body[hit - 1 : hit] == b"\r" else hit
            return max(line_start, start), after
        pos = hit + 1
    return -1, -1


def _parse_headers(block: bytes, limits: MtomLimits) -> list[tuple[str, str]]:
    if len(block) > limits.max_header_bytes:
        raise MtomError(
            "MTOM-PART-HEADERS", f"part headers of {len(block)} bytes exceed {limits.max_header_bytes}"
        )
    headers: list[tuple[str, str]] = []
    for raw in block.replace(b"\r\n", b"\n").split(b"\n"):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):  # folded continuation of the previous header (RFC 5322 §2.2.3)
            if not headers:
                raise MtomError("MTOM-PART-HEADERS", "a part header block starts with a continuation line")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {raw.strip().decode('ascii', 'replace')}")
            continue
        name, sep, value = raw.partition(b":")
        if not sep or not _HEADER_NAME_RE.match(name):
            raise MtomError("MTOM-PART-HEADERS", f"malformed part header line {raw[:60]!r}")
        headers.append((name.decode("ascii"), value.strip().decode("ascii", "replace")))
    return headers


def split_parts(body: bytes, boundary: str, *, limits: MtomLimits = DEFAULT_LIMITS) -> list[MimePart]:
    """The body parts of a ``multipart/*`` body, content still transfer-encoded as received."""
    delimiter = f"--{boundary}".encode("ascii", "replace")
    _, pos = _find_delimiter(body, delimiter, 0)
    if pos == -1:
        raise MtomError("MTOM-NO-DELIMITER", "the boundary of the Content-Type never occurs in the body")
    parts: list[MimePart] = []
    while True:
        if body[pos : pos + 2] == b"--":
            break  # close delimiter; what follows is the epilogue, ignored
        line_end = body.find(b"\n", pos)
        if line_end == -1 or body[pos:line_end].strip(b" \t\r"):
            raise MtomError("MTOM-NO-CLOSE-DELIMITER", "the body ends (or is garbled) after a delimiter")
        part_start = line_end + 1
        content_end, next_pos = _find_delimiter(body, delimiter, part_start)
        if next_pos == -1:
            raise MtomError("MTOM-NO-CLOSE-DELIMITER", "the multipart body is truncated: no close delimiter")
        if len(parts) >= limits.max_parts:
            raise MtomError("MTOM-TOO-MANY-PARTS", f"more than {limits.max_parts} parts")
        raw = body[part_start:content_end]
        if raw.startswith((b"\r\n", b"\n")):  # no header at all: RFC 2046 allows it (text/plain default)
            block, content = b"", raw[2 if raw.startswith(b"\r\n") else 1 :]
        else:
            sep = re.search(rb"\r?\n\r?\n", raw)
            if sep is None:
                raise MtomError("MTOM-PART-HEADERS", "a part has no blank line between headers and content")
            block, content = raw[: sep.start()], raw[sep.end() :]
        if len(content) > limits.max_part_bytes:
            raise MtomError(
                "MTOM-PART-TOO-LARGE", f"a part of {len(content)} bytes exceeds {limits.max_part_bytes}"
            )
        parts.append(MimePart(_parse_headers(block, limits), content))
        pos = next_pos
    return parts


def _decode_content(part: MimePart) -> bytes:
    encoding = (part.header("Content-Transfer-Encoding") or "binary").strip().lower()
    if encoding in ("binary", "8bit", "7bit"):
        return part.content
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(part.content.split()), validate=True)
        except binascii.Error:
            raise MtomError("MTOM-ENCODING", f"part <{part.content_id}> is not valid base64") from None
    raise MtomError("MTOM-ENCODING", f"unsupported Content-Transfer-Encoding {encoding!r}")


def _parse_envelope(xml: bytes, limits: MtomLimits) -> etree._Element:
    try:
        root = parse_untrusted(xml, max_bytes=limits.max_xml_bytes).getroot()
    except UnsafeXMLError as exc:
        raise MtomError("MTOM-XML", f"the SOAP part is refused ({exc.rule}): {exc}") from exc
    qname = etree.QName(root)
    if qname.localname != "Envelope" or qname.namespace not in (SOAP12_NS, SOAP11_NS):
        raise MtomError("MTOM-NOT-SOAP", f"the root part is not a SOAP envelope but {root.tag}")
    return root


def _resolve_includes(envelope: etree._Element, attachments: dict[str, bytes], inline: bool) -> None:
    for include in list(envelope.iter(f"{{{XOP_NS}}}Include")):
        href = include.get("href") or ""
        if not href.startswith("cid:"):
            raise MtomError("MTOM-XOP-HREF", f"xop:Include href {href!r} is not a cid: URL")
        cid = unquote(href[4:])  # RFC 2392: the href is the URL-encoded Content-ID
        if cid not in attachments:
            raise MtomError("MTOM-DANGLING-CID", f"xop:Include references {href!r}, which no part carries")
        if inline:
            # XOP reconstruction: the element gets back the base64 text it stood for (schema validation).
            parent = include.getparent()
            parent.remove(include)
            parent.text = base64.b64encode(attachments[cid]).decode("ascii")


def decode_mtom(
    body: bytes, content_type: str, *, limits: MtomLimits = DEFAULT_LIMITS, inline: bool = False
) -> tuple[etree._Element, dict[str, bytes]]:
    """``(envelope, Content-ID → bytes)`` of an MTOM message or of a plain ``application/soap+xml`` body.

    Every ``xop:Include`` must reference a part of the message (``MTOM-DANGLING-CID`` otherwise). With
    ``inline=False`` the includes stay in the tree and the bytes are in the mapping (cheap, for large
    documents); ``inline=True`` replaces each include by its base64 text — the infoset XOP stands for,
    which is what the XDS.b schema validates."""
    if len(body) > limits.max_body_bytes:
        raise MtomError("MTOM-TOO-LARGE", f"body of {len(body)} bytes exceeds {limits.max_body_bytes}")
    ctype = _content_type(content_type or "")
    media_type = ctype.get_content_type()
    if media_type in (SOAP12_MEDIA_TYPE, "text/xml"):  # text/xml: a SOAP 1.1 fault from a confused server
        envelope = _parse_envelope(body, limits)
        _resolve_includes(envelope, {}, inline)
        return envelope, {}
    if media_type != "multipart/related":
        raise MtomError(
            "MTOM-CONTENT-TYPE", f"expected multipart/related or {SOAP12_MEDIA_TYPE}, got {media_type}"
        )
    boundary = ctype.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 70:
        raise MtomError(
            "MTOM-NO-BOUNDARY", "the multipart/related Content-Type has no usable boundary parameter"
        )
    parts = split_parts(body, boundary, limits=limits)
    if not parts:
        raise MtomError("MTOM-NO-ROOT", "the multipart body has no part")
    start = ctype.get_param("start")
    if isinstance(start, str) and start.strip():
        start_cid = start.strip().removeprefix("<").removesuffix(">")
        roots = [p for p in parts if p.content_id == start_cid]
        if not roots:
            raise MtomError("MTOM-NO-ROOT", f"no part has the start Content-ID <{start_cid}>")
        root = roots[0]
    else:
        root = parts[0]  # RFC 2387: without start, the root is the first part
    root_type = _content_type(root.header("Content-Type") or "").get_content_type()
    if root_type not in (XOP_MEDIA_TYPE, SOAP12_MEDIA_TYPE):
        raise MtomError("MTOM-ROOT-TYPE", f"the root part is {root_type}, not {XOP_MEDIA_TYPE}")
    attachments: dict[str, bytes] = {}
    for part in parts:
        if part is root:
            continue
        cid = part.content_id
        if not cid:
            raise MtomError(
                "MTOM-NO-CONTENT-ID", "an attachment part has no Content-ID, nothing can reference it"
            )
        if cid in attachments or cid == root.content_id:
            raise MtomError("MTOM-DUPLICATE-CONTENT-ID", f"Content-ID <{cid}> is used by two parts")
        attachments[cid] = _decode_content(part)
    envelope = _parse_envelope(_decode_content(root), limits)
    _resolve_includes(envelope, attachments, inline)
    return envelope, attachments
