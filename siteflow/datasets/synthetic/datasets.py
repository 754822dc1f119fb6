"""Registered synthetic site datasets: generated into a cache on first use, then read by the
real loaders (:class:`DofeDomainDataset`, and the DRIVE / STARE / CHASE_DB1 layout readers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from siteflow.datasets.base import Split
from siteflow.datasets.files import SampleFiles
from siteflow.datasets.fundus import DofeDomainDataset
from siteflow.datasets.synthetic.generated import GeneratedSites
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


@DATASETS.register("synthetic_fundus")
class SyntheticFundusDataset(GeneratedSites, DofeDomainDataset):
    """Site ``folder`` ("Domain1" ... "Domain{num_sites}") of the synthetic fundus set made by
    :func:`generate_fundus_sites` with the given parameters (None: its defaults), read as a
    DoFE fundus domain; the whole set is generated into ``<root_path>/fundus-<hash of
    parameters>`` on first use (see :class:`GeneratedSites`). Items: image float32 (3, H, W),
    label int64 (H, W) in {0, 1, 2}.

    Args:
        folder: The site to read, ``"Domain1"`` to ``"Domain<num_sites>"``.
        num_sites: How many fundus domains the generator writes, each with its own look;
            None: the generator's default, 3.
    """

    kind = "fundus"
    generator = staticmethod(generate_fundus_sites)

    def __init__(
        self, split: Split, *, folder: str = "Domain1", num_sites: int | None = None, **kwargs: Any
    ) -> None:
        self.num_sites = num_sites
        super().__init__(split, folder=folder, **kwargs)

    def _generator_options(self) -> dict[str, Any]:
        return {"num_sites": self.num_sites}

    def _site_folders(self) -> list[str]:
        return [f"Domain{k}" for k in range(1, self.generation["num_sites"] + 1)]

    def _loader_options(self, data: Path) -> dict[str, Any]:
        return {"root_path": str(data), "folder": self.site}


@DATASETS.register("synthetic_vessels")
class SyntheticVesselsDataset(GeneratedSites, VesselDataset):
    """Site ``folder`` of the synthetic vessel set made by :func:`generate_vessel_sites`,
    read by the reader of its layout: "DRIVE" (with FOV masks, so ``fov_ignore_index`` applies),
    "STARE" or "CHASE_DB1" (no FOV masks; their test split is the last ``test_per_site`` ids).
    The three sites are generated into ``<root_path>/vessels-<hash of parameters>`` on first
    use (see :class:`GeneratedSites`). ``vessel_width``, ``vessel_contrast`` and ``texture``
    make the vessels harder, ``site_shift`` makes them differ between sites (see
    :func:`generate_vessel_sites`; None: its defaults). Items:
    image float32 (3, H, W), label int64 (H, W) in {0, 1} (or ``fov_ignore_index``).

    Args:
        folder: The site to read, in the layout of its release: ``"DRIVE"``, ``"STARE"`` or
            ``"CHASE_DB1"``.
        vessel_width: Factor, > 0, on the drawn thickness of the vessels (the tree is the
            same); below 1 makes them thinner and harder to segment. None: 1.
        vessel_contrast: Factor, in (0, 1], on how much the vessels darken the retina; below 1
            makes them fainter. None: 1.
        texture: Amplitude, in [0, 1), of a blotchy pattern that multiplies the retina. None:
            0, a smooth retina.
        site_shift: In [0, 1): scales vessel width and contrast by ``1 + site_shift * p``, p
            going from -1 on the first site (DRIVE) to 1 on the last (CHASE_DB1), so that the
            sites differ. None: 0, every site drawn with the same difficulty.
        profile: How the sites look. ``"demo"`` (None: the default): small eyes whose widths
            spread over ``native_size``. ``"real"``: each site as its release looks, at its
            native size (DRIVE 565 x 584 and STARE 700 x 605 with a field of view; CHASE_DB1
            999 x 960 with wider, reflecting vessels on a darker, textured retina and a large
            black surround), vessels 1-13 pixels wide on a blotchy retina with an
            illumination falloff: the proxy of the real sets (see
            :mod:`siteflow.datasets.synthetic.real_sites`). With ``"real"``, ``native_size``,
            ``vessel_width``, ``vessel_contrast``, ``texture`` and ``site_shift`` stay unset.
    """

    kind = "vessels"
    generator = staticmethod(generate_vessel_sites)

    def __init__(
        self,
        split: Split,
        *,
        folder: Literal["DRIVE", "STARE", "CHASE_DB1"] = "DRIVE",
        vessel_width: float | None = None,
        vessel_contrast: float | None = None,
        texture: float | None = None,
        site_shift: float | None = None,
        profile: Literal["demo", "real"] | None = None,
        **kwargs: Any,
    ) -> None:
        self.difficulty = {
            "vessel_width": vessel_width, "vessel_contrast": vessel_contrast, "texture": texture, "site_shift": site_shift, "profile": profile,
        }  # fmt: skip
        super().__init__(split, folder=folder, **kwargs)

    def _generator_options(self) -> dict[str, Any]:
        return self.difficulty

    def _site_folders(self) -> list[str]:
        return list(VESSEL_ASPECTS)

    def _loader_options(self, data: Path) -> dict[str, Any]:
        return {"root_path": str(data / self.site)}

    def _release_samples(self, release: Release) -> list[SampleFiles]:
        if self.site == "DRIVE":
            return drive_samples(self.root_path, release, self.fov_ignore_index is not None)
        read = stare_samples if self.site == "STARE" else chase_samples
        return read(self.root_path, release, None, self.generation["test_per_site"])
