"""Synthetic multi-site fundus and vessel data, written in the real release layouts."""

from siteflow.datasets.synthetic.cache import cached_generation
from siteflow.datasets.synthetic.datasets import SyntheticFundusDataset, SyntheticVesselsDataset
from siteflow.datasets.synthetic.generated import GeneratedSites
from siteflow.datasets.synthetic.sites import generate_fundus_sites, generate_vessel_sites

__all__ = [
    "GeneratedSites",
    "SyntheticFundusDataset",
    "SyntheticVesselsDataset",
    "cached_generation",
    "generate_fundus_sites",
    "generate_vessel_sites",
]
