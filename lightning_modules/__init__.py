"""LightningModules: the robust ANN, and the converted SNN whose ``fit`` is adversarial fine-tuning."""

from .adversarial import AdversarialClassifier
from .converted_snn import ConvertedSNN
from .robust_ann import RobustANN

__all__ = ["AdversarialClassifier", "RobustANN", "ConvertedSNN"]
