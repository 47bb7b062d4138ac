"""Builds the demo's sample messages (gateway/demo/samples/) from the ANS material in ../shared.

The ANS HL7v2 examples embed 2021-era CDAs that fail the current structuration minimale schematron
(reference/official-verdicts.csv), so each sample keeps the ANS message as written and swaps in a conforming
ANS example CDA (TestContenuCDA 3.0, official verdict "pass"). Run from the repository root:

    .venv/bin/python tools/build_samples.py
"""

from __future__ import annotations

import base64
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "cisis"
HL7 = SHARED / "hl7v2/ansforge-hl7V2-exemples/Vague 2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
CDA = SHARED / "testcontenucda-3.0/ExemplesCDA"
OUT = ROOT / "gateway/demo/samples"
#: The ANS ORU examples carry a CORPSMAIL_PS whose Base64 is cut short (93 characters: no Base64 text has that
#: length), which the gateway rightly refuses (TRANS-CORPSMAIL). The samples use the full text of the same
#: body as the ANS MDM examples encode it.
CORPSMAIL_PS = (
    "Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA=="
)


def segments(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]


def with_document(
    segs: list[str],
    cda: Path,
    control_id: str,
    *,
    flags: dict[str, str] | None = None,
    txa12: str | None = None,
) -> str:
    data = base64.b64encode(cda.read_bytes()).decode("ascii")
    out = []
    for seg in segs:
        fields = seg.split("|")
        if fields[0] == "MSH":
            fields[9] = control_id
        elif fields[0] == "OBX" and fields[2] == "ED" and "MetaDMPMSS" not in fields[3]:
            comps = fields[5].split("^")
            comps[4] = data
            fields[5] = "^".join(comps)
        elif fields[0] == "OBX" and fields[3].startswith("CORPSMAIL_PS^"):
            comps = fields[5].split("^")
            comps[4] = CORPSMAIL_PS
            fields[5] = "^".join(comps)
        elif fields[0] == "OBX" and flags and fields[3].split("^")[0] in flags:
            fields[5] = flags[fields[3].split("^")[0]] + "^^expandedYes-NoIndicator"
        elif fields[0] == "TXA" and txa12:
            fields[12] = txa12
        out.append("|".join(fields))
    return "\r".join(out) + "\r"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    oru_init = segments(HL7 / "ORU/Transmission initiale ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7")
    oru_rplc = segments(HL7 / "ORU/Remplacement ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7")
    oru_del = segments(HL7 / "ORU/Suppression ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7")
    mdm_init = segments(HL7 / "MDM/Transmission initiale MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7")
    v1 = CDA / "BIO-CR-BIO_2021.01_Microbiologie_V1.xml"
    v2 = CDA / "BIO-CR-BIO_2021.01_Microbiologie_V2.xml"
    img = CDA / "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"
    samples = {
        "01_ORU_R01_initial_CR-BIO.hl7": with_document(oru_init, v1, "DEMO-0001"),
        "02_ORU_R01_replacement_CR-BIO.hl7": with_document(oru_rplc, v2, "DEMO-0002"),
        # As ANS wrote it: INVISIBLE_REP_LEGAUX=Y and CONNEXION_SECRETE=Y with a PS mail is none of the three
        # legal MSSanté combinations, so the gateway rejects it (rule TRANS-MSS-FLAGS).
        "03_MDM_T02_initial_CR-IMG_illegal_flags.hl7": with_document(
            mdm_init, img, "DEMO-0003", txa12="1.2.250.1.213.1.1.1.45.2024.2.1"
        ),
        # The same with the volet's "PS only" combination: DMP + one mail to the PS recipients.
        "04_MDM_T02_initial_CR-IMG_PS_only.hl7": with_document(
            mdm_init,
            img,
            "DEMO-0004",
            txa12="1.2.250.1.213.1.1.1.45.2024.2.1",
            flags={"INVISIBLE_REP_LEGAUX": "N", "CONNEXION_SECRETE": "N"},
        ),
        "05_ORU_R01_deletion_CR-BIO.hl7": with_document(oru_del, v2, "DEMO-0005"),
    }
    for name, text in samples.items():
        (OUT / name).write_bytes(text.encode("utf-8"))
        print(f"{name}: {len(text)} bytes")


if __name__ == "__main__":
    main()
