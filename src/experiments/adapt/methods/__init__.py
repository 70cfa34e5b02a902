"""Domain-adaptation methods (``adapt=``): one class per method, one yaml each in conf/adapt/."""

from experiments.adapt.methods.base import AdaptationMethod, AdaptStep
from experiments.adapt.methods.dann import DANN
from experiments.adapt.methods.mean_teacher import MeanTeacher
from experiments.adapt.methods.oracle import Oracle
from experiments.adapt.methods.source_only import SourceOnly

__all__ = ["DANN", "AdaptStep", "AdaptationMethod", "MeanTeacher", "Oracle", "SourceOnly"]
