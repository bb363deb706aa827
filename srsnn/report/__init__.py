"""Comparison report: one paper-style table over several evaluated runs, plus figures.

    python report.py runs/pipeline/digits/*_test --out results/digits
    python report.py compare <run>/evaluation/per_sample.json theirs.json     # a second opinion, per sample

Each run folder is a ``train.py test`` run with ``AttackEvaluation`` and ``SpikeEnergyMonitor`` (their
``evaluation/attacks.json`` and ``energy.json``; the newest version is used). Where the pipeline's sibling folders
exists (``<run>`` without ``_test``: the fit), its last validation metrics and, for an SNN, the converted SNN's
before fine-tuning are read too. What a run is (pruning method, sparsity, T, converted only) comes from the
``stage.json`` each pipeline stage writes. Writes ``report.md`` (the table, conversion vs fine-tuning, the T sweep
and the paper's claims each with its measured answer), ``report.json`` and figures: robust accuracy vs epsilon,
vs sparsity per method, vs E_dense/E_sparse (the trade-off frontier), per-layer spikes / synops / sparsity by
layer name, and the T sweep.
Robust accuracy: the per-sample worst case over everything run, with the paper's protocol beside it.
E_dense/E_sparse = synops of the dense SNN of the same report / synops of each SNN (the paper's ratio; the first
layer's analog MACs are excluded and reported apart, with a labelled pJ estimate).

Modules: ``runs`` (reading run folders), ``per_sample`` (per-sample records: the union of two attacks, McNemar),
``tables``, ``claims`` (the paper's claims; thresholds and reference numbers as data), ``figures``; the command
line: ``srsnn_cli.report``.
"""

from .claims import answers_claims, claims
from .per_sample import compare, mcnemar
from .runs import last_validation, load_run, stage_info
from .tables import build_table, converted_pairs, eps_columns, main_rows, t_sweeps

__all__ = [
    "answers_claims",
    "build_table",
    "claims",
    "compare",
    "converted_pairs",
    "eps_columns",
    "last_validation",
    "load_run",
    "main_rows",
    "mcnemar",
    "stage_info",
    "t_sweeps",
]
