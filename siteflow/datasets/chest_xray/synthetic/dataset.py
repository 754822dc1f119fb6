"""The registered synthetic chest X-ray site dataset: generated into a cache on first use,
then read by the real loader of its site's release layout."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from siteflow.datasets.base import Split
from siteflow.datasets.chest_xray.base import MultiLabelDataset, Record, Release
from siteflow.datasets.chest_xray.chestxray14 import chestxray14_records
from siteflow.datasets.chest_xray.chexpert import chexpert_records
from siteflow.datasets.chest_xray.labels import BlankPolicy, UncertainPolicy
from siteflow.datasets.chest_xray.mimic import mimic_records
from siteflow.datasets.chest_xray.synthetic.render import FINDINGS
from siteflow.datasets.chest_xray.synthetic.sites import SITES, generate_cxr_sites, site_root
from siteflow.datasets.chest_xray.vindr import vindr_records
from siteflow.datasets.synthetic import cached_generation
from siteflow.core.registry import DATASETS

DEFAULT_CACHE = ".cache/synthetic"
# Part of the cache key: bump when the generated files change, so that old caches are not reused.
CXR_GENERATOR_VERSION = 1
# The reader of each layout, with the registered datasets' defaults.
READERS: dict[str, Callable[[Path, Release, tuple[str, ...]], list[Record]]] = {
    "chexpert": partial(chexpert_records, frontal_only=True),
    "chestxray14": chestxray14_records,
    "vindr_cxr": partial(vindr_records, aggregate="majority"),
    "mimic_cxr": partial(mimic_records, frontal_only=True),
}


@DATASETS.register("synthetic_cxr")
class SyntheticChestXrayDataset(MultiLabelDataset):
    """Site ``folder`` of the synthetic chest X-ray set made by :func:`generate_cxr_sites`
    with the given parameters, read by the loader of its layout:

    ========  =============  ==========================================  ===============
    folder    layout         annotated findings (default ``labels``)     image files
    ========  =============  ==========================================  ===============
    site1     CheXpert       cardiomegaly, pleural_effusion              JPEG
    site2     ChestX-ray14   pneumonia, edema                            PNG
    site3     VinDr-CXR      cardiomegaly, pneumonia, pneumothorax       DICOM
    site4     MIMIC-CXR-JPG  edema, pleural_effusion, pneumothorax       JPEG
    ========  =============  ==========================================  ===============

    Every image may show any of the five findings; ``labels`` may name any of them (one a
    site does not annotate is blank, or absent on site2). ``root_path`` is the cache folder
    (relative paths start at the working directory); the four sites are generated into
    ``<root_path>/cxr-<hash of parameters>`` on first use. Images are resized to
    ``img_size`` (default 64x64, so that all sites batch together). Items: see
    :class:`MultiLabelDataset`.
    """

    all_labels = FINDINGS

    def __init__(
        self,
        split: Split,
        *,
        root_path: str = DEFAULT_CACHE,
        folder: Literal["site1", "site2", "site3", "site4"] = "site1",
        train_per_site: int = 200,
        test_per_site: int = 60,
        native_size: tuple[int, ...] = (64, 80),
        seed: int = 0,
        labels: list[str] | None = None,
        img_size: tuple[int, ...] | None = (64, 64),
        out_range: tuple[float, ...] = (0.0, 1.0),
        channels: Literal[1, 3] = 1,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        uncertain: UncertainPolicy = "zeros",
        blank: BlankPolicy = "zeros",
        num_replica: int = 1,
    ) -> None:
        sites = {spec.folder: spec for spec in SITES}
        if folder not in sites:
            raise ValueError(f"folder {folder!r} is not a generated site; choose one of {list(sites)}")
        params = {
            "train_per_site": train_per_site,
            "test_per_site": test_per_site,
            "native_size": list(native_size),
            "seed": seed,
        }
        key = {**params, "cxr_generator_version": CXR_GENERATOR_VERSION}
        data = cached_generation(root_path, "cxr", key, partial(generate_cxr_sites, **params))
        self.site = sites[folder]
        self.release_root = site_root(data, self.site)
        super().__init__(
            split,
            labels=list(self.site.findings) if labels is None else labels,
            img_size=img_size,
            out_range=out_range,
            channels=channels,
            val_fraction=val_fraction,
            split_seed=split_seed,
            uncertain=uncertain,
            blank=blank,
            num_replica=num_replica,
        )

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        return {}

    def _release_records(self, release: Release) -> list[Record]:
        return READERS[self.site.layout](self.release_root, release, self.label_names)
