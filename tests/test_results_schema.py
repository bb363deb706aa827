"""The written evaluation files have one typed schema: round trip, a version in every file, old files still read,
newer ones refused with one clear error."""

import json

import pytest

from helpers import ROOT
from srsnn.errors import UserError
from srsnn.robustness.results import (
    RECORD_VERSION,
    SCHEMA_VERSION,
    Budget,
    Check,
    EpsResult,
    Evaluation,
    MembersAlone,
    PerSample,
    SampleRecord,
)


def _evaluation() -> Evaluation:
    return Evaluation(
        kind="snn",
        num_samples=4,
        clean_acc=0.75,
        num_classes=3,
        epsilons=[0.1],
        ensemble=["model"],
        budget=Budget(paper="FGSM, PGD-10 on the network", adaptive="APGD-CE"),
        eps={"0.1": EpsResult(0.25, 0.5, {"pgd10": 0.5}, 25.0, {"square": 1}, ["model"], [1, 0, 0], None)},
        audit=[Check("x", False, "d", "paper protocol overestimates", "0.1", True)],
        members_alone=MembersAlone("0.1", "PGD-10", {"model": 0.5}, ["model"]),
    )


def test_round_trip_through_the_file_keeps_every_field(tmp_path):
    ev, path = _evaluation(), tmp_path / "attacks.json"
    ev.write(str(path))
    data = json.loads(path.read_text())
    assert next(iter(data)) == "schema_version" and data["schema_version"] == SCHEMA_VERSION
    assert Evaluation.read(str(path)) == ev
    ps = PerSample([SampleRecord(0, True, {"0.1": None}, {"0.1": {"pgd10": None}}), SampleRecord(1, False, {})])
    ps.write(str(tmp_path / "per_sample.json"))
    assert PerSample.read(str(tmp_path / "per_sample.json")) == ps
    assert json.loads((tmp_path / "per_sample.json").read_text())["schema_version"] == RECORD_VERSION


def test_files_without_a_version_still_read_and_newer_ones_are_refused(tmp_path):
    published = json.loads(
        (ROOT / "results" / "digits" / "evaluation" / "seed0" / "snn_test.per_sample.json").read_text()
    )
    published.pop("schema_version")  # as written before the schema was versioned (version 0)
    old = tmp_path / "old.per_sample.json"
    old.write_text(json.dumps(published))
    records = PerSample.read(str(old)).samples
    assert records and all(isinstance(r, SampleRecord) for r in records)
    old.write_text(json.dumps({**published, "schema_version": RECORD_VERSION + 1}))
    with pytest.raises(UserError, match="newer than this code"):
        PerSample.read(str(old))
    data = _evaluation().to_json()
    data.pop("schema_version")
    assert Evaluation.from_json(data).eps["0.1"].worst == 0.25
    newer = tmp_path / "attacks.json"
    newer.write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="newer than this code"):
        Evaluation.read(str(newer))
    data.pop("eps")
    with pytest.raises(UserError, match="missing eps"):
        Evaluation.from_json(data)


def test_a_version_1_file_reads_into_the_renamed_fields():
    """Version 2 names an evaluation's phases and a check's rule; a version-1 attacks.json reads into them."""
    data = _evaluation().to_json()
    data["schema_version"] = 1
    data["seconds_by_stage"] = data.pop("seconds_by_phase") | {"adaptive:apgd_ce": 1.5}
    data["budget"]["rank_attack"] = data["budget"].pop("ranking_attack") or "PGD-10"
    data["eps"]["0.1"]["broken_by_stage"] = data["eps"]["0.1"].pop("broken_by_phase")
    data["audit"][0]["kind"] = data["audit"][0].pop("rule")
    ev = Evaluation.from_json(data)
    assert ev.seconds_by_phase == {"adaptive:apgd_ce": 1.5} and ev.budget.ranking_attack == "PGD-10"
    assert ev.eps["0.1"].broken_by_phase == {"square": 1} and ev.audit[0].rule == "paper protocol overestimates"
    assert ev.schema_version == SCHEMA_VERSION and ev.kind == "snn"  # the evaluation's own kind is not a check's


def test_a_version_2_file_reads_without_pass_counts_and_the_report_leaves_them_blank():
    """Version 3 adds the passes of the model per phase; a published version-2 attacks.json reads with none."""
    from srsnn.report.tables import row_of

    data = _evaluation().to_json()
    data.pop("passes_by_phase")
    data["schema_version"] = 2
    ev = Evaluation.from_json(data)
    assert ev.passes_by_phase == {} and ev.schema_version == SCHEMA_VERSION == 4
    row = row_of({"name": "snn_test", "attacks": ev, "energy": {}, "stage": None}, ["0.1"], None)
    assert row["passes_per_sample"] is None and row["paper_passes_per_sample"] is None
