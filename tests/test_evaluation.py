"""The evaluation is honest: ensemble <= every member, and the audit catches gradient masking."""
import lightning as L
import torch
from torch import nn

from callbacks import AttackEvaluation, SpikeEnergyMonitor
from datamodules import Digits
from lightning_modules import RobustANN
from nets.architectures import SmallCNN
from nets.attacks import ensemble_attack, paper_ensemble
from nets.conversion import convert


def _snn():
    torch.manual_seed(0)
    ann = SmallCNN(input_size=8, width=4, mean=[0.2], std=[0.3])
    return convert(ann, [torch.rand(32, 1, 8, 8)], num_steps=3, calib_steps=8).eval()


def test_ensemble_never_more_robust_than_any_member():
    snn = _snn()
    dm = Digits()
    dm.setup()
    x, y = next(iter(dm.test_dataloader()))
    x, y = x[:40], y[:40]
    with torch.no_grad():
        y = snn(x).argmax(1)  # use the model's own predictions so that every sample starts correct
    members = paper_ensemble()
    assert len(members) == 19
    robust, per = ensemble_attack(snn, "pgd", x, y, 0.1, members, per_member=True, steps=3)
    assert set(per) == {m["name"] for m in members}
    for name, correct in per.items():
        assert robust.sum() <= correct.sum(), name
        assert not (robust & ~correct).any()
    early, _ = ensemble_attack(snn, "fgsm", x, y, 0.1, members, per_member=False)
    assert early.sum() <= min(c.sum() for c in ensemble_attack(snn, "fgsm", x, y, 0.1, members, per_member=True)[1].values())


class Rounding(nn.Module):
    """Quantises the input: a non-differentiable step that zeroes every input gradient (gradient masking)."""

    def forward(self, x):
        return torch.round(x * 4) / 4


def _run_eval(net, tmp_path):
    module = RobustANN(net, objective="standard", eval_epsilon=0.1)
    cb = AttackEvaluation(attacks=[{"name": "pgd", "steps": 5}], epsilons=[0.05, 0.1], num_samples=60,
                          batch_size=60, square_queries=50, output_dir=str(tmp_path))
    trainer = L.Trainer(inference_mode=False, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_test_batches=1, callbacks=[cb, SpikeEnergyMonitor(num_samples=60, output_dir=str(tmp_path))],
                        default_root_dir=str(tmp_path), accelerator="cpu")
    trainer.test(module, datamodule=Digits(batch_size=60))
    return {c["check"]: c["passed"] for c in cb.results["audit"]}


def test_audit_flags_a_gradient_masking_model(tmp_path):
    torch.manual_seed(0)
    masked = nn.Sequential(Rounding(), SmallCNN(input_size=8, width=4))
    verdict = _run_eval(masked, tmp_path)
    assert verdict["non-zero input gradients under the ensemble"] is False
    assert (tmp_path / "attacks.json").exists() and (tmp_path / "attacks.md").exists()
    assert (tmp_path / "robust_accuracy.png").exists() and (tmp_path / "energy.json").exists()


def test_audit_passes_gradient_check_on_a_plain_model(tmp_path):
    torch.manual_seed(0)
    verdict = _run_eval(SmallCNN(input_size=8, width=4), tmp_path)
    assert verdict["non-zero input gradients under the ensemble"] is True
