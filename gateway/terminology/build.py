"""Compiles the ANS value sets (JDV) into the small file the gateway ships.

The gateway must validate codes without the ANS kit at run time, so the JDV sources (IHE SVS XML files of
TestContenuCDA, plus the DMP CSV lists derived from the NOS terminology IG) are read once, at build time, and
written as one gzip-compressed JSON document that :class:`gateway.terminology.jdv.Terminology` loads.

Precedence (the same OID or short id from two sources):

* An ANS SVS file (verbatim from TestContenuCDA) wins over a derived CSV list, except for DMP-specific value
  sets (name ending in ``-DMP`` / ``_DMP``), where the CSV taken from the NOS DMP publication wins.
* Between two sources of the same kind, the later ``revisionDate`` wins, then the one with more concepts, then
  the file name in sort order (so the output never depends on directory order).
* A source that loses keeps its name as an alias of the winner (same OID = same value set) and is listed in
  ``skipped`` with the reason. A losing short id is dropped from the loser and noted in ``notes``.

The output is deterministic (sorted, no timestamps, gzip mtime 0) so a rebuild can be compared with the shipped
file to prove the latter is not stale.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.terminology.tables import (
    CSV_VALUE_SET_OIDS,
    DMP_NAME_RE,
    PLACEHOLDER_CODES,
    SHORT_ID_RE,
    TRE_A11_IHE_FORMAT_CODE,
)

#: Version of the compiled document layout; the loader refuses any other.
FORMAT_VERSION = 1
#: SVS files are small (the largest kit file is ~1 MB); anything far bigger is not a value set.
_MAX_SVS_BYTES = 64 * 1024 * 1024
_OID_RE = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")


class TerminologyBuildError(ValueError):
    """The sources cannot be compiled into a coherent terminology (e.g. a CSV value set with no known OID)."""


@dataclass
class _Candidate:
    """One value set read from one source file, before precedence is applied."""

    oid: str
    name: str
    version: str | None
    source: str
    origin: str  # "svs" or "csv"
    revision: str
    concepts: dict[tuple[str, str], str]
    short_id: str | None = None
    aliases: set[str] = field(default_factory=set)
    #: Set when the source has no usable concept: never compiled, but its name can alias a same-OID set.
    empty_reason: str | None = None

    @property
    def is_dmp(self) -> bool:
        return bool(DMP_NAME_RE.search(self.name))


@dataclass
class _Stats:
    normalized: int = 0
    placeholders: int = 0
    duplicates: int = 0


def normalize_key(key: str) -> str:
    """The form under which names and aliases are indexed: case, ``-``/``_``, URL and ``urn:oid:`` ignored.

    ANS names a value set ``JDV_J02_XdsHealthcareFacilityTypeCode_CISIS`` in the SVS file,
    ``JDV_J02-XdsHealthcareFacilityTypeCode-CISIS`` in its URL and ``JDV-J02-...`` in FHIR; callers should not
    have to know which spelling this build saw.
    """
    k = key.strip()
    if k.lower().startswith("urn:oid:"):
        k = k[8:]
    if "/" in k:
        k = k.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tabs", ".xml", ".csv"):
        if k.lower().endswith(suffix):
            k = k[: -len(suffix)]
    return k.lower().replace("-", "_")


def _short_id(*names: str) -> str | None:
    for n in names:
        m = SHORT_ID_RE.match(n)
        if m:
            return m.group(1).upper()
    return None


def _local(tag: object) -> str:
    return tag.split("}", 1)[-1] if isinstance(tag, str) else ""


def _add_concept(
    concepts: dict[tuple[str, str], str], stats: _Stats, code: str, system: str, display: str
) -> None:
    """Clean one concept and add it; the kit has codes with trailing NBSP/space and leading tabs."""
    c, s = code.strip(), system.strip()
    if c != code or s != system:
        stats.normalized += 1
    if c.casefold() in PLACEHOLDER_CODES or not s:
        stats.placeholders += 1
        return
    if (s, c) in concepts:
        stats.duplicates += 1
        return
    concepts[(s, c)] = " ".join(display.split())


def _svs_version(vs: Any) -> tuple[str | None, str]:
    """Version label and sort key. NOS JDVs are versioned by revision date; ``@version`` is often ``test``."""
    revision = (vs.get("revisionDate") or "").strip()
    if revision:
        return revision[:10], revision
    maj = (vs.get("dateMaj") or "").strip()
    if len(maj) >= 8 and maj[:8].isdigit():
        label = f"{maj[:4]}-{maj[4:6]}-{maj[6:8]}"
        return label, label
    version = (vs.get("version") or "").strip()
    return (version or None), ""


def _read_svs(path: Path, stats: _Stats) -> list[_Candidate] | str:
    """Parse one SVS file with the hardened parser; return its value sets or a reason to skip it."""
    from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted

    try:
        data = path.read_bytes()
        root = parse_untrusted(data, max_bytes=_MAX_SVS_BYTES).getroot()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except UnsafeXMLError as exc:
        return "empty file" if exc.rule == "XML-EMPTY" else f"unreadable: {exc.rule} {exc}"
    # RetrieveValueSetResponse/ValueSet in the kit; a bare ValueSet root or no namespace are accepted too.
    value_sets = (
        [root] if _local(root.tag) == "ValueSet" else [e for e in root.iter() if _local(e.tag) == "ValueSet"]
    )
    if not value_sets:
        return f"unreadable: no SVS ValueSet element (root is {_local(root.tag) or root.tag!r})"
    out: list[_Candidate] = []
    reasons: list[str] = []
    for vs in value_sets:
        oid = (vs.get("id") or "").strip()
        if oid.lower().startswith("urn:oid:"):
            oid = oid[8:]
        if not _OID_RE.match(oid):
            reasons.append(f"unreadable: ValueSet id {oid!r} is not an OID")
            continue
        concepts: dict[tuple[str, str], str] = {}
        seen = 0
        for el in vs.iter():
            if _local(el.tag) == "Concept":
                seen += 1
                _add_concept(
                    concepts,
                    stats,
                    el.get("code") or "",
                    el.get("codeSystem") or "",
                    el.get("displayName") or "",
                )
        display_name = (vs.get("displayName") or "").strip()
        name = re.sub(r"\.tabs$", "", display_name) or path.stem
        aliases = {path.stem}
        url = (vs.get("urlFichier") or "").strip()
        if url:
            aliases.add(url.rstrip("/").rsplit("/", 1)[-1])
        version, revision = _svs_version(vs)
        out.append(
            _Candidate(
                oid=oid,
                name=name,
                version=version,
                source=path.name,
                origin="svs",
                revision=revision,
                concepts=concepts,
                short_id=_short_id(name, path.stem),
                aliases={a for a in aliases if normalize_key(a) != normalize_key(name)},
                empty_reason=None
                if concepts
                else ("empty: no Concept" if not seen else "empty: placeholder concept(s) only"),
            )
        )
    if out:
        return out
    return "; ".join(sorted(set(reasons)))


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(cell.strip() for cell in r)]
    if not rows:
        return [], []
    return rows[0], rows[1:]


def _csv_version(suffix: str | None) -> str | None:
    """``1.1.0_2024-02-23`` -> ``1.1.0``; ``20230922`` -> ``2023-09-22``; the file name keeps the rest."""
    if not suffix:
        return None
    semver = re.match(r"^(\d+(?:\.\d+)+)", suffix)
    if semver:
        return semver.group(1)
    if re.fullmatch(r"\d{8}", suffix):
        return f"{suffix[:4]}-{suffix[4:6]}-{suffix[6:]}"
    return suffix


def _read_jdv_csv(path: Path, stats: _Stats) -> _Candidate | str:
    """A ``system_url|oid, code, display`` CSV named ``JDV_Jnn-Name-Scope_<version>.csv``."""
    m = re.match(r"^(JDV_J\d+-[^_]+)(?:_v?(.+))?$", path.stem)
    if not m:
        return "unreadable: file name is not JDV_Jnn-Name[_version]"
    name, version = m.group(1), _csv_version(m.group(2))
    short = _short_id(name)
    oid = CSV_VALUE_SET_OIDS.get(short or "")
    if oid is None:
        raise TerminologyBuildError(
            f"{path.name}: no OID known for {short}; add it to gateway.terminology.tables.CSV_VALUE_SET_OIDS"
        )
    try:
        header, rows = _csv_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return f"unreadable: {exc}"
    if not header:
        return "empty file"
    cols = [h.strip().lower() for h in header]
    try:
        i_sys = next(i for i, h in enumerate(cols) if h.startswith("system"))
        i_code = cols.index("code")
    except (StopIteration, ValueError):
        return f"unreadable: header {header!r} lacks system/code columns"
    i_disp = cols.index("display") if "display" in cols else None
    concepts: dict[tuple[str, str], str] = {}
    for row in rows:
        if len(row) <= max(i_sys, i_code):
            return f"unreadable: short row {row!r}"
        # "https://.../TRE-A04-Loinc|2.16.840.1.113883.6.1": the OID (or ASTM's literal) is after the bar.
        system = row[i_sys].rsplit("|", 1)[-1]
        display = row[i_disp] if i_disp is not None and i_disp < len(row) else ""
        _add_concept(concepts, stats, row[i_code], system, display)
    if not concepts:
        return "empty: no concept rows"
    # The CSV names carry the release date ("1.1.0_2024-02-23" or "20230922"): it orders like a revision date.
    dates = re.findall(r"\d{4}-?\d{2}-?\d{2}", m.group(2) or "")
    revision = dates[-1].replace("-", "") if dates else ""
    if len(revision) == 8:
        revision = f"{revision[:4]}-{revision[4:6]}-{revision[6:]}"
    return _Candidate(
        oid=oid,
        name=name,
        version=version,
        source=path.name,
        origin="csv",
        revision=revision,
        concepts=concepts,
        short_id=short,
    )


def _read_ass_a12(path: Path) -> dict[str, list[str | None]]:
    """ASS_A12: CDA N1 ``nonXMLBody/text/@mediaType`` -> XDS formatCode (codingScheme named in the header)."""
    header, rows = _csv_rows(path)
    if len(header) < 2:
        raise TerminologyBuildError(f"{path.name}: expected a mediaType,formatCode header, got {header!r}")
    m = re.search(r"codingScheme\s+([0-9.]+)", header[1])
    system = m.group(1) if m else TRE_A11_IHE_FORMAT_CODE
    out: dict[str, list[str | None]] = {}
    for row in rows:
        media_type, code = row[0].strip().lower(), row[1].strip()
        display = row[2].strip() if len(row) > 2 and row[2].strip() else None
        if media_type and code:
            out[media_type] = [code, system, display]
    return out


def _ordered(group: list[_Candidate]) -> list[_Candidate]:
    """Sources of one value set, the one that takes precedence first (see the module docstring)."""
    prefer_csv = any(c.is_dmp for c in group)
    out = sorted(group, key=lambda c: (-len(c.concepts), c.source))
    out.sort(key=lambda c: c.revision, reverse=True)  # stable sorts: the last key applied is the main one
    out.sort(key=lambda c: (c.origin == "csv") != prefer_csv)
    return out


def build_document(jdv_dir: Path, nos_dir: Path | None) -> tuple[dict[str, Any], dict[str, int]]:
    """Read every source and apply precedence; return the compiled document and build statistics."""
    stats = _Stats()
    skipped: dict[str, str] = {}
    notes: list[str] = []
    candidates: list[_Candidate] = []
    svs_files = sorted(jdv_dir.glob("JDV_*.xml"))
    if not svs_files:
        raise TerminologyBuildError(f"no JDV_*.xml file in {jdv_dir}")
    for path in svs_files:
        got = _read_svs(path, stats)
        if isinstance(got, str):
            skipped[path.name] = got
        else:
            candidates.extend(got)
    media_types: dict[str, list[str | None]] = {}
    media_source: str | None = None
    csv_files: list[Path] = []
    if nos_dir is not None:
        csv_files = sorted(nos_dir.glob("JDV_*.csv"))
        for path in csv_files:
            got_csv = _read_jdv_csv(path, stats)
            if isinstance(got_csv, str):
                skipped[path.name] = got_csv
            else:
                candidates.append(got_csv)
        a12 = sorted(nos_dir.glob("ASS_A12*.csv"))
        if a12:
            media_source = a12[-1].name
            media_types = _read_ass_a12(a12[-1])

    by_oid: dict[str, list[_Candidate]] = defaultdict(list)
    for c in candidates:
        if c.empty_reason is None:
            by_oid[c.oid].append(c)
    for c in candidates:
        if c.empty_reason is not None:
            if c.oid in by_oid:
                # The kit holds two files for 1.2.250.1.213.1.1.5.805/806 (AGGIR): a draft and the real list.
                skipped[c.source] = f"{c.empty_reason}; same OID {c.oid} compiled from another file"
                by_oid[c.oid][0].aliases |= {c.name, *c.aliases}
            else:
                skipped[c.source] = c.empty_reason
    winners: list[_Candidate] = []
    for oid, group in sorted(by_oid.items()):
        ordered = _ordered(group)
        win = ordered[0]
        for lost in ordered[1:]:
            skipped[lost.source] = f"same OID {oid} as {win.source}, which takes precedence"
            win.aliases |= {lost.name, *lost.aliases}
        winners.append(win)

    by_short: dict[str, list[_Candidate]] = defaultdict(list)
    for c in winners:
        if c.short_id:
            by_short[c.short_id].append(c)
    for short, group in sorted(by_short.items()):
        if len(group) > 1:
            ordered = _ordered(group)
            for lost in ordered[1:]:
                lost.short_id = None
                notes.append(f"short id {short} kept for {ordered[0].name}, not {lost.name} ({lost.oid})")

    # Names and aliases must resolve to one value set only: a name beats an alias, and a contested alias is
    # dropped rather than resolved by chance.
    owner: dict[str, str] = {}
    for c in winners:
        for key in (c.oid, normalize_key(c.name)):
            if key in owner and owner[key] != c.oid:
                raise TerminologyBuildError(f"{c.source}: name {key!r} already used by {owner[key]}")
            owner[key] = c.oid
    alias_owners: dict[str, set[str]] = defaultdict(set)
    for c in winners:
        for a in c.aliases:
            alias_owners[normalize_key(a)].add(c.oid)
    for c in winners:
        kept = set()
        for a in c.aliases:
            k = normalize_key(a)
            if owner.get(k, c.oid) == c.oid and len(alias_owners[k]) == 1:
                kept.add(a)
            else:
                notes.append(f"alias {a!r} of {c.name} dropped: ambiguous")
        c.aliases = kept

    records: list[dict[str, Any]] = []
    n_codes = 0
    for c in sorted(winners, key=lambda c: c.oid):
        systems = sorted({s for s, _ in c.concepts})
        index = {s: i for i, s in enumerate(systems)}
        concepts = [[index[s], code, c.concepts[(s, code)]] for s, code in sorted(c.concepts)]
        n_codes += len(concepts)
        records.append(
            {
                "oid": c.oid,
                "name": c.name,
                "version": c.version,
                "source": c.source,
                "origin": c.origin,
                "short_id": c.short_id,
                "aliases": sorted(c.aliases),
                "systems": systems,
                "concepts": concepts,
            }
        )
    document = {
        "format": FORMAT_VERSION,
        "generator": "tools/build_terminology.py",
        "inputs": {"jdv": jdv_dir.name, "nos": nos_dir.name if nos_dir is not None else None},
        "value_sets": records,
        "skipped": dict(sorted(skipped.items())),
        "notes": sorted(notes),
        "media_types": {"source": media_source, "map": dict(sorted(media_types.items()))},
    }
    summary = {
        "value_sets": len(records),
        "codes": n_codes,
        "files": len(svs_files) + len(csv_files),
        "skipped": len(skipped),
        "media_types": len(media_types),
        "codes_whitespace_normalized": stats.normalized,
        "placeholders_dropped": stats.placeholders,
        "duplicates_dropped": stats.duplicates,
    }
    return document, summary


def encode_document(document: dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, compact separators, UTF-8, gzip with a fixed mtime."""
    raw = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


def compile_terminology(jdv_dir: Path, nos_dir: Path | None, out: Path) -> dict[str, int]:
    """Compile the sources into ``out`` (written atomically) and return a summary for the build log."""
    document, summary = build_document(Path(jdv_dir), Path(nos_dir) if nos_dir is not None else None)
    data = encode_document(document)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    summary["bytes"] = len(data)
    return summary
