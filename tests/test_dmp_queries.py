"""ITI-18 stored queries and the ITI-57 status update for the DMP's replacement and deletion: schema-valid,
with the values the registry matches on."""

from __future__ import annotations

import functools

import pytest
from lxml import etree

from gateway.delivery.dmp.queries import (
    DELETED,
    GET_DOCUMENTS,
    UPDATE_AVAILABILITY_STATUS,
    find_documents,
    get_documents_by_unique_id,
    update_availability_status,
)
from gateway.delivery.mssante.xdm_metadata import RIM_NS
from gateway.model import Organization, Person
from tests.test_xdm_schema import SCHEMAS, errors, lcm_schema, load_schema

R = f"{{{RIM_NS}}}"
PATIENT = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"


@functools.cache
def query_schema() -> etree.XMLSchema:
    return load_schema(SCHEMAS / "ebrs30" / "query.xsd")[0]


def slots(el: etree._Element) -> dict[str, list[str]]:
    return {s.get("name"): [v.text for v in s.iter(f"{R}Value")] for s in el.iter(f"{R}Slot")}


def test_get_documents_by_unique_id_is_a_valid_stored_query():
    q = get_documents_by_unique_id(["1.2.250.1.213.1.1.1.45.2024.2.1", "1.2.3^it's"])
    assert errors(query_schema(), q) == []
    assert q.find(f"{R}AdhocQuery").get("id") == GET_DOCUMENTS
    assert slots(q)["$XDSDocumentEntryUniqueId"] == ["('1.2.250.1.213.1.1.1.45.2024.2.1','1.2.3^it''s')"]
    with pytest.raises(ValueError):
        get_documents_by_unique_id([])


def test_find_documents_by_patient_is_valid():
    q = find_documents(PATIENT)
    assert errors(query_schema(), q) == []
    assert slots(q)["$XDSDocumentEntryPatientId"] == [f"'{PATIENT}'"]


def test_deletion_is_an_iti57_status_update_to_the_french_deleted_status():
    req = update_availability_status(
        entry_uuid="urn:uuid:0f9b1a36-7c33-4b0a-8a57-1f2d5d3b9a10",
        patient_id=PATIENT,
        submission_unique_id="1.2.250.1.999.1.1.8121.5.7123",
        source_id="1.2.250.1.999.1.1.8121",
        submission_time="20260102120000",
        author=Person(id="801234567897", family="HODA", given="Adam"),
        institution=Organization(name="CH TEST", id="1120459876"),
    )
    assert errors(lcm_schema(), req) == []
    (assoc,) = req.iter(f"{R}Association")
    assert assoc.get("associationType") == UPDATE_AVAILABILITY_STATUS
    assert assoc.get("targetObject") == "urn:uuid:0f9b1a36-7c33-4b0a-8a57-1f2d5d3b9a10"
    assert slots(assoc) == {
        "OriginalStatus": ["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"],
        "NewStatus": [DELETED],
    }
    with pytest.raises(ValueError, match="entryUUID"):
        update_availability_status(
            entry_uuid="1.2.3",
            patient_id=PATIENT,
            submission_unique_id="1",
            source_id="1",
            submission_time="1",
        )
