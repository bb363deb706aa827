"""``AttackEvaluation``: robust accuracy through the spikes, against an ensemble of gradient paths, plus an audit.

Runs at the end of ``trainer.test`` on a fixed subset of the test set (the first ``num_samples`` images;
each DDP rank attacks its own shard, counts summed with torchmetrics). For an SNN every white-box attack runs
through the 19 gradient paths of ``nets.attacks.paper_ensemble`` (a sample is robust only if every member
fails; Schmolli et al., CPAL 2025), for an ANN through the network itself. Square (black-box) and a transfer
attack from another model are run at the largest epsilon. Results go to ``<log_dir>/evaluation/``:
``attacks.json``, ``attacks.md`` and ``robust_accuracy.png``.

The audit prints a verdict per check and marks numbers it casts doubt on:
non-zero input gradients under the ensemble; accuracy non-increasing in epsilon; white-box accuracy near 0
at a very large epsilon; 40 PGD steps never better than 10; black-box and transfer never better than the
white-box ensemble.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.utilities.distributed import gather_all_tensors

from nets.attacks import Eps, ensemble_attack, input_gradients, make_attack, paper_ensemble, parse_eps
from nets.errors import UserError

WHITE_BOX = ("fgsm", "pgd", "apgd_ce", "apgd_dlr")


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a tensor of counts over DDP ranks (torchmetrics' gather; identity on one process)."""
    values = values.double()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.stack(gather_all_tensors(values)).sum(0)
    return values


def results_dir(trainer, output_dir: Optional[str]) -> str:
    path = output_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, "evaluation")
    if trainer.is_global_zero:
        os.makedirs(path, exist_ok=True)
    return path


def write_results(trainer, output_dir: Optional[str], stem: str, results: dict, markdown: str, plots: dict) -> None:
    """``<stem>.json``, ``<stem>.md`` and the plots (``{filename: fn(path)}``) into the results folder.

    Call on every rank: ``trainer.log_dir`` is a broadcast under DDP (a rank-0-only call deadlocks); rank 0 writes."""
    out = results_dir(trainer, output_dir)
    if not trainer.is_global_zero:
        return
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(markdown)
    for name, fn in plots.items():
        fn(os.path.join(out, name))
    rank_zero_info(f"wrote {out}/{stem}.json, {stem}.md, " + ", ".join(plots))


def test_subset(trainer, num_samples: int, batch_size: int):
    """The first ``num_samples`` test images, this rank's shard, in batches (deterministic)."""
    dm = trainer.datamodule
    if dm is None or not hasattr(dm, "data_test"):
        raise UserError("evaluation callbacks need a datamodule with a test set")
    dm.setup("test")
    n = min(num_samples, len(dm.data_test)) if num_samples else len(dm.data_test)
    idx = list(range(n))[trainer.global_rank::trainer.world_size]
    for i in range(0, len(idx), batch_size):
        items = [dm.data_test[j] for j in idx[i:i + batch_size]]
        yield torch.stack([a for a, _ in items]), torch.tensor([int(b) for _, b in items])


class AttackEvaluation(Callback):
    """Args:
        attacks: white-box attacks with settings, e.g. ``[{name: pgd, steps: 10}, {name: fgsm}, {name: apgd_ce}]``.
        epsilons: perturbation budgets in pixel space (numbers or ``"8/255"``).
        num_samples: size of the fixed test subset (0 = whole test set); batch_size: attack batch size.
        ensemble: ``auto`` (SNN: the paper's 19 gradient paths; ANN: the network), ``none`` or ``paper``.
        per_member: also run every member on every sample (reports each member's own accuracy; slower).
        square_queries: queries of the Square attack at the largest epsilon (0 = skip).
        transfer_from: ``{config: <yaml>, ckpt_path: <ckpt>}`` of a source model; its PGD examples are judged here.
        audit: run the robustness audit; large_eps: the epsilon of the "near 0 accuracy" check.
        output_dir: where results go (default ``<log_dir>/evaluation``).
    """

    def __init__(self, attacks: Optional[list[dict[str, Any]]] = None, epsilons: Optional[list[Eps]] = None,
                 num_samples: int = 500, batch_size: int = 100, ensemble: str = "auto", per_member: bool = False,
                 square_queries: int = 1000, transfer_from: Optional[dict[str, str]] = None, audit: bool = True,
                 large_eps: float = 0.5, output_dir: Optional[str] = None):
        self.attacks = attacks or [{"name": "fgsm"}, {"name": "pgd", "steps": 10}]
        for a in self.attacks:
            if a.get("name") not in WHITE_BOX:
                raise UserError(f"AttackEvaluation: attack {a.get('name')!r} is not a white-box attack of {WHITE_BOX}"
                                " (Square is set with square_queries, transfer with transfer_from)")
        self.epsilons = sorted(parse_eps(e, "AttackEvaluation.epsilons") for e in (epsilons or ["2/255", "4/255", "8/255"]))
        if ensemble not in ("auto", "none", "paper"):
            raise UserError(f"AttackEvaluation.ensemble must be auto, none or paper, got {ensemble!r}")
        if num_samples < 0 or batch_size < 1:
            raise UserError("AttackEvaluation needs num_samples >= 0 and batch_size >= 1")
        self.num_samples, self.batch_size, self.ensemble, self.per_member = num_samples, batch_size, ensemble, per_member
        self.square_queries, self.transfer_from, self.audit = square_queries, transfer_from, audit
        self.large_eps, self.output_dir = parse_eps(large_eps, "AttackEvaluation.large_eps"), output_dir
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------
    def members(self, pl_module) -> Optional[list[dict]]:
        if self.ensemble == "none" or (self.ensemble == "auto" and getattr(pl_module, "kind", "ann") != "snn"):
            return None
        return paper_ensemble()

    def on_test_epoch_end(self, trainer, pl_module):
        self.results = self.evaluate(trainer, pl_module)
        self.write(trainer)

    def evaluate(self, trainer, pl_module) -> dict[str, Any]:
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            return self._evaluate(trainer, pl_module, model)
        finally:
            model.train(was_training)

    def _evaluate(self, trainer, pl_module, model) -> dict[str, Any]:
        device = pl_module.device
        members = self.members(pl_module)
        names = [m["name"] for m in members] if members else ["model"]
        batches = [(x.to(device), y.to(device)) for x, y in test_subset(trainer, self.num_samples, self.batch_size)]
        res: dict[str, Any] = {"kind": getattr(pl_module, "kind", "ann"), "ensemble": names,
                               "epsilons": self.epsilons, "attacks": {}, "audit": []}

        def run(attack: str, eps: float, mem=members, per_member=False, **kw):
            counts = torch.zeros(1 + len(names), device=device)  # [robust, per-member correct...]
            for x, y in batches:
                robust, per = ensemble_attack(model, attack, x, y, eps, mem, per_member=per_member, **kw)
                counts[0] += robust.sum()
                for i, name in enumerate(names):
                    if name in per and len(per[name]) == len(x):
                        counts[1 + i] += per[name].sum()
            return sum_over_ranks(counts).tolist()

        total = float(sum_over_ranks(torch.tensor([float(len(y)) for _, y in batches], device=device).sum()))
        with torch.no_grad():
            clean = float(sum_over_ranks(torch.tensor([float((model(x).argmax(1) == y).sum()) for x, y in batches],
                                                      device=device).sum()))
        res["num_samples"], res["clean_acc"] = int(total), clean / max(total, 1)
        rank_zero_info(f"[AttackEvaluation] {int(total)} test samples, clean accuracy {res['clean_acc']:.4f}; "
                       f"{'ensemble of ' + str(len(names)) + ' gradient paths' if members else 'plain white-box'}")
        for spec in self.attacks:
            spec = dict(spec)
            name = spec.pop("name")
            label = name if name != "pgd" else f"pgd{spec.get('steps', 10)}"
            res["attacks"][label] = {}
            for eps in self.epsilons:
                counts = run(name, eps, per_member=self.per_member, **spec)
                entry = {"ensemble": counts[0] / total}
                if self.per_member:
                    entry["members"] = {n: c / total for n, c in zip(names, counts[1:])}
                res["attacks"][label][f"{eps:.6g}"] = entry
                best = f", strongest member {min(entry['members'].values()):.4f}" if self.per_member else ""
                rank_zero_info(f"[AttackEvaluation] {label:>8s} eps={eps:.4g}: robust accuracy {entry['ensemble']:.4f}{best}")
        eps_max = self.epsilons[-1]
        if self.square_queries:
            c = run("square", eps_max, mem=None, n_queries=self.square_queries)
            res["square"] = {"eps": eps_max, "queries": self.square_queries, "acc": c[0] / total}
            rank_zero_info(f"[AttackEvaluation]   square eps={eps_max:.4g} ({self.square_queries} queries): {c[0] / total:.4f}")
        if self.transfer_from:
            res["transfer"] = self._transfer(batches, model, eps_max, total, device)
        if self.audit:
            res["audit"] = self._audit(res, run, batches, model, members, total, device, trainer.datamodule.num_classes)
        return res

    def _transfer(self, batches, model, eps, total, device) -> dict[str, Any]:
        from lightning_modules.loading import load_trained

        src, _, _ = load_trained(self.transfer_from["config"], self.transfer_from["ckpt_path"])
        src = src.model.to(device).eval()
        correct = 0.0
        for x, y in batches:
            with torch.enable_grad():
                adv = make_attack("pgd", src, eps, steps=10)(x, y)
            with torch.no_grad():
                correct += float((model(adv).argmax(1) == y).sum())
        acc = float(sum_over_ranks(torch.tensor(correct, device=device))) / total
        rank_zero_info(f"[AttackEvaluation] transfer eps={eps:.4g} from {self.transfer_from['ckpt_path']}: {acc:.4f}")
        return {"eps": eps, "source": self.transfer_from, "acc": acc}

    def _audit(self, res, run, batches, model, members, total, device, num_classes) -> list[dict[str, Any]]:
        tol = 1.0 / total + 1e-9  # one sample: random starts may flip a single borderline sample
        checks = []

        def check(name, passed, detail):
            checks.append({"check": name, "passed": bool(passed), "detail": detail})
            mark = "PASS" if passed else "FAIL  <<< the numbers below/above are in doubt"
            rank_zero_info(f"[audit] {mark}: {name} — {detail}")

        grads = torch.cat([input_gradients(model, x, y, members) for x, y in batches] + [torch.ones(0, device=device)])
        zero = float(sum_over_ranks((grads == 0).sum().float()))
        check("non-zero input gradients under the ensemble", zero == 0,
              f"{int(zero)} of {int(total)} samples have an all-zero input gradient under every gradient path")
        for label, by_eps in res["attacks"].items():
            accs = [v["ensemble"] for v in by_eps.values()]
            check(f"{label}: accuracy non-increasing in epsilon", all(b <= a + tol for a, b in zip(accs, accs[1:])),
                  " >= ".join(f"{a:.3f}" for a in accs))
        big = run("pgd", self.large_eps, steps=20)[0] / total
        limit = max(0.1, 1.5 / max(1, num_classes))  # the datamodule's, checked against the network at setup
        check(f"white-box accuracy near 0 at eps={self.large_eps:g}", big <= limit, f"PGD-20: {big:.3f} (limit {limit:.3f})")
        mid = self.epsilons[len(self.epsilons) // 2]
        a10, a40 = run("pgd", mid, steps=10)[0] / total, run("pgd", mid, steps=40)[0] / total
        check("40 PGD steps never better than 10", a40 <= a10 + tol, f"eps={mid:.4g}: PGD-10 {a10:.3f}, PGD-40 {a40:.3f}")
        eps_max = self.epsilons[-1]
        white = min(v[f"{eps_max:.6g}"]["ensemble"] for v in res["attacks"].values())
        for key in ("square", "transfer"):
            if key in res:
                check(f"{key} never beats the white-box ensemble", res[key]["acc"] + tol >= white,
                      f"eps={eps_max:.4g}: {key} {res[key]['acc']:.3f} vs white-box {white:.3f}")
        return checks

    # ------------------------------------------------------------------------------------------------
    def write(self, trainer) -> None:
        write_results(trainer, self.output_dir, "attacks", self.results, attacks_markdown(self.results),
                      {"robust_accuracy.png": lambda p: plot_robust_accuracy({"this model": self.results}, p)})


def attacks_markdown(r: dict[str, Any]) -> str:
    eps = [f"{e:.6g}" for e in r["epsilons"]]
    lines = [f"Robust accuracy on {r['num_samples']} test samples ({r['kind'].upper()}; "
             f"{'ensemble of ' + str(len(r['ensemble'])) + ' gradient paths' if len(r['ensemble']) > 1 else 'white-box'}).",
             "", f"clean accuracy: {r['clean_acc']:.4f}", "",
             "| attack | " + " | ".join(f"eps={e}" for e in eps) + " |", "|---" * (len(eps) + 1) + "|"]
    for label, by in r["attacks"].items():
        lines.append(f"| {label} | " + " | ".join(f"{by[e]['ensemble']:.4f}" for e in eps) + " |")
    for key in ("square", "transfer"):
        if key in r:
            lines.append(f"\n{key} at eps={r[key]['eps']:.4g}: {r[key]['acc']:.4f}")
    members = [(label, by) for label, by in r["attacks"].items() if "members" in by[eps[-1]]]
    if members:
        label, by = members[-1]
        lines += ["", f"Per member, {label}:", "", "| member | " + " | ".join(f"eps={e}" for e in eps) + " |",
                  "|---" * (len(eps) + 1) + "|"]
        for m in r["ensemble"]:
            lines.append(f"| {m} | " + " | ".join(f"{by[e]['members'][m]:.4f}" for e in eps) + " |")
        lines.append("| **ensemble** | " + " | ".join(f"**{by[e]['ensemble']:.4f}**" for e in eps) + " |")
    if r.get("audit"):
        lines += ["", "Audit:", ""] + [f"- {'PASS' if c['passed'] else '**FAIL**'}: {c['check']} — {c['detail']}"
                                       for c in r["audit"]]
    return "\n".join(lines) + "\n"


def plot_robust_accuracy(runs: dict[str, dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, r in runs.items():
        for label, by in r["attacks"].items():
            xs = [0.0] + [float(e) for e in by]
            ax.plot(xs, [r["clean_acc"]] + [v["ensemble"] for v in by.values()], marker="o", label=f"{name} {label}")
    ax.set_xlabel("epsilon (pixel space)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
