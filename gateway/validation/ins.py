"""INS rules (cisis-facts §9): the OID names an INS kind, the NIR key is right, and a production gateway
refuses test and démo identities."""

from __future__ import annotations

from stdnum.fr import nir

from gateway.model import INS_OIDS, PatientIdentity, ValidationReport

SOURCE = "CI-SIS INS"
#: NIR-based INS OIDs whose key can be checked (production, test, démo); NIA keys are not verified [§9].
NIR_OIDS = {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
#: INS test and démo OIDs: real documents never carry them; a production gateway refuses them.
TEST_INS_OIDS = {"1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}


def check_ins(
    report: ValidationReport, patient: PatientIdentity, *, where: str, ins_production: bool
) -> None:
    if patient.ins and patient.ins_oid not in INS_OIDS:
        report.add(
            "INS-OID",
            where,
            "the INS assigning authority must be 1.2.250.1.213.1.4.8 (NIR), .9 (NIA), "
            ".10 (NIR test) or .11 (NIR demo)",
            condition=103,
            source=SOURCE,
        )
    if ins_production and patient.ins_oid in TEST_INS_OIDS:
        report.add(
            "INS-TEST-IN-PRODUCTION",
            where,
            "a test or demo INS (OID .4.10 / .4.11) is refused in production (CISIS_INS_PRODUCTION=true)",
            condition=207,
            application_code="906",
            source=SOURCE,
        )
    if patient.ins and patient.ins_oid in NIR_OIDS and not nir.is_valid(patient.ins):
        report.add(
            "INS-NIR-KEY",
            where,
            "the INS matricule (NIR) has an invalid length or control key",
            condition=102,
            application_code="905",
            source=SOURCE,
        )
