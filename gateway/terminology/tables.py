"""Fixed identifiers the terminology compiler needs but cannot read from its sources.

The ANS SVS files carry their own OID; the DMP CSV lists in ``nos-jdv-derived`` do not (their file names only
give the JDV name and version), so their OIDs are recorded here from the NOS publications cited in
``shared/cisis/SOURCES.md`` §6. Keeping them in one table makes an unknown CSV value set fail loudly at build
time instead of being compiled under a guessed OID.
"""

from __future__ import annotations

import re

#: LOINC, the code system of most XDS typeCodes (J07 / J66).
LOINC = "2.16.840.1.113883.6.1"
#: TRE_R02 Secteur d'activité: the healthcareFacilityTypeCode system for establishments (J02).
TRE_R02_SECTEUR_ACTIVITE = "1.2.250.1.71.4.2.4"
#: TRE_A03 Classe de document: the XDS classCode system (J06 / J57).
TRE_A03_CLASSE_DOCUMENT = "1.2.250.1.213.1.1.4.1"
#: TRE_A11 IHE format codes: the codingScheme of the formatCodes ASS_A12 yields, used when the CSV header
#: does not name one.
TRE_A11_IHE_FORMAT_CODE = "1.3.6.1.4.1.19376.1.2.3"

#: OIDs of the value sets that exist only as CSV (not in the TestContenuCDA kit), keyed by short id.
CSV_VALUE_SET_OIDS: dict[str, str] = {
    "J06": "1.2.250.1.213.1.1.5.462",  # JDV_J06-XdsClassCode-CISIS
    "J57": "1.2.250.1.213.1.1.5.6",  # JDV_J57-ClassCode-DMP
    "J66": "1.2.250.1.213.1.1.5.7",  # JDV_J66-TypeCode-DMP
}

#: Concept codes that are placeholders in the ANS kit, not codes ("à compléter" rows of value sets still being
#: drafted, "code à fournir" in JDV_TrousseCCU). Compared case-insensitively after stripping whitespace.
PLACEHOLDER_CODES: frozenset[str] = frozenset({"", "à compléter", "code à fournir", "a completer"})

#: ``JDV_J02_...`` / ``JDV_J66-...`` -> ``J02`` / ``J66``: the short id other modules use.
SHORT_ID_RE = re.compile(r"^JDV[_-](J\d+)(?:[_-]|$)", re.IGNORECASE)

#: Names of value sets specific to the DMP (``..._DMP`` / ``...-DMP``): for these the DMP CSV list, taken from
#: the NOS terminology IG, takes precedence over a TestContenuCDA SVS file of the same OID or short id.
DMP_NAME_RE = re.compile(r"[_-]DMP$", re.IGNORECASE)
