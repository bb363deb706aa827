"""report.py's claim verdicts and T-sweep grouping, on hand-made rows (no runs needed)."""

import re

import callbacks.pruning  # noqa: F401 - registers the pruning methods (the report's labels)
from srsnn import report
from srsnn.errors import UserError
from srsnn_cli import report as report_cli


def _row(run, kind, method, sparsity, clean, worst, ratio=None, T=8):
    stage = report.stage_info("/nonexistent", run)  # what a folder of that name is (no stage.json here)
    family = (f"{stage['method']}{round(100 * stage['sparsity'])}" if stage["method"] else "dense") if stage else None
    return {
        "run": run,
        "family": family,
        "kind": kind,
        "method": method,
        "sparsity": sparsity,
        "T": T if kind == "snn" else None,
        "clean": clean,
        "worst@0.1": worst,
        "E_dense/E_sparse": ratio,
        "synops": 1e6 / (ratio or 1),
        "spikes": 1.0,
        "macs": 1.0,
        "converted_only": run.endswith("_converted_test"),
        "samples": 100,
    }


def _verdict(text: str, claim: str) -> str:
    line = next(l for l in text.splitlines() if claim in l)
    return re.search(r"\*\*(yes|partly|no)\*\*", line).group(1)


def _rows(lwm99_worst=0.10, hydra_ratios=(2.0, 10.0, 90.0), hydra90_worst=0.58, converted_worst=0.3):
    rows = [_row("ann_test", "ann", "dense", 0.0, 0.95, 0.55), _row("snn_test", "snn", "dense", 0.0, 0.96, 0.60, 1.0)]
    for (m, p), w in {
        ("lwm", 99): lwm99_worst,
        ("hydra", 90): hydra90_worst,
        ("hydra", 99): 0.40,
        ("harp", 99): 0.45,
    }.items():
        name = {"lwm": "LWM", "hydra": "HYDRA", "harp": "HARP"}[m]
        clean = 0.3 if m == "lwm" else 0.8
        rows.append(_row(f"{m}{p}_ann_test", "ann", name, p / 100, clean, w - 0.05))
        ratio = {90: hydra_ratios[1], 99: hydra_ratios[2]}[p] if m == "hydra" else 50.0
        rows.append(_row(f"{m}{p}_snn_test", "snn", name, p / 100, clean, w, ratio))
    rows.append(_row("hydra50_snn_test", "snn", "HYDRA", 0.5, 0.95, 0.59, hydra_ratios[0]))
    # the converted-only SNN of HYDRA 90 %, evaluated alike (excluded from the other claims)
    rows.append(_row("hydra90_snn_converted_test", "snn", "HYDRA", 0.9, 0.5, converted_worst, 1.0))
    return rows


def test_claims_answer_each_claim_from_the_numbers():
    text = report.claims(_rows(), ["0.1"])
    assert _verdict(text, "close to the dense SNN up to 90 %") == "yes"  # drops 1 and 2 points
    assert _verdict(text, "far better than magnitude pruning") == "yes"  # +30 / +35 points robust, +50 clean
    assert _verdict(text, "grows with sparsity") == "yes"
    assert _verdict(text, "at least as robust as its ANN") == "yes"  # every SNN 5 points above its ANN
    assert _verdict(text, "beats conversion alone") == "yes"
    # the converted HYDRA 90 % SNN lost 30 clean points to its ANN (0.8 -> 0.5): a lossy conversion that
    # fine-tuning mends
    assert "(30.0)" in text and "lossless, in 0 of 0" in text and "raised the worst case in 1 of 1" in text
    assert "With 100 samples one sample is 1.0 points" in text and "±8 points" in text  # the sampling noise, stated


def test_claims_say_no_or_partly_when_the_numbers_disagree():
    text = report.claims(
        _rows(lwm99_worst=0.45, hydra_ratios=(2.0, 10.0, 5.0), hydra90_worst=0.40, converted_worst=0.6), ["0.1"]
    )
    assert _verdict(text, "close to the dense SNN up to 90 %") == "partly"  # HYDRA 50 % close, HYDRA 90 % 20 points off
    assert _verdict(text, "far better than magnitude pruning") == "partly"  # clean far better, robust not
    assert _verdict(text, "grows with sparsity") == "partly"  # HYDRA 2 -> 10 -> 5; LWM and HARP 1 (dense) -> 50
    only_one_level = [r for r in _rows() if r["method"] in ("dense", "LWM")]
    assert _verdict(report.claims(only_one_level, ["0.1"]), "grows with sparsity") == "yes"  # dense 1x -> LWM 99 % 50x
    assert _verdict(text, "beats conversion alone") == "no"


def test_t_sweep_groups_runs_of_one_ann_by_time_steps():
    rows = _rows() + [
        _row("hydra90_T2_snn_test", "snn", "HYDRA", 0.9, 0.7, 0.3, T=2),
        _row("T4_snn_test", "snn", "dense", 0.0, 0.9, 0.5, T=4),
    ]
    sweeps = report.t_sweeps(rows)
    assert {k: [r["T"] for r in v] for k, v in sweeps.items()} == {"hydra90": [2, 8], "dense": [4, 8]}
    # the claims and the main table use the dense SNN's T only
    assert {r["run"] for r in report.main_rows(rows)} == {r["run"] for r in _rows()} - {"hydra90_snn_converted_test"}
    assert [(c["run"], t["run"]) for c, t in report.converted_pairs(rows)] == [
        ("hydra90_snn_converted_test", "hydra90_snn_test")
    ]


def test_interrupted_evaluations_and_models_near_chance_answer_no_claim():
    rows = _rows()
    for r in rows:
        if r["run"] == "hydra50_snn_test":
            r["clean"] = 0.12  # near chance for 10 classes
        if r["run"] == "hydra90_snn_test":
            r["interrupted"] = "interrupted after 1 of 3 epsilon(s)"
    text = report.claims(rows, ["0.1"])
    assert (
        "Left out (evaluation interrupted, or clean accuracy at most 1.5× chance): hydra90_snn_test, hydra50_snn_test"
        in text
    )
    assert "HYDRA 50" not in text and "HYDRA 90 % " not in text.split("Left out")[0]
    # the collapsed LWM 99 % stays the baseline of the HYDRA/HARP claim
    collapsed = [dict(r, clean=0.1) if r["run"].startswith("lwm99") else r for r in _rows()]
    text = report.claims(collapsed, ["0.1"])
    assert "lwm99_snn_test" in text and "LWM 10.0" in text


def test_compare_gives_the_per_sample_union_and_what_each_attack_found_alone(tmp_path, capsys):
    import json

    def write(name, broken, wrong=0):
        samples = [{"index": i, "clean_correct": i != wrong, "broken_by": {"0.1": broken.get(i)}} for i in range(5)]
        (tmp_path / name).write_text(json.dumps({"samples": samples}))
        return str(tmp_path / name)

    ours = write("ours.json", {0: "clean", 1: "apgdt/relu", 2: "pgd"})
    theirs = write("theirs.json", {0: "clean", 2: "pgd50", 3: "square"})
    assert report_cli.main(["compare", ours, theirs]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| 0.1"))
    # 4 clean-correct of 5; ours breaks {1, 2}, theirs {2, 3}: union {1, 2, 3} leaves sample 4 robust
    assert row == "| 0.1 | 40.0 | 40.0 | **20.0** | 1 (1) | 1 (3) |"
    other = write("other.json", {2: "pgd"}, wrong=4)  # another model: other samples misclassified
    import pytest

    with pytest.raises(UserError, match="disagree on which samples are classified correctly"):
        report.compare(ours, other)


def test_compare_leaves_out_an_epsilon_only_one_file_evaluated(tmp_path, capsys):
    import json

    import pytest

    def write(name, eps_broken):
        samples = [
            {"index": i, "clean_correct": True, "broken_by": {e: b.get(i) for e, b in eps_broken.items()}}
            for i in range(4)
        ]
        (tmp_path / name).write_text(json.dumps({"samples": samples}))
        return str(tmp_path / name)

    ours = write("ours.json", {"0.1": {0: "apgdt"}})
    theirs = write("theirs.json", {"0.05": {1: "square"}, "0.1": {1: "square"}})
    assert report_cli.main(["compare", ours, theirs]) == 0
    out = capsys.readouterr().out
    # ours never ran at 0.05: its "nothing broke sample 1 there" is not a result and must not be compared
    assert not any(l.startswith("| 0.05") for l in out.splitlines())
    assert "| 0.1 | 75.0 | 75.0 | **50.0** | 1 (0) | 1 (1) |" in out and "theirs only: 0.05" in out
    with pytest.raises(UserError, match="no epsilon in both files"):
        report.compare(ours, write("far.json", {"0.3": {}}))


def test_paired_mcnemar_p_values_from_per_sample_records():
    a = {"samples": 100, "robust_samples": {"0.1": list(range(60))}}
    b = {"samples": 100, "robust_samples": {"0.1": list(range(40))}}
    assert report.mcnemar(a, b, "0.1") == 2 / 2**20  # 20 discordant samples, all one way
    c = {"samples": 100, "robust_samples": {"0.1": list(range(10, 70))}}  # 10 gained, 10 lost
    assert report.mcnemar(a, c, "0.1") == 1.0 and report.mcnemar(a, {"samples": 100}, "0.1") is None
    rows = _rows()
    for r in rows:
        r["robust_samples"] = {"0.1": list(range(round(100 * r["worst@0.1"])))}
    text = report.claims(rows, ["0.1"])
    line = next(l for l in text.splitlines() if "close to the dense SNN" in l)
    assert "HYDRA 90 % +2.0, p = 0.5" in line  # 2 discordant samples: no evidence either way
    assert "McNemar" in text
