"""Transformer plugins: Python files a site drops in its ``transformers/`` folder, loaded by path.

A plugin ``transformers/<name>.py`` defines ``transform(submission: DocumentSubmission) -> DocumentSubmission``
and is applied by routes that list ``<name>`` under ``transform:``. Files whose name starts with ``_`` are
skipped (helpers, examples). Plugins are imported under the private package name ``cisis_site_transformers``,
never as ``transformers`` (that name belongs to a popular PyPI project and must not be shadowed).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.model import DocumentSubmission

Transformer = Callable[[DocumentSubmission], DocumentSubmission]
NAMESPACE = "cisis_site_transformers"


class TransformerError(ValueError):
    pass


def load_transformers(folder: Path | None) -> dict[str, Transformer]:
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, Transformer] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"{NAMESPACE}.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise TransformerError(f"{path}: cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a broken plugin must stop start-up with its name, not a bare traceback
            raise TransformerError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
        fn = getattr(module, "transform", None)
        if not callable(fn):
            raise TransformerError(f"{path}: defines no transform(submission) function")
        found[path.stem] = fn
    return found


def check_names(wanted: set[str], available: dict[str, Transformer]) -> list[str]:
    """Names used by routes that no plugin provides."""
    return sorted(wanted - set(available))
