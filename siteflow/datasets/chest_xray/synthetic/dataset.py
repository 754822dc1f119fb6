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
from siteflow.datasets.chest_xray.mimic import mimic_records
from siteflow.datasets.chest_xray.synthetic.render import FINDINGS
from siteflow.datasets.chest_xray.synthetic.sites import SITES, generate_cxr_sites, site_root
from siteflow.datasets.chest_xray.vindr import vindr_records
from siteflow.datasets.spec import DataSpec
from siteflow.datasets.synthetic import GeneratedSites
from siteflow.core.registry import DATASETS

SITES_BY_FOLDER = {spec.folder: spec for spec in SITES}
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
class SyntheticChestXrayDataset(GeneratedSites, MultiLabelDataset):
    """Site ``folder`` of the synthetic chest X-ray set made by :func:`generate_cxr_sites`
    with the given parameters (None: its defaults), read by the loader of its layout:

    ========  =============  ==========================================  ===============
    folder    layout         annotated findings (default ``labels``)     image files
    ========  =============  ==========================================  ===============
    site1     CheXpert       cardiomegaly, pleural_effusion              JPEG
    site2     ChestX-ray14   pneumonia, edema                            PNG
    site3     VinDr-CXR      cardiomegaly, pneumonia, pneumothorax       DICOM
    site4     MIMIC-CXR-JPG  edema, pleural_effusion, pneumothorax       JPEG
    ========  =============  ==========================================  ===============

    Every image may show any of the five findings; ``labels`` may name any of them (one a
    site does not annotate is blank, or absent on site2). The four sites are generated into
    ``<root_path>/cxr-<hash of parameters>`` on first use (see :class:`GeneratedSites`).
    Images are resized to ``img_size`` (default 64x64, so that all sites batch together).
    Items: see :class:`MultiLabelDataset`.

    Args:
        folder: The site to read, ``"site1"`` to ``"site4"`` (the table above).
        labels: The findings to predict, in this order, any of ``"cardiomegaly"``,
            ``"pleural_effusion"``, ``"pneumonia"``, ``"edema"`` and ``"pneumothorax"``; None
            (the default): the findings that site ``folder`` annotates.
        img_size: ``[height, width]`` in pixels that every image is resized to (bilinearly);
            None keeps the generated size (``native_size``).
        val_fraction: Share of the training part's patients, in [0, 1), carved out as the val
            split (seeded by ``split_seed``); the rest is train.
    """

    all_labels = FINDINGS
    kind = "cxr"
    generator = staticmethod(generate_cxr_sites)
    cache_key_extra = {"cxr_generator_version": CXR_GENERATOR_VERSION}

    def __init__(
        self,
        split: Split,
        *,
        folder: Literal["site1", "site2", "site3", "site4"] = "site1",
        labels: list[str] | None = None,
        img_size: tuple[int, ...] | None = (64, 64),
        val_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            split,
            folder=folder,
            labels=_site_labels(folder, labels),
            img_size=img_size,
            val_fraction=val_fraction,
            **kwargs,
        )

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        return super()._spec({**options, "labels": _site_labels(options["folder"], options["labels"])})

    def _site_folders(self) -> list[str]:
        return list(SITES_BY_FOLDER)

    def _loader_options(self, data: Path) -> dict[str, Any]:
        return {"root_path": str(site_root(data, SITES_BY_FOLDER[self.site]))}

    def _release_records(self, release: Release) -> list[Record]:
        return READERS[SITES_BY_FOLDER[self.site].layout](self.root_path, release, self.label_names)


def _site_labels(folder: str, labels: list[str] | None) -> list[str] | None:
    """``labels``, or when None the findings that site ``folder`` annotates (None for a folder
    that is no site: the site check then names it)."""
    if labels is None and folder in SITES_BY_FOLDER:
        return list(SITES_BY_FOLDER[folder].findings)
    return labels
