"""Multi-class site datasets (one class per image): a folder per class, ISIC 2019 as FLamby's
Fed-ISIC2019 cuts it, MedMNIST's ``.npz`` files (2D and 3D), and a synthetic multi-site set
written in those layouts; any of them can be cut into sites by a
:class:`~siteflow.datasets.classification.partition.Partition`. Importing this package
registers ``class_folders``, ``isic2019``, ``medmnist`` and ``synthetic_classes``."""

from siteflow.datasets.classification.base import ClassificationDataset, Sample
from siteflow.datasets.classification.folders import ClassFoldersDataset
from siteflow.datasets.classification.isic2019 import ISIC_CLASSES, Isic2019Dataset
from siteflow.datasets.classification.medmnist import MedMnistDataset
from siteflow.datasets.classification.partition import Partition, PartitionError, assign
from siteflow.datasets.classification.synthetic import (
    SyntheticClassesDataset,
    generate_class_sites,
    write_isic2019,
    write_medmnist,
)

__all__ = [
    "ClassFoldersDataset",
    "ClassificationDataset",
    "ISIC_CLASSES",
    "Isic2019Dataset",
    "MedMnistDataset",
    "Partition",
    "PartitionError",
    "Sample",
    "SyntheticClassesDataset",
    "assign",
    "generate_class_sites",
    "write_isic2019",
    "write_medmnist",
]
