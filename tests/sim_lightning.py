"""Lightning on the simulated accelerator: a strategy whose root device is ``SIM`` (``tests/sim_device.py``).

Use inside ``simulated_accelerator()``: ``Trainer(strategy=SimStrategy())``, or on ``train.py``'s command line run
in-process: ``--trainer.strategy '{"class_path": "sim_lightning.SimStrategy"}'``. The strategy checks what it
moves: every batch and every parameter and buffer of the module must then be on the simulated device, and it
counts the batches, so a test can tell that a stage really ran there.
"""

from __future__ import annotations

import torch
from lightning.pytorch.accelerators import Accelerator
from lightning.pytorch.strategies import SingleDeviceStrategy
from sim_device import SIM, SimTensor
from torch.utils._pytree import tree_flatten


class SimAccelerator(Accelerator):
    """One simulated device: no memory statistics, no CUDA call."""

    def setup_device(self, device: torch.device) -> None:
        pass

    def teardown(self) -> None:
        pass

    def get_device_stats(self, device) -> dict:
        return {}

    @staticmethod
    def parse_devices(devices):
        return 1

    @staticmethod
    def get_parallel_devices(devices):
        return [SIM]

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def name() -> str:
        return "sim"


class SimStrategy(SingleDeviceStrategy):
    batches = 0  # batches moved to the simulated device (all instances)

    def __init__(self, **kwargs):
        super().__init__(device=SIM, accelerator=SimAccelerator(), **kwargs)

    def model_to_device(self) -> None:
        super().model_to_device()
        left = [
            n for n, t in [*self.model.named_parameters(), *self.model.named_buffers()] if not isinstance(t, SimTensor)
        ]
        assert not left, f"left on the CPU after moving the module: {left[:5]}"

    def batch_to_device(self, batch, device=None, dataloader_idx: int = 0):
        batch = super().batch_to_device(batch, device, dataloader_idx)
        tensors = [t for t in tree_flatten(batch)[0] if isinstance(t, torch.Tensor)]
        assert tensors and all(isinstance(t, SimTensor) for t in tensors), "a batch was not moved to the device"
        SimStrategy.batches += 1
        return batch
