"""Seeds over the pipeline: the stage plan per seed, the report's rows over seeds, the claims' combined test, and a
one-seed run held against the published spread (hand-made rows; the run end to end is in test_pipeline.py)."""

import json

import pytest

from srsnn import report
from srsnn.report.seeds import against_published, over_seeds, prediction_interval
from srsnn_cli import pipeline

CFG = {
    "run_dir": "r",
    "ann": "a.yaml",
    "snn": "s.yaml",
    "pruning": [{"name": "hydra", "config": "p.yaml", "sparsity": [0.9]}],
}


def test_seeds_run_every_stage_once_per_seed_with_its_own_upstream_and_seed():
    one = pipeline.plan(CFG)
    stages = pipeline.plan({**CFG, "seeds": [3, 7]})
    assert [s.name for s in stages] == [f"seed{k}/{s.name}" for k in (3, 7) for s in one]
    for st in stages:
        k = int(st.name.split("/")[0][4:])
        assert st.args[-2:] == ["--seed_everything", str(k)] and st.meta["seed"] == k
        assert all(src.startswith(f"seed{k}/") for src in st.needs.values())  # never another seed's checkpoint
    assert pipeline.plan({**CFG, "seeds": None}) == one  # no seeds: the configs' own seed, no sub-folders


@pytest.mark.parametrize("seeds", [[], [0, 0], [1.5], ["0"], 3, [-1], [True]])
def test_seeds_that_are_not_distinct_non_negative_integers_are_refused(seeds):
    with pytest.raises(pipeline.PipelineError, match="distinct non-negative integers"):
        pipeline.plan({**CFG, "seeds": seeds})


def test_seed_everything_on_top_of_a_seeds_pipeline_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({**CFG, "run_dir": str(tmp_path / "run"), "seeds": [0, 1]}))
    with pytest.raises(pipeline.PipelineError, match="drop --seed_everything"):
        pipeline.run(str(path), ["--seed_everything", "5"], dry_run=True)


def _rows(seed, dense_snn, hydra_snn, n=100):
    """A dense and a HYDRA 90 % SNN of one seed; ``*_snn`` = the indices robust at eps 0.1 (of ``n`` samples)."""
    row = lambda run, method, sparsity, robust, synops: {
        "run": run,
        "kind": "snn",
        "method": method,
        "sparsity": sparsity,
        "T": 8,
        "clean": 0.95,
        "worst@0.1": len(robust) / n,
        "samples": n,
        "E_dense/E_sparse": 1e6 / synops,
        "synops": synops,
        "audit": "pass",
        "robust_samples": {"0.1": sorted(robust)},
        "seed": seed,
    }
    return [
        row("snn_test", "dense", 0.0, dense_snn, 1e6),
        row("hydra90_snn_test", "HYDRA", 0.9, hydra_snn, 1e5 + (seed or 0)),
    ]


def test_rows_over_seeds_are_the_mean_with_the_range_and_each_seed_kept():
    rows = over_seeds(_rows(0, range(60), range(50)) + _rows(1, range(70), range(50)) + _rows(2, range(62), range(50)))
    dense = next(r for r in rows if r["run"] == "snn_test")
    assert dense["worst@0.1"] == pytest.approx(0.64) and dense["spread"]["worst@0.1"] == [0.6, 0.7]
    assert dense["seeds"] == [0, 1, 2] and [r["worst@0.1"] for r in dense["per_seed"]] == [0.6, 0.7, 0.62]
    assert "worst@0.1" not in next(r for r in rows if r["run"] != "snn_test")["spread"]  # equal in every seed
    assert dense["T"] == 8 and "robust_samples" not in dense["per_seed"][0]
    assert over_seeds(_rows(None, range(60), range(50))) == _rows(None, range(60), range(50))  # one seed: as is


def _claim(rows):
    text = report.claims(rows, ["0.1"])
    line = next(l for l in text.splitlines() if "close to the dense SNN" in l)
    return line, text


def test_the_pooled_stratified_test_is_mcnemar_on_every_seeds_discordant_samples_together():
    seeds = [_rows(k, range(60 + k), range(50)) for k in range(3)]
    pairs = [(d, h) for d, h in seeds]
    # pooled: 10 + 11 + 12 discordant samples, all favouring the dense SNN
    assert report.per_sample.stratified_mcnemar(pairs, "0.1") == pytest.approx(2 / 2**33)
    assert report.per_sample.stratified_mcnemar(pairs[:1], "0.1") == report.mcnemar(*pairs[0], "0.1")
    line, text = _claim([r for rs in seeds for r in rs])
    assert "HYDRA 90 % +11.0 (seeds +10.0 / +11.0 / +12.0), p < 0.001" in line and "**no**" in line
    assert "Over 3 seeds" in text and "Cochran–Mantel–Haenszel" in text and "every one of the 3 seeds" in line


def _tuned_vs_converted(seed, tuned, converted, n=100):
    rows = _rows(seed, range(60), tuned, n)
    conv = dict(rows[1], run="hydra90_snn_converted_test", converted_only=True)
    conv.update({"worst@0.1": len(converted) / n, "robust_samples": {"0.1": sorted(converted)}})
    return [*rows, conv]


@pytest.mark.parametrize(
    "gains, verdict",
    [
        ((20, 22, 21), "yes"),  # the same sign in every seed, p < 0.001
        ((20, -3, 21), "partly"),  # one seed the other way
        ((2, 1, 1), "partly"),  # the right sign in every seed, but 4 discordant samples: could be chance
        ((-2, -1, 0), "no"),
    ],
)
def test_a_claim_reads_yes_only_with_the_same_sign_in_every_seed_and_a_combined_test_that_is_not_chance(gains, verdict):
    rows = [r for k, g in enumerate(gains) for r in _tuned_vs_converted(k, range(30 + g), range(30))]
    line = next(l for l in report.claims(rows, ["0.1"]).splitlines() if "beats conversion alone" in l)
    assert f"**{verdict}**" in line, line


def test_a_threshold_claim_holds_in_every_seed_or_not_at_all():
    # within 5 points of the dense SNN in two seeds, 8 points off in the third: partly
    seeds = [_rows(0, range(60), range(57)), _rows(1, range(60), range(58)), _rows(2, range(60), range(52))]
    line, _ = _claim([r for rs in seeds for r in rs])
    assert "**partly**" in line and "+3.0 / +2.0 / +8.0" in line


def test_a_one_seed_run_is_held_against_the_published_range_and_prediction_interval(tmp_path):
    published = over_seeds([r for k in range(3) for r in _rows(k, range(60 + 5 * k), range(50))])
    path = tmp_path / "report.json"
    path.write_text(json.dumps(published))
    # 60, 65, 70 %: s = 5 points, t(0.975, 2) = 4.303: 65 ± 4.303 · 5 · √(4/3) = 65 ± 24.8 points
    lo, hi = prediction_interval([0.6, 0.65, 0.7])
    assert (lo, hi) == pytest.approx((0.65 - 0.2484, 0.65 + 0.2484), abs=1e-4)
    text = against_published(_rows(None, range(72), range(50)), str(path), ["0.1"])
    assert "| snn_test | worst case ε=0.1 | 72.0 | 65.0 (60.0–70.0) | 40.2–89.8 | inside the interval |" in text
    assert "| hydra90_snn_test | worst case ε=0.1 | 50.0 | 50.0 (50.0–50.0) | 50.0–50.0 | inside the range |" in text
    assert "3 of 4 inside the published range, 4 of 4 inside the prediction interval" in text
    far = against_published(_rows(None, range(95), range(49)), str(path), ["0.1"])
    assert "| 95.0 | 65.0 (60.0–70.0) | 40.2–89.8 | outside by 5.2 points |" in far
    assert "| 49.0 | 50.0 (50.0–50.0) | 50.0–50.0 | outside by 1.0 points |" in far
    assert (
        against_published(_rows(None, range(72), range(50)), str(tmp_path / "none.json"), ["0.1"]).count("not read")
        == 1
    )
