"""Multi-label chest X-ray site datasets: CheXpert, ChestX-ray14, VinDr-CXR, MIMIC-CXR-JPG,
and a synthetic multi-site set written in those layouts. Importing this package registers
``chexpert``, ``chestxray14``, ``vindr_cxr``, ``mimic_cxr`` and ``synthetic_cxr``."""

from siteflow.datasets.chest_xray.base import MultiLabelDataset, Record
from siteflow.datasets.chest_xray.chestxray14 import ChestXray14Dataset
from siteflow.datasets.chest_xray.chexpert import CheXpertDataset
from siteflow.datasets.chest_xray.labels import canonical_label
from siteflow.datasets.chest_xray.mimic import MimicCxrDataset
from siteflow.datasets.chest_xray.synthetic import SyntheticChestXrayDataset, generate_cxr_sites
from siteflow.datasets.chest_xray.vindr import VinDrCxrDataset

__all__ = [
    "ChestXray14Dataset",
    "CheXpertDataset",
    "MimicCxrDataset",
    "MultiLabelDataset",
    "Record",
    "SyntheticChestXrayDataset",
    "VinDrCxrDataset",
    "canonical_label",
    "generate_cxr_sites",
]
