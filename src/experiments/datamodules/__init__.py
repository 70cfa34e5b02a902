"""LightningDataModules: one base (loaders, split, transforms, contract) and one module per source."""

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.custom import CustomDataModule
from experiments.datamodules.device_augment import DeviceAugment
from experiments.datamodules.digits import DigitsDataModule
from experiments.datamodules.digits_m import DigitsMDataModule
from experiments.datamodules.domain_pair import DomainPairDataModule
from experiments.datamodules.image_folder import ImageFolderDataModule
from experiments.datamodules.sparse import SparseCollate, SparseDataModule
from experiments.datamodules.text import TextDataModule
from experiments.datamodules.torchvision_datasets import TorchvisionDataModule

__all__ = [
    "ClassificationDataModule",
    "CustomDataModule",
    "DeviceAugment",
    "DigitsDataModule",
    "DigitsMDataModule",
    "DomainPairDataModule",
    "ImageFolderDataModule",
    "SparseCollate",
    "SparseDataModule",
    "TextDataModule",
    "TorchvisionDataModule",
]
