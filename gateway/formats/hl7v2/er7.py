"""HL7 v2 ER7 ("pipe and hat") reader, and the escaping half of the writer.

Built for the hot path: a message is decoded once and cut into segment lines with ``str.split``; a segment is
cut into fields only when one of its fields is first read (then cached), Segment objects are built only for
the segments looked up, and repetitions, components, sub-components and escapes are resolved only for the
value asked for. Reading the ten fields a route needs does not pay for the 300 KB base64 CDA of an OBX-5.
No regex and no recursion: any input costs a few linear passes, which keeps fuzzer files harmless.

Tolerated, each with a warning in ``Message.warnings`` as (rule, location, message):

* CR, LF and CRLF terminators; a mixture gives ``ER7-MIXED-TERMINATORS`` (files edited on Windows, CR glued by
  a sender and LF added by a file writer); blank lines are skipped (``ER7-BLANK-LINE`` between segments);
* a UTF-8 BOM (``ER7-BOM``) and MLLP framing, VT before MSH or VT/FS after the last segment (``ER7-MLLP``):
  transport residue, not content; other control characters after the last segment (``ER7-TRAILING-CONTROL``);
  trailing spaces there are dropped silently (HL7: trailing spaces are not significant);
* charsets, see ``charsets.py`` (``ER7-CHARSET-FALLBACK``, ``ER7-CHARSET-ALIAS``, ``ER7-CHARSET-CONFLICT``);
* MSH-9 without message type or trigger (``ER7-MSH9``), empty MSH-10 (``ER7-MSH10``) or MSH-12
  (``ER7-NO-VERSION``): the message can still be read and answered; routing decides.

Refused with ``ER7Error`` (rule, location, HL7 table 0357 condition): empty input (ER7-EMPTY), more than
``max_bytes`` (ER7-TOO-LARGE), NUL characters (ER7-NUL: no text format carries them, fuzzers do), anything
but MSH first (ER7-NO-MSH, e.g. ``[SOM]`` prefixes), a bad field separator (ER7-MSH1) or MSH-2 (ER7-MSH2:
4 distinct ASCII punctuation characters, optionally a 5th truncation character, none equal to the field
separator; otherwise the sender's delimiters are unknown and every field would be misread, so guessing is
worse than refusing), a segment id not matching ``[A-Z][A-Z0-9]{2}`` (ER7-SEGMENT-ID), a second MSH or a
batch envelope (ER7-BATCH: files go through ``split_messages``), MSH-12 not a v2.x version (ER7-VERSION, 203),
a charset we cannot decode (ER7-CHARSET) and an ADT (but A20) or MDM without PID (ER7-MISSING-SEGMENT, 100:
every structure of those events carries the patient; nothing can be done with one that lacks it).
Error messages never quote message content except delimiters and well-formed segment ids.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache

from gateway.formats.hl7v2 import charsets

Warn = tuple[str, str, str]

_BOM = b"\xef\xbb\xbf"
_DELIM_CHARS = frozenset(string.punctuation)  # printable ASCII, neither alphanumeric nor space
_UPPER = frozenset(string.ascii_uppercase)
_UPPER_DIGITS = _UPPER | frozenset(string.digits)
_ENVELOPE = frozenset({"FHS", "BHS", "BTS", "FTS"})
_JUNK = "".join(map(chr, range(32))) + " \x7f"  # what may trail the last segment
_JUNK_BYTES = _JUNK.encode("ascii")
_PID_REQUIRED = frozenset({"ADT", "MDM"})
_VERSIONS = frozenset(
    {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1"}
)
_MSH_SENTINEL = "\x00MSH"  # stands for line 0 in the fast id check (NUL never reaches parsing)
# Caches of validated input, bounded so that fuzzed input cannot grow them.
_heads_ok: dict[str, set[str]] = {}  # per field separator: line heads ('PID|') already validated
_delimiter_cache: dict[str, Delimiters] = {}


class ER7Error(Exception):
    """A message that cannot be read.

    ``rule`` is a stable code (ER7-...), ``location`` says where ('MSH-2', 'segment 4', 'byte 0', 'line 3'),
    ``condition`` is the HL7 table 0357 code for ERR-3 of a negative ACK, ``message`` an English explanation
    without patient data. ``header`` is the MSH segment when it could be read (so that a negative ACK can
    still echo MSH-10 and swap MSH-3..6), else None."""

    def __init__(
        self, rule: str, location: str, message: str, condition: int = 199, header: Segment | None = None
    ) -> None:
        super().__init__(f"{rule} at {location}: {message}")
        self.rule = rule
        self.location = location
        self.message = message
        self.condition = condition
        self.header = header


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str | None = None  # 5th MSH-2 character (v2.7+), e.g. '#'

    def encoding_characters(self) -> str:
        """MSH-2 as it must be written."""
        return self.component + self.repetition + self.escape + self.subcomponent + (self.truncation or "")


def _first(value: str, sep: str) -> str:
    i = value.find(sep)
    return value if i < 0 else value[:i]


def _nth(value: str, sep: str, k: int) -> str:
    """k-th (1-based) item of value split on sep, '' if absent."""
    if k < 1:
        raise ValueError("rep, comp and sub are 1-based")
    parts = value.split(sep, k)
    return parts[k - 1] if len(parts) >= k else ""


class Segment:
    """One segment. Fields are split on first access; values from ``get``/``components`` are unescaped.

    HL7 numbering throughout: ``field(3)`` of a PID is PID-3; for MSH ``field(1)`` is the field separator and
    ``field(2)`` the encoding characters, so that ``field(9)`` is MSH-9. ``field(0)`` is the segment id."""

    __slots__ = ("_d", "_enc", "_fields", "_raw", "id", "index")

    def __init__(self, sid: str, index: int, raw: str, delimiters: Delimiters, encoding: str = "utf-8"):
        self.id = sid
        self.index = index
        self._raw = raw
        self._d = delimiters
        self._enc = encoding
        self._fields: list[str] | None = None

    def __repr__(self) -> str:  # no content: reprs end up in logs
        return f"<Segment {self.id} #{self.index}>"

    def _split(self) -> list[str]:
        fields = self._raw.split(self._d.field)
        if self.id == "MSH":  # MSH-1 is the separator itself: re-insert it so that indexes match HL7's
            fields.insert(1, self._d.field)
        self._fields = fields
        return fields

    def raw(self) -> str:
        """The segment text as received, without terminator."""
        return self._raw

    def field_count(self) -> int:
        """Number of the last field present (trailing empty fields included)."""
        return len(self._fields or self._split()) - 1

    def field(self, n: int) -> str:
        """Raw (still escaped) text of field n, '' if absent."""
        fields = self._fields or self._split()
        return fields[n] if 0 <= n < len(fields) else ""

    def repetitions(self, n: int) -> list[str]:
        """Raw repetitions of field n ([] if the field is empty)."""
        value = self.field(n)
        if not value or (n <= 2 and self.id == "MSH"):
            return [value] if value else []
        return value.split(self._d.repetition)

    def get(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """Unescaped value of field n, repetition rep, component comp, sub-component sub (all 1-based);
        '' if absent. HL7's explicit null ``""`` is returned as is (the caller decides what it means)."""
        fields = self._fields or self._split()
        if not 0 <= n < len(fields):
            return ""
        value = fields[n]
        if not value:
            return ""
        if n <= 2 and self.id == "MSH":  # the delimiters: never split nor unescaped
            return value if rep == comp == sub == 1 else ""
        d = self._d
        # Unrolled on purpose (hot path): find/slice for item 1 builds no list.
        if rep == 1:
            i = value.find(d.repetition)
            if i >= 0:
                value = value[:i]
        else:
            value = _nth(value, d.repetition, rep)
        if comp == 1:
            i = value.find(d.component)
            if i >= 0:
                value = value[:i]
        else:
            value = _nth(value, d.component, comp)
        if sub == 1:
            i = value.find(d.subcomponent)
            if i >= 0:
                value = value[:i]
        else:
            value = _nth(value, d.subcomponent, sub)
        return unescape(value, d, self._enc) if d.escape in value else value

    def components(self, n: int, rep: int = 1) -> list[str]:
        """Unescaped components of repetition rep of field n ([] if empty). Sub-component separators are
        left in place (``get(..., sub=)`` addresses sub-components)."""
        value = self.field(n)
        if n <= 2 and self.id == "MSH":
            return [value] if value and rep == 1 else []
        value = _nth(value, self._d.repetition, rep)
        if not value:
            return []
        d = self._d
        parts = value.split(d.component)
        return [unescape(p, d, self._enc) for p in parts] if d.escape in value else parts


class Message:
    """A parsed message: ``segments`` in order, the ``delimiters`` and ``encoding`` used, ``warnings``.

    Segment objects are built when first looked up (``segment``/``all``/``msh``) or when ``segments`` is
    first read; treat that list as read-only."""

    __slots__ = ("_heads", "_lines", "_segs", "delimiters", "encoding", "warnings")

    def __init__(
        self,
        lines: list[str],
        heads: list[str],
        d: Delimiters,
        encoding: str,
        warnings: list[Warn],
        msh: Segment,
    ) -> None:
        self._lines = lines
        self._heads = heads  # segment id + field separator ('PID|'): lookups run at C speed with list.index
        self._segs: list[Segment | None] = [None] * len(lines)
        self._segs[0] = msh
        self.delimiters = d
        self.encoding = encoding
        self.warnings = warnings

    def __repr__(self) -> str:  # no content: reprs end up in logs
        return f"<Message {len(self._lines)} segments, {self.encoding}>"

    def _at(self, i: int) -> Segment:
        seg = self._segs[i]
        if seg is None:
            seg = self._segs[i] = Segment(
                self._heads[i][:3], i, self._lines[i], self.delimiters, self.encoding
            )
        return seg

    @property
    def segments(self) -> list[Segment]:
        if None in self._segs:
            for i in range(len(self._segs)):
                self._at(i)
        return self._segs  # type: ignore[return-value]

    @property
    def msh(self) -> Segment:
        return self._at(0)

    def segment(self, sid: str, occurrence: int = 1) -> Segment | None:
        """The occurrence-th (1-based) segment with id sid, or None."""
        key = sid + self.delimiters.field
        try:
            i = self._heads.index(key)
            for _ in range(occurrence - 1):
                i = self._heads.index(key, i + 1)
        except ValueError:
            return None
        return self._at(i)

    def all(self, sid: str) -> list[Segment]:
        key = sid + self.delimiters.field
        return [self._at(i) for i, head in enumerate(self._heads) if head == key]

    @property
    def version(self) -> str:
        """MSH-12.1 ('2.5' for '2.5^FRA^2.11')."""
        return self._at(0).get(12)

    @property
    def control_id(self) -> str:
        """MSH-10, for MSA-2 of the answer."""
        return self._at(0).get(10)

    def to_er7(self, terminator: str = "\r") -> str:
        """Canonical serialisation: segments as received (framing, BOM and blank lines gone), each followed
        by the terminator (HL7 ends every segment, the last included, with CR)."""
        return terminator.join(self._lines) + terminator


# ---------------------------------------------------------------- escaping


@lru_cache(maxsize=64)
def _escape_table(d: Delimiters) -> dict[int, str]:
    e = d.escape
    table = {ord(d.escape): f"{e}E{e}", ord(d.field): f"{e}F{e}", ord(d.component): f"{e}S{e}"}
    table |= {ord(d.subcomponent): f"{e}T{e}", ord(d.repetition): f"{e}R{e}"}
    # Raw CR/LF would end the segment; hex escapes are legal in every data type (\.br\ only in FT/TX).
    table |= {ord("\r"): f"{e}X0D{e}", ord("\n"): f"{e}X0A{e}"}
    if d.truncation:
        table[ord(d.truncation)] = f"{e}P{e}"
    return table


@lru_cache(maxsize=64)
def _unescape_table(d: Delimiters) -> dict[str, str]:
    table = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape}
    table |= {".br": "\n", ".sp": "\n", "H": "", "N": ""}  # line breaks; highlight on/off dropped
    if d.truncation:
        table["P"] = d.truncation
    return table


def escape(text: str, d: Delimiters) -> str:
    r"""Escape a value for writing: delimiters -> \F\ \S\ \T\ \R\ \E\ (\P\), CR and LF -> \X0D\ \X0A\."""
    return text.translate(_escape_table(d))


def _hex_text(buf: bytearray, encoding: str) -> str:
    try:
        return buf.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return buf.decode("latin-1")


def _hex_bytes(seq: str) -> bytes | None:
    if len(seq) > 1 and len(seq) % 2 == 1 and seq[0] == "X" and seq.isascii() and seq.isalnum():
        try:
            return bytes.fromhex(seq[1:])
        except ValueError:
            return None
    return None


def unescape(text: str, d: Delimiters, encoding: str = "utf-8") -> str:
    r"""Decode \F\ \S\ \T\ \R\ \E\ (\P\), \.br\ (newline), \H\ \N\ (dropped) and \Xhh..\; consecutive hex
    escapes are decoded together with the message charset (a UTF-8 character split over two escapes
    survives). Unknown or unterminated sequences are kept verbatim."""
    esc = d.escape
    if esc not in text:
        return text
    table = _unescape_table(d)
    parts = text.split(esc)  # literal, sequence, literal, ...: one C pass, no per-character loop
    out = [parts[0]]
    hexbuf = bytearray()
    closed = len(parts) if len(parts) % 2 else len(parts) - 1  # an even count ends on an unterminated escape
    for k in range(1, closed, 2):
        seq, literal = parts[k], parts[k + 1]
        value = table.get(seq)
        if value is None:
            raw = _hex_bytes(seq)
            if raw is not None:
                hexbuf += raw
                if literal:
                    out += (_hex_text(hexbuf, encoding), literal)
                    hexbuf.clear()
                continue
            value = esc + seq + esc
        if hexbuf:
            out.append(_hex_text(hexbuf, encoding))
            hexbuf.clear()
        out += (value, literal)
    if hexbuf:
        out.append(_hex_text(hexbuf, encoding))
    if closed < len(parts):
        out.append(esc + parts[-1])
    return "".join(out)


# ---------------------------------------------------------------- parsing


def decode_bytes(data: bytes) -> tuple[str, str, list[Warn]]:
    """Decode a message: UTF-8 BOM stripped, MSH-18 honoured, fallbacks of charsets.py (with warnings).
    Returns (text, codec used, warnings)."""
    try:
        return charsets.decode(data)
    except charsets.CharsetError as exc:
        raise ER7Error("ER7-CHARSET", "MSH-18", str(exc), exc.condition) from None


def _is_segment_id(text: str) -> bool:
    return len(text) == 3 and text[0] in _UPPER and text[1] in _UPPER_DIGITS and text[2] in _UPPER_DIGITS


def _delimiters(line: str) -> Delimiters:
    fs = line[3:4]
    if fs not in _DELIM_CHARS:
        raise ER7Error("ER7-MSH1", "MSH-1", "field separator missing or not ASCII punctuation", 102)
    end = line.find(fs, 4)
    enc = line[4:] if end < 0 else line[4:end]
    cached = _delimiter_cache.get(fs + enc)
    if cached is not None:
        return cached
    if not (
        4 <= len(enc) <= 5 and len(set(enc)) == len(enc) and fs not in enc and _DELIM_CHARS.issuperset(enc)
    ):
        shown = repr(enc) if len(enc) <= 8 else f"of {len(enc)} characters"
        text = f"encoding characters {shown} are not 4 (or 5) distinct ASCII punctuation characters "
        raise ER7Error("ER7-MSH2", "MSH-2", text + "other than the field separator", 102)
    d = Delimiters(fs, enc[0], enc[1], enc[2], enc[3], enc[4] if len(enc) == 5 else None)
    if len(_delimiter_cache) < 64:
        _delimiter_cache[fs + enc] = d
    return d


def _split_lines(text: str, warnings: list[Warn]) -> list[str]:
    if "\r" not in text:
        return text.split("\n")
    if "\n" not in text:
        return text.split("\r")
    if text.count("\r\n") == text.count("\r") == text.count("\n"):
        return text.split("\r\n")
    body = text.rstrip(_JUNK)  # a file writer's final newline after CR segments is not worth a warning
    crlf = body.count("\r\n")
    if sum(1 for n in (crlf, body.count("\r") - crlf, body.count("\n") - crlf) if n) > 1:
        warnings.append(
            ("ER7-MIXED-TERMINATORS", "message", "segments end with a mixture of CR, LF and CRLF")
        )
    return text.replace("\r\n", "\r").replace("\n", "\r").split("\r")


def _version_ok(version: str) -> bool:
    if version in _VERSIONS:
        return True
    parts = version.split(".")  # later 2.x releases
    return (
        2 <= len(parts) <= 3
        and parts[0] == "2"
        and all(p.isascii() and p.isdigit() and len(p) <= 2 for p in parts[1:])
    )


def _check_header(msh: Segment, has_pid: bool, warnings: list[Warn]) -> None:
    fields = msh._split()
    if len(fields) < 13:  # padded copy: the cached list keeps the real field count
        fields = fields + [""] * (13 - len(fields))
    comp = msh._d.component
    version = _first(fields[12], comp).strip()
    if not version:
        warnings.append(("ER7-NO-VERSION", "MSH-12", "version id is empty"))
    elif not _version_ok(version):
        raise ER7Error("ER7-VERSION", "MSH-12", "version id is not an HL7 v2.x version", 203, msh)
    code, _, trigger = fields[9].partition(comp)
    trigger = _first(trigger, comp)
    if not code:
        warnings.append(("ER7-MSH9", "MSH-9", "message type is empty"))
    elif not trigger and code != "ACK":
        warnings.append(("ER7-MSH9", "MSH-9", "message type has no trigger event"))
    if not fields[10]:
        warnings.append(("ER7-MSH10", "MSH-10", "message control id is empty"))
    if not has_pid and code in _PID_REQUIRED and trigger != "A20":
        raise ER7Error("ER7-MISSING-SEGMENT", "PID", f"{code} message without PID segment", 100, msh)


def _check_segments(
    lines: list[str], heads: list[str], ok: set[str], msh: Segment, warnings: list[Warn]
) -> tuple[list[str], list[str]]:
    """Slow path of the segment-id check, taken when some line head was never validated: skips blank lines,
    raises on the first bad line, remembers good heads for the next messages."""
    fs = msh._d.field
    out_lines, out_heads = [lines[0]], [heads[0]]
    for line, head in zip(lines[1:], heads[1:], strict=True):
        if head not in ok:
            if not line.strip(" \t"):
                continue
            sid, where = line[:3], f"segment {len(out_lines) + 1}"
            if not _is_segment_id(sid) or (len(line) > 3 and line[3] != fs):
                shown = line[:5].split(fs, 1)[0]  # quoted only when it cannot be content ('PIDX', 'PV')
                shown = (
                    f" ({shown!r})"
                    if len(shown) <= 4 and shown.isascii() and shown.isalpha() and shown.isupper()
                    else ""
                )
                text = f"segment id{shown} is not 3 upper-case letters/digits followed by the field separator"
                raise ER7Error("ER7-SEGMENT-ID", where, text, 100, msh)
            if sid == "MSH" or sid in _ENVELOPE:
                raise ER7Error("ER7-BATCH", where, f"{sid} inside a message: use split_messages", 100, msh)
            head = sid + fs
            if len(ok) < 4096:
                ok.add(head)
        out_lines.append(line)
        out_heads.append(head)
    if len(out_lines) < len(lines):
        warnings.append(("ER7-BLANK-LINE", "message", "blank lines between segments skipped"))
    return out_lines, out_heads


def _parse_text(text: str, encoding: str, warnings: list[Warn]) -> Message:
    lines = _split_lines(text, warnings)
    tail = ""
    while lines and not lines[-1].strip(_JUNK):
        tail += lines.pop()
    if not lines:
        raise ER7Error("ER7-EMPTY", "byte 0", "no segment in the data", 100)
    last = lines[-1].rstrip(_JUNK)
    tail += lines[-1][len(last) :]
    lines[-1] = last
    if "\x0b" in tail or "\x1c" in tail:
        warnings.append(("ER7-MLLP", "end", "MLLP framing characters after the last segment stripped"))
    elif tail.strip(" \t"):
        warnings.append(("ER7-TRAILING-CONTROL", "end", "control characters after the last segment stripped"))
    k = 0
    while not lines[k].strip(" \t\x0b\x1c"):  # leading blank lines; ends: the last line is not blank
        k += 1
    first = lines[k]
    if (k and "\x0b" in "".join(lines[:k])) or first.startswith(("\x0b", "\x1c")):
        first = first.lstrip("\x0b\x1c")
        warnings.append(("ER7-MLLP", "byte 0", "MLLP start block character stripped"))
    if not first.startswith("MSH"):
        sid = first[:3] if _is_segment_id(first[:3]) else ""
        if sid in _ENVELOPE:
            raise ER7Error("ER7-BATCH", "segment 1", f"batch envelope {sid}: use split_messages", 100)
        found = f"segment {sid}" if sid else "data"
        raise ER7Error("ER7-NO-MSH", "segment 1", f"{found} found where the MSH segment must start", 100)
    d = _delimiters(first)
    msh = Segment("MSH", 0, first, d, encoding)
    if k:
        lines = lines[k:]
    lines[0] = first
    # Fast path: one C-level pass checks every line head ('PID|') against those already validated.
    heads = [line[:4] for line in lines]
    heads[0] = _MSH_SENTINEL
    ok = _heads_ok.get(d.field)
    if ok is None:
        ok = _heads_ok.setdefault(d.field, {_MSH_SENTINEL})
    if not ok.issuperset(heads):
        lines, heads = _check_segments(lines, heads, ok, msh, warnings)
    heads[0] = "MSH" + d.field
    _check_header(msh, "PID" + d.field in heads, warnings)
    return Message(lines, heads, d, encoding, warnings, msh)


def _precheck(data: bytes | str, max_bytes: int) -> None:
    unit, nul = ("character", data.find("\x00")) if isinstance(data, str) else ("byte", data.find(b"\x00"))
    if not data:
        raise ER7Error("ER7-EMPTY", "byte 0", "empty input", 100)
    if len(data) > max_bytes:
        raise ER7Error("ER7-TOO-LARGE", "byte 0", f"input larger than {max_bytes} {unit}s")
    if nul >= 0:
        raise ER7Error("ER7-NUL", f"{unit} {nul}", f"NUL {unit} in the input")


def _declared(msg: Message) -> str:
    return _first(msg.msh.field(18), msg.delimiters.repetition).strip()


def _set_encoding(msg: Message, codec: str) -> None:
    msg.encoding = msg.msh._enc = codec  # MSH is the only Segment built so far; others take msg.encoding


def parse_message(data: bytes | str, *, max_bytes: int = 16 * 1024 * 1024) -> Message:
    """Parse exactly one message (bytes as received, or already decoded text). Raises ER7Error."""
    if isinstance(data, str):
        _precheck(data, max_bytes)
        warnings = [("ER7-BOM", "byte 0", "byte order mark stripped")] if data.startswith("\ufeff") else []
        msg = _parse_text(data.removeprefix("\ufeff"), "utf-8", warnings)
        if _declared(msg):  # already text: the charset only matters for \Xhh\ escapes
            _set_encoding(msg, charsets.lookup(_declared(msg))[0] or "utf-8")
        return msg
    data = bytes(data)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ER7Error("ER7-CHARSET", "byte 0", "UTF-16 input is not supported")
    _precheck(data, max_bytes)
    if not data.startswith(_BOM):
        # Fast path: bytes that decode as UTF-8 are parsed once, then MSH-18 is read from the parsed MSH.
        # Structure does not depend on the charset (delimiters, ids and terminators are ASCII), so an error
        # raised here is the one the declared charset would give.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            msg = _parse_text(text, "utf-8", [])
            declared = _declared(msg)
            if not declared:
                return msg
            codec, kind = charsets.lookup(declared)
            if codec and kind == charsets.STANDARD and (codec == "utf-8" or data.isascii()):
                _set_encoding(msg, codec)
                return msg
    text, encoding, warnings = decode_bytes(data)
    return _parse_text(text, encoding, warnings)


def split_messages(data: bytes) -> list[bytes]:
    """Cut a file or batch into messages: the bytes from each MSH to the next MSH or envelope segment, with
    their terminators. FHS/BHS/BTS/FTS are checked and dropped; a well-formed empty batch gives [].
    The batch grammar ``[FHS] {[BHS] {MSH...} [BTS]} [FTS]`` makes every envelope segment optional, so a lone
    BTS or FTS is accepted (as python-hl7 does), but FHS must come first, nothing may follow FTS and a BHS
    cannot open inside an open batch. BTS/FTS counts are not checked: senders get them wrong."""
    data = bytes(data)
    if not data.strip(_JUNK_BYTES):
        raise ER7Error("ER7-EMPTY", "byte 0", "empty input", 100)
    messages: list[bytes] = []
    current: list[bytes] | None = None
    seen: set[str] = set()  # envelope segments met so far
    batch_open = file_closed = False
    for number, line in enumerate(data.removeprefix(_BOM).splitlines(keepends=True), 1):
        body = line.rstrip(_JUNK_BYTES).lstrip(b"\x0b\x1c")  # CR/LF; VT/FS framing of MLLP captures
        if not body:
            if current is not None:
                current.append(line)
            continue
        sid, where = body[:3].decode("latin-1"), f"line {number}"
        if file_closed:
            raise ER7Error("ER7-BATCH", where, "content after FTS", 100)
        if sid != "MSH" and sid not in _ENVELOPE:
            if current is None:
                raise ER7Error("ER7-NO-MSH", where, "segment outside a message (no MSH before it)", 100)
            current.append(line)
            continue
        if current is not None:
            messages.append(b"".join(current))
        current = [line] if sid == "MSH" else None
        if sid == "FHS" and (seen or messages):
            raise ER7Error("ER7-BATCH", where, "FHS is not the first segment of the file", 100)
        if sid == "BHS" and batch_open:
            raise ER7Error("ER7-BATCH", where, "BHS inside an open batch", 100)
        if sid != "MSH":
            batch_open = sid == "BHS" or (batch_open and sid not in ("BTS", "FTS"))
            file_closed = sid == "FTS"
            seen.add(sid)
    if current is not None:
        messages.append(b"".join(current))
    if not messages and not seen:
        raise ER7Error("ER7-NO-MSH", "byte 0", "no MSH segment", 100)
    return messages
