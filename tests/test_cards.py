"""Model cards: ``test`` writes ``card.json`` and the adversarial example of every break; ``report.py verify`` checks
them without any attack and fails with one line on a replaced example, other weights or an edited count."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import run_main, tiny_eval, tiny_overrides
from srsnn.export.card import Card
from srsnn.robustness.results import Examples, margins
from srsnn_cli import report


@pytest.fixture(scope="module")
def carded(dense_ann_ckpt, tmp_path_factory) -> Path:
    """An ANN evaluated by the tiny evaluation: its card folder (the run's evaluation/)."""
    root = tmp_path_factory.mktemp("carded")
    out = run_main(
        "test",
        "--config",
        "conf/digits/ann.yaml",
        "--config",
        tiny_eval(root),
        "--ckpt_path",
        dense_ann_ckpt,
        *tiny_overrides(root / "run"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return sorted((root / "run").rglob("card.json"))[-1].parent


def _verify(*args) -> tuple[int, str]:
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = report.main(["verify", *map(str, args)])
    return code, out.getvalue() + err.getvalue()


def test_a_card_holds_the_model_the_data_and_every_break_with_its_example(carded):
    card = Card.read(str(carded / "card.json"))
    examples = Examples.read(str(carded / card.examples["file"]))
    assert len(card.model["weights_sha256"]) == 64 and len(card.data["images_sha256"]) == 64
    assert card.data["num_samples"] == 10 and card.threat_model["norm"] == "Linf" and card.energy is not None
    broken = {s["index"] for s in card.samples if s["clean_correct"] and any(s["broken_by"].values())}
    assert broken and set(examples["index"].tolist()) == broken and card.examples["count"] == len(broken)
    assert (examples["margin"] > 0).all() and card.evaluation["passes_per_sample"]["forward"] > 0
    assert card.eps["0.1"]["broken"] + card.eps["0.1"]["robust"] == sum(s["clean_correct"] for s in card.samples)


def test_verify_passes_on_the_card_as_written(carded):
    code, text = _verify(carded.parent.parent)  # the run folder: its newest card
    assert code == 0 and text.startswith("verified") and "adversarial examples fool the model" in text, text


def test_verify_fails_with_one_line_on_a_replaced_example_other_weights_or_an_edited_count(carded, tmp_path):
    from safetensors.torch import save

    # one example replaced by its clean image (no longer misclassified)
    copy = tmp_path / "ev"
    shutil.copytree(carded, copy)
    ex = Examples.read(str(copy / "adversarial.safetensors.gz"))
    card = Card.read(str(copy / "card.json"))
    card.run["config"] = str((carded.parent / "config.yaml").resolve())
    card.write(str(copy / "card.json"))
    from callbacks.shards import first_samples
    from datamodules import Digits

    dm = Digits()
    dm.setup("test")
    x, _ = first_samples(dm, 10)
    ex["x"][0] = x[int(ex["index"][0])]
    ex["margin"][0] = 1.0  # as if it had fooled the model by a clear margin
    import gzip

    with gzip.open(copy / "adversarial.safetensors.gz", "wb") as f:
        f.write(save(dict(ex)))
    code, text = _verify(copy / "card.json")
    assert code == 1 and f"sample {int(ex['index'][0])}" in text and "no longer fools the model" in text, text
    assert len(text.strip().splitlines()) == 1

    # the weights of another model
    ckpt = torch.load(card.run["ckpt_path"], weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("bias"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 0.01
    torch.save(ckpt, tmp_path / "other.ckpt")
    code, text = _verify(carded / "card.json", "--ckpt_path", tmp_path / "other.ckpt")
    assert code == 1 and "weights are not the carded ones" in text, text

    # a count edited
    data = json.loads((carded / "card.json").read_text())
    data["eps"]["0.1"]["robust"] += 1
    data["run"]["config"] = str((carded.parent / "config.yaml").resolve())
    (tmp_path / "card.json").write_text(json.dumps(data))
    shutil.copy(carded / "adversarial.safetensors.gz", tmp_path / "adversarial.safetensors.gz")
    code, text = _verify(tmp_path / "card.json")
    assert code == 1 and "eps=0.1: the counts do not add up" in text, text


def test_margins_are_the_best_wrong_logit_minus_the_true_one():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]])
    assert margins(logits, torch.tensor([0, 0])).tolist() == [-1.0, 3.0]


def test_a_tie_the_argmax_breaks_to_another_class_is_a_kept_break():
    """Spike-count logits tie: the evaluation calls a sample broken when the argmax is another class, so its example is
    kept (margin 0); a tie broken to the true class is not a break."""
    ex = Examples()
    logits = torch.tensor([[3.0, 3.0, 0.0], [3.0, 3.0, 0.0]])  # argmax 0 on both
    ex.keep([7, 8], 0.1, torch.zeros(2, 1, 2, 2), logits, torch.tensor([1, 0]))
    assert list(ex.found) == [7] and ex.found[7][0] == 0.1 and ex.found[7][2] == 0.0


def test_two_cards_of_one_model_and_data_compare_per_sample_and_others_are_refused(carded, tmp_path):
    code, text = _verify(carded / "card.json")  # (the card as written verifies; compare needs nothing more)
    assert code == 0, text
    assert report.main(["compare", str(carded / "card.json"), str(carded / "card.json")]) == 0
    data = json.loads((carded / "card.json").read_text())
    data["model"]["weights_sha256"] = "f" * 64
    (tmp_path / "other.json").write_text(json.dumps(data))
    code, text = _compare(carded / "card.json", tmp_path / "other.json")
    assert code == 2 and "other weights" in text, text


def _compare(*args) -> tuple[int, str]:
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = report.main(["compare", *map(str, args)])
    return code, out.getvalue() + err.getvalue()


def test_example_checks_name_an_example_outside_the_ball_and_keep_floating_point_noise_apart():
    from srsnn.export.card import Verdict, check_examples

    model = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))  # class = the larger of x0, x1
    x = torch.tensor([[0.6, 0.4, 0, 0]] * 4)  # every clean image is class 0
    y = torch.zeros(4, dtype=torch.int64)
    adv = torch.tensor(
        [
            [0.4, 0.6, 0, 0],  # fools it, within eps 0.2
            [0.2, 0.8, 0, 0],  # fools it, but 0.4 away
            [0.6, 0.4, 0, 0],  # does not fool it; its stored margin was within noise
            [0.6, 0.4, 0, 0],  # does not fool it; its stored margin was clear
        ]
    )
    examples = dict(index=torch.arange(4), x=adv, eps=torch.full((4,), 0.2), margin=torch.tensor([0.2, 0.6, 1e-6, 0.3]))
    out = Verdict()
    check_examples(model, x, y, examples, out)
    assert out.checked == 4 and len(out.failures) == 2 and len(out.noise) == 1, out
    assert out.failures[0].startswith("sample 1: its example lies outside the eps=0.2 ball")
    assert out.failures[1].startswith("sample 3 (eps=0.2): no longer fools") and out.noise[0].startswith("sample 2")
