"""Reverse flow (volet LPSMSS): a mail of the BAL applicative carrying IHE_XDM.ZIP -> MDM^T02/T10/T04 for the DPI;
refused mails -> MailRefused with a stable rule; error MDN / error mail back to the sender.

The incoming mails are the gateway's own outgoing mails (``mail.build_mail``) built from ANS example CDAs, so
that the reader is exercised on what a CI-SIS PFI really sends.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.error_mdn import (
    build_error_mail,
    build_error_mdn,
    build_error_notification,
    error_subject,
    refusal_error,
)
from gateway.delivery.mssante.inbound_mail import IncomingMail, MailRefused, read_incoming_mail
from gateway.delivery.mssante.mail import build_mail
from gateway.delivery.mssante.receipts import parse_receipt
from gateway.delivery.mssante.xdm import build_xdm
from gateway.delivery.mssante.xdm_metadata import ACTION_SLOT
from gateway.formats.cda.header import read_cda
from gateway.formats.hl7v2.er7 import Message, parse_message
from gateway.formats.hl7v2.mdm_lps import build_lps_mdm, build_lps_mdms
from gateway.formats.hl7v2.transmission import map_transmission
from gateway.model import (
    Code,
    Content,
    Document,
    DocumentAction,
    DocumentSubmission,
    MetaFlags,
    Organization,
    Participant,
    ParticipantRole,
    Person,
    Provenance,
)
from tests.conftest import ANS_CDA, SHARED, require_shared

PFI = "pfi@chu-x.mssante.fr"  # the sending PFI's BAL applicative (From, Disposition-Notification-To)
BAL = "dpi@hopitala.mssante.fr"  # our BAL applicative (To)
REPLY = "secretariat@chu-x.mssante.fr"
TSH = "BIO-CR-BIO_2024.01_TSH_1.xml"  # structured CR-BIO, INS-NIR test + IPP, no RPLC
N1_PDF = "DOC_NON_STRUCTURE_CDA-R2-N1.xml"  # non-structured CDA with a PDF body, no RPLC
CR_IMG = "IMG_CR_IMG_2024.01.xml"  # structured CR-IMG with relatedDocument RPLC
CR_IMG_N1 = "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"  # N1 PDF with relatedDocument RPLC
INS = "279035121518989"
NOW = datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
APPS = dict(sending_app="PFI", sending_facility="CHU-X", receiving_app="DPI", receiving_facility="CHU-X")
LPS_EXAMPLES = SHARED / "corpus/hl7v2"


def cda_bytes(name: str) -> bytes:
    require_shared()
    return (ANS_CDA / name).read_bytes()


def submission(
    *names: str,
    action: DocumentAction = DocumentAction.INITIAL,
    datas: list[bytes] | None = None,
    extra_confidentiality: list[Code] | None = None,
    mdn: bool = True,
) -> DocumentSubmission:
    datas = datas or [cda_bytes(n) for n in names]
    documents = []
    for data in datas:
        meta = read_cda(data).metadata
        if extra_confidentiality:
            meta = meta.model_copy(update={"confidentiality": meta.confidentiality + extra_confidentiality})
        documents.append(Document(metadata=meta, content=Content(data=data)))
    header = read_cda(datas[0])
    return DocumentSubmission(
        provenance=Provenance(message_id="m-1", received_at=NOW),
        patient=header.patient,
        action=action,
        documents=documents,
        replaced_document_id=(
            header.metadata.replaced_document_id.xds_unique_id()
            if header.metadata.replaced_document_id
            else None
        ),
        flags=MetaFlags(ack_lecture_mss=mdn, corpsmail_ps="Corps du courriel"),
        sender=Participant(
            role=ParticipantRole.SENDER,
            person=Person(id="801234567897", family="BLANC", given="Janet"),
            organization=Organization(name="CH X|Y", id="1750000000", id_type="FINEG"),
        ),
        reply_to=[REPLY],
        patient_class="O",
    )


def outgoing(sub: DocumentSubmission) -> EmailMessage:
    """The gateway's own MSSanté mail for ``sub``, as a receiver parses it (whatever policy built it)."""
    job = DeliveryJob(
        message_id="m-1",
        idempotency_key=f"{sub.documents[0].metadata.unique_id}|{sub.action.value}",
        destination="mssante",
        recipients_kind="ps",
        addresses=[BAL],
        route="test",
        submission=sub,
    )
    return message_from_bytes(build_mail(job, PFI).as_bytes(), policy=policy.default)  # type: ignore[return-value]


def mail_of(*names: str, **kw) -> bytes:
    return outgoing(submission(*names, **kw)).as_bytes()


def not_xml_mail() -> bytes:
    """A mail whose XDM declares a text/xml document that is not XML (metadata of a real CDA, hash of the junk)."""
    sub = submission(TSH)
    doc = sub.documents[0].model_copy(update={"content": Content(data=b"this is not a CDA")})
    return outgoing(sub.model_copy(update={"documents": [doc]})).as_bytes()


def mdm(raw: bytes, **kw) -> tuple[IncomingMail, Message, str]:
    incoming = read_incoming_mail(raw)
    text = build_lps_mdm(incoming, now=NOW, **APPS, **kw)
    return incoming, parse_message(text.encode("utf-8")), text


def obx(message: Message, set_id: int):
    found = [s for s in message.all("OBX") if s.get(1) == str(set_id)]
    assert len(found) == 1
    return found[0]


def replace_xdm(msg: EmailMessage, data: bytes, filename: str = "IHE_XDM.ZIP") -> bytes:
    part = next(p for p in msg.iter_attachments() if p.get_filename() == "IHE_XDM.ZIP")
    part.set_content(data, maintype="application", subtype="zip", disposition="attachment", filename=filename)
    return msg.as_bytes()


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


# --------------------------------------------------------------------------------------------- the MDM


def test_structured_cda_becomes_an_mdm_t02_field_by_field():
    raw = mail_of(TSH)
    incoming, m, _ = mdm(raw)
    cda = cda_bytes(TSH)
    msh = m.msh
    assert msh.get(9) == "MDM" and msh.get(9, 1, 2) == "T02" and msh.get(9, 1, 3) == "MDM_T02"
    assert msh.get(12) == "2.6" and msh.get(17) == "FRA" and msh.get(18) == "UNICODE UTF-8"
    assert msh.field(21) == "1.1^CISIS_CDA_HL7_LPS"
    assert (msh.get(3), msh.get(5), msh.get(7)) == ("PFI", "DPI", "20240301103000")
    pid = m.segment("PID")
    assert pid.get(3) == INS and pid.get(3, 1, 4, 1) == "ASIP-SANTE-INS-NIR"
    assert pid.get(3, 1, 4, 2) == "1.2.250.1.213.1.4.10" and pid.get(3, 1, 5) == "INS"
    assert (
        pid.get(3, 2) == "1234567890121"
        and pid.get(3, 2, 4, 2) == "1.2.3.4.567.8.9.10"
        and pid.get(3, 2, 5) == "PI"
    )
    assert pid.components(5) == ["PAT-TROIS", "DOMINIQUE", "DOMINIQUE MARIE-LOUISE", "", "", "", "L"]
    assert pid.get(5, 2, 7) == "D"
    assert (pid.get(7), pid.get(8), pid.get(11, 1, 7), pid.get(11, 1, 9)) == ("19790328", "F", "BDL", "51215")
    assert pid.get(32) == ""  # the CDA does not say how the identity was checked
    assert m.segment("PV1").get(2) == "N"
    assert m.segment("ORC").get(1) == "NW"
    assert m.segment("OBR").components(4) == ["11502-2", "CR d'examens biologiques", "LN"]
    txa = m.segment("TXA")
    assert (txa.get(1), txa.get(2), txa.get(3), txa.get(17)) == ("1", "11502-2", "TEXT", "AU")
    assert txa.get(12) == "1.2.250.1.213.1.1.1.55.2024.9.1" and txa.get(13) == ""
    doc = obx(m, 1)
    assert doc.get(2) == "ED" and doc.components(3) == ["11502-2", "CR d'examens biologiques", "LN"]
    assert [doc.get(5, 1, i) for i in (2, 3, 4)] == ["text", "XML", "Base64"]
    assert base64.b64decode(doc.get(5, 1, 5)) == cda  # the CDA travels byte for byte
    assert doc.get(11) == "F"
    sb, rct, reply = m.all("PRT")
    assert sb.components(4) == ["SB", "Send by", "participation"] and sb.get(2) == "UC"
    assert sb.get(15, 1, 3) == "X.400" and sb.get(15, 1, 4) == PFI
    assert (
        sb.get(5) == "801234567897"
        and sb.get(5, 1, 2) == "BLANC"
        and sb.get(5, 1, 9, 2) == "1.2.250.1.71.4.2.1"
    )
    assert sb.get(8) == "CH X|Y" and sb.get(8, 1, 10) == "1750000000"  # XDM author, '|' escaped on the way
    assert rct.get(4) == "RCT" and rct.get(15, 1, 4) == BAL
    assert reply.get(4) == "REPLY" and reply.get(15, 1, 4) == REPLY
    mail_obx = obx(m, 2)
    assert mail_obx.get(2) == "ED" and mail_obx.get(11) == "F"
    assert mail_obx.get(3, 1, 1) == incoming.message_id and mail_obx.get(3, 1, 1).startswith("<")
    assert mail_obx.get(3, 1, 2) == "XDM/1.0/DDM CR d'examens biologiques"
    assert base64.b64decode(mail_obx.get(5, 1, 5)).decode("utf-8") == "Corps du courriel"
    metas = [obx(m, n) for n in (3, 4, 5, 6)]
    assert [s.get(3) for s in metas] == [
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REP_LEGAUX",
        "MODIF_CONF_CODE",
    ]
    assert {s.get(3, 1, 3) for s in metas} == {"MetaDMPMSS"} and {s.get(2) for s in metas} == {"CWE"}
    assert [s.field(5) for s in metas] == ["N^^expandedYes-NoIndicator"] * 4
    assert m.warnings == []


def test_segments_and_fixed_values_mirror_the_ans_lps_examples():
    require_shared()
    t10 = parse_message((LPS_EXAMPLES / "ansforge__LPS_MSS_V1.1_MDM_T10_RPLC_N1_Base64.er7").read_bytes())
    t02 = parse_message((LPS_EXAMPLES / "ansforge__LPS_MSS_V1.0_MDM_T02_DocB64.hl7").read_bytes())
    _, ours, _ = mdm(mail_of(CR_IMG, action=DocumentAction.REPLACEMENT))
    ids = [s.id for s in ours.segments]
    assert ids == [s.id for s in t10.segments]
    # The T02 example adds an ACK_LECTURE OBX the volet's tables do not list (cisis-facts §7.4: four flags).
    assert ids == [s.id for s in t02.segments][:-1]
    assert ours.msh.field(9) == t10.msh.field(9) and ours.msh.field(21) == t10.msh.field(21)
    assert ours.msh.field(12) == t10.msh.field(12) and ours.msh.field(18) == t10.msh.field(18)
    assert ours.segment("PV1").field(2) == t10.segment("PV1").field(2) == "N"
    assert ours.segment("ORC").get(1) == t10.segment("ORC").get(1) == "RO"
    assert ours.segment("TXA").get(17) == t10.segment("TXA").get(17) == "AU"
    assert obx(ours, 1).get(11) == obx(t10, 1).get(11) == "C"
    assert obx(ours, 1).field(5)[:18] == obx(t10, 1).field(5)[:18] == "^text^XML^Base64^P"
    for n in (3, 4, 5, 6):
        assert obx(ours, n).components(3) == obx(t10, n).components(3)
        assert obx(ours, n).get(5, 1, 3) == obx(t10, n).get(5, 1, 3) == "expandedYes-NoIndicator"
    assert [p.components(4)[0] for p in ours.all("PRT")] == [p.get(4) for p in t10.all("PRT")]
    # Same body, same OBX-5 as the ANS example: "Corps du courriel".
    assert obx(ours, 2).field(5) == obx(t02, 2).field(5) == "^text^^Base64^Q29ycHMgZHUgY291cnJpZWw="


def test_rfc822_reading_carries_the_whole_mail():
    raw = mail_of(TSH)
    _, m, _ = mdm(raw, mail_obx="rfc822")
    mail_obx = obx(m, 2)
    assert mail_obx.get(5, 1, 2) == "text" and mail_obx.get(5, 1, 3) == "RFC822"
    assert base64.b64decode(mail_obx.get(5, 1, 5)) == raw
    with pytest.raises(ValueError):
        build_lps_mdm(read_incoming_mail(raw), mail_obx="eml", **APPS)  # type: ignore[arg-type]


def test_n1_pdf_document_and_its_pdf_attachment():
    raw = mail_of(N1_PDF)
    incoming, m, _ = mdm(raw)
    (doc,) = incoming.documents
    assert doc.header.metadata.level == "N1" and doc.action is DocumentAction.INITIAL
    assert len(incoming.pdfs) == 1 and incoming.pdfs[0].data.startswith(b"%PDF")
    assert incoming.xdm.filename == "IHE_XDM.ZIP" and incoming.headers.x_mss["X-MSS-CODECDA"] == ["11502-2"]
    assert base64.b64decode(obx(m, 1).get(5, 1, 5)) == cda_bytes(N1_PDF)
    assert m.msh.get(9, 1, 2) == "T02" and obx(m, 1).get(11) == "F"


def test_replacement_announced_by_the_xdm_action_slot():
    incoming, m, _ = mdm(mail_of(CR_IMG, action=DocumentAction.REPLACEMENT))
    (doc,) = incoming.documents
    assert doc.action_source == "xdm" and doc.entry.slots[ACTION_SLOT] == ["C"]
    assert m.msh.get(9, 1, 2) == "T10" and m.segment("ORC").get(1) == "RO" and obx(m, 1).get(11) == "C"
    assert m.segment("TXA").get(13) == "90E1C8EC-F951-4B26-A305-A34848818DD6"


def test_replacement_read_from_the_cda_when_the_xdm_says_nothing():
    # An initial submission writes no action slot; the N1 CR-IMG replaces a parent document (RPLC).
    incoming, m, _ = mdm(mail_of(CR_IMG_N1, action=DocumentAction.INITIAL))
    assert ACTION_SLOT not in incoming.documents[0].entry.slots
    assert incoming.documents[0].action_source == "cda"
    assert m.msh.get(9, 1, 2) == "T10" and m.segment("TXA").get(13) == "90E1C8EC-F951-4B26-A305-A34848818DD6"
    # When the wiring trusts the action slot alone, the same mail is an initial transmission.
    only_slot = read_incoming_mail(mail_of(CR_IMG_N1), replacement_from_cda=False)
    assert only_slot.documents[0].action is DocumentAction.INITIAL
    assert only_slot.documents[0].action_source == "default"
    assert parse_message(build_lps_mdm(only_slot, **APPS)).segment("TXA").get(13) == ""
    # ... but a replacement slot still needs the CDA's RPLC, and gets it.
    slot_c = read_incoming_mail(
        mail_of(CR_IMG, action=DocumentAction.REPLACEMENT), replacement_from_cda=False
    )
    assert slot_c.documents[0].action is DocumentAction.REPLACEMENT


def test_deletion():
    incoming, m, _ = mdm(mail_of(CR_IMG, action=DocumentAction.DELETION))
    assert incoming.documents[0].action is DocumentAction.DELETION
    assert (
        m.msh.field(9) == "MDM^T04^MDM_T02" and m.segment("ORC").get(1) == "CA" and obx(m, 1).get(11) == "D"
    )
    assert m.segment("TXA").get(12) == read_cda(cda_bytes(CR_IMG)).metadata.document_id.root
    assert m.segment("TXA").get(13) == ""


def test_document_id_with_extension_gives_the_ei_of_the_volet():
    data = cda_bytes(TSH).replace(
        b'<id root="1.2.250.1.213.1.1.1.55.2024.9.1"/>',
        b'<id root="1.2.250.2345.3245.13" extension="58132"/>',
    )
    _, m, _ = mdm(mail_of(datas=[data]))
    assert m.segment("TXA").field(12) == "58132^^1.2.250.2345.3245.13^ISO"


def test_masking_flags_come_from_the_xdm_confidentiality_codes():
    masks = [
        Code(code="INVISIBLE_PATIENT", code_system="1.2.250.1.213.1.1.4.13"),
        Code(code="INVISIBLE_REPRESENTANTS_LEGAUX", code_system="1.2.250.1.213.1.1.4.13"),
    ]
    incoming, m, _ = mdm(mail_of(TSH, extra_confidentiality=masks))
    assert [c.code for c in incoming.documents[0].confidentiality] == ["N", *(c.code for c in masks)]
    assert [obx(m, n).get(5) for n in (3, 4, 5, 6)] == ["N", "Y", "Y", "N"]


def test_every_field_is_escaped():
    msg = outgoing(submission(TSH))
    del msg["Subject"]
    msg["Subject"] = "XDM/1.0/DDM a|b^c~d\\e&f"
    _, m, text = mdm(msg.as_bytes())
    assert obx(m, 2).get(3, 1, 2) == "XDM/1.0/DDM a|b^c~d\\e&f"
    # No segment was split open: the same 16 segments as without delimiters in the subject.
    assert [line[:4] for line in text.split("\r") if line] == [
        *("MSH|", "EVN|", "PID|", "PV1|", "ORC|", "OBR|", "TXA|", "OBX|"),
        *("PRT|", "PRT|", "PRT|", "OBX|", "OBX|", "OBX|", "OBX|", "OBX|"),
    ]


def test_the_gateway_transmission_reader_reads_the_mdm():
    raw = mail_of(CR_IMG, action=DocumentAction.REPLACEMENT)
    _, m, _ = mdm(raw)
    read = map_transmission(m, Provenance(message_id="x", received_at=NOW))
    sub = read.submission
    assert sub is not None and sub.action is DocumentAction.REPLACEMENT
    assert sub.patient.ins == INS and sub.patient.ins_oid == "1.2.250.1.213.1.4.10"
    assert sub.patient.birth_family_name == "PAT-TROIS" and sub.patient_class == "N"
    assert sub.documents[0].content.data == cda_bytes(CR_IMG)
    assert (
        sub.sender.address == PFI and [r.address for r in sub.recipients] == [BAL] and sub.reply_to == [REPLY]
    )
    assert (sub.flags.masque_ps, sub.flags.invisible_patient, sub.flags.modif_conf_code) == (
        False,
        False,
        False,
    )
    assert sub.replaced_document_id == "90E1C8EC-F951-4B26-A305-A34848818DD6"
    assert read.orc1 == "RO" and read.obx11 == "C"


def test_one_mdm_per_document_and_stable_control_ids():
    raw = mail_of(TSH, "BIO-CR-BIO_2024.01_TSH_2.xml")
    incoming = read_incoming_mail(raw)
    assert len(incoming.documents) == 2
    with pytest.raises(ValueError, match="build_lps_mdms"):
        build_lps_mdm(incoming, **APPS)
    first, second = (parse_message(t) for t in build_lps_mdms(incoming, now=NOW, **APPS))
    assert first.segment("TXA").get(12) == "1.2.250.1.213.1.1.1.55.2024.9.1"
    assert second.segment("TXA").get(12) == "1.2.250.1.213.1.1.1.55.2024.10.1"
    assert first.control_id != second.control_id
    again = parse_message(
        build_lps_mdms(read_incoming_mail(raw), now=datetime(2025, 1, 1, tzinfo=UTC), **APPS)[0]
    )
    assert again.control_id == first.control_id  # a redelivered mail gives the same MSH-10
    given = [parse_message(t).control_id for t in build_lps_mdms(incoming, control_id="C9", **APPS)]
    assert given == ["C9-1", "C9-2"]


def test_reprs_carry_no_patient_data():
    raw = mail_of(TSH)
    incoming = read_incoming_mail(raw)
    try:
        read_incoming_mail(not_xml_mail())
    except MailRefused as exc:
        refused = exc
    texts = [
        repr(incoming),
        repr(incoming.headers),
        repr(incoming.documents),
        repr(incoming.xdm),
        repr(refused),
    ]
    for text in texts:
        for secret in (
            INS,
            "PAT-TROIS",
            "DOMINIQUE",
            "19790328",
            PFI,
            REPLY,
            "Corps du courriel",
            "biologiques",
        ):
            assert secret not in text, (secret, text)
    assert "initial" in repr(incoming) and "MSS-IN-CDA-XML-NOT-WELL-FORMED" in repr(refused)


# --------------------------------------------------------------------------------------------- refusals


def refused(raw: bytes, **kw) -> MailRefused:
    with pytest.raises(MailRefused) as info:
        read_incoming_mail(raw, **kw)
    return info.value


def test_mail_without_attachment_is_refused_and_can_be_answered():
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = PFI, BAL, "XDM/1.0/DDM test", "<a@b>"
    msg.set_content("pas de pièce jointe")
    exc = refused(msg.as_bytes())
    assert exc.rule == "MSS-IN-NO-XDM" and exc.location == "/"
    assert exc.notifiable and exc.headers.sender == PFI and exc.headers.message_id == "<a@b>"


def test_zip_slip_is_refused():
    msg = outgoing(submission(TSH))
    entries = zip_entries(build_xdm(submission(TSH), sender_label=PFI))
    entries["../../etc/cron.d/evil"] = b"* * * * * root sh"
    exc = refused(replace_xdm(msg, zip_of(entries)))
    assert exc.rule == "MSS-IN-XDM-UNSAFE-PATH" and exc.location.startswith("IHE_XDM.ZIP > ../../etc")


def test_zip_bomb_is_refused_before_it_is_inflated():
    msg = outgoing(submission(TSH))
    entries = zip_entries(build_xdm(submission(TSH), sender_label=PFI))
    entries["IHE_XDM/SUBSET01/BOMB.XML"] = bytes(33 * 1024 * 1024)  # 33 MiB of zeros: ~33 KB deflated
    raw = replace_xdm(msg, zip_of(entries))
    assert len(raw) < 200_000
    assert refused(raw).rule == "MSS-IN-XDM-ENTRY-TOO-LARGE"
    small = outgoing(submission(TSH))
    assert refused(small.as_bytes(), max_uncompressed_bytes=10_000).rule == "MSS-IN-XDM-ENTRY-TOO-LARGE"


def test_zip_without_metadata_is_refused_when_named_ihe_xdm_and_ignored_otherwise():
    entries = zip_entries(build_xdm(submission(TSH), sender_label=PFI))
    del entries["IHE_XDM/SUBSET01/METADATA.XML"]
    exc = refused(replace_xdm(outgoing(submission(TSH)), zip_of(entries)))
    assert exc.rule == "MSS-IN-XDM-NO-METADATA" and exc.location == "IHE_XDM.ZIP > /"
    # The same zip under another name is just someone's attachment: no XDM in the mail.
    assert (
        refused(replace_xdm(outgoing(submission(TSH)), zip_of(entries), "photos.zip")).rule == "MSS-IN-NO-XDM"
    )


def test_a_zip_with_another_name_is_accepted_when_it_is_xdm():
    incoming = read_incoming_mail(
        replace_xdm(outgoing(submission(TSH)), build_xdm(submission(TSH), sender_label=PFI), "envoi.zip")
    )
    assert incoming.xdm.filename == "envoi.zip" and len(incoming.documents) == 1


def test_cda_that_is_not_xml_is_refused_with_its_place():
    exc = refused(not_xml_mail())
    assert exc.rule == "MSS-IN-CDA-XML-NOT-WELL-FORMED"
    assert exc.location.startswith("IHE_XDM.ZIP > IHE_XDM/SUBSET01/DOC0001.XML > ")


def test_mail_over_the_size_limit_is_refused_with_its_headers():
    raw = mail_of(TSH)
    exc = refused(raw, max_bytes=len(raw) - 1)
    assert exc.rule == "MSS-IN-TOO-LARGE" and exc.notifiable
    assert exc.headers.message_id == message_from_bytes(raw, policy=policy.default)["Message-ID"]
    assert exc.headers.disposition_notification_to == [PFI]


@pytest.mark.parametrize(
    "raw", [b"", b"   \r\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xfe\x00garbage"]
)
def test_non_mime_garbage_is_refused_silently(raw):
    exc = refused(raw)
    assert exc.rule == "MSS-IN-NOT-MIME" and not exc.notifiable


def test_a_report_is_refused_and_never_answered():
    raw = mail_of(TSH)
    report = build_error_mdn(read_incoming_mail(raw), sender=BAL, error_code="906", error_text="x").as_bytes()
    exc = refused(report)
    assert exc.rule == "MSS-IN-REPORT" and not exc.notifiable


def test_patient_of_the_xdm_differing_from_the_cda_is_refused():
    sub = submission(TSH)
    sub = sub.model_copy(update={"patient": sub.patient.model_copy(update={"ins": "162018885045327"})})
    assert refused(outgoing(sub).as_bytes()).rule == "MSS-IN-PATIENT-MISMATCH"


def test_replacement_without_a_replaced_document_is_refused():
    exc = refused(mail_of(TSH, action=DocumentAction.REPLACEMENT))
    assert exc.rule == "MSS-IN-REPLACEMENT-NO-PARENT" and exc.location.endswith(
        "/ClinicalDocument/relatedDocument"
    )


def test_unknown_action_value_is_refused():
    sub = submission(CR_IMG, action=DocumentAction.REPLACEMENT)
    entries = zip_entries(build_xdm(sub, sender_label=PFI))
    metadata = entries["IHE_XDM/SUBSET01/METADATA.XML"].decode()
    slot = re.compile(rf'(<rim:Slot name="{re.escape(ACTION_SLOT)}">\s*<rim:ValueList>\s*<rim:Value>)C<')
    assert slot.search(metadata)
    entries["IHE_XDM/SUBSET01/METADATA.XML"] = slot.sub(r"\1X<", metadata).encode()
    assert refused(replace_xdm(outgoing(sub), zip_of(entries))).rule == "MSS-IN-XDM-ACTION"


# --------------------------------------------------------------------------------------------- error MDN


def parts_of(mail: EmailMessage) -> list[str]:
    return [p.get_content_type() for p in mail.get_payload()]


def test_error_mdn_round_trips_through_parse_receipt():
    raw = mail_of(TSH)
    incoming = read_incoming_mail(raw)
    mdn = build_error_mdn(
        incoming, sender=BAL, error_code="902", error_text="Identifiant patient inconnu", now=NOW
    )
    data = mdn.as_bytes()
    receipt = parse_receipt(data)
    assert receipt is not None and receipt.kind == "mdn"
    assert (receipt.error_code, receipt.error_text) == ("902", "Identifiant patient inconnu")
    assert receipt.original_message_id == incoming.message_id
    assert [(r.address, r.ok) for r in receipt.recipients] == [(BAL, False)]
    back = message_from_bytes(data, policy=policy.default)
    assert back["Subject"] == "[KO Intégration système !][902] XDM/1.0/DDM+CR d'examens biologiques"
    assert back["To"] == PFI  # Disposition-Notification-To wins over Reply-To
    assert back.get_content_type() == "multipart/report"
    assert back.get_param("report-type") == "disposition-notification"
    assert parts_of(back) == [
        "text/plain",
        "message/disposition-notification",
        "message/rfc822",
        "application/zip",
    ]
    fields = back.get_payload()[1].get_payload()
    fields = fields if isinstance(fields, str) else "".join(p.as_string() for p in fields)
    assert "Reporting-UA: hopitala.mssante.fr; cisis-gateway" in fields
    assert f"Final-Recipient: rfc822; {BAL}" in fields and f"Original-Recipient: rfc822; {BAL}" in fields
    human = back.get_payload()[0].get_content()
    assert "pour la raison suivante : Identifiant patient inconnu" in human and "Code d'erreur : 902" in human
    assert back["Auto-Submitted"] == "auto-replied" and back["In-Reply-To"] == incoming.message_id
    again = build_error_mdn(incoming, sender=BAL, error_code="902", error_text="Identifiant patient inconnu")
    assert again["Message-ID"] == mdn["Message-ID"]  # a redelivered refusal is recognisable


def test_error_mdn_keeps_the_machine_part_ascii():
    incoming = read_incoming_mail(mail_of(TSH))
    mdn = build_error_mdn(incoming, sender=BAL, error_code="901", error_text="Auteur non autorisé")
    receipt = parse_receipt(mdn.as_bytes())
    assert (receipt.error_code, receipt.error_text) == ("901", "Auteur non autorise")
    assert "Auteur non autorisé" in mdn.get_payload()[0].get_content()


def test_error_mdn_for_a_refused_mail_from_its_headers():
    raw = not_xml_mail()
    exc = refused(raw)
    code, text = refusal_error(exc)
    assert code == "906" and text == "Document CDA illisible (MSS-IN-CDA-XML-NOT-WELL-FORMED)"
    receipt = parse_receipt(
        build_error_mdn(exc.headers, sender=BAL, error_code=code, error_text=text, original=raw).as_bytes()
    )
    assert receipt.error_code == "906" and "MSS-IN-CDA-XML-NOT-WELL-FORMED" in receipt.error_text
    assert receipt.original_message_id == exc.headers.message_id


def test_error_mdn_for_a_too_large_mail_carries_only_its_headers():
    raw = mail_of(TSH)
    exc = refused(raw, max_bytes=1000)
    mdn = build_error_mdn(
        exc.headers,
        sender=BAL,
        error_code=refusal_error(exc)[0],
        error_text="trop gros",
        original=raw,
        max_original_bytes=1000,
    )
    assert parts_of(mdn) == ["text/plain", "message/disposition-notification", "text/rfc822-headers"]
    assert exc.headers.message_id.encode() in mdn.get_payload()[2].get_payload(decode=True)
    assert parse_receipt(mdn.as_bytes()).error_code == "906"


def test_standard_error_mail_when_no_mdn_was_asked():
    raw = mail_of(TSH, mdn=False)
    incoming = read_incoming_mail(raw)
    assert incoming.headers.disposition_notification_to == []
    mail = build_error_notification(
        incoming, sender=BAL, error_code="902", error_text="Identifiant patient inconnu"
    )
    assert mail.get_content_type() == "multipart/mixed" and mail["To"] == REPLY
    assert mail["Subject"] == error_subject("XDM/1.0/DDM CR d'examens biologiques", "902")
    names = [p.get_filename() for p in mail.iter_attachments()]
    assert names == ["message_original.eml", "IHE_XDM.ZIP"]
    assert parse_receipt(mail.as_bytes()) is None  # a plain mail, not a report
    assert (
        build_error_notification(
            read_incoming_mail(mail_of(TSH)), sender=BAL, error_code="1", error_text="x"
        ).get_content_type()
        == "multipart/report"
    )


def test_error_mail_needs_someone_to_answer():
    headers = refused(b"Subject: XDM/1.0/DDM x\r\n\r\nbody").headers
    assert headers is not None and headers.sender is None
    with pytest.raises(ValueError):
        build_error_mail(headers, sender=BAL, error_code="906", error_text="x")


def test_error_subject_takes_the_rest_after_the_xdm_prefix():
    assert (
        error_subject("XDM/1.0/DDM+CR d'imagerie DUPONT", "902")
        == "[KO Intégration système !][902] XDM/1.0/DDM+CR d'imagerie DUPONT"
    )
    assert error_subject("Résultats", "9|0^2") == "[KO Intégration système !][902] XDM/1.0/DDM+Résultats"


def test_error_notifications_can_be_built_from_the_raw_mail():
    raw = not_xml_mail()
    code, text = refusal_error(refused(raw))
    mdn = build_error_mdn(raw, sender=BAL, error_code=code, error_text=text)
    receipt = parse_receipt(mdn.as_bytes())
    assert receipt.error_code == "906" and receipt.original_message_id == refused(raw).headers.message_id
    assert parts_of(mdn)[2:] == ["message/rfc822", "application/zip"]  # original embedded, XDM re-attached
    mail = build_error_mail(raw, sender=BAL, error_code=code, error_text=text)
    assert mail["To"] == REPLY and mail["Subject"].startswith("[KO Intégration système !][906] XDM/1.0/DDM+")
    with pytest.raises(ValueError):
        build_error_mdn(b"\x89PNG garbage", sender=BAL, error_code=code, error_text=text)
    assert read_incoming_mail(mail_of(TSH)).disposition_notification_to == [PFI]
