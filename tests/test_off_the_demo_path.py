"""Off the demo's path: 2- and 3-class data (where torchattacks' DLR losses are undefined) and a datamodule that
normalises its own images (outside [0, 1], where every attack's clamping is wrong)."""

import json

import pytest
import torch
from torch import nn

from helpers import TINY_SNN, ckpt, run_cli, run_main, tiny_overrides
from srsnn.ann.architectures import SmallCNN
from srsnn.errors import UserError
from srsnn.robustness.attacks import make_attack
from srsnn.robustness.budget import AdaptiveBudget
from srsnn.robustness.paths import paper_ensemble
from srsnn.robustness.runner import Evaluator
from srsnn.snn.conversion import convert

SMALL = AdaptiveBudget(top_k=2, steps=4, max_targets=3, other_targets=1, square_queries=20, check_rounds=2)


def _snn_and_data(classes: int, n: int = 24):
    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, width=4, num_classes=classes, mean=[0.2], std=[0.3])
    snn = convert(ann, [torch.rand(32, 1, 8, 8)], num_steps=2, calib_steps=4).eval()
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        y = snn(x).argmax(1)  # every sample starts correct
    return snn, x, y


@pytest.mark.parametrize("classes, targeted", [(2, None), (3, "pgdt"), (4, "apgdt")])
def test_the_adaptive_tier_runs_with_any_class_count_and_says_which_targeted_attack(classes, targeted):
    snn, x, y = _snn_and_data(classes)
    ev = Evaluator(
        snn,
        paper_ensemble()[:3],
        [0.1, 0.3],
        [{"name": "fgsm"}, {"name": "pgd", "steps": 3}],
        classes,
        SMALL,
        batch_size=16,
    )
    out = ev.run(x, y)
    assert out["interrupted"] is None and out["units_done"] > 0
    ran = {k.split(":")[1] for k in ev.seconds if k.startswith(("adaptive:", "check:", "square:"))}
    assert ran == {"apgd_ce", "square"} | ({targeted} if targeted else set())  # Square runs in the check rounds
    text = SMALL.describe(3, classes)
    assert ("APGD-T (DLR" in text) == (classes >= 4) and ("targeted PGD-CE" in text) == (classes == 3)
    assert ("no targeted attack" in text) == (classes == 2)


def test_targeted_pgd_leaves_the_ball_never_and_fools_a_linear_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(64, 1, 2, 2)
    y = net(x).argmax(1)
    adv = make_attack("pgdt", net, 0.3, steps=10, n_classes=3)(x, y)
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (net(adv).argmax(1) != y).sum() > 0


def test_dlr_attacks_with_too_few_classes_are_one_clear_error():
    snn, x, y = _snn_and_data(2, n=4)
    with pytest.raises(UserError, match="apgd_dlr needs at least 3 classes"):
        Evaluator(snn, None, [0.1], [{"name": "apgd_dlr"}], 2)


def test_images_outside_0_1_are_a_data_error_in_the_evaluator():
    snn, x, y = _snn_and_data(3, n=4)
    ev = Evaluator(snn, None, [0.1], [{"name": "fgsm"}], 3)
    with pytest.raises(UserError, match=r"lie in \[-0.4.*not \[0, 1\].*mean`/`std"):
        ev.run(x - 0.5, y)


@pytest.mark.parametrize("sub", ["fit", "test"])
def test_a_normalising_datamodule_is_refused_at_setup_with_one_line(tmp_path, sub):
    args = [
        sub,
        "--config",
        "conf/digits/ann.yaml",
        "--data",
        "tests.plain_data.NormalisedDigits",
        *tiny_overrides(tmp_path),
    ]
    out = run_main(*args)
    assert out.returncode == 2, out.stderr[-2000:]
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("error:"))
    loader = "train_dataloader" if sub == "fit" else "test_dataloader"
    assert f"the images of NormalisedDigits.{loader}() lie in [" in line and "not [0, 1]" in line and "mean" in line
    assert "Traceback" not in out.stderr and "adversarial example outside" not in out.stderr


STRONG = """
trainer:
  callbacks:
    - class_path: callbacks.AttackEvaluation
      init_args: {epsilons: [0.1], num_samples: 16, batch_size: 16, adaptive: strong}
    - class_path: callbacks.SpikeEnergyMonitor
      init_args: {num_samples: 16}
"""


@pytest.mark.e2e
@pytest.mark.parametrize("classes", [2, 3])
def test_few_classes_through_fit_conversion_and_the_strong_evaluation(tmp_path, classes):
    data = ["--data.init_args.classes", str(classes)]
    (tmp_path / "strong.yaml").write_text(STRONG)
    run_cli("train.py", "fit", "--config", "conf/digits/ann.yaml", *data, *tiny_overrides(tmp_path / "ann", 2, 8))
    ann = ckpt(tmp_path / "ann")
    snn = [
        "--config",
        "conf/digits/snn.yaml",
        *data,
        *TINY_SNN,
    ]
    run_cli("train.py", "fit", *snn, "--model.init_args.ann_checkpoint", ann, *tiny_overrides(tmp_path / "snn"))
    for kind, args, model in (
        ("ann", ["--config", "conf/digits/ann.yaml", *data], ann),
        ("snn", snn, ckpt(tmp_path / "snn")),
    ):
        run_cli(
            "train.py",
            "test",
            *args,
            "--config",
            str(tmp_path / "strong.yaml"),
            "--ckpt_path",
            model,
            *tiny_overrides(tmp_path / f"{kind}_test"),
        )
        res = json.loads(open(ckpt(tmp_path / f"{kind}_test", "attacks.json")).read())
        assert res["num_classes"] == classes and res["kind"] == kind and res["num_samples"] == 16
        assert ("targeted PGD-CE" if classes == 3 else "no targeted attack") in res["budget"]["adaptive"]
        assert any(k.startswith("adaptive:") for k in res["seconds_by_phase"])
        if kind == "snn":  # ASSG's A and HART's gamma chosen on the validation split, and recorded
            assert "validation images" in res["tuning"]["how"] and "adaptive:sapgd" in res["seconds_by_phase"]
        else:
            assert res["tuning"] is None
        records = json.loads(open(ckpt(tmp_path / f"{kind}_test", "per_sample.json")).read())["samples"]
        assert len(records) == 16


def test_the_evaluations_size_is_reachable_by_name_and_a_stray_callback_option_is_refused(tmp_path):
    out = run_main(
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--evaluation.num_samples",
        "20",
        "--evaluation.adaptive",
        "quick",
        "--evaluation.epsilons",
        "[0.05]",
        "--print_config",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import yaml

    cfg = yaml.safe_load(out.stdout)
    ev = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("AttackEvaluation"))["init_args"]
    energy = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("SpikeEnergyMonitor"))
    assert ev["num_samples"] == 20 and ev["adaptive"] == "quick" and ev["epsilons"] == [0.05]
    assert energy["init_args"]["num_samples"] != 20  # the energy monitor keeps its own
    # a preset with some keys changed, by name too
    out = run_main(
        "test", "--config", "conf/digits/ann.yaml", "--evaluation.adaptive", "{preset: strong, verify_rounds: 3}",
        "--print_config",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = yaml.safe_load(out.stdout)
    ev = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("AttackEvaluation"))["init_args"]
    from callbacks import AttackEvaluation
    from callbacks.evaluation import PRESETS

    budget = AttackEvaluation(adaptive=ev["adaptive"]).adaptive
    assert budget.verify_rounds == 3 and budget.check_rounds == PRESETS["strong"]["check_rounds"]
    assert budget.allocation == "margin" and AttackEvaluation(adaptive=ev["adaptive"]).preset == "strong+"
    with pytest.raises(UserError, match="adaptive.preset: 'strongest'"):
        AttackEvaluation(adaptive={"preset": "strongest"})
    out = run_main(
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--trainer.callbacks.init_args.num_samples",
        "20",
        *tiny_overrides(tmp_path),
    )
    assert out.returncode == 2 and "changes only the last callback (SpikeEnergyMonitor)" in out.stderr
    assert "--evaluation.num_samples" in out.stderr
    out = run_main(
        "fit", "--config", "conf/digits/prune_hydra.yaml", "--evaluation.num_samples", "5", *tiny_overrides(tmp_path)
    )
    assert out.returncode == 2 and "runs no callbacks.AttackEvaluation" in out.stderr
    out = run_main(
        "test", "--config", "conf/digits/ann.yaml", "--evaluation.adaptive", "strongest", *tiny_overrides(tmp_path)
    )
    assert out.returncode == 2 and "evaluation.adaptive" in out.stderr and "Traceback" not in out.stderr
