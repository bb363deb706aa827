"""The GPU recipes: every pipeline resolves, every stage config builds, and the settings are the paper's
(docs/method.md);
every config of conf/ resolves to the values it had before the configs were composed from shared parts."""

import json
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

RECIPES = ["cifar10", "cifar100", "tinyimagenet", "svhn"]


def _cfg(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


# the only differences composition brought, each without effect: a GPU recipe's SNN now states full precision as its
# ANN does (Lightning's default, 32-true, before); an SNN inherits its ANN's PGD step count, which R+FGSM, its inner
# attack (one step), ignores; an SNN's conversion settings are its recipe's (null) where they were spelled out
def _from_recipe(field: str):
    def same(old, new, cfg) -> bool:
        from srsnn.snn.conversion import recipe_from

        return new is None and getattr(recipe_from(cfg["model.init_args.recipe"]), field) == old

    return same


HARMLESS = {
    "trainer.precision": lambda old, new, cfg: old is None and new == "32-true",
    "model.init_args.attack_steps": lambda old, new, cfg: cfg.get("model.init_args.inner_attack") == "rfgsm",
    **{
        f"model.init_args.{k}": _from_recipe(f)
        for k, f in (
            ("reset", "reset"),
            ("min_threshold", "min_threshold"),
            ("v_init", "v_init"),
            ("bn", "bn"),
            ("amplitude", "amplitude"),
            ("calib_steps", "calib_steps"),
            ("percentile", "percentile"),
            ("scale", "scale"),
            ("calib_order", "order"),
        )
    },
}
ADDED = {"model.init_args.recipe"}  # the name of the conversion settings an SNN config's values come from
ADDED |= {
    f"evaluation.{k}" for k in ("num_samples", "batch_size", "epsilons", "adaptive", "output_dir")
}  # CLI shortcuts
ADDED |= {"data.init_args.classes"}  # Digits(classes=10): the digits kept


def test_every_config_resolves_to_the_values_it_had_before_composition():
    from resolved_configs import resolve, stage_configs

    before = json.loads((ROOT / "tests" / "resolved_configs.json").read_text())
    assert sorted(before) == stage_configs()
    for path, old in before.items():
        new = resolve(path)
        assert {k for k in set(old) ^ set(new) if not k.startswith("trainer.")} <= ADDED, (
            path
        )  # Lightning's own keys may vary
        changed = {k: (old[k], new[k]) for k in set(old) & set(new) if old[k] != new[k]}
        assert {k: v for k, v in changed.items() if not (k in HARMLESS and HARMLESS[k](*v, new))} == {}, path


def _stage_configs(dataset: str) -> dict[str, str]:
    pipe = _cfg(f"conf/{dataset}/pipeline.yaml")
    out = {"ann": pipe["ann"], "snn": pipe["snn"]}
    out.update(
        {p["name"]: " + ".join([p["config"]] if isinstance(p["config"], str) else p["config"]) for p in pipe["pruning"]}
    )
    return out


@pytest.mark.parametrize("dataset", RECIPES + ["digits", "mnist5k"])
def test_every_pipeline_plans_its_stages_from_existing_configs(dataset):
    from srsnn_cli.pipeline import plan

    pipe = _cfg(f"conf/{dataset}/pipeline.yaml")
    stages = plan(pipe)
    assert [s.name for s in stages[:4]] == ["ann", "ann_test", "snn", "snn_test"]
    assert all((ROOT / c).is_file() for s in stages for c in s.configs)
    sweep = len((pipe.get("t_sweep") or {}).get("num_steps", []))
    converted = len(pipe.get("converted_test") or [])
    assert len(stages) == 4 + 4 * sum(len(p["sparsity"]) for p in pipe["pruning"]) + 2 * sweep + converted


def test_a_t_sweep_names_its_stages_after_the_run_and_rejects_an_unknown_run():
    from srsnn_cli.pipeline import PipelineError, plan

    pipe = _cfg("conf/mnist5k/pipeline.yaml") | {"t_sweep": {"of": "hydra90", "num_steps": [2, 16]}}
    sweep = [s for s in plan(pipe) if "_T" in s.name]
    assert [s.name for s in sweep] == [
        "hydra90_T2_snn",
        "hydra90_T2_snn_test",
        "hydra90_T16_snn",
        "hydra90_T16_snn_test",
    ]
    assert sweep[0].args[-2:] == ["--model.init_args.num_steps", "2"] and sweep[1].needs == {
        "--ckpt_path": "hydra90_T2_snn"
    }
    assert sweep[0].needs == {"--model.init_args.ann_checkpoint": "hydra90_ann"}
    with pytest.raises(PipelineError, match="hydra42"):
        plan(pipe | {"t_sweep": {"of": "hydra42", "num_steps": [2]}})


def test_an_including_pipeline_adds_its_stages_to_the_included_ones_and_refuses_a_cycle(tmp_path):
    from srsnn_cli.pipeline import PipelineError, load_config, plan

    base = plan(load_config("conf/mnist5k/pipeline.yaml"))
    sweep = plan(load_config("conf/mnist5k/t_sweep.yaml"))
    assert [s.name for s in sweep if not s.name.startswith("hydra90_T")] == [s.name for s in base]  # reused as they are
    assert {s.name for s in sweep} - {s.name for s in base} == {
        f"hydra90_T{t}_snn{x}" for t in (2, 4, 16) for x in ("", "_test")
    }
    assert load_config("conf/mnist5k/t_sweep.yaml")["run_dir"] == load_config("conf/mnist5k/pipeline.yaml")["run_dir"]
    (tmp_path / "a.yaml").write_text(f"include: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"include: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(PipelineError, match="includes itself"):
        load_config(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("dataset", RECIPES)
def test_recipe_settings_are_the_papers(dataset):
    from resolved_configs import resolve_nested  # include and dotted overrides applied, as train.py does

    cfgs = {k: resolve_nested(v) for k, v in _stage_configs(dataset).items()}
    ann, snn = cfgs["ann"], cfgs["snn"]
    a, s = ann["model"]["init_args"], snn["model"]["init_args"]
    eps = lambda v: float(Fraction(str(v)))
    # stage 1: TRADES beta 2, 10-step PGD at 2/255, 100 epochs, SGD momentum 0.9, wd 1e-4
    assert (a["objective"], a["beta"], eps(a["epsilon"]), a["attack_steps"]) == ("trades", 2.0, 2 / 255, 10)
    assert ann["trainer"]["max_epochs"] == 100
    opt = a["optimizer"]["init_args"]
    assert (opt["momentum"], opt["weight_decay"]) == (0.9, 0.0001)
    assert opt["lr"] == (0.01 if dataset == "svhn" else 0.1)  # SVHN: 0.1 diverges under adversarial training
    # stages 2-3: T = 8, hard reset, 0.3 x 99.7th percentile over 10 x 64 at T_c = 100, RFGSM-KL beta 2 at 2/255,
    # triangular gamma = 1, 80 epochs at lr 0.001
    from srsnn.snn.conversion import recipe_from  # the conversion recipe named, with any setting the config changes

    r = recipe_from(s["recipe"], **{k: s[k] for k in ("reset", "bn", "percentile", "scale", "calib_steps")})
    assert (s["num_steps"], r.reset, r.bn) == (8, "zero", "keep")
    assert (r.percentile, r.scale, s["calib_batches"], s["calib_batch_size"], r.calib_steps) == (99.7, 0.3, 10, 64, 100)
    assert (s["objective"], s["inner_attack"], s["beta"], eps(s["epsilon"])) == ("trades", "rfgsm", 2.0, 2 / 255)
    assert s["surrogate"] == {"name": "triangular", "gamma": 1.0}
    assert snn["trainer"]["max_epochs"] == 80 and s["optimizer"]["init_args"]["lr"] == 0.001
    assert s["net"] == a["net"]  # the SNN keeps the ANN's architecture
    # pruning: 20 epochs of scores + 30 of fine-tuning at lr 0.01 (HYDRA/HARP), the same network
    for name, cfg in cfgs.items():
        if name in ("hydra", "harp"):
            cb = cfg["trainer"]["callbacks"][-1]["init_args"]
            assert cfg["trainer"]["max_epochs"] == 50 and cb["score_epochs"] == 20 and cb["finetune_lr"] == 0.01
        if name not in ("ann", "snn"):
            assert cfg["model"]["init_args"]["net"] == a["net"]
    # evaluation at 2, 4, 8/255: the paper's protocol (FGSM, PGD-10, APGD through the ensemble), then the adaptive
    # tier (APGD-CE + APGD-T over 9 targets, >= 50 steps, >= 3 strongest paths, Square 5000, convergence rounds)
    for cfg in (ann, snn):
        ev = next(
            c["init_args"] for c in cfg["trainer"]["callbacks"] if c["class_path"] == "callbacks.AttackEvaluation"
        )
        assert [eps(e) for e in ev["epsilons"]] == [2 / 255, 4 / 255, 8 / 255]
        assert {x["name"] for x in ev["attacks"]} >= {"fgsm", "pgd", "apgd_ce"}
        from callbacks import AttackEvaluation

        ad = AttackEvaluation(**ev).adaptive  # the budget as the callback resolves it (presets included)
        assert ad.steps >= 50 and ad.top_k >= 3 and ad.max_targets == 9 and ad.square_queries >= 5000
        assert ad.check_rounds >= 3  # convergence: a bound from the rounds after the first, at least two of them


@pytest.mark.parametrize("dataset", RECIPES)
def test_recipe_models_and_datamodules_build(dataset):
    from lightning_modules.loading import build_from_config

    for stage in ("ann", "snn"):
        model, dm, _ = build_from_config(_stage_configs(dataset)[stage])
        assert model._num_classes() == dm.num_classes
        assert Path(dm.data_dir).parts[0] == "data"
