"""routes.yaml: the shipped CI-SIS rules, the matcher's semantics, and error reporting with line numbers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from gateway.delivery.jobs import JobError, build_jobs
from gateway.model import Code, DocumentAction, DocumentSubmission, MetaFlags, PatientIdentity, Provenance
from gateway.routing import RoutesFileError, decide, load_routes, parse_routes
from tests.conftest import ROOT

ROUTES = load_routes(ROOT / "routes.yaml")
CODES = [
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
]


def submission(message_type: str = "ORU^R01^ORU_R01", **flags: bool) -> DocumentSubmission:
    return DocumentSubmission(
        provenance=Provenance(
            message_id="m",
            received_at=datetime.now(UTC),
            message_type=message_type,
            sending_application="SIL-Y",
        ),
        patient=PatientIdentity(
            ins="279035121518989", ins_oid="1.2.250.1.213.1.4.10", identity_status="VALI"
        ),
        action=DocumentAction.INITIAL,
        flags=MetaFlags(modif_conf_code=False, **{k.lower(): v for k, v in flags.items()}),
    )


def legal(f: dict[str, bool]) -> str | None:
    """The volet's matrix (regles-gestion-mssante), written independently of routes.yaml."""
    if (
        f["MASQUE_PS"] is False
        and f["INVISIBLE_PATIENT"] is False
        and f["INVISIBLE_REP_LEGAUX"] is False
        and f["CONNEXION_SECRETE"] is False
        and f["DESTMSSANTEPS"]
        and f["DESTMSSANTEPAT"]
    ):
        return "ps+patient"
    if (
        f["MASQUE_PS"] is False
        and f["INVISIBLE_PATIENT"]
        and f["INVISIBLE_REP_LEGAUX"] is False
        and f["CONNEXION_SECRETE"] is False
        and f["DESTMSSANTEPS"]
        and not f["DESTMSSANTEPAT"]
    ):
        return "ps"
    if (
        f["INVISIBLE_PATIENT"] is False
        and f["CONNEXION_SECRETE"] is False
        and not f["DESTDMP"]
        and not f["DESTMSSANTEPS"]
        and f["DESTMSSANTEPAT"]
    ):
        return "patient"
    return None


@pytest.mark.parametrize("values", list(itertools.product([False, True], repeat=len(CODES))))
def test_shipped_routes_implement_the_mssante_matrix_for_all_128_flag_combinations(values):
    flags = dict(zip(CODES, values, strict=True))
    decision = decide(ROUTES, submission(**flags))
    wants_mail = flags["DESTMSSANTEPS"] or flags["DESTMSSANTEPAT"]
    expected = legal(flags)
    if wants_mail and expected is None:
        assert decision.rejection is not None and decision.rejection.rule == "TRANS-MSS-FLAGS"
        return
    targets = {(t.destination, t.recipients) for t in decision.targets}
    want = set()
    if flags["DESTDMP"]:
        want.add(("dmp", None))
    if expected in ("ps+patient", "ps"):
        want.add(("mssante", "ps"))
    if expected in ("ps+patient", "patient"):
        want.add(("mssante", "patient"))
    if not want:
        assert decision.rejection is not None and decision.rejection.rule == "ROUTE-NO-MATCH"
    else:
        assert decision.rejection is None and targets == want


def test_patient_mail_is_never_built_for_a_document_invisible_to_the_patient():
    table = parse_routes("routes:\n  - name: all\n    send: [{to: mssante, recipients: [patient]}]\n")
    sub = submission(INVISIBLE_PATIENT=True, DESTMSSANTEPAT=True)
    with pytest.raises(JobError) as exc:
        build_jobs("m", sub, decide(table, sub))
    assert exc.value.rule == "MSS-INVISIBLE-PATIENT"


def test_conditions_any_not_patterns_and_ins():
    table = parse_routes(
        """
routes:
  - name: lab
    when:
      sending_application: ["SIL-*"]
      ins_qualified: true
      not: {flags: {MASQUE_PS: Y}}
    send: [{to: dmp}]
  - name: no-ins
    when: {ins_present: false}
    reject: {rule: X-NO-INS, message: no INS}
"""
    )
    assert [t.route for t in decide(table, submission()).targets] == ["lab"]
    assert decide(table, submission(MASQUE_PS=True)).rejection.rule == "ROUTE-NO-MATCH"
    no_ins = submission()
    no_ins.patient = PatientIdentity()
    assert decide(table, no_ins).rejection.rule == "X-NO-INS"


def test_errors_are_reported_with_their_line_numbers():
    text = """version: 1
routes:
  - name: ok
    send: [{to: dmp}]
  - name: typo
    when:
      flag: {DESTDMP: Y}
    send: [{to: dmp}]
  - name: bad-flag
    when:
      flags: {DESTDMPX: Y}
    send: [{to: mssante}]
"""
    with pytest.raises(RoutesFileError) as exc:
        parse_routes(text)
    found = {(e.line, e.path.split(".")[-1]) for e in exc.value.errors}
    assert (7, "flag") in found
    assert any(line == 11 and "DESTDMPX" in e.message for e in exc.value.errors for line in [e.line])
    assert any(e.line == 12 and "recipients" in e.message for e in exc.value.errors)


def test_duplicate_names_and_reject_with_send_are_refused():
    with pytest.raises(RoutesFileError, match="used twice"):
        parse_routes("routes:\n  - {name: a, send: [{to: dmp}]}\n  - {name: a, send: [{to: dmp}]}\n")
    with pytest.raises(RoutesFileError, match="cannot also send"):
        parse_routes("routes:\n  - {name: a, send: [{to: dmp}], reject: {rule: R, message: m}}\n")


def test_a_route_chooses_the_dmp_transport_and_the_job_carries_it():
    table = parse_routes(
        "routes:\n"
        "  - name: cr-bio-by-pdsm\n    when: {type_code: [11502-2]}\n    send: [{to: dmp, via: pdsm}]\n"
        "  - name: others\n    when: {not: {type_code: [11502-2]}}\n    send: [{to: dmp}]\n"
    )
    assert table.dmp_transports() == {"pdsm"}
    bio = submission(DESTDMP=True).model_copy(
        update={"type_code": Code(code="11502-2", code_system="2.16.840.1.113883.6.1")}
    )
    (job,) = build_jobs("m1", bio, decide(table, bio))
    assert (job.destination, job.via) == ("dmp", "pdsm")
    other = submission(DESTDMP=True)
    (job,) = build_jobs("m2", other, decide(table, other))
    assert job.via is None  # the configured CISIS_DMP_TRANSPORT
    with pytest.raises(RoutesFileError) as exc:
        parse_routes("routes:\n  - name: x\n    send: [{to: mssante, recipients: [ps], via: pdsm}]\n")
    assert any("via applies to dmp only" in e.message for e in exc.value.errors)
