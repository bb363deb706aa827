"""Gradient paths: the views of one SNN's weights an attack can take its gradient through.

The paper's ensemble (Schmolli et al., CPAL 2025; Özdenizci & Legenstein, TMLR 2024), the published SNN-specific
paths (ASSG, HART), the deployed forward itself (``MODEL``), and the BPDA judge that lets an attack through a path
with another forward (the ReLU network) keep what fools the deployed network.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from srsnn.snn.gradients import ASSG_A, HART_GAMMA
from srsnn.snn.network import gradient_path, neurons_of

MODEL = {"name": "model", "mode": None}  # the deployed forward itself (ANNs; Square; transfer judging)


def paper_ensemble() -> list[dict]:
    """The 19 gradient paths of Schmolli et al. (CPAL 2025) / Özdenizci & Legenstein (TMLR 2024):
    triangular x5, exponential x6, rectangular x5, straight-through, BPTR, and the ReLU network."""
    members = [{"mode": "spike", "surrogate": {"name": "triangular", "gamma": g}} for g in (0.25, 0.5, 1, 2, 3)]
    members += [
        {"mode": "spike", "surrogate": {"name": "exponential", "gamma_d": d, "gamma_s": s}}
        for d in (0.3, 1.0)
        for s in (0.5, 1.0, 2.0)
    ]
    members += [{"mode": "spike", "surrogate": {"name": "rectangular", "gamma": g}} for g in (0.25, 0.5, 1, 2, 4)]
    members += [{"mode": "spike", "surrogate": {"name": "straight_through"}}, {"mode": "bptr"}, {"mode": "relu"}]
    for m in members:
        sg = m.get("surrogate")
        args = ",".join(f"{v:g}" for k, v in (sg or {}).items() if k != "name")
        m["name"] = m["mode"] if sg is None else sg["name"] + (f"({args})" if args else "")
    return members


def ensemble(model: nn.Module) -> list[dict]:
    """The gradient paths an SNN is attacked through, from its neurons: for the repo's IF neuron the paper's 19
    (``paper_ensemble``); for snnTorch neurons (``srsnn.snn.native_paths``) their own surrogate (``model``), the
    paper ensemble's 17 surrogate shapes, each scaled to the neuron's threshold, BPTR and RGA (the rate gradient of
    HART's reference; the ensemble's ReLU path needs the repo's IF neuron)."""
    if neurons_of(model):
        return paper_ensemble()
    return (
        [dict(MODEL)]
        + [m for m in paper_ensemble() if m["mode"] in ("spike", "bptr")]
        + [{"mode": "rga", "name": "rga"}]
    )


def path_modes(model: nn.Module) -> tuple[str, ...]:
    """The published SNN-specific paths the adaptive tier runs (``snn_attack_paths``' ``modes``): ASSG and HART on the
    repo's IF neuron (PDSG runs on it too, ``srsnn.snn.gradients``, but is not in its tier), all three on snnTorch
    neurons."""
    return ("assg", "hart") if neurons_of(model) else ("assg", "hart", "pdsg")


def snn_attack_paths(
    assg_a: float = ASSG_A, hart_gamma: float = HART_GAMMA, modes: tuple = ("assg", "hart")
) -> list[dict]:
    """The published SNN-specific gradient paths beyond the paper's ensemble, those of ``modes`` (the ones the network
    defines): ASSG (Wang et al., arXiv 2512.22522; A) and HART (Hao et al., ICLR 2024; gamma relative to the
    threshold) for the repo's IF neuron (``srsnn.snn.neurons.IFNeuron``, the default); ASSG, HART and PDSG (Lun et
    al., CVPR 2025; no hyperparameter) for snnTorch neurons (``srsnn.snn.native_paths``)."""
    paths = [
        {"mode": "assg", "param": float(assg_a), "name": f"assg({assg_a:g})"},
        {"mode": "hart", "param": float(hart_gamma), "name": f"hart({hart_gamma:g})"},
        {"mode": "pdsg", "name": "pdsg"},
    ]
    return [p for p in paths if p["mode"] in modes]


MIN_ROWS = {True: 4, False: 2}  # by whether an input gradient will be taken
LINEAR_ROWS = 16  # MKL's sgemm rounds a linear layer's forward of fewer rows by another kernel (AVX-512: up to 15)


def _pad_linear_rows(module: nn.Module, args: tuple):
    (x,) = args
    rows = x.shape[:-1].numel()
    if 0 < rows < LINEAR_ROWS:  # zero rows: they add nothing to the weight's gradient
        module._unpadded_shape = x.shape[:-1]
        return (torch.cat([x.reshape(rows, -1), x.new_zeros(LINEAR_ROWS - rows, x.shape[-1])]),)


def _unpad_linear_rows(module: nn.Module, args: tuple, out: torch.Tensor):
    shape = module.__dict__.pop("_unpadded_shape", None)
    if shape is not None:
        return out[: shape.numel()].reshape(*shape, out.shape[-1])


class PaddedRows(nn.Module):
    """``model`` on batches of at least ``MIN_ROWS`` rows: a smaller one (an attack's last survivors on a process) is
    padded with copies of its first row, whose outputs, and so whose gradients, are dropped. CPU kernels round a
    batch of 1-3 rows differently from a larger one (the linear and convolution layers' input gradients; a
    time-stepped network's forward on one row), so without it a sample's result would depend on how many others
    survive with it on its process. A forward without an input gradient needs 2 rows, one with it 4; and a linear
    layer's forward ``LINEAR_ROWS`` (a time-stepped network feeds it one step's rows), padded with zeros inside it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear)]  # a plain list: the model owns them
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = MIN_ROWS[x.requires_grad and torch.is_grad_enabled()]
        # a linear layer sees at least the batch's rows, so only a smaller batch needs its hooks (for this call only)
        linears = self.linears if len(x) < LINEAR_ROWS else []
        hooks = [m.register_forward_pre_hook(_pad_linear_rows) for m in linears]
        hooks += [m.register_forward_hook(_unpad_linear_rows) for m in linears]
        try:
            if 0 < len(x) < rows:
                return self.model(torch.cat([x, x[:1].expand(rows - len(x), *x.shape[1:])]))[: len(x)]
            return self.model(x)
        finally:
            for hook in hooks:
                hook.remove()


def padded(model: nn.Module) -> PaddedRows:
    """``model`` behind ``PaddedRows`` (once)."""
    return model if isinstance(model, PaddedRows) else PaddedRows(model)


class DeployedJudge(nn.Module):
    """The deployed logits with a gradient path's gradient (BPDA; Athalye et al., ICML 2018):
    ``z = f(x) + g(x) - stopgrad(g(x))``, f the deployed forward, g the path's forward. An attack that keeps its best
    iterate (APGD) then keeps the one that fools f, not the one that fools g."""

    def __init__(self, model: nn.Module, member: dict):
        super().__init__()
        self.model, self.member = model, member
        self.train(model.training)  # torchattacks restores the attacked module's mode, and with it the model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.model(x)
        with use_path(self.model, self.member):
            g = self.model(x)
        return z + (g - g.detach())


def changes_forward(member: dict) -> bool:
    """Does this gradient path compute another forward than the deployed model (the ReLU network does)?"""
    return member.get("mode") == "relu"


def use_path(model: nn.Module, member: dict):
    """The block runs ``model`` through ``member``'s gradient path (the deployed forward for ``MODEL``)."""
    return (
        gradient_path(model, member["mode"], member.get("surrogate"), member.get("param"))
        if member.get("mode")
        else contextlib.nullcontext()
    )
