"""The OASIS ebRIM/ebRS 3.0 and IHE XDS.b schemas shipped in ``schemas/`` (sources in ``schemas/SOURCES.md``),
compiled offline: imports resolve to files of that folder only, never to the network."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import unquote, urlparse

from lxml import etree

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
XDSB_XSD = SCHEMA_DIR / "ihe" / "XDS.b_DocumentRepository.xsd"
LCM_XSD = SCHEMA_DIR / "ebrs30" / "lcm.xsd"
QUERY_XSD = SCHEMA_DIR / "ebrs30" / "query.xsd"


class LocalFilesOnly(etree.Resolver):
    """Serves the files below ``root`` and refuses everything else (http, a file outside the folder); the
    refused URLs are kept in ``refused``."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root.resolve()
        self.refused: list[str] = []

    def resolve(self, system_url, public_id, context):
        parsed = urlparse(system_url or "")
        if parsed.scheme in ("", "file"):
            path = Path(unquote(parsed.path if parsed.scheme else system_url)).resolve()
            if path.is_relative_to(self.root) and path.is_file():
                return self.resolve_filename(str(path), context)
        self.refused.append(system_url)
        return self.resolve_string("<refused/>", context)  # not a schema: loading fails


def load_schema(path: Path, root: Path = SCHEMA_DIR) -> tuple[etree.XMLSchema, LocalFilesOnly]:
    """``path`` compiled offline; the resolver tells which imports it refused (none for a usable schema)."""
    resolver = LocalFilesOnly(root)
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(resolver)
    return etree.XMLSchema(etree.parse(str(path), parser)), resolver


@functools.cache
def xdsb_schema() -> etree.XMLSchema:
    """ITI-41 ProvideAndRegisterDocumentSetRequest (and ITI-43), with ebRS 3.0 under it."""
    return load_schema(XDSB_XSD)[0]


@functools.cache
def lcm_schema() -> etree.XMLSchema:
    """``lcm:SubmitObjectsRequest`` and the rest of ebRS 3.0 LCM (imports rim.xsd and rs.xsd)."""
    return load_schema(LCM_XSD)[0]


@functools.cache
def query_schema() -> etree.XMLSchema:
    """ITI-18 ``query:AdhocQueryRequest`` / ``AdhocQueryResponse``."""
    return load_schema(QUERY_XSD)[0]
