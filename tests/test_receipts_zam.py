"""DSN/MDN receipts (RFC 3464 / RFC 8098) and the ZAM business acks built from them (cisis-facts §7.4, §8)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from gateway.delivery.mssante.receipts import parse_receipt, zams_for
from gateway.formats.hl7v2.er7 import parse_message
from gateway.formats.hl7v2.zam import build_zam

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS_Z02 = SHARED / "corpus" / "hl7v2" / "ansforge__V2.1_ZAM_Z02_reception_MSS.hl7"
ORIGINAL_ID = "<0123456789abcdef@pfi.example.mssante.fr>"
HEADER = dict(
    original_control_id="015",
    sending_app="PFI-X",
    sending_facility="Organisation-X",
    receiving_app="SIL-Y",
    receiving_facility="labo",
    now=datetime(2021, 6, 6, 9, 34),
)


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def dsn(recipient_blocks: str, *, returned: str = "headers") -> bytes:
    original_headers = (
        "From: pfi@hopital.example.mssante.fr\n"
        "To: adam.hoda@test-ci-sis.mssante.fr\n"
        "Subject: XDM/1.0/DDM\n"
        f"Message-ID: {ORIGINAL_ID}\n"
    )
    if returned == "headers":
        third = f"Content-Type: text/rfc822-headers\n\n{original_headers}\n"
    else:
        third = (
            f"Content-Type: message/rfc822\n\n{original_headers}"
            "Content-Type: text/plain; charset=utf-8\n\nCorps confidentiel du message original.\n"
        )
    return _crlf(
        "Return-Path: <>\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.test-ci-sis.mssante.fr>\n"
        "To: pfi@hopital.example.mssante.fr\n"
        "Subject: Delivery Status Notification\n"
        "Message-ID: <dsn-1@mx.test-ci-sis.mssante.fr>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"\n'
        "\n"
        "--BOUND\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "This is the mail system at host mx.test-ci-sis.mssante.fr.\n"
        "\n"
        "--BOUND\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.test-ci-sis.mssante.fr\n"
        "Original-Envelope-Id: job-42\n"
        "Arrival-Date: Sun, 6 Jun 2021 09:33:00 +0200\n"
        "\n"
        f"{recipient_blocks}"
        "\n"
        "--BOUND\n"
        f"{third}"
        "--BOUND--\n"
    )


DELIVERED = (
    "Final-Recipient: rfc822; adam.hoda@test-ci-sis.mssante.fr\n"
    "Original-Recipient: rfc822;adam.hoda@test-ci-sis.mssante.fr\n"
    "Action: delivered\n"
    "Status: 2.0.0\n"
    "Remote-MTA: dns; mailbox.test-ci-sis.mssante.fr\n"
    "Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4F2\n"
)
FAILED = (
    "Final-Recipient: rfc822; inconnu@test-ci-sis.mssante.fr\n"
    "Action: failed\n"
    "Status: 5.1.1\n"
    "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
)
DELAYED = (
    "Final-Recipient: rfc822; lent@test-ci-sis.mssante.fr\n"
    "Action: delayed\n"
    "Status: 4.4.1\n"
    "Diagnostic-Code: smtp; 421 4.4.1 connection timed out\n"
    "Will-Retry-Until: Tue, 8 Jun 2021 09:33:00 +0200\n"
)


def mdn(disposition: str) -> bytes:
    return _crlf(
        "From: adam.hoda@test-ci-sis.mssante.fr\n"
        "To: pfi@hopital.example.mssante.fr\n"
        "Subject: XDM/1.0/DDM+accuse\n"
        "Message-ID: <mdn-1@test-ci-sis.mssante.fr>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=disposition-notification;\n"
        '\tboundary="MDNB"\n'
        "\n"
        "--MDNB\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        "Le message a été traité.\n"
        "\n"
        "--MDNB\n"
        "Content-Type: message/disposition-notification\n"
        "\n"
        "Reporting-UA: lps.example; LPS 1.0\n"
        "Original-Recipient: rfc822; adam.hoda@test-ci-sis.mssante.fr\n"
        "Final-Recipient: rfc822; adam.hoda@test-ci-sis.mssante.fr\n"
        f"Original-Message-ID: {ORIGINAL_ID}\n"
        f"Disposition: {disposition}\n"
        "\n"
        "--MDNB\n"
        "Content-Type: text/rfc822-headers\n"
        "\n"
        f"Message-ID: {ORIGINAL_ID}\n"
        "Subject: XDM/1.0/DDM\n"
        "\n"
        "--MDNB--\n"
    )


# --- DSN ---------------------------------------------------------------------------------------------------


def test_dsn_success():
    r = parse_receipt(dsn(DELIVERED))
    assert r is not None and r.kind == "dsn"
    assert r.original_message_id == ORIGINAL_ID
    assert r.envelope_id == "job-42"
    assert r.recipients == [("adam.hoda@test-ci-sis.mssante.fr", True, "250", "2.0.0")]
    assert r.error_code is None and r.recipients[0].final


def test_dsn_failure_and_delay_per_recipient():
    r = parse_receipt(dsn(FAILED + "\n" + DELAYED, returned="message"))
    assert r is not None and r.original_message_id == ORIGINAL_ID
    failed, delayed = r.recipients
    assert failed == ("inconnu@test-ci-sis.mssante.fr", False, "550", "5.1.1") and failed.final
    assert delayed == ("lent@test-ci-sis.mssante.fr", False, "421", "4.4.1") and not delayed.final
    assert r.error_code == "550" and r.error_text == "550 5.1.1 user unknown"
    assert "Corps confidentiel" not in repr(r) and "inconnu" not in repr(r)


def test_dsn_to_zam_z02_ok():
    (zam,) = zams_for(parse_receipt(dsn(DELIVERED)), **HEADER)
    msg = parse_message(zam.encode("utf-8"))
    msh = msg.msh
    assert (
        msh.field(9) == "ZAM^Z02^ZAM_Z01" and msh.get(12) == "2.6" and msh.field(21) == "2.1^CISIS_CDA_HL7_V2"
    )
    assert msh.get(18) == "UNICODE UTF-8" and msh.get(7) == "20210606093400"
    assert [s.id for s in msg.segments] == ["MSH", "EVN", "OBX", "OBX"]
    status, address = msg.all("OBX")
    assert status.get(1) == "1" and status.get(2) == "CWE"
    assert status.field(3) == "ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM"
    assert (
        status.get(4) == "015" and status.field(5) == "Y^^expandedYes-NoIndicator" and status.get(11) == "F"
    )
    assert address.get(2) == "XTN" and address.get(3) == "DESTINATAIRE_MSS"
    assert address.field(5) == "^^X.400^adam.hoda@test-ci-sis.mssante.fr"


def test_dsn_to_zam_z02_failure_carries_the_smtp_code_and_skips_delayed():
    zams = zams_for(parse_receipt(dsn(FAILED + "\n" + DELAYED)), **HEADER)
    assert len(zams) == 1  # the delayed recipient gets its ZAM when a final DSN arrives
    msg = parse_message(zams[0].encode("utf-8"))
    status, address = msg.all("OBX")
    assert status.get(4) == "015" and status.get(5) == "N"
    assert address.get(5, 1, 4) == "inconnu@test-ci-sis.mssante.fr"
    err = msg.segment("ERR")
    assert err.field(3) == "207^Application error^messageErrorCondition" and err.get(4) == "E"
    assert err.get(5) == "550" and err.get(5, 1, 2) == "550 5.1.1 user unknown"
    assert err.get(5, 1, 3) == "SMTPERRORCODE"


# --- MDN ---------------------------------------------------------------------------------------------------


def test_mdn_processed():
    r = parse_receipt(mdn("automatic-action/MDN-sent-automatically; processed"))
    assert r is not None and r.kind == "mdn"
    assert r.original_message_id == ORIGINAL_ID
    assert r.recipients == [("adam.hoda@test-ci-sis.mssante.fr", True, None, None)]
    assert r.disposition == "automatic-action/MDN-sent-automatically; processed" and r.error_code is None


def test_mdn_processed_error():
    r = parse_receipt(mdn("automatic-action/MDN-sent-automatically; processed/Error: 906^Erreur Autre"))
    assert r is not None and r.recipients[0].ok is False
    assert (r.error_code, r.error_text) == ("906", "Erreur Autre")


def test_mdn_to_zam_z03():
    (ok,) = zams_for(parse_receipt(mdn("automatic-action/MDN-sent-automatically; processed")), **HEADER)
    msg = parse_message(ok.encode("utf-8"))
    assert msg.msh.field(9) == "ZAM^Z03^ZAM_Z01"
    status, reader = msg.all("OBX")
    assert status.get(3) == "ACK_LECTURE_MSS" and status.get(4) == "015" and status.get(5) == "Y"
    assert reader.get(2) == "XTN" and reader.get(3) == "LECTEUR_MSS"
    assert reader.field(5) == "^^X.400^adam.hoda@test-ci-sis.mssante.fr"
    assert msg.segment("ERR") is None
    receipt = parse_receipt(mdn("automatic-action/MDN-sent-automatically; processed/Error: 906^Erreur Autre"))
    (ko,) = zams_for(receipt, **HEADER)
    err = parse_message(ko.encode("utf-8")).segment("ERR")
    assert err.field(5) == "906^Erreur Autre^applicationErrorCode"


# --- not receipts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"From: a@b\r\nSubject: hi\r\n\r\nbody\r\n",
        b'Content-Type: multipart/report; report-type=other; boundary="x"\r\n\r\n--x\r\n\r\nz\r\n--x--\r\n',
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="x"\r\n\r\n--x\r\n\r\nz\r\n--x--',
        b"\x00\xff garbage",
    ],
)
def test_anything_else_is_not_a_receipt(raw):
    assert parse_receipt(raw) is None


# --- ZAM writer --------------------------------------------------------------------------------------------


def test_zam_escapes_and_z01_error():
    zam = build_zam(
        "Z01",
        ok=False,
        error_code="DMPClosed",
        error_text="DMP fermé | ^ \r\n",
        control_id="ZAM|1",
        **HEADER,
    )
    assert zam.endswith("\r") and "\n" not in zam
    msg = parse_message(zam.encode("utf-8"))
    assert msg.msh.get(10) == "ZAM|1" and msg.msh.field(9) == "ZAM^Z01^ZAM_Z01"
    assert [s.id for s in msg.segments] == ["MSH", "EVN", "OBX", "ERR"]
    assert msg.segment("OBX").get(3) == "ACK_RECEPTION_DMP"
    err = msg.segment("ERR")
    assert (
        err.get(5) == "DMPClosed"
        and err.get(5, 1, 2) == "DMP fermé | ^"
        and err.get(5, 1, 3) == "DMP_ERROR_CODE"
    )
    with pytest.raises(ValueError):
        build_zam("Z01", ok=True, address="x@y", **HEADER)


def test_zam_matches_the_ans_z02_example_field_by_field():
    if not CORPUS_Z02.is_file():
        if os.environ.get("CI"):
            pytest.fail("../shared is missing: CI must have the shared reference folder beside the clone")
        pytest.skip("../shared not present")
    ref = parse_message(CORPUS_Z02.read_bytes())
    ours = parse_message(
        build_zam(
            "Z02",
            ok=True,
            address="adam.hoda@test-ci-sis.mssante.fr",
            recipient_id="801234567897",
            control_id="018",
            **HEADER,
        ).encode("utf-8")
    )
    assert [s.id for s in ours.segments] == [s.id for s in ref.segments]
    # MSH-7 (timestamp precision) and EVN-2 (event time) differ by nature; everything else is identical.
    for n in [3, 4, 5, 6, 9, 10, 11, 12, 17, 18, 21]:
        assert ours.msh.field(n) == ref.msh.field(n), f"MSH-{n}"
    for mine, theirs in zip(ours.all("OBX"), ref.all("OBX"), strict=True):
        for n in range(1, 12):
            assert mine.field(n) == theirs.field(n), f"OBX[{theirs.get(1)}]-{n}"
