"""Fine-tuning strategies (``finetune=``) and the callback that applies them."""

from experiments.finetune.strategies import (
    ClassifierOnly,
    FinetuneStrategy,
    Full,
    Gradual,
    LinearProbeThenFinetune,
    Partial,
    Scratch,
)

__all__ = ["ClassifierOnly", "FinetuneStrategy", "Full", "Gradual", "LinearProbeThenFinetune", "Partial", "Scratch"]
