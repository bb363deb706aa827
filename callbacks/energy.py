"""``SpikeEnergyMonitor``: spikes, synops, energy estimate and stored-weight size at the end of ``test``.

Per layer and in total, per test sample: spikes, firing rate (spikes per neuron per time step), synops
(spikes x non-zero outgoing synapses, exact; ``srsnn.snn.synops``), and the dense counterfactual (same spikes,
all-ones masks). The first layer sees the analog image, not spikes: its MACs are reported apart. For an
ANN: non-zero MACs. Energy (an *estimate*, labelled so): E_SNN = synops * E_AC + first-layer MACs * E_MAC,
E_ANN = MACs * E_MAC, with E_AC = 0.9 pJ and E_MAC = 4.6 pJ (45 nm, Horowitz 2014) unless configured.
Writes ``energy.json``, ``energy.md`` and ``energy_per_layer.png`` to ``<log_dir>/evaluation/``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info

from srsnn.errors import UserError
from srsnn.export.card import add_energy
from srsnn.export.compact import export_compact
from srsnn.modes import module_mode
from srsnn.pruning.masks import sparsity_report
from srsnn.snn.native import NativeNet, describe, first_spiking
from srsnn.snn.network import layers_of
from srsnn.snn.synops import SynopCounter, ann_macs, energy_uj, layer_labels

from .shards import results_dir, sum_over_ranks, test_subset, write_results


class SpikeEnergyMonitor(Callback):
    """Args:
    num_samples: test images to count over (0 = the whole test set); batch_size: their batch size.
    e_ac_pj, e_mac_pj: energy per accumulate / multiply-accumulate in pJ (estimates).
    output_dir: default ``<log_dir>/evaluation``.
    """

    def __init__(
        self,
        num_samples: int = 0,
        batch_size: int = 200,
        e_ac_pj: float = 0.9,
        e_mac_pj: float = 4.6,
        output_dir: Optional[str] = None,
    ):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.e_ac, self.e_mac, self.output_dir = e_ac_pj, e_mac_pj, output_dir
        self.results: dict[str, Any] = {}

    @torch.no_grad()
    def on_test_epoch_end(self, trainer, pl_module):
        model = pl_module.model
        with module_mode(model):
            self.results = self.measure(trainer, pl_module, model)
        self.write(trainer)

    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        device = pl_module.device
        kind = getattr(pl_module, "kind", "ann")
        spiking = first_spiking(model)
        if kind != "snn" and spiking is not None:  # counted as an ANN its energy would be silently wrong
            raise UserError(
                f"SpikeEnergyMonitor: {type(pl_module).__name__} calls itself an ANN but its network has spiking "
                f"neurons ({spiking}); wrap an snnTorch network in lightning_modules.NativeSNN"
            )
        shape = getattr(trainer.datamodule, "input_shape", None)
        xs = test_subset(trainer, self.num_samples)[0] if kind == "snn" or not shape else None
        shape = tuple(shape or xs.shape[1:])  # a plain LightningDataModule need not declare it: the images say it
        net = layers_of(model) if kind == "snn" else model
        res: dict[str, Any] = {"kind": kind, "units": UNITS, "sparsity": sparsity_report(net)}
        res["labels"] = layer_labels(net)  # readable layer names (conv1, fc1) for tables and plots
        res["storage"] = _storage(net, kind)
        if kind == "snn":
            return self._measure_snn(res, model, xs, device)
        macs, dense = ann_macs(net, shape), ann_macs(net, shape, dense=True)
        res.update(macs=macs, dense_macs=dense)
        res.update(self._energy(0.0, 0.0, macs, dense))
        rank_zero_info(
            f"[SpikeEnergyMonitor] ANN: {macs:,.0f} non-zero MAC / sample (dense {dense:,.0f}); "
            f"estimated {res['energy_uj']:.4f} uJ / sample at E_MAC = {self.e_mac} pJ"
        )
        return res

    def _measure_snn(self, res: dict[str, Any], model, xs: torch.Tensor, device) -> dict[str, Any]:
        """Any SNN (converted, or an snnTorch network of yours): spikes per neuron layer, synops per weight layer fed
        spikes, the input layers' MACs (``srsnn.snn.synops.SynopCounter``), summed over ranks."""
        native = isinstance(model, NativeNet)
        counter = SynopCounter(model)
        with counter:
            for i in range(0, len(xs), self.batch_size):
                model(xs[i : i + self.batch_size].to(device))
        res.update(native=native, neurons={name: describe(m) for m, name in counter.neurons.items()})
        # every count summed over ranks in one collective, float64 (exact integers beyond 2^24), then put back
        slots = [(st, "spikes") for st in counter.spikes.values()]
        slots += [(st, k) for st in counter.synops.values() for k in ("synops", "dense_synops", "macs", "dense_macs")]
        local = torch.tensor([st[k] for st, k in slots] + [len(xs)], dtype=torch.float64, device=device)
        *summed, samples = sum_over_ranks(local).tolist()
        for (st, k), v in zip(slots, summed):
            st[k] = v
        counter.samples = int(samples)
        res.update(counter.summary())
        tot = res["total"]
        res.update(
            num_samples=counter.samples,
            num_steps=max((v["steps_per_sample"] for v in res["layers"].values()), default=None),
            first_layer_macs=res.pop("input_macs"),
            dense_first_layer_macs=res.pop("dense_input_macs"),
            synop_ratio_dense_over_sparse=tot["dense_synops"] / max(tot["synops"], 1e-12),
        )
        res.update(
            self._energy(tot["synops"], tot["dense_synops"], res["first_layer_macs"], res["dense_first_layer_macs"])
        )
        rank_zero_info(
            f"[SpikeEnergyMonitor] SNN, T={res['num_steps']}, {counter.samples} samples: {tot['spikes']:,.0f} spikes "
            f"/ sample, {tot['synops']:,.0f} synops / sample (dense masks {tot['dense_synops']:,.0f}, "
            f"{res['synop_ratio_dense_over_sparse']:.2f}x), input layers {', '.join(res['input_layers'])}: "
            f"{res['first_layer_macs']:,.0f} MAC / sample; estimated {res['energy_uj']:.4f} uJ / sample"
        )
        return res

    def _energy(self, synops: float, dense_synops: float, macs: float, dense_macs: float) -> dict[str, Any]:
        """The estimate for the sparse network and its dense-mask counterfactual (``srsnn.snn.synops.energy_uj``);
        an ANN has no synops, only MACs."""
        return {
            "energy_uj": energy_uj(synops, macs, self.e_ac, self.e_mac),
            "dense_energy_uj": energy_uj(dense_synops, dense_macs, self.e_ac, self.e_mac),
            "e_ac_pj": self.e_ac,
            "e_mac_pj": self.e_mac,
        }

    def write(self, trainer) -> None:
        out = results_dir(trainer, self.output_dir)
        if trainer.is_global_zero:  # the evaluation's card, written just before, gets the energy accounting
            add_energy(os.path.join(out, "card.json"), self.results)
        write_results(
            trainer,
            self.output_dir,
            "energy",
            self.results,
            energy_markdown(self.results),
            {"energy_per_layer.png": lambda p: plot_layers(self.results, p)},
        )


UNITS = {
    "spikes": "spikes / sample",
    "synops": "AC / sample",
    "macs": "MAC / sample",
    "energy": "uJ / sample (estimate)",
    "bytes": "bytes",
}


def _storage(net: torch.nn.Module, kind: str) -> dict[str, Any]:
    """The stored-weight size: the compact export's bytes beside dense fp32 (``srsnn.export.compact``)."""
    with tempfile.TemporaryDirectory() as tmp:
        return export_compact(net, os.path.join(tmp, "m.safetensors"), {"kind": kind})


def energy_markdown(r: dict[str, Any]) -> str:
    s = r["storage"]
    lines = [
        f"Stored weights: {s['nonzero_weights']:,} non-zero; compact file {s['compact_bytes']:,} bytes vs "
        f"{s['dense_fp32_bytes']:,} bytes dense fp32 ({s['dense_fp32_bytes'] / s['compact_bytes']:.1f}x); "
        f"global sparsity {r['sparsity']['global']:.4f}",
        "",
    ]
    if r["kind"] != "snn":
        lines.append(
            f"ANN: {r['macs']:,.0f} non-zero MAC / sample (dense {r['dense_macs']:,.0f}); "
            f"energy estimate {r['energy_uj']:.4f} uJ / sample (E_MAC = {r.get('e_mac_pj', 4.6)} pJ)"
        )
        return "\n".join(lines) + "\n"
    return "\n".join(lines + _snn_lines(r)) + "\n"


def _energy_line(r: dict[str, Any]) -> str:
    return (
        f"energy estimate: {r['energy_uj']:.4f} uJ / sample (dense masks {r['dense_energy_uj']:.4f}); "
        f"E_AC = {r['e_ac_pj']} pJ, E_MAC = {r['e_mac_pj']} pJ (45 nm, Horowitz 2014) — an estimate, not a measurement"
    )


def _snn_lines(r: dict[str, Any]) -> list[str]:
    """An SNN: spikes per neuron layer, synops per weight layer fed spikes, the input layers' MACs."""
    label = lambda n: r.get("labels", {}).get(n, n)
    lines = [
        f"SNN, T = {r['num_steps']}, {r['num_samples']} test samples; per sample:",
        "",
        "| neuron layer | neurons | spikes | firing rate (spikes/neuron/step) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {label(name)} | {v['neurons']:,} | {v['spikes']:,.1f} | {v['firing_rate']:.4f} |"
        for name, v in r["layers"].items()
    ]
    lines += ["", "| weight layer fed spikes | synops (AC) | dense-mask synops (AC) |", "|---|---|---|"]
    syn = r["synops_by_layer"]
    lines += [f"| {label(n)} | {v['synops']:,.0f} | {v['dense_synops']:,.0f} |" for n, v in syn.items()]
    t = r["total"]
    lines += [
        f"| **total** | {t['synops']:,.0f} | {t['dense_synops']:,.0f} |",
        "",
        f"input layers ({', '.join(label(n) for n in r['input_layers'])}; analog input, every step): "
        f"{r['first_layer_macs']:,.0f} MAC",
        f"dense-mask / sparse synops: {r['synop_ratio_dense_over_sparse']:.2f}x",
        _energy_line(r),
    ]
    return lines


def plot_layers(r: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = lambda n: r.get("labels", {}).get(n, n)
    sp = {k: v for k, v in r["sparsity"].items() if k != "global"}
    panels = [("sparsity (fraction pruned)", [label(n) for n in sp], list(sp.values()))]
    if r["kind"] == "snn":
        names, syn = list(r["layers"]), list(r["synops_by_layer"])
        panels = [
            ("spikes / sample", [label(n) for n in names], [r["layers"][n]["spikes"] for n in names]),
            ("synops / sample", [label(n) for n in syn], [r["synops_by_layer"][n]["synops"] for n in syn]),
        ] + panels
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, names, vals) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        ax.bar(range(len(vals)), vals)
        ax.set_xticks(range(len(vals)), names, rotation=60, fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
