"""Compile an ISO Schematron (queryBinding xslt2) into an XSLT 2.0 validator that emits SVRL.

Pipeline (the ISO reference pipeline, re-implemented where the kit needs it):

1. **include** -- ``sch:include`` replaced by the referenced element, recursively, each href resolved against the
   file that holds it. The CI-SIS kit was written on Windows: when an href does not exist with its exact case,
   the file is looked up case-insensitively in its folder (12 hrefs need this; one file name holds a space).
2. **abstract expansion** -- lxml's copy of the ISO ``iso_abstract_expand.xsl`` (XSLT 1, any processor will do):
   ``pattern[@is-a]`` instantiated with its ``param``\\ s, abstract patterns dropped.
3. **XSLT 2 generation** -- written here (the kit and the registries ship no ISO XSLT 2 skeleton). It follows the
   semantics of the ISO ``iso_svrl_for_xslt2`` skeleton: one mode per active pattern (``defaultPhase`` honoured),
   each pattern walks the whole document from ``/``; within a pattern a node fires only its first matching rule
   (priority 1000 + following rules); schema ``let`` -> global ``xsl:param``, pattern/phase ``let`` -> global
   ``xsl:variable``, rule ``let`` -> local variable; ``extends`` inlines the abstract rule (same pattern first,
   then any abstract rule of that id); ``value-of``/``name`` in messages; SVRL ``failed-assert`` /
   ``successful-report`` with the skeleton's full-path ``@location``.

The generated stylesheet carries ``xml:base`` = the .sch's real location so that ``doc('include/...')`` and
``document('../jeuxDeValeurs/...')`` resolve exactly as they do next to the official schematron.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

SCH_NS = "http://purl.oclc.org/dsdl/schematron"
XSL_NS = "http://www.w3.org/1999/XSL/Transform"
SVRL_NS = "http://purl.oclc.org/dsdl/svrl"
XML_NS = "http://www.w3.org/XML/1998/namespace"

#: Bump when the generated XSLT changes: it is part of the cache key.
COMPILER_VERSION = "2"

_SCH = f"{{{SCH_NS}}}"
_XSL = f"{{{XSL_NS}}}"
_SVRL = f"{{{SVRL_NS}}}"

_PARSER = etree.XMLParser(remove_comments=True, resolve_entities=False, no_network=True)


class SchematronCompileError(Exception):
    """The schematron cannot be turned into a working validator (broken upstream, missing include...)."""


# ---------------------------------------------------------------------------------------------------------------
# Step 1: include
# ---------------------------------------------------------------------------------------------------------------


def resolve_case_insensitive(base_dir: Path, href: str) -> Path:
    """``base_dir / href``; when it does not exist, each path segment is matched case-insensitively."""
    direct = (base_dir / href).resolve()
    if direct.exists():
        return direct
    current = base_dir.resolve()
    for part in Path(href).parts:
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        if not candidate.exists():
            try:
                lowered = part.lower()
                matches = [p for p in current.iterdir() if p.name.lower() == lowered]
            except OSError:
                matches = []
            if not matches:
                raise SchematronCompileError(f"include not found: {href} (from {base_dir})")
            candidate = matches[0]
        current = candidate
    return current


def _load(path: Path) -> etree._ElementTree:
    try:
        if path.stat().st_size == 0:
            raise SchematronCompileError(f"empty file: {path.name}")
        return etree.parse(str(path), _PARSER)
    except (OSError, etree.XMLSyntaxError) as exc:
        raise SchematronCompileError(f"cannot read {path}: {exc}") from exc


def _expand_includes(elem: etree._Element, base_dir: Path, deps: dict[str, int], depth: int = 0) -> None:
    if depth > 20:
        raise SchematronCompileError("include nesting too deep")
    for inc in list(elem.iter(f"{_SCH}include")):
        href = (inc.get("href") or "").strip()
        if not href:
            raise SchematronCompileError("include without href")
        doc_part, _, fragment = href.partition("#")
        target = resolve_case_insensitive(base_dir, doc_part)
        if target.is_dir():
            raise SchematronCompileError(f"include points to a folder: {href}")
        deps[str(target)] = target.stat().st_mtime_ns
        root = _load(target).getroot()
        if fragment:
            found = root.xpath("//*[@id=$f or @xml:id=$f]", f=fragment)
            included = [copy.deepcopy(found[0])] if found else []
        elif root.tag.startswith(_SCH):
            included = [copy.deepcopy(root)]
        else:  # foreign container: include its schematron children
            included = [copy.deepcopy(c) for c in root if isinstance(c.tag, str) and c.tag.startswith(_SCH)]
        if not included:
            raise SchematronCompileError(f"include {href} has no schematron content")
        for node in included:
            if node.tag == f"{_SCH}schema":
                raise SchematronCompileError(f"include {href} includes a whole schema")
            _expand_includes(node, target.parent, deps, depth + 1)
        parent = inc.getparent()
        index = parent.index(inc)
        tail = inc.tail
        parent.remove(inc)
        for offset, node in enumerate(included):
            parent.insert(index + offset, node)
        if included:
            included[-1].tail = tail


# ---------------------------------------------------------------------------------------------------------------
# Step 2: abstract patterns (lxml ships the ISO stylesheet)
# ---------------------------------------------------------------------------------------------------------------

_ABSTRACT_XSLT: etree.XSLT | None = None


def _abstract_expand(doc: etree._ElementTree) -> etree._ElementTree:
    global _ABSTRACT_XSLT
    if _ABSTRACT_XSLT is None:
        import lxml.isoschematron as iso

        xsl = (
            Path(iso.__file__).parent
            / "resources"
            / "xsl"
            / "iso-schematron-xslt1"
            / "iso_abstract_expand.xsl"
        )
        _ABSTRACT_XSLT = etree.XSLT(etree.parse(str(xsl)))
    return _ABSTRACT_XSLT(doc)


def load_expanded_schema(sch_path: Path) -> tuple[etree._Element, dict[str, int]]:
    """Steps 1 and 2: the schema with every include resolved and abstract patterns instantiated."""
    sch_path = sch_path.resolve()
    deps: dict[str, int] = {str(sch_path): sch_path.stat().st_mtime_ns}
    tree = _load(sch_path)
    root = tree.getroot()
    if root.tag != f"{_SCH}schema":
        raise SchematronCompileError(f"{sch_path.name} is not an ISO schematron schema")
    _expand_includes(root, sch_path.parent, deps)
    expanded = _abstract_expand(tree).getroot()
    if expanded is None:
        raise SchematronCompileError("abstract expansion produced nothing")
    return expanded, deps


# ---------------------------------------------------------------------------------------------------------------
# Step 3: XSLT 2 generation
# ---------------------------------------------------------------------------------------------------------------


def _sub(parent: etree._Element, xsl_name: str, /, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{_XSL}{xsl_name}")
    for key, value in attrs.items():
        el.set(key.rstrip("_").replace("__", "-"), value)
    return el


class _Generator:
    def __init__(self, schema: etree._Element) -> None:
        self.schema = schema
        self.nsmap: dict[str, str] = {
            "xsl": XSL_NS,
            "svrl": SVRL_NS,
            "xs": "http://www.w3.org/2001/XMLSchema",
        }
        for ns in schema.findall(f"{_SCH}ns"):
            prefix, uri = ns.get("prefix"), ns.get("uri")
            if prefix and uri and prefix != "xml":
                self.nsmap[prefix] = uri
        self.abstract_rules: dict[str, list[etree._Element]] = {}
        for rule in schema.iter(f"{_SCH}rule"):
            if rule.get("abstract") == "true" and rule.get("id"):
                self.abstract_rules.setdefault(rule.get("id"), []).append(rule)

    def active_patterns(self) -> list[etree._Element]:
        patterns = [p for p in self.schema.findall(f"{_SCH}pattern") if p.get("abstract") != "true"]
        phase_id = self.schema.get("defaultPhase")
        if not phase_id or phase_id == "#ALL":
            return patterns
        phase = next((ph for ph in self.schema.findall(f"{_SCH}phase") if ph.get("id") == phase_id), None)
        if phase is None:
            raise SchematronCompileError(f"defaultPhase {phase_id} is not defined")
        active = {a.get("pattern") for a in phase.findall(f"{_SCH}active")}
        return [p for p in patterns if p.get("id") in active]

    def build(self, base_uri: str) -> etree._Element:
        xsl = etree.Element(f"{_XSL}stylesheet", nsmap=self.nsmap)
        xsl.set("version", "2.0")
        xsl.set(f"{{{XML_NS}}}base", base_uri)
        xsl.set("exclude-result-prefixes", " ".join(p for p in self.nsmap if p not in ("xsl", "svrl")))
        _sub(xsl, "output", method="xml", indent="no")
        # schema-level lets are parameters; phase lets are global variables (as the ISO skeleton does)
        for let in self.schema.findall(f"{_SCH}let"):
            self._let(xsl, let, "param")
        for phase in self.schema.findall(f"{_SCH}phase"):
            for let in phase.findall(f"{_SCH}let"):
                self._let(xsl, let, "variable")
        self._path_templates(xsl)
        _sub(xsl, "template", match="text()", priority="-1")
        active = self.active_patterns()
        for pattern in active:  # pattern lets are global, even in a pattern without rules ("variables")
            for let in pattern.findall(f"{_SCH}let"):
                self._let(xsl, let, "variable")
        patterns = [p for p in active if p.find(f"{_SCH}rule") is not None]
        root_tpl = _sub(xsl, "template", match="/")
        out = etree.SubElement(root_tpl, f"{_SVRL}schematron-output")
        for index, pattern in enumerate(patterns):
            mode = f"M{index}"
            ap = etree.SubElement(out, f"{_SVRL}active-pattern")
            if pattern.get("id"):
                ap.set("id", pattern.get("id"))
            _sub(out, "apply-templates", select="/", mode=mode)
            self._pattern(xsl, pattern, mode)
        return xsl

    def _let(self, parent: etree._Element, let: etree._Element, kind: str) -> None:
        name = let.get("name")
        if not name:
            return
        if let.get("value") is not None:
            _sub(parent, kind, name=name, select=let.get("value"))
        else:
            el = _sub(parent, kind, name=name)
            for child in let:
                el.append(copy.deepcopy(child))

    def _pattern(self, xsl: etree._Element, pattern: etree._Element, mode: str) -> None:
        rules = [
            r for r in pattern.findall(f"{_SCH}rule") if r.get("abstract") != "true" and r.get("context")
        ]
        pattern_id = pattern.get("id") or ""
        for position, rule in enumerate(rules):
            tpl = _sub(
                xsl,
                "template",
                match=rule.get("context"),
                priority=str(1000 + len(rules) - position),
                mode=mode,
            )
            fired = etree.SubElement(tpl, f"{_SVRL}fired-rule")
            fired.set("context", rule.get("context"))
            self._rule_body(tpl, rule, pattern, pattern_id, set())
            _sub(tpl, "apply-templates", select="*", mode=mode)
        _sub(xsl, "template", match="text()", priority="-1", mode=mode)
        default = _sub(xsl, "template", match="@*|node()", priority="-2", mode=mode)
        _sub(default, "apply-templates", select="*", mode=mode)

    def _rule_body(
        self,
        tpl: etree._Element,
        rule: etree._Element,
        pattern: etree._Element,
        pattern_id: str,
        seen: set[str],
    ) -> None:
        for child in rule:
            if not isinstance(child.tag, str):
                continue
            if child.tag == f"{_SCH}let":
                self._let(tpl, child, "variable")
            elif child.tag in (f"{_SCH}assert", f"{_SCH}report"):
                self._check(tpl, child, pattern_id)
            elif child.tag == f"{_SCH}extends":
                ref = child.get("rule")
                if not ref or ref in seen:
                    continue
                local = [
                    r
                    for r in pattern.findall(f"{_SCH}rule")
                    if r.get("id") == ref and r.get("abstract") == "true"
                ]
                targets = local or self.abstract_rules.get(ref, [])
                if not targets:
                    raise SchematronCompileError(f"extends: no abstract rule {ref}")
                for target in targets:
                    self._rule_body(tpl, target, pattern, pattern_id, seen | {ref})

    def _check(self, tpl: etree._Element, check: etree._Element, pattern_id: str) -> None:
        test = check.get("test")
        if test is None:
            raise SchematronCompileError("assert/report without test")
        is_assert = check.tag == f"{_SCH}assert"
        if is_assert:
            choose = _sub(tpl, "choose")
            _sub(choose, "when", test=test)
            holder = _sub(choose, "otherwise")
            out = etree.SubElement(holder, f"{_SVRL}failed-assert")
        else:
            holder = _sub(tpl, "if", test=test)
            out = etree.SubElement(holder, f"{_SVRL}successful-report")
        out.set("test", " ".join(test.split()))
        for attr in ("id", "role", "flag"):
            if check.get(attr):
                out.set(attr, check.get(attr))
        if pattern_id:
            out.set("pattern", pattern_id)
        loc = _sub(out, "attribute", name="location")
        _sub(loc, "apply-templates", select=".", mode="schematron-get-full-path")
        text = etree.SubElement(out, f"{_SVRL}text")
        self._message(text, check)

    def _message(self, out: etree._Element, node: etree._Element) -> None:
        if node.text:
            _sub(out, "text").text = node.text
        for child in node:
            if isinstance(child.tag, str):
                if child.tag == f"{_SCH}value-of":
                    _sub(out, "value-of", select=child.get("select") or ".")
                elif child.tag == f"{_SCH}name":
                    path = child.get("path")
                    _sub(out, "value-of", select=f"name({path})" if path else "name(.)")
                else:  # emph, dir, span, foreign markup: keep their text
                    self._message(out, child)
            if child.tail:
                _sub(out, "text").text = child.tail

    def _path_templates(self, xsl: etree._Element) -> None:
        """The ISO skeleton's ``schematron-get-full-path`` (XSLT 2 notation) for SVRL @location."""
        el = _sub(xsl, "template", match="*", mode="schematron-get-full-path")
        _sub(el, "apply-templates", select="parent::*", mode="schematron-get-full-path")
        _sub(el, "text").text = "/"
        choose = _sub(el, "choose")
        _sub(_sub(choose, "when", test="namespace-uri()=''"), "value-of", select="name()")
        other = _sub(choose, "otherwise")
        _sub(
            other,
            "value-of",
            select="concat('*[local-name()=''', local-name(), ''' and namespace-uri()=''', namespace-uri(), ''']')",
        )
        _sub(el, "text").text = "["
        _sub(
            el,
            "value-of",
            select="1 + count(preceding-sibling::*[local-name()=local-name(current())"
            " and namespace-uri() = namespace-uri(current())])",
        )
        _sub(el, "text").text = "]"
        at = _sub(xsl, "template", match="@*", mode="schematron-get-full-path")
        _sub(at, "apply-templates", select="parent::*", mode="schematron-get-full-path")
        _sub(at, "text").text = "/@"
        _sub(at, "value-of", select="name()")
        _sub(xsl, "template", match="/", mode="schematron-get-full-path")


def generate_xslt(sch_path: Path) -> tuple[bytes, dict[str, int]]:
    """The XSLT 2 validator for ``sch_path`` and the files it was built from (path -> mtime_ns)."""
    schema, deps = load_expanded_schema(sch_path)
    if schema.get("queryBinding", "xslt") not in ("xslt2", "xpath2", "xslt3", "xslt", "xslt1"):
        raise SchematronCompileError(f"unsupported queryBinding {schema.get('queryBinding')}")
    xsl = _Generator(schema).build(sch_path.resolve().as_uri())
    return etree.tostring(xsl, xml_declaration=True, encoding="UTF-8"), deps


# ---------------------------------------------------------------------------------------------------------------
# Disk cache
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSchematron:
    sch_path: Path
    xslt_path: Path
    compile_seconds: float  #: 0.0 when served from the cache


def _cache_key(sch_path: Path) -> str:
    st = sch_path.stat()
    raw = f"{COMPILER_VERSION}|{sch_path}|{st.st_mtime_ns}|{st.st_size}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def compiled_xslt(sch_path: Path, cache_dir: Path) -> CompiledSchematron:
    """The cached XSLT for ``sch_path``, (re)generated when the .sch or any file it includes changed."""
    sch_path = sch_path.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{sch_path.stem.replace(' ', '_')}-{_cache_key(sch_path)}"
    xslt_path = cache_dir / f"{stem}.xsl"
    meta_path = cache_dir / f"{stem}.json"
    if xslt_path.exists() and meta_path.exists():
        try:
            deps = json.loads(meta_path.read_text())["deps"]
            if all(os.stat(p).st_mtime_ns == m for p, m in deps.items()):
                return CompiledSchematron(sch_path, xslt_path, 0.0)
        except (OSError, ValueError, KeyError):
            pass
    start = time.perf_counter()
    xslt, deps = generate_xslt(sch_path)
    tmp = xslt_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(xslt)
    os.replace(tmp, xslt_path)
    tmp_meta = meta_path.with_suffix(f".{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps({"sch": str(sch_path), "deps": deps}))
    os.replace(tmp_meta, meta_path)
    return CompiledSchematron(sch_path, xslt_path, time.perf_counter() - start)
