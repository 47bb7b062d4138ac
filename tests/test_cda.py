"""CDA header reader and the hardened XML parser."""

from __future__ import annotations

import pytest

from gateway.formats.cda.header import CdaReadError, read_cda
from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from tests.conftest import ANS_CDA, require_shared


def test_n3_header_fields():
    require_shared()
    h = read_cda((ANS_CDA / "BIO-CR-BIO_2021.01_Microbiologie_V2.xml").read_bytes())
    m = h.metadata
    assert m.unique_id == "1.2.250.1.213.1.1.1.55.2021.6.2" and m.version_number == 2
    assert m.type_code.code == "11502-2" and m.type_code.code_system == "2.16.840.1.113883.6.1"
    assert [c.code for c in m.confidentiality] == ["N"]
    assert m.healthcare_facility_type.code == "SA25" and m.practice_setting.code == "AMBULATOIRE"
    assert m.replaced_document_id.root == "1.2.250.1.213.1.1.1.55.12345.8"
    assert m.legal_authenticator.id == "801234534765"
    assert m.authors[0].organization.id_authority == "1.2.250.1.71.4.2.2"
    assert m.language_code == "fr-FR" and m.level == "N3"
    p = h.patient
    assert p.ins_oid == "1.2.250.1.213.1.4.10" and p.first_given_name == "DOMINIQUE"
    assert p.ipp.root == "1.2.3.4.567.8.9.10"


def test_n1_document_is_recognised_with_its_media_type():
    require_shared()
    h = read_cda((ANS_CDA / "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml").read_bytes())
    assert h.metadata.level == "N1" and h.metadata.body_media_type == "application/pdf"
    assert "1.3.6.1.4.1.19376.1.2.20" in h.metadata.template_ids


def test_patient_data_never_appears_in_model_reprs():
    require_shared()
    h = read_cda((ANS_CDA / "BIO-CR-BIO_2021.01_Microbiologie_V2.xml").read_bytes())
    text = repr(h.patient) + repr(h.metadata)
    for secret in ("279035121518989", "PAT-TROIS", "19790328", "DOMINIQUE"):
        assert secret not in text


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>',
            "XML-DOCTYPE",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
            "XML-DOCTYPE",
        ),
        (b"<x><y></x>", "XML-NOT-WELL-FORMED"),
        (b"   ", "XML-EMPTY"),
    ],
)
def test_hardened_parser_refuses_entities_dtds_and_garbage(data, rule):
    with pytest.raises(UnsafeXMLError) as exc:
        parse_untrusted(data)
    assert exc.value.rule == rule


def test_size_limit_is_checked_before_parsing():
    with pytest.raises(UnsafeXMLError) as exc:
        parse_untrusted(b"<x>" + b"a" * 2000 + b"</x>", max_bytes=1000)
    assert exc.value.rule == "XML-TOO-LARGE"


def test_not_a_clinical_document():
    with pytest.raises(CdaReadError) as exc:
        read_cda(b'<ClinicalDocument xmlns="urn:other"/>')
    assert exc.value.rule == "CDA-ROOT"
    with pytest.raises(CdaReadError) as exc:
        read_cda(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>x</title></ClinicalDocument>')
    assert exc.value.rule == "CDA-ID" and exc.value.location == "/ClinicalDocument/id"


def test_n1_format_code_comes_from_ass_a12():
    require_shared()
    h = read_cda((ANS_CDA / "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml").read_bytes())
    assert h.metadata.format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"
    n3 = read_cda((ANS_CDA / "BIO-CR-BIO_2021.01_Microbiologie_V2.xml").read_bytes())
    # N3: by templateId through ASS_A11 (CR-BIO 1.2.250.1.213.1.1.1.55 -> IHE XD-LAB), see test_associations.py
    assert n3.metadata.format_code.code == "urn:ihe:lab:xd-lab:2008"
    assert n3.metadata.format_code.code_system == "1.3.6.1.4.1.19376.1.2.3"
