"""What an evaluation costs and what it finds: two presets on one trained model, in one run.

Runs ``train.py test`` on a test stage's model (its ``config.yaml`` and checkpoint, from its ``card.json``) once per
preset (default ``thorough``, the uniform rounds, then ``strong``, the margin allocation), each into its own folder,
and prints per preset: passes per sample by phase group (forward, backward, and forward-equivalents f + 2b), wall
time, the worst case per epsilon and its convergence, then the per-sample comparison (samples each preset broke that
the other left robust) and the paper-scale estimate: one model's evaluation of the CIFAR-10 test set (10,000 images)
with VGG-16 (313 M multiply-adds per image and time step, T = 8) on a GPU at a stated effective throughput, against
the paper protocol's.

    python bench/eval_cost.py [--stage runs/pipeline/digits/snn_test] [--presets thorough strong] [--out DIR]
        [--tflops 100]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = (  # (name, which phases): in the order an evaluation spends them
    ("tuning", lambda k: k == "tuning"),
    ("paper protocol", lambda k: k.startswith("paper:")),
    ("ranking", lambda k: k.startswith("rank:")),
    ("tier", lambda k: k.startswith("adaptive:") or k == "square:square"),
    ("rounds", lambda k: re.match(r"(check|square)\d+:", k) is not None),
    ("audit + clean", lambda k: k.startswith("audit") or k == "other"),
)
VGG16_MACS, VGG16_T, CIFAR_TEST = 313e6, 8, 10_000


def _card(stage: str) -> tuple[str, dict]:
    cards = sorted(glob.glob(os.path.join(stage, "**", "evaluation", "card.json"), recursive=True))
    if not cards:
        sys.exit(f"error: no evaluation/card.json under {stage}: run `make demo` first (or pass --stage)")
    with open(cards[-1]) as f:
        return cards[-1], json.load(f)


def _evaluate(config: str, ckpt: str, preset: str, out: str) -> tuple[dict, dict, float]:
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "test", "--config", config, "--ckpt_path", ckpt]
    cmd += [
        "--evaluation.adaptive",
        preset,
        "--trainer.default_root_dir",
        out,
        "--trainer.enable_progress_bar",
        "false",
    ]
    cmd += ["--trainer.logger.init_args.save_dir", out]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=os.getcwd(), stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    found = sorted(glob.glob(os.path.join(out, "**", "evaluation", "attacks.json"), recursive=True))
    with open(found[-1]) as f:
        attacks = json.load(f)
    with open(os.path.join(os.path.dirname(found[-1]), "per_sample.json")) as f:
        per_sample = json.load(f)
    return attacks, per_sample, wall


def _group(passes: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for name, member in GROUPS:
        chosen = [v for k, v in passes.items() if member(k)]
        out[name] = (sum(v["forward"] for v in chosen), sum(v["backward"] for v in chosen))
    return out


def _broken(per_sample: dict, eps: str) -> set[int]:
    return {s["index"] for s in per_sample["samples"] if s["clean_correct"] and s["broken_by"].get(eps)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="runs/pipeline/digits/snn_test", help="a test stage's folder (its card.json)")
    ap.add_argument("--presets", nargs="+", default=["thorough", "strong"])
    ap.add_argument("--out", default="runs/bench/eval_cost")
    ap.add_argument("--tflops", type=float, default=100.0, help="effective GPU throughput for the estimate")
    args = ap.parse_args(argv)
    card_path, card = _card(args.stage)
    config = os.path.normpath(os.path.join(os.path.dirname(card_path), card["run"]["config"]))
    ckpt = card["run"]["ckpt_path"]
    runs = {p: _evaluate(config, ckpt, p, os.path.join(args.out, p)) for p in args.presets}
    print(f"model: {ckpt} ({card['model']['class']}, T = {card['model'].get('num_steps')})\n")
    print("| preset | passes/sample: forward | backward | forward-equivalents (f + 2b) | wall s | worst case per ε |")
    print("|---|---|---|---|---|---|")
    for p, (attacks, _, wall) in runs.items():
        f = sum(v["forward"] for v in attacks["passes_by_phase"].values())
        b = sum(v["backward"] for v in attacks["passes_by_phase"].values())
        worst = ", ".join(
            f"{e}: {100 * v['worst']:.1f} % ({'converged' if v['confidence']['converged'] else 'not converged'})"
            for e, v in attacks["eps"].items()
        )
        print(f"| {p} | {f:,.0f} | {b:,.0f} | {f + 2 * b:,.0f} | {wall:.0f} | {worst} |")
    print("\n| preset | " + " | ".join(name for name, _ in GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    for p, (attacks, _, _) in runs.items():
        cells = [f"{fw:,.0f} / {bw:,.0f}" for fw, bw in _group(attacks["passes_by_phase"]).values()]
        print(f"| {p} (forward / backward) | " + " | ".join(cells) + " |")
    if len(runs) == 2:
        (a, (_, sa, _)), (b, (_, sb, _)) = runs.items()
        print()
        for eps in runs[a][0]["eps"]:
            only_a, only_b = sorted(_broken(sa, eps) - _broken(sb, eps)), sorted(_broken(sb, eps) - _broken(sa, eps))
            print(f"eps={eps}: broken by {a} only: {len(only_a)} {only_a}; by {b} only: {len(only_b)} {only_b}")
    print(f"\nCIFAR-10 VGG-16 estimate ({VGG16_MACS / 1e6:.0f} M MACs per image and step, T = {VGG16_T}, "
          f"{CIFAR_TEST:,} images, {args.tflops:g} TFLOP/s effective), one model:")  # fmt: skip
    per_pass = 2 * VGG16_MACS * VGG16_T * CIFAR_TEST / (args.tflops * 1e12) / 3600  # GPU-hours per pass per sample
    for p, (attacks, _, _) in runs.items():
        pp = attacks["passes_by_phase"]
        total = sum(v["forward"] + 2 * v["backward"] for v in pp.values())
        paper = sum(v["forward"] + 2 * v["backward"] for k, v in pp.items() if k.startswith("paper:"))
        print(
            f"  {p}: {total * per_pass:.2f} GPU-hours (the paper protocol alone: {60 * paper * per_pass:.0f} GPU-min)"
        )


if __name__ == "__main__":
    main()
