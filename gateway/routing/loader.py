"""Loads ``routes.yaml`` and reports every problem with its line number.

The YAML is composed once into a node tree (which keeps line marks) and validated with the pydantic schema; each
pydantic error location (``routes -> 3 -> when -> flags``) is walked back through the node tree to a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from gateway.routing.schema import RouteTable


@dataclass(frozen=True, slots=True)
class RouteError:
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class RoutesFileError(ValueError):
    def __init__(self, source: str, errors: list[RouteError]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(str(e) for e in errors))


def _node_at(node: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """Follow a pydantic location through the composed YAML; stop at the deepest node found."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if nxt is None:
                # the key itself is wrong (extra key): point at the key
                key = next((k for k, _ in node.value if getattr(k, "value", None) == str(part)), None)
                return key or node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def parse_routes(text: str, source: str = "routes.yaml") -> RouteTable:
    """Validate routes text; raise :class:`RoutesFileError` listing every error with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RoutesFileError(
            source, [RouteError(mark.line + 1 if mark else None, "", f"YAML syntax: {exc}")]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RoutesFileError(source, [RouteError(1, "", "the file must be a mapping with a 'routes' list")])
    try:
        return RouteTable.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "list[")))
            )
            node = _node_at(root, loc)
            line = node.start_mark.line + 1 if node is not None else None
            errors.append(RouteError(line, ".".join(str(p) for p in loc), err["msg"]))
        raise RoutesFileError(source, errors) from None


def load_routes(path: str | Path) -> RouteTable:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesFileError(str(p), [RouteError(None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_routes(text, str(p))
