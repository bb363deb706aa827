"""The evaluation is honest: the worst case is below every component, the audit catches gradient masking and an
overestimating protocol, per-sample records add up, and an interrupt keeps what was finished."""

import json
import os
import signal

import lightning as L
import pytest
import torch
from torch import nn

from callbacks import AttackEvaluation, SpikeEnergyMonitor
from callbacks.interrupt import sigterm_as_interrupt
from datamodules import Digits
from lightning_modules import RobustANN
from srsnn.ann.architectures import SmallCNN
from srsnn.robustness.audit import confidence, summarize
from srsnn.robustness.budget import AdaptiveBudget
from srsnn.robustness.paths import paper_ensemble
from srsnn.robustness.runner import Evaluator
from srsnn.snn.conversion import convert


def _snn():
    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3])
    return convert(ann, [torch.rand(32, 1, 8, 8)], num_steps=3, calib_steps=8).eval()


def _data(model, n=40):
    dm = Digits()
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    x = x[:n]
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own predictions: every sample starts correct
    return x, y


SMALL = AdaptiveBudget(top_k=2, steps=5, max_targets=3, other_targets=1, square_queries=20, check_rounds=2)


def test_worst_case_is_below_every_component_and_per_sample_records_add_up():
    snn = _snn()
    x, y = _data(snn)
    members = paper_ensemble()
    assert len(members) == 19
    ev = Evaluator(
        snn, members, [0.05, 0.15], [{"name": "fgsm"}, {"name": "pgd", "steps": 3}], 10, SMALL, batch_size=16
    )
    out = ev.run(x, y)
    assert out["interrupted"] is None and len(out["ranking"]["broken"]) == 19
    per_eps = summarize(out, len(y), sum(out["clean"]))
    prev = 1.0
    for eps, v in per_eps.items():
        assert v.worst <= v.paper_all <= min(v.paper.values())
        assert v.worst <= prev  # broken at a smaller epsilon stays broken
        prev = v.worst
        rec = out["eps"][eps]["per_sample"]
        assert sum(b is None for b in rec["worst"]) == out["eps"][eps]["robust_worst"]
        for label, by in rec["paper"].items():  # robust in the worst case => robust to every paper attack
            assert all(p is None for w, p in zip(rec["worst"], by) if w is None), label
    alone = {k: 1 - v / len(y) for k, v in out["ranking"]["broken"].items()}
    assert per_eps["0.15"].worst <= min(alone.values())  # the ensemble + tier beats every single member
    assert per_eps["0.15"].worst < per_eps["0.15"].paper_all or per_eps["0.15"].worst == 0


def test_interrupt_keeps_finished_epsilons():
    snn = _snn()
    x, y = _data(snn, 16)
    calls = {"n": 0}

    class Bar:  # a progress bar that is interrupted after the first epsilon's attack runs
        def __init__(self, total):
            pass

        def set_description(self, *a, **k):
            pass

        def update(self, n):
            calls["n"] += 1
            if calls["n"] == per_eps_units + 19 + 1:
                raise KeyboardInterrupt

        def close(self):
            pass

    ev = Evaluator(snn, paper_ensemble(), [0.05, 0.1], [{"name": "fgsm"}], 10, SMALL, progress=Bar, batch_size=16)
    per_eps_units = ev.plan.units_per_eps()
    out = ev.run(x, y)
    assert list(out["eps"]) == ["0.05"] and "interrupted after 1 of 2" in out["interrupted"]


def test_sigterm_becomes_an_interrupt_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                torch.zeros(10).sum()
    assert signal.getsignal(signal.SIGTERM) == before


class Rounding(nn.Module):
    """Quantises the input: a non-differentiable step that zeroes every input gradient (gradient masking)."""

    def forward(self, x):
        return torch.round(x * 4) / 4


def _run_eval(net, tmp_path):
    module = RobustANN(net, objective="standard", eval_epsilon=0.1)
    cb = AttackEvaluation(
        attacks=[{"name": "pgd", "steps": 5}],
        epsilons=[0.1, 0.3],
        num_samples=60,
        batch_size=60,
        adaptive=dict(top_k=1, steps=10, max_targets=3, square_queries=200, check_rounds=1),
        output_dir=str(tmp_path),
    )
    trainer = L.Trainer(
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=1,
        callbacks=[cb, SpikeEnergyMonitor(num_samples=60, output_dir=str(tmp_path))],
        default_root_dir=str(tmp_path),
        accelerator="cpu",
    )
    trainer.test(module, datamodule=Digits(batch_size=60))
    return {c.check: c.passed for c in cb.results.audit}, cb, trainer


def test_audit_flags_a_gradient_masking_model(tmp_path, dense_ann_ckpt):
    from lightning_modules.loading import load_trained

    torch.manual_seed(0)
    trained = load_trained("conf/digits/ann.yaml", dense_ann_ckpt)[0].model
    masked = nn.Sequential(Rounding(), trained)
    verdict, cb, trainer = _run_eval(masked, tmp_path)
    assert verdict["non-zero input gradients under the ensemble"] is False
    assert cb.results.zero_gradient_samples_by_path == {"model": 60} and "dead weight" in cb.results.notes[0]
    # white-box attacks see no gradient; the black-box Square breaks what they could not
    assert verdict["eps=0.3: Square (black-box) never beats the white-box attacks"] is False
    for name in ("attacks.json", "attacks.md", "per_sample.json", "robust_accuracy.png", "energy.json"):
        assert (tmp_path / name).exists(), name
    per_sample = json.loads((tmp_path / "per_sample.json").read_text())
    assert len(per_sample["samples"]) == 60
    robust = sum(s["broken_by"]["0.3"] is None for s in per_sample["samples"])
    assert robust == round(cb.results.eps["0.3"].worst * 60)
    assert any((s["broken_by"]["0.3"] or "").startswith("square") for s in per_sample["samples"])
    logged = trainer.callback_metrics
    assert "test/robust_worst/eps=0.3" in logged and "test/robust_paper_pgd5/eps=0.3" in logged


def test_audit_passes_gradient_check_on_a_plain_model(tmp_path):
    torch.manual_seed(0)
    verdict, cb, _ = _run_eval(SmallCNN(input_size=8, width=4), tmp_path)
    assert verdict["non-zero input gradients under the ensemble"] is True
    md = (tmp_path / "attacks.md").read_text()
    assert "worst case" in md and "paper protocol" in md and "Attack budget" in md


def test_adaptive_presets_resolve_to_budgets_and_a_wrong_name_is_one_clear_error():
    from callbacks.evaluation import PRESETS
    from srsnn.errors import UserError

    default = AdaptiveBudget()
    assert AttackEvaluation(adaptive="thorough").adaptive == AttackEvaluation(adaptive=True).adaptive == default
    assert AttackEvaluation(adaptive="strong").adaptive.allocation == "margin" != AdaptiveBudget().allocation
    assert AttackEvaluation(adaptive="paper").adaptive is None and AttackEvaluation(adaptive=False).adaptive is None
    assert AttackEvaluation(adaptive="quick").adaptive == AdaptiveBudget(**PRESETS["quick"])
    assert AttackEvaluation(adaptive={"square_queries": 5000}).adaptive == AdaptiveBudget(square_queries=5000)
    with pytest.raises(UserError, match="unknown preset 'strng'"):
        AttackEvaluation(adaptive="strng")


def test_apgd_ce_takes_its_own_restarts_in_the_tier_and_every_check_round():
    """ce_restarts: APGD-CE's random starts (None = restarts); APGD-T keeps ``restarts``; the budget line says so."""
    from srsnn.errors import UserError

    budget = AdaptiveBudget(
        top_k=2, steps=3, max_targets=1, other_targets=1, square_queries=0, check_rounds=1, ce_restarts=3,
        allocation="uniform",
    )  # fmt: skip
    ev = Evaluator(nn.Identity(), paper_ensemble()[:2], [0.1], [], 10, budget)
    units = ev.plan.adaptive_units(ev.members) + ev.plan.check_units(ev.members, 0)
    restarts = {(u.phase, u.attack, u.kwargs["n_restarts"]) for u in units}
    assert restarts == {(st, "apgd_ce", 3) for st in ("adaptive", "check")} | {
        (st, "apgdt", 1) for st in ("adaptive", "check")
    }
    assert "1 restart(s) (APGD-CE: 3)" in budget.describe(2, 10)
    default = AdaptiveBudget(restarts=2, ce_restarts=None)
    assert default.apgd_ce_restarts == 2 and "(APGD-CE" not in default.describe(2, 10)
    assert AttackEvaluation(adaptive={"ce_restarts": 3}).adaptive == AdaptiveBudget(ce_restarts=3)
    with pytest.raises(UserError, match="ce_restarts"):
        AdaptiveBudget(ce_restarts=0)


def test_check_rounds_rerun_the_tier_then_grow_where_it_pays_until_converged_and_past_the_stop_to_check_it():
    """The first round re-runs APGD-CE and APGD-T (2x steps, new seed); the later ones only what broke something so
    far, with 2x restarts, the tier's steps and a new seed; they stop once converged, and ``verify_rounds`` more run
    past that stop (recorded apart, counted in the worst case)."""
    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, width=4).eval()
    x, y = _data(ann, 24)
    budget = AdaptiveBudget(
        top_k=3,
        steps=4,
        max_targets=2,
        other_targets=1,
        square_queries=0,
        check_rounds=6,
        ce_restarts=None,
        tolerance=0.2,
        verify_rounds=2,
    )
    ev = Evaluator(ann, None, [0.02], [{"name": "fgsm"}], 10, budget, batch_size=24)
    ran = []
    run_unit = ev._run_unit

    def spy(unit, *a):
        broke = run_unit(unit, *a)
        ran.append((unit.phase, unit.attack, unit.kwargs.get("steps"), unit.kwargs.get("n_restarts"), int(broke.sum())))
        return broke

    ev._run_unit = spy
    res = ev.run(x, y)["eps"]["0.02"]
    rounds, conf = res["check_rounds"], res["confidence"]
    stops = [n for n in range(2, 7) if confidence(0, rounds[:n], 0.2 * 24)["converged"]]
    assert len(rounds) == (stops[0] if stops else 6) and conf["converged"] == bool(stops)
    assert len(conf["rounds_after_stop"]) == 2 and conf["tolerance"] == pytest.approx(4.8)
    tier = {a: n for s, a, _, _, n in ran if s == "adaptive"}
    checks = [r for r in ran if r[0] == "check"]
    first, later = checks[:2], checks[2:]
    assert sorted((a, st, rs) for _, a, st, rs, _ in first) == [("apgd_ce", 8, 1), ("apgdt", 8, 1)]
    paid = {a for a, n in tier.items() if n} | {a for _, a, _, _, n in first if n}
    assert {a for _, a, _, _, _ in later} <= paid and all(st == 4 and rs == 2 for _, _, st, rs, _ in later)
    assert sum(n for *_, n in checks) == sum(rounds) + sum(conf["rounds_after_stop"])


def test_the_next_rounds_bound_is_the_poisson_upper_limit_of_the_rounds_after_the_first():
    from scipy.stats import chi2, poisson

    from srsnn.robustness.audit import confidence, confidence_statement, next_round_bound

    for later in ([0], [0, 0], [0, 2, 0], [1, 1, 1, 1], [5, 3]):
        lam = next_round_bound(later) * len(later)  # the rate over the n rounds: P(K or fewer | lam) = 5 %
        assert poisson.cdf(sum(later), lam) == pytest.approx(0.05, rel=1e-6)
        assert lam == pytest.approx(chi2.ppf(0.95, 2 * sum(later) + 2) / 2)
    # the first round (the tier at a larger budget) does not count; converged when the bound is within tolerance
    c = confidence(7, [40, 0, 0], tolerance=2)
    assert c["bound"] == pytest.approx(1.5, abs=0.01) and c["converged"] and c["last_productive_round"] == 1
    assert not confidence(7, [40, 0, 0], tolerance=1)["converged"] and not confidence(7, [0, 0], 2)["converged"]
    assert not confidence(7, [40, 0], tolerance=3)["converged"]  # one later round is not enough, whatever its bound
    assert not confidence(7, [4, 0, 2, 0], 2)["converged"] and confidence(7, [4, 0, 2, 0, 0], 2)["converged"]
    # no round after the first: the bound is the most any round broke (the tier's without rounds), never converged
    assert (
        confidence(3, [])["bound"] == 3 and confidence(7, [4])["bound"] == 4 and not confidence(7, [0], 9)["converged"]
    )
    line = confidence_statement("0.1", 0.5, confidence(7, [4, 5, 0], 2), 200)
    assert "NOT converged" in line and "above the tolerance of 2" in line
    assert "NOT shown converged" in confidence_statement("0.1", 0.5, confidence(7, [0]), 200)
    # an attacks.json of the earlier rule (no tolerance) still reads
    assert "NOT converged" in confidence_statement("0.1", 0.5, {"converged": False, "bound": 4, "rounds_run": 3}, 200)


def test_the_audit_tells_findings_about_the_paper_protocol_from_doubts_about_the_evaluation():
    from srsnn.report.tables import audit_text
    from srsnn.robustness.audit import audit, verdict
    from srsnn.robustness.results import Check, EpsResult

    per_eps = {"0.1": EpsResult(0.3, 0.6, {"pgd10": 0.6}, 30.0, {"square": 0}, [], [0, 0], {"converged": True})}
    checks = audit(per_eps, 100, 0, (0.5, 0.0), 10)
    assert [verdict(c) for c in checks if not c.passed] == ["FINDING"]
    assert audit_text(checks) == "finding: paper protocol overestimates (ε=0.1)"
    per_eps["0.1"].check_rounds, per_eps["0.1"].confidence = [3, 1], {"converged": False}
    text = audit_text(audit(per_eps, 100, 0, (0.5, 0.0), 10))
    assert text.startswith("FAIL: attack not converged (ε=0.1)") and "finding: paper protocol overestimates" in text
    # rounds past the stop that broke more than the rule's bound per round: the rule itself is in doubt
    per_eps["0.1"].confidence = {"converged": True, "bound": 1.5, "tolerance": 2, "rounds_after_stop": [1, 3, 1]}
    assert "FAIL: convergence rule exceeded (ε=0.1)" in audit_text(audit(per_eps, 100, 0, (0.5, 0.0), 10))
    per_eps["0.1"].confidence["rounds_after_stop"] = [1, 2, 1]
    assert "convergence rule" not in audit_text(audit(per_eps, 100, 0, (0.5, 0.0), 10))
    old = Check("x", False, "", rule="paper protocol overestimates")  # an attacks.json without the finding field
    assert verdict(old) == "FINDING" and verdict(Check("x", False, "", rule="attack not converged")) == "FAIL"


class _Scripted(Evaluator):
    """Attacks replaced by a script: only the ranking's PGD through the first member fools sample 0."""

    def correct_after(self, unit, x, y, eps, keys=None):
        ok = torch.ones(len(y), dtype=torch.bool)
        if unit.phase == "rank" and unit.member["name"] == self.members[0]["name"]:
            ok[(x[:, 0, 0, 0] == 0.5)] = False  # sample 0 is marked by a pixel of exactly 0.5
        return ok, None

    def clean_correct(self, x, y):
        return torch.ones(len(y), dtype=torch.bool)


def test_ranking_breaks_count_in_the_worst_case_at_the_largest_epsilon():
    x, y = torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long)
    x[0, 0, 0, 0] = 0.5
    members = paper_ensemble()[:3]
    ev = _Scripted(
        nn.Identity(),
        members,
        [0.05, 0.1],
        [{"name": "fgsm"}],
        10,
        AdaptiveBudget(top_k=1, steps=1, max_targets=1, other_targets=1, square_queries=0, check_rounds=0),
    )
    out = ev.run(x, y)
    assert out["eps"]["0.05"]["robust_worst"] == 6  # the ranking runs at the largest epsilon only
    assert out["eps"]["0.1"]["robust_worst"] == 5
    assert out["eps"]["0.1"]["per_sample"]["worst"][0] == f"rank:pgd10/{members[0]['name']}"
    assert out["eps"]["0.1"]["broken_by_phase"]["rank"] == 1


def test_apgd_through_the_relu_path_sees_the_deployed_logits_with_the_relu_gradient():
    from srsnn.robustness.paths import DeployedJudge, changes_forward
    from srsnn.snn.network import gradient_path

    snn = _snn()
    x, y = _data(snn, 8)
    relu = next(m for m in paper_ensemble() if m["mode"] == "relu")
    assert changes_forward(relu) and not any(changes_forward(m) for m in paper_ensemble() if m["mode"] != "relu")
    judge = DeployedJudge(snn, relu)
    xg = x.clone().requires_grad_(True)
    z = judge(xg)
    with torch.no_grad():
        assert torch.equal(z, snn(x))  # APGD keeps iterates by these logits: the spiking network's
        with gradient_path(snn, "relu"):
            assert not torch.allclose(snn(x), z)  # (the ReLU network's own logits differ)
    w = torch.randn_like(z)
    (g,) = torch.autograd.grad((z * w).sum(), xg)
    xr = x.clone().requires_grad_(True)
    with gradient_path(snn, "relu"):
        (gr,) = torch.autograd.grad((snn(xr) * w).sum(), xr)
    assert torch.allclose(g, gr) and not judge.training


def test_adaptive_units_through_the_relu_path_attack_the_deployed_judge(monkeypatch):
    import srsnn.robustness.runner as rob
    from srsnn.robustness.paths import PaddedRows

    unpadded = lambda m: m.model if isinstance(m, PaddedRows) else m  # noqa: E731 - the evaluation's batch padding

    snn = _snn()
    x, y = _data(snn, 8)
    seen = []
    real = rob.make_attack
    monkeypatch.setattr(
        rob,
        "make_attack",
        lambda name, model, eps, **kw: (
            seen.append((name, type(unpadded(model)).__name__)) or real(name, model, eps, **kw)
        ),
    )
    relu = next(m for m in paper_ensemble() if m["mode"] == "relu")
    ev = Evaluator(
        snn,
        [relu],
        [0.1],
        [{"name": "fgsm"}],
        10,
        AdaptiveBudget(top_k=1, steps=2, max_targets=1, other_targets=1, square_queries=0, check_rounds=1),
    )
    ev.run(x, y)
    assert ("fgsm", type(snn).__name__) in seen  # the paper's protocol: the reference code's ReLU-path attack
    assert {n for n, m in seen if m == "DeployedJudge"} == {"apgd_ce", "apgdt"}


def test_square_is_rerun_in_the_check_rounds_with_a_new_seed_each(dense_ann_ckpt):
    """Square, a random search, finds other samples with another seed: the check rounds run it again with the round's
    seed; on a gradient-masking model (where Square matters most) it breaks what the white-box attacks left."""
    from lightning_modules.loading import load_trained

    trained = load_trained("conf/digits/ann.yaml", dense_ann_ckpt)[0].model.eval()
    budget = AdaptiveBudget(
        top_k=1, steps=3, max_targets=1, other_targets=1, square_queries=40, check_rounds=2, allocation="uniform"
    )
    net = nn.Sequential(Rounding(), trained).eval()
    x, y = _data(net, 30)
    ev = Evaluator(net, None, [0.3], [{"name": "fgsm"}], 10, budget, batch_size=30)
    ran = []
    run_unit = ev._run_unit
    ev._run_unit = lambda unit, *a: (
        ran.append((unit.phase, unit.attack, unit.kwargs.get("n_queries"), unit.kwargs.get("seed")))
        or run_unit(unit, *a)
    )
    res = ev.run(x, y)["eps"]["0.3"]
    assert res["broken_by_phase"]["square"] > 0
    squares = [r for r in ran if r[:2] == ("check", "square")]
    # Square broke something in the tier: it runs in every round, the first at 2x queries, the later ones at its
    # own queries with 2x restarts
    assert len(squares) == len(res["check_rounds"]) >= 1 and squares[0][2] == 80
    assert all(r[2] == 40 for r in squares[1:])
    assert len({r[3] for r in squares}) == len(squares)  # a new seed each round


def test_the_runner_counts_every_pass_of_the_model_per_phase_exactly():
    """PGD-k on samples nothing breaks: per sample k + 1 forwards (k steps, then the deployed model's judgement) and
    k backwards; the clean pass apart; a second process's counts add up (``per_sample`` sums them)."""
    from srsnn.robustness.cost import PassCounter, totals
    from srsnn.robustness.paths import padded

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(10, 1, 4, 4)
    y = model(x).argmax(1)  # all clean-correct
    model = padded(model)  # as the evaluation callback counts: the samples asked for, not the last batch's padding
    counter = PassCounter(model)
    ev = Evaluator(model, None, [1e-6], [{"name": "pgd", "steps": 3}], 3, batch_size=4, counter=counter)
    with counter:
        out = ev.run(x, y)
    assert out["eps"]["1e-06"]["robust_worst"] == 10  # nothing broke: every sample attacked by every step
    one = counter.per_sample(10, lambda t: t, "cpu")
    assert one["paper:pgd"] == {"forward": 4.0, "backward": 3.0} and one["other"] == {"forward": 1.0, "backward": 0.0}
    two = counter.per_sample(20, lambda t: 2 * t, "cpu")  # two processes with the same shard: the same per sample
    assert two == one and totals(one) == {"forward": 5.0, "backward": 3.0}
    assert totals(one, "paper:") == {"forward": 4.0, "backward": 3.0}
    assert ev.planned_passes() == (4, 4)  # what the plan says before it runs: PGD-3 on a sample nothing breaks


def test_the_fast_preset_plans_at_most_3x_the_paper_protocols_passes_and_says_its_cost_first():
    from callbacks.evaluation import PRESETS

    args = (nn.Identity(), paper_ensemble(), [0.1, 0.2], [{"name": "fgsm"}, {"name": "pgd", "steps": 10}], 10)
    fast = Evaluator(*args, AdaptiveBudget(**PRESETS["fast"]), snn_paths=[{"name": "assg"}, {"name": "hart"}])
    at_most, paper = fast.planned_passes()
    assert paper == 2 * 19 * (2 + 11) and paper < at_most <= 3 * paper
    for preset in ("strong", "thorough"):
        more = Evaluator(*args, AttackEvaluation(adaptive=preset).adaptive, snn_paths=[{"name": "a"}, {"name": "h"}])
        assert more.planned_passes()[0] > at_most and more.planned_passes()[1] == paper


def test_margin_rounds_spend_the_passes_on_the_samples_near_the_boundary(dense_ann_ckpt):
    """Margin allocation: the rounds re-run the (attack, path) pairs that broke something on the survivors whose
    closest gap is below ``reach`` x their clean gap; in the first round at 2x steps, the workhorse (the tier's most
    productive pair) at 3x starts within twice the reach; Square (rounds only) within reach and where the gradient
    attacks could not move the gap (masking)."""
    from lightning_modules.loading import load_trained
    from srsnn.robustness.runner import STUCK

    torch.manual_seed(0)
    ann = load_trained("conf/digits/ann.yaml", dense_ann_ckpt)[0].model.eval()
    x, y = _data(ann, 40)
    budget = AdaptiveBudget(
        top_k=1, steps=4, max_targets=2, other_targets=1, square_queries=10, check_rounds=2, reach=0.3,
        allocation="margin", ce_restarts=1, snn_restarts=1,
    )  # fmt: skip
    ev = Evaluator(ann, None, [0.15], [{"name": "fgsm"}], 10, budget, batch_size=40)
    ran, run_unit = [], ev._run_unit

    def spy(unit, x, y, alive, eps, *a):
        sets = {}
        if ev.alive_now is not None:  # inside the tier and the rounds (the paper protocol and ranking come first)
            for name, lo, hi in (("reach", -1e9, 0.3), ("wide", -1e9, 0.6), ("stuck", STUCK, 1e9)):
                sets[name] = ev.alive_now & (ev.gap < hi * ev.clean_gap) & (ev.gap > lo * ev.clean_gap)
        broke = run_unit(unit, x, y, alive, eps, *a)
        ran.append((unit, alive.clone(), sets))
        return broke

    ev._run_unit, ev.alive_now = spy, None
    original = ev._run_units

    def track(st, *a, **k):  # the survivors at each unit's start
        ev.alive_now = st.alive
        return original(st, *a, **k)

    ev._run_units = track
    res = ev.run(x, y)["eps"]["0.15"]
    tier = [u for u, _, _ in ran if u.phase == "adaptive"]
    assert [u.attack for u in tier] == ["apgd_ce", "apgdt"]  # no Square in the margin allocation's tier
    rounds = [(u, on, sets) for u, on, sets in ran if u.phase in ("check", "square")]
    assert rounds and len(res["check_rounds"]) >= 1
    first = [r for r in rounds if r[0].kwargs["seed"] == 1]
    workhorse = [(u, on, sets) for u, on, sets in first if u.kwargs.get("n_restarts") == 3]
    assert len(workhorse) == 1 and workhorse[0][0].kwargs["steps"] == 8  # 2x steps, 3x starts
    assert torch.equal(workhorse[0][1], workhorse[0][2]["wide"])
    for u, on, sets in rounds:
        if u.attack == "square":
            assert torch.equal(on, sets["reach"] | sets["stuck"])
            assert u.kwargs["n_queries"] == (20 if u.kwargs["seed"] == 1 else 10)  # 2x queries in the first round
        elif u is not workhorse[0][0]:
            assert torch.equal(on, sets["reach"])
    assert any(int(on.sum()) > int(sets["reach"].sum()) for _, on, sets in workhorse)  # beyond the reach
    robust = torch.tensor([b is None for b in res["per_sample"]["worst"]])
    assert robust.any() and bool((ev.gap[robust] > 0).all()) and bool((ev.gap[robust] < float("inf")).all())


def test_every_start_reports_its_best_iterate_keyed_to_its_samples():
    """``keyed_random(on_iterate=...)``: after each start of APGD (its restarts run on the samples still robust), the
    start's best iterate and the global keys of its rows; the iterates lie in the ball, shaped like their samples."""
    from srsnn.robustness.attacks import make_attack
    from srsnn.robustness.keyed import keyed_random

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(12, 1, 4, 4)
    y = model(x).argmax(1)
    keys = list(range(100, 112))
    seen = []
    attack = make_attack("apgd_ce", model, 0.05, steps=3, n_restarts=2)
    with keyed_random(attack, x, keys, seed=7, on_iterate=lambda rows, it: seen.append((rows, it))):
        adv = attack(x, y)
    assert 1 <= len(seen) <= 2 and seen[0][0] == keys  # the first start holds every sample
    robust = [k for k, ok in zip(keys, (model(adv).argmax(1) == y).tolist()) if ok]
    assert len(seen) == 1 or set(seen[1][0]) >= set(robust)  # a restart holds the samples still robust
    for rows, it in seen:
        at = [keys.index(k) for k in rows]
        assert it.shape == x[at].shape and (it - x[at]).abs().max() <= 0.05 + 1e-6
