"""MSH-18 (HL7 table 0211) character-set names -> Python codecs, and the byte-decoding policy.

HL7 says the receiver must decode with the charset named in MSH-18, and assume the default (7-bit ASCII in
the standard, UTF-8 in practice and in the ANS CI-SIS volets) when it is empty. Real senders get this wrong
in two ways that we tolerate, each with a warning so the operator can chase the sender:

* undeclared 8-bit text (empty MSH-18 but the bytes are not UTF-8): Windows-built HIS emit cp1252, which
  is latin-1 plus printable characters in 0x80-0x9F that French text needs (``€ œ ’ –``); latin-1 would
  turn those into C1 control characters, so cp1252 is tried first and latin-1, which never fails, last;
* a declared charset the bytes do not match (``ASCII`` with accents, ``UNICODE UTF-8`` with latin-1 bytes):
  same fallback chain, starting with UTF-8.

A name that is not in table 0211 and not one of the common aliases below is refused (``ER7-CHARSET``,
condition 103 "table value not found": MSH-18 is an ID field bound to table 0211); a name that is in the
table but that we do not decode (UTF-16/32: they would not survive ER7's byte-level framing anyway, and the
CJK sets no French system sends) is refused with condition 199.
"""

from __future__ import annotations

from functools import lru_cache

# Table 0211 names we decode (8859/1 is reported as 'latin-1', Python's canonical spelling).
_STANDARD: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",  # not in the table, but what most senders write: taken as the standard name
    # Deprecated (ISO 10646 without an encoding form); every sender seen using it meant UTF-8.
    "UNICODE": "utf-8",
}

# Table 0211 names we refuse on purpose (see module docstring).
_UNSUPPORTED = frozenset(
    {
        "UNICODE UTF-16",
        "UNICODE UTF-32",
        "ISO IR14",
        "ISO IR87",
        "ISO IR159",
        "GB 18030-2000",
        "KS X 1001",
        "CNS 11643-1992",
        "BIG-5",
    }
)

# Not in table 0211 but common in the field (IANA names typed by integrators): accepted with a warning.
_ALIASES: dict[str, str] = {
    "UTF8": "utf-8",
    "ISO-8859-1": "latin-1",
    "ISO8859-1": "latin-1",
    "ISO_8859-1": "latin-1",
    "LATIN1": "latin-1",
    "LATIN-1": "latin-1",
    "ISO-8859-15": "iso8859-15",
    "ISO8859-15": "iso8859-15",
    "ISO_8859-15": "iso8859-15",
    "LATIN9": "iso8859-15",
    "LATIN-9": "iso8859-15",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
    "US-ASCII": "ascii",
    "ISO IR100": "latin-1",  # DICOM's name, met in imaging interfaces
}

# Fallback chain for bytes that do not decode with the declared/default codec; latin-1 cannot fail.
FALLBACK_CHAIN: tuple[str, ...] = ("utf-8", "cp1252", "latin-1")

UNKNOWN = "unknown"
UNSUPPORTED = "unsupported"
ALIAS = "alias"
STANDARD = "standard"

_BOM = b"\xef\xbb\xbf"


class CharsetError(ValueError):
    """MSH-18 names a charset we cannot decode; ``condition`` is the HL7 table 0357 code."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"character set is {kind}")
        self.condition = 199 if kind == UNSUPPORTED else 103


@lru_cache(maxsize=128)
def lookup(name: str) -> tuple[str | None, str]:
    """Map one MSH-18 value to ``(codec, kind)``; kind is standard/alias/unsupported/unknown.

    Matching ignores case and surrounding/duplicated blanks (``unicode  utf-8`` is seen in the field)."""
    key = " ".join(name.upper().split())
    if key in _STANDARD:
        return _STANDARD[key], STANDARD
    if key in _ALIASES:
        return _ALIASES[key], ALIAS
    if key in _UNSUPPORTED:
        return None, UNSUPPORTED
    return None, UNKNOWN


def decode_with_fallback(data: bytes, codec: str) -> tuple[str, str]:
    """Decode with ``codec``; if the bytes do not fit, walk FALLBACK_CHAIN. Returns (text, codec used)."""
    for candidate in (codec, *FALLBACK_CHAIN):
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def first_line(data: bytes) -> str:
    """The MSH line as latin-1 (delimiters and charset names are ASCII) without decoding the rest; searches
    are bounded so that LF-only or garbage input is not scanned to its end."""
    i = 0
    while i < len(data) and data[i] in b"\x0b\x1c\r\n\t ":
        i += 1
    end = data.find(b"\r", i, i + 8192)
    if end < 0:
        end = i + 8192
    lf = data.find(b"\n", i, end)
    return data[i : lf if lf >= 0 else end].decode("latin-1")


def declared_charset(msh_line: str) -> str:
    """First repetition of MSH-18 read from an MSH line ('' if absent or unreadable)."""
    if not msh_line.startswith("MSH") or len(msh_line) < 5:
        return ""
    parts = msh_line.split(msh_line[3], 18)
    if len(parts) < 18:
        return ""
    rep = parts[1][1:2]
    return (parts[17].split(rep, 1)[0] if rep else parts[17]).strip()


def decode(data: bytes) -> tuple[str, str, list[tuple[str, str, str]]]:
    """Decode message bytes: UTF-8 BOM stripped, MSH-18 honoured, FALLBACK_CHAIN when the bytes do not fit.
    Returns (text, codec used, warnings as (rule, location, message)); raises CharsetError."""
    warnings: list[tuple[str, str, str]] = []
    bom = data.startswith(_BOM)
    if bom:
        data = data[3:]
        warnings.append(("ER7-BOM", "byte 0", "UTF-8 byte order mark stripped"))
    declared = declared_charset(first_line(data))
    codec = "utf-8"
    if declared:
        found, kind = lookup(declared)
        if found is None:
            raise CharsetError(kind)
        codec = found
        if kind == ALIAS:
            warnings.append(
                ("ER7-CHARSET-ALIAS", "MSH-18", f"non-standard character set name read as {codec}")
            )
        if bom and codec not in ("utf-8", "ascii"):  # the BOM is a fact about the bytes, MSH-18 a setting
            warnings.append(("ER7-CHARSET-CONFLICT", "MSH-18", f"UTF-8 BOM present, {codec} declared"))
            codec = "utf-8"
    text, used = decode_with_fallback(data, codec)
    if used != codec:
        what = "declared" if declared else "default"
        warnings.append(
            ("ER7-CHARSET-FALLBACK", "MSH-18", f"bytes are not valid {codec} ({what}), read as {used}")
        )
    return text, used, warnings
