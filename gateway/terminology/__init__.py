"""ANS value sets (JDV) and the ASS_A12 mediaType -> formatCode table, compiled into the package.

See :mod:`gateway.terminology.jdv` for the run-time API and :mod:`gateway.terminology.build` for how the
shipped file is produced (``tools/build_terminology.py``).
"""

from gateway.terminology.jdv import (
    Terminology,
    TerminologyError,
    ValueSet,
    compile_terminology,
    default_terminology,
    shipped_path,
)

__all__ = [
    "Terminology",
    "TerminologyError",
    "ValueSet",
    "compile_terminology",
    "default_terminology",
    "shipped_path",
]
