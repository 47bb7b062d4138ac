"""IHE XDM (ITI-32) zip for MSSanté: ``IHE_XDM.ZIP`` [cisis-facts §8].

:func:`build_xdm` writes, in this order, ``README.TXT``, ``INDEX.HTM``, ``IHE_XDM/SUBSET01/METADATA.XML`` and
``IHE_XDM/SUBSET01/DOC0001.XML``...; the same submission gives the same bytes (fixed entry order and timestamps,
identifiers derived from the submission). README and INDEX carry no patient data.

:func:`read_xdm` reads an XDM zip from outside: it finds every ``IHE_XDM/<subset>/METADATA.XML`` whatever the
subset folder is called (DRIM-M uses ``SS000001``) and whatever the case, optionally below one top folder, and
returns each DocumentEntry's document keyed by its ``URI``. It is hardened: entry names that are absolute or climb
out (``..``) are refused, as are symlinks, encrypted entries, duplicate names, too many entries, too large entries
or too much data in total (sizes are checked as declared *and* while decompressing), and XML goes through
:func:`gateway.formats.cda.xml_safety.parse_untrusted`.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import stat
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC

from lxml import etree

from gateway.delivery.mssante.xdm_metadata import (
    DE_PATIENT_ID,
    DE_UNIQUE_ID,
    RIM_NS,
    SS_PATIENT_ID,
    SS_UNIQUE_ID,
)
from gateway.delivery.mssante.xdm_metadata import submit_objects_request as _submit_objects_request
from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from gateway.model import DocumentSubmission

SUBSET = "IHE_XDM/SUBSET01"
ZIP_LEVEL = 1
MAX_ENTRIES = 1000
MAX_ENTRY_BYTES = 32 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
_EXTENSIONS = {"text/xml": "XML", "application/xml": "XML", "application/pdf": "PDF", "text/plain": "TXT"}


class XdmError(ValueError):
    """The zip is refused. ``rule`` is a stable code, ``location`` the entry name (or ``/``)."""

    def __init__(self, rule: str, location: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.location = location


@dataclass(slots=True)
class XdmEntry:
    """One DocumentEntry of a METADATA.XML."""

    subset: str
    uri: str
    unique_id: str | None
    patient_id: str | None
    mime_type: str | None
    hash: str | None
    size: int | None
    slots: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class XdmPackage:
    """What an XDM zip holds: documents keyed by URI, their entries, and the submission sets' ids."""

    documents: dict[str, bytes] = field(default_factory=dict)
    entries: list[XdmEntry] = field(default_factory=list)
    submission_set_unique_ids: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)

    @property
    def unique_ids(self) -> list[str]:
        return [e.unique_id for e in self.entries if e.unique_id]


# --------------------------------------------------------------------------------------------------- writing


def _oid_from(*parts: str) -> str:
    """A deterministic ``2.25.<uuid as integer>`` OID (ITU-T X.667) derived from ``parts``."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


def _readme(sender_label: str, count: int) -> bytes:
    lines = [
        "IHE XDM (ITI-32) package - Distribute Document Set on Media",
        "",
        f"Sent by: {sender_label}",
        "Produced by: cisis-gateway",
        f"Contents: {count} document(s) with their XDS metadata in {SUBSET}/ (METADATA.XML).",
        "Open INDEX.HTM to browse the documents.",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _index(sender_label: str, names: list[str], mime_types: list[str]) -> bytes:
    items = "\r\n".join(
        f'<li><a href="{SUBSET}/{name}">Document {i} ({html.escape(mime)})</a></li>'
        for i, (name, mime) in enumerate(zip(names, mime_types, strict=True), start=1)
    )
    page = (
        '<!DOCTYPE html>\r\n<html><head><meta charset="utf-8"><title>IHE XDM</title></head><body>\r\n'
        f"<h1>IHE XDM package</h1>\r\n<p>Sent by {html.escape(sender_label)}.</p>\r\n"
        f'<ul>\r\n{items}\r\n</ul>\r\n<p><a href="{SUBSET}/METADATA.XML">Metadata</a></p>\r\n</body></html>\r\n'
    )
    return page.encode("utf-8")


def build_xdm(
    sub: DocumentSubmission,
    *,
    sender_label: str,
    source_id: str | None = None,
    submission_unique_id: str | None = None,
) -> bytes:
    """The ``IHE_XDM.ZIP`` of ``sub``. ``source_id`` / ``submission_unique_id`` default to OIDs derived from the
    sender label and the submission, so that building twice gives the same bytes."""
    if not sub.documents:
        raise ValueError("a submission without documents has no XDM")
    received = sub.provenance.received_at.astimezone(UTC)
    names = [
        f"DOC{i:04d}.{_EXTENSIONS.get(d.metadata.mime_type, 'BIN')}" for i, d in enumerate(sub.documents, 1)
    ]
    metadata = _submit_objects_request(
        sub,
        uris=names,
        submission_unique_id=submission_unique_id
        or _oid_from(
            "xdm-submission", sub.provenance.message_id, *(d.metadata.unique_id for d in sub.documents)
        ),
        source_id=source_id or _oid_from("xdm-source", sender_label),
        submission_time=received.strftime("%Y%m%d%H%M%S"),
    )
    date_time = (max(received.year, 1980), received.month, received.day, received.hour, received.minute, 0)
    files = [
        ("README.TXT", _readme(sender_label, len(names))),
        ("INDEX.HTM", _index(sender_label, names, [d.metadata.mime_type for d in sub.documents])),
        (f"{SUBSET}/METADATA.XML", metadata),
        *((f"{SUBSET}/{name}", doc.content.data) for name, doc in zip(names, sub.documents, strict=True)),
    ]
    out = io.BytesIO()
    # Deflate level 1: a CDA shrinks ~6x either way (60 KB -> 9.7 KB vs 7.7 KB at level 6) for a third of the
    # CPU; one zip per mail is built on the delivery path (bench/mssante_send.py).
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=ZIP_LEVEL)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------- reading

_METADATA = re.compile(r"^([^/]+/)?ihe_xdm/([^/]+)/metadata\.xml$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_name(name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if (
        "\x00" in name
        or name.startswith(("/", "\\"))
        or _DRIVE.match(name)
        or any(p in ("..", ".") for p in parts)
    ):
        raise XdmError("XDM-UNSAFE-PATH", name, f"unsafe entry name {name!r} in the zip")


def _slots(el: etree._Element) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for slot in el.findall(f"{{{RIM_NS}}}Slot"):
        values = [(v.text or "").strip() for v in slot.iterfind(f"{{{RIM_NS}}}ValueList/{{{RIM_NS}}}Value")]
        result.setdefault(slot.get("name", ""), []).extend(values)
    return result


def _external_id(el: etree._Element, scheme: str) -> str | None:
    for ei in el.findall(f"{{{RIM_NS}}}ExternalIdentifier"):
        if (ei.get("identificationScheme") or "").replace(" ", "").lower() == scheme:
            return ei.get("value")
    return None


def _uri(values: list[str]) -> str | None:
    """The ``URI`` slot; a long URI may be split into ``1|...``, ``2|...`` values (ITI TF-3 4.2.3.2.24)."""
    if not values:
        return None
    if len(values) > 1 and all(re.match(r"^\d+\|", v) for v in values):
        ordered = sorted(values, key=lambda v: int(v.split("|", 1)[0]))
        return "".join(v.split("|", 1)[1] for v in ordered)
    return values[0]


class _Reader:
    def __init__(self, zf: zipfile.ZipFile, max_entry: int, max_total: int) -> None:
        self.zf = zf
        self.max_entry = max_entry
        self.max_total = max_total
        self.total = 0

    def read(self, info: zipfile.ZipInfo) -> bytes:
        if info.flag_bits & 0x1:
            raise XdmError("XDM-ENCRYPTED", info.filename, "encrypted zip entries are not supported")
        try:
            with self.zf.open(info) as fh:
                data = fh.read(self.max_entry + 1)
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
            raise XdmError("XDM-BAD-ENTRY", info.filename, f"unreadable zip entry: {exc}") from None
        if len(data) > self.max_entry:
            raise XdmError("XDM-ENTRY-TOO-LARGE", info.filename, f"entry exceeds {self.max_entry} bytes")
        self.total += len(data)
        if self.total > self.max_total:
            raise XdmError(
                "XDM-TOO-LARGE", info.filename, f"uncompressed data exceeds {self.max_total} bytes"
            )
        return data


def read_xdm(
    data: bytes,
    *,
    max_entries: int = MAX_ENTRIES,
    max_entry_bytes: int = MAX_ENTRY_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    verify_integrity: bool = True,
) -> XdmPackage:
    """Read an XDM zip or raise :class:`XdmError`. With ``verify_integrity`` a document whose ``size`` or
    ``hash`` slot does not match its bytes is refused."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise XdmError("XDM-NOT-ZIP", "/", f"not a zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise XdmError("XDM-TOO-MANY-ENTRIES", "/", f"{len(infos)} entries, more than {max_entries}")
        by_name: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            _check_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise XdmError("XDM-SYMLINK", info.filename, "symbolic links are not allowed in the zip")
            if info.file_size > max_entry_bytes:
                raise XdmError("XDM-ENTRY-TOO-LARGE", info.filename, f"entry exceeds {max_entry_bytes} bytes")
            declared += info.file_size
            if declared > max_total_bytes:
                raise XdmError("XDM-TOO-LARGE", "/", f"uncompressed data exceeds {max_total_bytes} bytes")
            key = info.filename.lower()
            if key in by_name:
                raise XdmError("XDM-DUPLICATE-ENTRY", info.filename, "the same entry name appears twice")
            by_name[key] = info
        found = [
            (m.group(1), m.group(2), info)
            for info in infos
            if (m := _METADATA.match(info.filename)) and "__macosx/" not in info.filename.lower()
        ]
        # IHE_XDM belongs at the root of the media; a copy below one top folder is read only when there is none.
        if any(prefix is None for prefix, _, _ in found):
            found = [item for item in found if item[0] is None]
        metadata_files = sorted(((subset, info) for _, subset, info in found), key=lambda i: i[1].filename)
        if not metadata_files:
            raise XdmError("XDM-NO-METADATA", "/", "no IHE_XDM/<subset>/METADATA.XML in the zip")
        reader = _Reader(zf, max_entry_bytes, max_total_bytes)
        package = XdmPackage()
        for subset, info in metadata_files:
            _read_subset(package, reader, by_name, subset, info, verify_integrity)
        return package


def _read_subset(
    package: XdmPackage,
    reader: _Reader,
    by_name: dict[str, zipfile.ZipInfo],
    subset: str,
    info: zipfile.ZipInfo,
    verify: bool,
) -> None:
    subset_dir = info.filename.rsplit("/", 1)[0]
    xdm_dir = subset_dir.rsplit("/", 1)[0]
    try:
        root = parse_untrusted(reader.read(info), max_bytes=reader.max_entry).getroot()
    except UnsafeXMLError as exc:
        raise XdmError(exc.rule, info.filename, f"{info.filename}: {exc}") from None
    package.subsets.append(subset)
    for package_el in root.iter(f"{{{RIM_NS}}}RegistryPackage"):
        if ss_uid := _external_id(package_el, SS_UNIQUE_ID):
            package.submission_set_unique_ids.append(ss_uid)
        if pid := _external_id(package_el, SS_PATIENT_ID):
            package.patient_ids.append(pid)
    for eo in root.iter(f"{{{RIM_NS}}}ExtrinsicObject"):
        slots = _slots(eo)
        uri = _uri(slots.get("URI", []))
        if not uri:
            raise XdmError("XDM-NO-URI", info.filename, "a DocumentEntry has no URI slot")
        _check_name(uri)
        if "://" in uri or ":" in uri.split("/", 1)[0]:
            raise XdmError("XDM-UNSAFE-PATH", info.filename, f"URI {uri!r} is not a relative path")
        target = by_name.get(f"{subset_dir}/{uri}".lower()) or by_name.get(f"{xdm_dir}/{uri}".lower())
        if target is None:
            raise XdmError("XDM-DOCUMENT-MISSING", info.filename, f"URI {uri!r} names no file of the zip")
        content = reader.read(target)
        size = slots.get("size", [None])[0]
        digest = slots.get("hash", [None])[0]
        if verify:
            if size is not None and size.isdigit() and int(size) != len(content):
                raise XdmError("XDM-SIZE-MISMATCH", target.filename, "size slot does not match the file")
            if digest and hashlib.sha1(content, usedforsecurity=False).hexdigest() != digest.lower():
                raise XdmError("XDM-HASH-MISMATCH", target.filename, "hash slot does not match the file")
        if uri in package.documents:
            raise XdmError("XDM-DUPLICATE-URI", info.filename, f"URI {uri!r} appears twice")
        package.documents[uri] = content
        package.entries.append(
            XdmEntry(
                subset=subset,
                uri=uri,
                unique_id=_external_id(eo, DE_UNIQUE_ID),
                patient_id=_external_id(eo, DE_PATIENT_ID),
                mime_type=eo.get("mimeType"),
                hash=digest,
                size=int(size) if size and size.isdigit() else None,
                slots=slots,
            )
        )
