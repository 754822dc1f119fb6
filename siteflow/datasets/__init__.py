"""Site datasets. Importing this package registers every dataset in
:data:`siteflow.registry.DATASETS`: ``fundus``, ``drive``, ``stare``, ``chase_db1``,
``synthetic_fundus`` and ``synthetic_vessels``."""

from siteflow.datasets.base import SegmentationDataset
from siteflow.datasets.files import SampleFiles
from siteflow.datasets.fundus import FundusDataset
from siteflow.datasets.synthetic import (
    SyntheticFundusDataset,
    SyntheticVesselsDataset,
    generate_fundus_sites,
    generate_vessel_sites,
)
from siteflow.datasets.vessels import ChaseDataset, DriveDataset, StareDataset, VesselDataset

__all__ = [
    "ChaseDataset",
    "DriveDataset",
    "FundusDataset",
    "SampleFiles",
    "SegmentationDataset",
    "StareDataset",
    "SyntheticFundusDataset",
    "SyntheticVesselsDataset",
    "VesselDataset",
    "generate_fundus_sites",
    "generate_vessel_sites",
]
