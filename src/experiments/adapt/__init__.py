"""Domain adaptation: gradient reversal, domain discriminator, EMA teacher, AdaBN, light
augmentations (pure torch) and the methods built from them (``adapt=``)."""

from experiments.adapt.methods import DANN, AdaptationMethod, AdaptStep, MeanTeacher, Oracle, SourceOnly

__all__ = ["DANN", "AdaptStep", "AdaptationMethod", "MeanTeacher", "Oracle", "SourceOnly"]
