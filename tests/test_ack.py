"""HL7 ACK writer (cisis-facts §7.4)."""

from __future__ import annotations

from gateway.formats.hl7v2.ack import build_ack, erl
from gateway.formats.hl7v2.er7 import parse_message
from gateway.model import Severity, ValidationReport

ORIGINAL = parse_message(
    b"MSH|^~\\&|RIS-Y|Organisation-Y|PFI-Y|Organisation-Y|202106060931||MDM^T10^MDM_T02|015|P|2.6|||||FRA|"
    b"UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2\rEVN||20211005\rPID|||1^^^X^PI\r"
)


def test_aa_ack_mirrors_the_header_and_echoes_msh10():
    ack = parse_message(build_ack(ORIGINAL, ValidationReport()))
    msh = ack.msh
    assert (msh.get(3), msh.get(4), msh.get(5), msh.get(6)) == (
        "PFI-Y",
        "Organisation-Y",
        "RIS-Y",
        "Organisation-Y",
    )
    assert msh.get(9) == "ACK" and msh.get(9, 1, 2) == "T10" and msh.get(9, 1, 3) == "ACK"
    assert msh.get(12) == "2.6"
    assert ack.segment("MSA").get(1) == "AA" and ack.segment("MSA").get(2) == "015"
    assert ack.all("ERR") == []


def test_ae_ack_has_one_err_per_finding_with_location_condition_and_rule():
    report = ValidationReport()
    report.add("TRANS-MSS-FLAGS", "OBX[7]-5", "flags | not legal ^ here", condition=207)
    report.add("INS-NIR-KEY", "PID-3", "bad key", condition=102, application_code="905")
    report.add("TRANS-X", "PRT-15", "a warning", severity=Severity.WARNING)
    ack = parse_message(build_ack(ORIGINAL, report))
    assert ack.segment("MSA").get(1) == "AE"
    errs = ack.all("ERR")
    assert len(errs) == 3
    assert errs[0].field(2) == "OBX^7^5" and errs[0].get(3) == "207" and errs[0].get(4) == "E"
    assert errs[0].get(7) == "TRANS-MSS-FLAGS"
    assert errs[0].get(8) == "flags | not legal ^ here"  # delimiters escaped and restored
    assert (
        errs[1].field(2) == "PID^1^3"
        and errs[1].get(5) == "905"
        and errs[1].get(5, 1, 3) == "applicationErrorCode"
    )
    assert errs[2].get(4) == "W"


def test_ar_for_unsupported_version_and_for_unparseable_input():
    report = ValidationReport()
    report.add("TRANS-VERSION", "MSH-12", "wrong version", condition=203)
    assert parse_message(build_ack(ORIGINAL, report)).segment("MSA").get(1) == "AR"
    unreadable = ValidationReport(unreadable=True)
    unreadable.add("ER7-NO-MSH", "segment 1", "no MSH", condition=100)
    ack = parse_message(build_ack(None, unreadable, control_id="XYZ"))
    assert ack.segment("MSA").get(1) == "AR" and ack.segment("MSA").get(2) == "XYZ"


def test_erl_of_locations():
    assert erl("OBX[12]-5") == "OBX^12^5"
    assert erl("MSH-12") == "MSH^1^12"
    assert erl("PRT") == "PRT"
    assert erl("/ClinicalDocument/setId") == ""
