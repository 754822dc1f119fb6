"""Registered synthetic site datasets: generated into a cache on first use, then read by the
real loaders (:class:`FundusDataset`, and the DRIVE / STARE / CHASE_DB1 layout readers)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal

from siteflow.datasets.base import Split
from siteflow.datasets.files import SampleFiles
from siteflow.datasets.fundus import FundusDataset
from siteflow.datasets.synthetic.cache import cached_generation
from siteflow.datasets.synthetic.sites import (
    VESSEL_ASPECTS,
    generate_fundus_sites,
    generate_vessel_sites,
)
from siteflow.datasets.vessels import (
    Release,
    VesselDataset,
    chase_samples,
    drive_samples,
    stare_samples,
)
from siteflow.core.registry import DATASETS

DEFAULT_CACHE = ".cache/synthetic"


@DATASETS.register("synthetic_fundus")
class SyntheticFundusDataset(FundusDataset):
    """Site ``folder`` ("Domain1" ... "Domain{num_sites}") of the synthetic fundus set made by
    :func:`generate_fundus_sites` with the given parameters, read as a DoFE fundus domain.

    ``root_path`` is the cache folder (relative paths start at the working directory); the
    whole multi-site set is generated into ``<root_path>/fundus-<hash of parameters>`` on
    first use. Items: image float32 (3, H, W), label int64 (H, W) in {0, 1, 2}.
    """

    def __init__(
        self,
        split: Split,
        *,
        root_path: str = DEFAULT_CACHE,
        folder: str = "Domain1",
        num_sites: int = 3,
        train_per_site: int = 40,
        test_per_site: int = 20,
        native_size: tuple[int, ...] = (64, 96),
        seed: int = 0,
        img_size: list[int] | None = None,
        out_range: tuple[float, ...] = (-1.0, 1.0),
        val_fraction: float = 0.2,
        split_seed: int = 0,
        num_replica: int = 1,
    ) -> None:
        sites = [f"Domain{k}" for k in range(1, num_sites + 1)]
        if folder not in sites:
            raise ValueError(f"folder {folder!r} is not a generated site; choose one of {sites}")
        params = {
            "num_sites": num_sites,
            "train_per_site": train_per_site,
            "test_per_site": test_per_site,
            "native_size": list(native_size),
            "seed": seed,
        }
        generate = partial(generate_fundus_sites, **params)
        data = cached_generation(root_path, "fundus", params, generate)
        super().__init__(
            split,
            root_path=str(data),
            folder=folder,
            img_size=img_size,
            out_range=out_range,
            val_fraction=val_fraction,
            split_seed=split_seed,
            num_replica=num_replica,
        )

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        return {}


@DATASETS.register("synthetic_vessels")
class SyntheticVesselsDataset(VesselDataset):
    """Site ``folder`` of the synthetic vessel set made by :func:`generate_vessel_sites`,
    read by the reader of its layout: "DRIVE" (with FOV masks, so ``fov_ignore_index`` applies),
    "STARE" or "CHASE_DB1" (no FOV masks; their test split is the last ``test_per_site`` ids).

    ``root_path`` is the cache folder; the three sites are generated into
    ``<root_path>/vessels-<hash of parameters>`` on first use. Items: image float32
    (3, H, W), label int64 (H, W) in {0, 1} (or ``fov_ignore_index``).
    """

    def __init__(
        self,
        split: Split,
        *,
        root_path: str = DEFAULT_CACHE,
        folder: Literal["DRIVE", "STARE", "CHASE_DB1"] = "DRIVE",
        train_per_site: int = 20,
        test_per_site: int = 10,
        native_size: tuple[int, ...] = (96, 128),
        seed: int = 0,
        fov_ignore_index: int | None = None,
        img_size: list[int] | None = None,
        out_range: tuple[float, ...] = (-1.0, 1.0),
        val_fraction: float = 0.2,
        split_seed: int = 0,
        num_replica: int = 1,
    ) -> None:
        if folder not in VESSEL_ASPECTS:
            sites = list(VESSEL_ASPECTS)
            raise ValueError(f"folder {folder!r} is not a generated site; choose one of {sites}")
        params = {
            "train_per_site": train_per_site,
            "test_per_site": test_per_site,
            "native_size": list(native_size),
            "seed": seed,
        }
        generate = partial(generate_vessel_sites, **params)
        data = cached_generation(root_path, "vessels", params, generate)
        self.root_path = data / folder
        self.folder = folder
        self.num_test = test_per_site
        super().__init__(
            split,
            fov_ignore_index=fov_ignore_index,
            img_size=img_size,
            out_range=out_range,
            val_fraction=val_fraction,
            split_seed=split_seed,
            num_replica=num_replica,
        )

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        return {}

    def _release_samples(self, release: Release) -> list[SampleFiles]:
        if self.folder == "DRIVE":
            return drive_samples(self.root_path, release, self.fov_ignore_index is not None)
        read = stare_samples if self.folder == "STARE" else chase_samples
        return read(self.root_path, release, None, self.num_test)
