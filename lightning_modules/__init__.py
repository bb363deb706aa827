"""LightningModules: the robust ANN, the converted SNN whose ``fit`` is adversarial fine-tuning, and an SNN you built
with snnTorch."""

from .adversarial import AdversarialClassifier
from .converted_snn import ConvertedSNN
from .native_snn import NativeSNN
from .robust_ann import RobustANN

__all__ = ["AdversarialClassifier", "RobustANN", "ConvertedSNN", "NativeSNN"]
