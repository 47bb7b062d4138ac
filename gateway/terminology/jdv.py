"""ANS value sets (JDV) at run time: membership and display lookups for validation and XDS metadata.

The gateway checks coded CDA/XDS values (typeCode against J07 and J66 before a DMP submission,
healthcareFacilityTypeCode against J02, practiceSettingCode against J04, ...) and derives the N1 formatCode from
ASS_A12. It reads these from a compiled file built by ``tools/build_terminology.py`` (see
:mod:`gateway.terminology.build`), never from the ANS kit, so a deployment carries no ``../shared``.

Loading is cheap on purpose: the file is decompressed and decoded once, and a :class:`ValueSet` is only built
the first time it is asked for (most runs touch a handful of the 500+ sets).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.terminology.build import FORMAT_VERSION, compile_terminology, normalize_key

__all__ = [
    "Terminology",
    "TerminologyError",
    "ValueSet",
    "compile_terminology",
    "default_terminology",
    "shipped_path",
]

_DATA_FILE = "terminology.json.gz"


class TerminologyError(ValueError):
    """The compiled terminology file is missing, corrupt or of an unsupported format version."""


@dataclass(frozen=True, slots=True)
class ValueSet:
    """One JDV: its identity and its (codeSystem OID, code) pairs.

    ``displays`` is kept out of equality and repr: two builds with reworded labels are the same value set.
    """

    oid: str
    name: str
    version: str | None
    codes: frozenset[tuple[str, str]]
    displays: Mapping[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)
    short_id: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False, repr=False)
    _any_system: Mapping[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # code -> display for lookups without a code system; the first system in sort order wins, so the
        # answer does not depend on build order when a code exists in two systems.
        by_code: dict[str, str] = {}
        for system, code in sorted(self.codes, reverse=True):
            by_code[code] = self.displays.get((system, code), "")
        object.__setattr__(self, "_any_system", by_code)

    def contains(self, code: str, code_system: str | None = None) -> bool:
        """Is ``code`` in the set? ``code_system`` None accepts the code from any of its systems."""
        if code_system is None:
            return code in self._any_system
        return (code_system, code) in self.codes

    def display(self, code: str, code_system: str | None = None) -> str | None:
        """The ANS display name of the code, or None when the code is not in the set (or has no label)."""
        if code_system is None:
            return self._any_system.get(code) or None
        return self.displays.get((code_system, code)) or None

    def __len__(self) -> int:
        return len(self.codes)


class Terminology:
    """All compiled value sets plus ASS_A12, looked up by OID, JDV name or short id (``J02``)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        if not isinstance(document, Mapping) or document.get("format") != FORMAT_VERSION:
            got = document.get("format") if isinstance(document, Mapping) else type(document).__name__
            raise TerminologyError(f"unsupported terminology format {got!r} (expected {FORMAT_VERSION})")
        try:
            self._records: list[dict[str, Any]] = list(document["value_sets"])
            media = document.get("media_types") or {}
            self._media: dict[str, tuple[str, str, str | None]] = {
                k.lower(): (v[0], v[1], v[2]) for k, v in (media.get("map") or {}).items()
            }
            self._media_source: str | None = media.get("source")
            self._skipped: dict[str, str] = dict(document.get("skipped") or {})
            self._index: dict[str, int] = {}
            for i, rec in enumerate(self._records):
                keys = [rec["oid"], rec["name"], normalize_key(rec["name"])]
                keys += [normalize_key(a) for a in rec["aliases"]]
                if rec.get("short_id"):
                    # "J07" as written hits the first, cheap probe; "j07" the normalized one.
                    keys += [rec["short_id"], rec["short_id"].lower()]
                for key in keys:
                    self._index.setdefault(key, i)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise TerminologyError(f"malformed terminology document: {exc!r}") from None
        self._built: dict[int, ValueSet] = {}

    @classmethod
    def load(cls, path: Path | None = None) -> Terminology:
        """Load a compiled file; ``None`` loads the one shipped in ``gateway/terminology/data/``."""
        try:
            if path is None:
                raw = resources.files("gateway.terminology").joinpath("data", _DATA_FILE).read_bytes()
            else:
                raw = Path(path).read_bytes()
            document = json.loads(gzip.decompress(raw))
        except FileNotFoundError as exc:
            raise TerminologyError(f"terminology file not found: {exc.filename or path}") from None
        except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
            raise TerminologyError(f"cannot read terminology file {path or _DATA_FILE}: {exc}") from None
        return cls(document)

    def _resolve(self, key: str) -> int | None:
        k = key.strip()
        hit = self._index.get(k)
        if hit is None:
            hit = self._index.get(normalize_key(k))
        return hit

    def value_set(self, key: str) -> ValueSet | None:
        """The value set named by OID, JDV name (any ``-``/``_`` spelling, case-insensitive) or short id."""
        i = self._resolve(key)
        if i is None:
            return None
        vs = self._built.get(i)
        if vs is None:
            vs = self._built[i] = self._make(self._records[i])
        return vs

    @staticmethod
    def _make(rec: Mapping[str, Any]) -> ValueSet:
        systems = rec["systems"]
        displays = {(systems[s], code): label for s, code, label in rec["concepts"]}
        return ValueSet(
            oid=rec["oid"],
            name=rec["name"],
            version=rec.get("version"),
            codes=frozenset(displays),
            displays=displays,
            short_id=rec.get("short_id"),
            source=rec.get("source"),
        )

    def contains(self, key: str, code: str, code_system: str | None = None) -> bool | None:
        """Is the code in the value set? None (not False) when the value set itself is unknown."""
        vs = self.value_set(key)
        return None if vs is None else vs.contains(code, code_system)

    def format_code_for_media_type(self, media_type: str) -> tuple[str, str, str | None] | None:
        """ASS_A12: N1 body mediaType -> (formatCode, codingScheme, display); parameters and case ignored."""
        return self._media.get(media_type.split(";", 1)[0].strip().lower())

    @property
    def source_versions(self) -> dict[str, str]:
        """Value set name -> source file and version, and ``ASS_A12`` -> its file, for validation reports."""
        out = {
            rec["name"]: f"{rec['source']} ({rec['version']})" if rec.get("version") else rec["source"]
            for rec in self._records
        }
        if self._media_source:
            out["ASS_A12"] = self._media_source
        return out

    @property
    def skipped(self) -> dict[str, str]:
        """Source files the build left out, with the reason (empty, placeholder only, superseded...)."""
        return dict(self._skipped)

    def __iter__(self) -> Iterator[ValueSet]:
        for i in range(len(self._records)):
            vs = self.value_set(self._records[i]["oid"])
            if vs is not None:
                yield vs

    def __len__(self) -> int:
        return len(self._records)


def shipped_path() -> Path:
    """Where the shipped compiled file lives in a source checkout (the build tool writes it here)."""
    return Path(__file__).resolve().parent / "data" / _DATA_FILE


@functools.lru_cache(maxsize=1)
def default_terminology() -> Terminology:
    """The shipped terminology, loaded once per process (validators call this on every document)."""
    return Terminology.load()
