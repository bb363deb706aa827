"""sparse-robust-snn in plain torch, grouped by the method's stages (the Lightning layer imports it, never the reverse).

``srsnn.ann`` the ANN architectures; ``srsnn.pruning`` masks and channel widths; ``srsnn.snn`` the IF neuron,
surrogates, conversion, multi-step execution and synop counting; ``srsnn.robustness`` attacks, gradient paths'
runner, budget, audit and training objectives; ``srsnn.export`` compact safetensors and NIR; ``srsnn.io`` checkpoints
and run folders. It imports no Lightning; the entry points (``train.py``, ``pipeline.py``, ``report.py``, ``export.py``,
``infer.py``) live apart, in ``srsnn_cli``.
"""

from srsnn.io import legacy

legacy.install()  # class paths of runs written before this layout (nets.<module>) still import
