"""``synthetic_volumes``: one site of the synthetic 3D study of
:func:`~siteflow.datasets.synthetic.volumes.generate_volume_sites`, generated into a cache on
first use, then read as a Decathlon task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from siteflow.core.registry import DATASETS
from siteflow.datasets.base import Split
from siteflow.datasets.synthetic.cache import cached_generation
from siteflow.datasets.synthetic.volumes import CLASS_NAMES, generate_volume_sites
from siteflow.datasets.volumes.releases import DecathlonDataset


@DATASETS.register("synthetic_volumes")
class SyntheticVolumesDataset(DecathlonDataset):
    """Site ``site`` ("Site1" ... "Site<num_sites>") of the synthetic 3D study, generated into
    ``<root_path>/volumes-<hash of the parameters>`` on first use. Items: image float32
    (1, D, H, W), label int64 (D, H, W) in {0: background, 1: organ, 2: core}, spacing, id (see
    :class:`~siteflow.datasets.volumes.dataset.VolumeDataset`).

    Args:
        site: the site's folder.
        num_sites: how many sites the generator writes; site k is scanned like
            ``SCANNERS[(k - 1) % 3]`` (its own voxel spacing, field of view and intensities).
        train_per_site: cases of each site's training part (train and val), at least 1.
        test_per_site: cases of each site's test split, at least 1.
        seed: seed of the generator's random numbers; the same parameters write the same
            voxels, another seed another study (in another cache folder).
        **kwargs: the options of :class:`VolumeDataset` (root_path: the cache folder).
    """

    site_keys: ClassVar[tuple[str, ...]] = ("site",)

    def __init__(
        self,
        split: Split,
        *,
        site: str = "Site1",
        num_sites: int = 3,
        train_per_site: int = 8,
        test_per_site: int = 3,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        names = [f"Site{k}" for k in range(1, num_sites + 1)]
        if site not in names:
            raise ValueError(f"site must be one of {names}, not {site!r}")
        params = {"num_sites": num_sites, "train_per_site": train_per_site, "test_per_site": test_per_site, "seed": seed}
        data = cached_generation(kwargs["root_path"], "volumes", params, lambda folder: generate_volume_sites(folder, **params))
        kwargs["root_path"] = str(data / site)
        super().__init__(split, **kwargs)

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        """None: the data is generated on first use."""
        return {}

    @classmethod
    def _described_contents(cls, options: dict[str, Any]) -> tuple[tuple[str, ...], int, bool]:
        return CLASS_NAMES, 1, False
