"""LightningDataModules: one base (loaders, split, transforms, contract) and one module per source."""

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.custom import CustomDataModule
from experiments.datamodules.digits import DigitsDataModule
from experiments.datamodules.domain_pair import DomainPairDataModule
from experiments.datamodules.image_folder import ImageFolderDataModule
from experiments.datamodules.sparse import SparseCollate, SparseDataModule
from experiments.datamodules.torchvision_datasets import TorchvisionDataModule

__all__ = [
    "ClassificationDataModule",
    "CustomDataModule",
    "DigitsDataModule",
    "DomainPairDataModule",
    "ImageFolderDataModule",
    "SparseCollate",
    "SparseDataModule",
    "TorchvisionDataModule",
]
