"""Fine-tuning strategies (``finetune=``) and the callback that applies them."""

from experiments.finetune.strategies import (
    Auto,
    ClassifierOnly,
    FinetuneStrategy,
    Full,
    Gradual,
    LinearProbeThenFinetune,
    Partial,
    Scratch,
)

__all__ = ["Auto", "ClassifierOnly", "FinetuneStrategy", "Full", "Gradual", "LinearProbeThenFinetune", "Partial", "Scratch"]
