"""The transmission volet mapping and its core rules, on the ANS examples (conforming CDA swapped in)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.formats.hl7v2.er7 import parse_message
from gateway.formats.hl7v2.transmission import map_transmission, provenance_from_msh
from gateway.model import DocumentAction, Provenance
from gateway.validation.transmission import validate_transmission
from tests.conftest import PS_ONLY, SAMPLES, ans_message, swap_document

IMG = "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"


def mapped(body: bytes):
    message = parse_message(body)
    prov = provenance_from_msh(message, Provenance(message_id="t", received_at=datetime.now(UTC)))
    result = map_transmission(message, prov)
    return message, result, validate_transmission(message, result)


def rules(report) -> list[str]:
    return [f.rule for f in report.errors]


def test_oru_initial_sample_maps_every_part_of_the_volet():
    _, result, report = mapped((SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes())
    sub = result.submission
    assert report.valid and result.report.valid
    assert sub.action is DocumentAction.INITIAL
    assert sub.provenance.control_id == "DEMO-0001"
    assert sub.provenance.profile == "2.1^CISIS_CDA_HL7_V2"
    assert sub.patient.ins == "279035121518989" and sub.patient.ins_oid == "1.2.250.1.213.1.4.10"
    assert sub.patient.identity_status == "VALI" and sub.patient.ins_qualified
    assert sub.patient.birth_family_name == "PAT-TROIS" and sub.patient.birthplace_cog == "63220"
    assert sub.patient_class == "I"
    assert sub.type_code.code == "11502-2"
    assert len(sub.documents) == 1
    meta = sub.documents[0].metadata
    assert meta.unique_id == "1.2.250.1.213.1.1.1.55.2021.6.1"
    assert meta.set_id.root == "1.2.250.1.213.1.1.1.55.2021.6" and meta.version_number == 1
    assert meta.level == "N3"
    flags = sub.flags
    assert (flags.destdmp, flags.destmssanteps, flags.destmssantepat) == (True, True, True)
    assert (flags.masque_ps, flags.invisible_patient, flags.connexion_secrete) == (False, False, False)
    assert flags.ack_reception is True and flags.ack_lecture_mss is True
    assert flags.corpsmail_ps.startswith("Cher confrère")
    # PRT: sender SB (person + organisation), two RCT, one REPLY; the tolerant reading trims 'ASIP-SANTE- PS'
    assert sub.sender.person.id == "801234567866" and sub.sender.person.id_authority == "1.2.250.1.71.4.2.1"
    assert sub.sender.organization.id == "1120459876" and sub.sender.organization.id_type == "FINEG"
    assert [r.address for r in sub.recipients if not r.is_patient] == ["adam.hoda@test-ci-sis.mssante.fr"]
    assert sum(r.is_patient for r in sub.recipients) == 1
    assert sub.reply_to == ["adam.hoda@test-ci-sis.mssante.fr"]
    # the ANS example's patient PRT has a mistyped INS in its address: a warning, the gateway mails <INS>@...
    assert [f.rule for f in report.warnings] == ["TRANS-MSS-PATIENT-ADDRESS"]


@pytest.mark.parametrize(
    ("relative", "action", "orc1"),
    [
        ("ORU/Transmission initiale ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7", DocumentAction.INITIAL, "NW"),
        ("ORU/Remplacement ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7", DocumentAction.REPLACEMENT, "RO"),
        ("ORU/Suppression ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7", DocumentAction.DELETION, "CA"),
        (
            "MDM/Transmission initiale MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7",
            DocumentAction.INITIAL,
            "NW",
        ),
        ("MDM/Remplacement MDM/message_MDM_CR_Radio_RPLC_N1.er7", DocumentAction.REPLACEMENT, "RO"),
        ("MDM/Suppression MDM/message_MDM_CR_Radio_DEL_N1.er7", DocumentAction.DELETION, "CA"),
    ],
)
def test_actions_of_the_ans_examples(relative, action, orc1):
    cda = IMG if relative.startswith("MDM") else "BIO-CR-BIO_2021.01_Microbiologie_V2.xml"
    _, result, report = mapped(swap_document(ans_message(relative), cda, flags=PS_ONLY))
    assert result.submission.action is action
    assert result.orc1 == orc1
    assert "TRANS-ACTION-CONSISTENCY" not in rules(report)
    if action is DocumentAction.REPLACEMENT:
        assert result.submission.replaced_document_id


def test_inconsistent_action_is_an_error_naming_both_places():
    body = (SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes().replace(b"\rORC|NW|", b"\rORC|CA|")
    _, _, report = mapped(body)
    finding = next(f for f in report.errors if f.rule == "TRANS-ACTION-CONSISTENCY")
    assert "OBX-11 says initial" in finding.message and "ORC-1 says deletion" in finding.message


def test_missing_required_flag_and_bad_version_are_reported():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    body = body.replace(b"|2.6|", b"|2.5|", 1)
    lines = [seg for seg in body.split(b"\r") if b"CONNEXION_SECRETE" not in seg]
    _, _, report = mapped(b"\r".join(lines))
    assert "TRANS-VERSION" in rules(report)
    missing = [f for f in report.errors if f.rule == "TRANS-META-MISSING"]
    assert len(missing) == 1 and "CONNEXION_SECRETE" in missing[0].message
    assert report.ack_code() == "AR"  # unsupported version (0357 code 203)


def test_ins_mismatch_and_bad_nir_key():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    body = body.replace(b"PID|||279035121518989^", b"PID|||279035121518988^", 1)
    _, _, report = mapped(body)
    assert {"INS-NIR-KEY", "TRANS-INS-MISMATCH"} <= set(rules(report))
    assert all("279035121518988" not in f.message for f in report.findings)  # no patient data in messages


def test_dmp_needs_sender_and_qualified_identity():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    lines = [seg for seg in body.split(b"\r") if not seg.startswith(b"PRT||UC||SB")]
    body = b"\r".join(lines).replace(b"|N|VALI\r", b"|N|PROV\r")
    _, _, report = mapped(body)
    assert {"TRANS-DMP-SENDER", "TRANS-DMP-INS"} <= set(rules(report))


def test_mssante_ps_needs_a_recipient_address():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    lines = [seg for seg in body.split(b"\r") if not seg.startswith(b"PRT||UC||RCT")]
    _, _, report = mapped(b"\r".join(lines))
    assert "TRANS-MSS-RECIPIENTS" in rules(report)


def test_unpadded_base64_is_repaired_with_a_warning_and_truncated_is_refused():
    # The ANS MDM deletion example lacks the final '=' of its document Base64.
    _, result, _ = mapped(ans_message("MDM/Suppression MDM/message_MDM_CR_Radio_DEL_N1.er7"))
    assert "TRANS-BASE64-PADDING" in [f.rule for f in result.report.warnings]
    assert result.submission.documents  # the document was read
    # The ANS ORU examples carry a CORPSMAIL_PS cut short: 93 Base64 characters cannot be decoded.
    _, result, _ = mapped(ans_message("ORU/Transmission initiale ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"))
    bad = next(f for f in result.report.errors if f.rule == "TRANS-CORPSMAIL")
    assert bad.location == "OBX[12]-5"


def test_non_volet_message_type_is_unsupported():
    body = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X|P|2.5\rEVN|A01\rPID|||1^^^X^PI\r"
    _, result, _ = mapped(body)
    assert result.submission is None
    assert [f.rule for f in result.report.errors] == ["TRANS-MSG-TYPE"]
    assert result.report.errors[0].condition == 200


def _sample04() -> bytes:
    return (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()


def _drop(body: bytes, prefix: bytes) -> bytes:
    return b"\r".join(seg for seg in body.split(b"\r") if not seg.startswith(prefix))


@pytest.mark.parametrize(
    ("mutate", "rule", "location"),
    [
        (lambda b: _drop(b, b"EVN|"), "TRANS-STRUCTURE", "MSH"),
        (lambda b: b.replace(b"\rTXA|", b"\rZZZ|1\rTXA|", 1), "TRANS-STRUCTURE", "ZZZ[1]"),
        (lambda b: b.replace(b"|P|2.6|", b"|X|2.6|", 1), "TRANS-MSH11", "MSH-11"),
        (lambda b: b.replace(b"PV1|1|I|UFNEPH", b"PV1|1||UFNEPH", 1), "TRANS-PV1-2", "PV1-2"),
        (lambda b: b.replace(b"\rTXA|1|", b"\rTXA|2|", 1), "TRANS-TXA1", "TXA-1"),
        (lambda b: b.replace(b"|TEXT|", b"|TX|", 1), "TRANS-TXA3", "TXA-3"),
        (lambda b: b.replace(b"||||AU|", b"||||DO|", 1), "TRANS-TXA17", "TXA-17"),
        (lambda b: b.replace(b"|1.2.250.1.213.1.1.1.45.2024.2.1|", b"|1.2.3|", 1), "TRANS-TXA12", "TXA-12"),
        (lambda b: b.replace(b"^text^XML^Base64^", b"^text^PDF^Base64^", 1), "TRANS-ED-SUBTYPE", "OBX[1]-5"),
        (
            lambda b: b.replace(
                b"OBR|1|||18748-4^CR d'imagerie m\xc3\xa9dicale^LN",
                b"OBR|1|||18748-4^CR d'imagerie m\xc3\xa9dicale^",
                1,
            ),
            "TRANS-CODE-SYSTEM",
            "OBR-4",
        ),
        (
            lambda b: b.replace(
                b"|||Organisation-Y^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985", b"|||", 1
            ),
            "TRANS-DMP-SENDER-ORG",
            "PRT-8",
        ),
    ],
)
def test_structure_and_field_rules_on_mutations_of_a_valid_mdm(mutate, rule, location):
    body = _sample04()
    _, _, clean = mapped(body)
    assert clean.valid, [f.rule for f in clean.errors]
    _, _, report = mapped(mutate(body))
    found = [f for f in report.errors if f.rule == rule]
    assert found, [f.rule for f in report.errors]
    assert found[0].location == location


def test_ans_published_examples_are_refused_for_their_2021_cdas_with_structuration_minimale_rules():
    from gateway.routing import load_routes
    from gateway.runtime.pipeline import Envelope, Pipeline
    from tests.conftest import ROOT

    pipeline = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")
    out = pipeline.process(
        Envelope(body=ans_message("MDM/Transmission initiale MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7"))
    )
    assert set(out.report.rule_codes()) == {"STRUCMIN-NAME-QUALIFIER", "STRUCMIN-SETID"}
