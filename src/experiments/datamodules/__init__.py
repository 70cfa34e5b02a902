"""LightningDataModules: one base (loaders, split, transforms) and one module per source."""

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.digits import DigitsDataModule

__all__ = ["ClassificationDataModule", "DigitsDataModule"]
