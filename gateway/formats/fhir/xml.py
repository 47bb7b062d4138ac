"""FHIR XML -> FHIR JSON (as Python dicts), driven by the fhir.resources R4B model metadata.

Why not ``FHIRAbstractModel.model_validate_xml``: in fhir.resources 8.3 / fhir-core 1.1.12 it builds the models
directly from the XML, so a single problem anywhere loses the whole resource, and it mishandles comments placed
before a root-level ``id`` (``id__ext`` "extra inputs are not permitted" on the IHE MHD examples). Converting to
the JSON form first lets the PDSm checks run on XML exactly as on JSON, and lets R4B validation report each
structural problem with its path. The XML is parsed with the gateway's hardened parser (no DTD, no entities,
size limit) before anything else.

Mapping rules (FHIR R4 XML representation, §2.6.2 / JSON §2.6.3): the element name is the JSON key (choice
types keep their suffix: ``valueString``); ``@value`` is the primitive's value, typed by the model
(boolean/integer/decimal); an ``@id`` or child ``extension`` of a primitive goes to ``_name``; repeating elements
become arrays when the model says the element is a list; ``extension/@url`` is the ``url`` property; a resource
inside ``Bundle.entry.resource``/``contained``/``Parameters.parameter.resource`` is the single child element;
``Narrative.div`` is kept as its serialised XHTML.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from lxml import etree

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"

_INT_TYPES = {"Integer", "PositiveInt", "UnsignedInt", "Integer64"}
_RESOURCE_TYPES = {"Resource", "DomainResource"}
#: Fields declared with a bare Python type (e.g. ``active: bool | None``) instead of an annotated FHIR primitive.
_PLAIN: dict[Any, str] = {bool: "Boolean", int: "Integer", Decimal: "Decimal", str: "String", bytes: "String"}


class FhirXmlError(ValueError):
    """The XML cannot be converted. ``location`` is a FHIRPath-like path."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(message)
        self.location = location


@dataclass(frozen=True, slots=True)
class _Field:
    key: str  # JSON key
    is_list: bool
    kind: str  # "primitive", "complex", "resource", "xhtml"
    type_name: str  # FHIR type of a complex element / primitive class name


def _local(tag: Any) -> str | None:
    if not isinstance(tag, str):
        return None
    return etree.QName(tag).localname


def _model_class(name: str) -> type | None:
    from fhir.resources import R4B

    try:
        return R4B.get_fhir_model_class(name)
    except (AttributeError, KeyError, ValueError, ImportError):
        return None


def _describe(annotation: Any) -> tuple[bool, str, str] | None:
    """(is_list, kind, type name) from a fhir.resources field annotation."""
    is_list = False
    stack = [annotation]
    while stack:
        anno = stack.pop()
        origin = typing.get_origin(anno)
        if origin is typing.Annotated:
            _base, *meta = typing.get_args(anno)
            for m in meta:
                cls_name = type(m).__name__
                if cls_name == "Xhtml":
                    return is_list, "xhtml", "xhtml"
                return is_list, "primitive", cls_name
            continue
        if origin in (list, typing.List):  # noqa: UP006
            is_list = True
        if origin is not None:
            stack.extend(a for a in typing.get_args(anno) if a is not type(None))
            continue
        if anno in _PLAIN:
            return is_list, "primitive", _PLAIN[anno]
        name = getattr(anno, "__name__", "")
        if name.endswith("Type") and hasattr(anno, "get_model_klass"):
            type_name = name[: -len("Type")]
            kind = "resource" if type_name in _RESOURCE_TYPES else "complex"
            return is_list, kind, type_name
    return None


@cache
def _fields(type_name: str) -> dict[str, _Field] | None:
    cls = _model_class(type_name)
    if cls is None:
        return None
    out: dict[str, _Field] = {}
    for name, info in cls.model_fields.items():
        if not (info.json_schema_extra or {}).get("element_property"):
            continue
        described = _describe(info.annotation)
        for meta in info.metadata:  # pydantic moves a top-level Annotated[...] into metadata
            if described is None or described[1] != "complex":
                kind = "xhtml" if type(meta).__name__ == "Xhtml" else "primitive"
                listed = described[0] if described else False
                described = (listed, kind, type(meta).__name__)
                break
        if described is None:
            continue
        key = info.alias or name
        out[key] = _Field(key, *described)
    return out


def _primitive(raw: str, type_name: str) -> Any:
    if type_name == "Boolean":
        return {"true": True, "false": False}.get(raw, raw)
    if type_name in _INT_TYPES:
        try:
            return int(raw)
        except ValueError:
            return raw
    if type_name == "Decimal":
        try:
            return Decimal(raw)
        except ArithmeticError:
            return raw
    return raw


def _complex(
    el: etree._Element, type_name: str, path: str, problems: list[tuple[str, str]]
) -> dict[str, Any]:
    fields = _fields(type_name)
    out: dict[str, Any] = {}
    if el.get("id") is not None:
        out["id"] = el.get("id")
    if type_name == "Extension" and el.get("url") is not None:
        out["url"] = el.get("url")
    if fields is None:
        problems.append((path, f"unknown FHIR type {type_name}"))
        return out
    counts: dict[str, int] = {}
    for child in el:
        name = _local(child.tag)
        if name is None:
            continue  # comment or processing instruction
        child_ns = etree.QName(child.tag).namespace
        spec = fields.get(name)
        index = counts.get(name, 0)
        counts[name] = index + 1
        child_path = f"{path}.{name}" + (f"[{index}]" if spec is not None and spec.is_list else "")
        if spec is None or (child_ns != FHIR_NS and spec.kind != "xhtml"):
            problems.append((child_path, f"element {name} is not defined in {type_name}"))
            continue
        if spec.kind == "xhtml":
            child.tail = None
            value: Any = etree.tostring(child, encoding="unicode")
        elif spec.kind == "resource":
            inner = [c for c in child if _local(c.tag) is not None]
            if len(inner) != 1:
                problems.append((child_path, "a resource container must hold exactly one resource"))
                continue
            value = resource_to_json(inner[0], child_path, problems)
        elif spec.kind == "primitive":
            raw = child.get("value")
            value = _primitive(raw, spec.type_name) if raw is not None else None
            ext = _complex(child, "Element", child_path, problems)
            if ext:
                if spec.is_list:
                    out.setdefault(f"_{name}", [None] * index).append(ext)
                else:
                    out[f"_{name}"] = ext
            elif spec.is_list and f"_{name}" in out:
                out[f"_{name}"].append(None)
            if value is None and not ext:
                problems.append((child_path, "primitive element without @value or extension"))
        else:
            value = _complex(child, spec.type_name, child_path, problems)
        if spec.is_list:
            out.setdefault(name, []).append(value)
        else:
            if name in out:
                problems.append((child_path, f"element {name} repeats but allows one occurrence"))
            out[name] = value
    return out


def resource_to_json(el: etree._Element, path: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """Convert one resource element; unknown elements are left out and listed in ``problems``."""
    name = _local(el.tag) or ""
    if etree.QName(el.tag).namespace != FHIR_NS:
        raise FhirXmlError(path, f"element {name} is not in the FHIR namespace {FHIR_NS}")
    if _fields(name) is None:
        raise FhirXmlError(path, f"{name} is not a FHIR R4 resource")
    body = _complex(el, name, path, problems)
    return {"resourceType": name, **body}
