"""The CI-SIS MSSanté mail built from a job: headers, IHE_XDM.ZIP, the PDF of an N1 document alongside."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.delivery.mssante.mail import build_mail
from gateway.delivery.mssante.xdm import read_xdm
from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ROOT, SAMPLES

PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")


def jobs(name: str):
    out = PIPELINE.process(
        Envelope(
            body=(SAMPLES / name).read_bytes(), message_id=name, received_at=datetime(2026, 1, 2, tzinfo=UTC)
        )
    )
    assert out.accepted
    return [j for j in out.jobs if j.destination == "mssante"]


def test_n1_pdf_document_travels_in_xdm_with_its_pdf_alongside():
    (job,) = jobs("04_MDM_T02_initial_CR-IMG_PS_only.hl7")
    mail = build_mail(job, "gateway@demo.mssante.fr")
    names = [a.get_filename() for a in mail.iter_attachments()]
    assert names == ["IHE_XDM.ZIP", "DOC0001.PDF"]
    pdf = next(a for a in mail.iter_attachments() if a.get_filename() == "DOC0001.PDF")
    assert pdf.get_payload(decode=True).startswith(b"%PDF")
    package = read_xdm(next(mail.iter_attachments()).get_payload(decode=True))
    assert package.documents["DOC0001.XML"] == job.submission.documents[0].content.data
    assert mail["X-MSS-CODECDA"] == "18748-4" and mail["X-MSS-INS"] == "O"
    assert mail["Subject"].startswith("XDM/1.0/DDM")
    assert "X-MSS-MES" not in mail and "Disposition-Notification-To" not in mail


def test_ps_and_patient_mails_are_separate_and_the_patient_one_goes_to_the_ins_mailbox():
    ps, patient = jobs("01_ORU_R01_initial_CR-BIO.hl7")
    assert ps.recipients_kind == "ps" and patient.recipients_kind == "patient"
    ps_mail, patient_mail = build_mail(ps, "g@x.fr"), build_mail(patient, "g@x.fr")
    assert patient_mail["To"] == "279035121518989@patient.mssante.fr"
    assert "279035121518989@patient.mssante.fr" not in ps_mail["To"]
    assert ps_mail["Disposition-Notification-To"] == "g@x.fr"  # ACK_LECTURE_MSS=Y in sample 01
    assert ps_mail["Message-ID"] != patient_mail["Message-ID"]
    assert ps_mail["Message-ID"] == build_mail(ps, "g@x.fr")["Message-ID"]  # stable across redeliveries
