"""Fine-tuning strategies (``finetune=``), ``finetune=auto``'s options, and the callback that applies them."""

from experiments.finetune.auto import Auto
from experiments.finetune.head_first import ClassifierOnly, Gradual, LinearProbeThenFinetune
from experiments.finetune.parameters import BitFit, Lora, NormTuning
from experiments.finetune.strategies import FinetuneStrategy, Full, Partial, Scratch

__all__ = ["Auto", "BitFit", "ClassifierOnly", "FinetuneStrategy", "Full", "Gradual", "LinearProbeThenFinetune", "Lora",
           "NormTuning", "Partial", "Scratch"]
