"""Synthetic multi-site chest X-ray data, written in the real release layouts."""

from siteflow.datasets.chest_xray.synthetic.dataset import SyntheticChestXrayDataset
from siteflow.datasets.chest_xray.synthetic.sites import SITES, generate_cxr_sites

__all__ = ["SITES", "SyntheticChestXrayDataset", "generate_cxr_sites"]
