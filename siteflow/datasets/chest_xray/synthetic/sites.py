"""The synthetic chest X-ray sites: what each one annotates, how common each finding is, and
the generation of all of them in their release layouts.

Each image comes from its own generator, seeded by (seed, site, release, index); each site's
annotations (uncertain and blank cells, radiologists' disagreements, file names) from one
generator seeded by (seed, site): the files are byte-identical for equal arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siteflow.datasets.chest_xray.synthetic.layouts import LAYOUT_FOLDERS, WRITERS, Case
from siteflow.datasets.chest_xray.synthetic.render import FINDINGS, apply_style, draw_chest, site_style


@dataclass(frozen=True)
class SiteSpec:
    """One synthetic site: its folder, the release layout its files follow, and the findings
    it annotates (canonical names; its images show the other findings too)."""

    folder: str
    layout: str
    findings: tuple[str, ...]


SITES = (
    SiteSpec("site1", "chexpert", ("cardiomegaly", "pleural_effusion")),
    SiteSpec("site2", "chestxray14", ("pneumonia", "edema")),
    SiteSpec("site3", "vindr_cxr", ("cardiomegaly", "pneumonia", "pneumothorax")),
    SiteSpec("site4", "mimic_cxr", ("edema", "pleural_effusion", "pneumothorax")),
)


def prevalence(site: int, finding: int) -> float:
    """Fraction of site ``site``'s patients (0-based) with finding ``finding`` (index in
    :data:`FINDINGS`): one of 0.2, 0.25, 0.3, 0.35, 0.4, varying over sites and findings."""
    return 0.2 + 0.05 * ((3 * site + 2 * finding) % 5)


def site_root(data: Path, spec: SiteSpec) -> Path:
    """The release folder of ``spec``'s site in a generated set ``data``."""
    return data / spec.folder / LAYOUT_FOLDERS[spec.layout]


def generate_cxr_sites(
    root: str | Path,
    *,
    train_per_site: int = 200,
    test_per_site: int = 60,
    native_size: Sequence[int] = (64, 80),
    seed: int = 0,
) -> Path:
    """Write the four sites of :data:`SITES` under ``root`` and return ``root``:
    ``site1/CheXpert-v1.0-small`` (CheXpert CSVs, JPEG), ``site2/ChestX-ray14``
    (``Data_Entry_2017.csv``, split lists, PNG), ``site3/VinDr-CXR`` (label CSVs with three
    radiologists per training image, DICOM) and ``site4/MIMIC-CXR-JPG`` (gzipped CSVs, JPEG).

    Findings are independent, each with its site's :func:`prevalence`. Images are square,
    their side spread linearly over ``native_size`` = (first site, last site); each site has
    its own body scale, gamma, contrast, blur and noise (:func:`site_style`).
    """
    if train_per_site < 2 or test_per_site < 1:
        raise ValueError(
            f"need at least 2 train and 1 test images per site, not {train_per_site}, {test_per_site}"
        )
    root = Path(root)
    for site, spec in enumerate(SITES):
        style = site_style(site, len(SITES), (native_size[0], native_size[1]))
        parts = []
        for release_code, count in enumerate((train_per_site, test_per_site)):
            cases = []
            for index in range(count):
                rng = np.random.default_rng([seed, site, release_code, index])
                truth = {name: bool(rng.random() < prevalence(site, f)) for f, name in enumerate(FINDINGS)}
                pixels = apply_style(draw_chest(rng, style.size, style.scale, truth), style, rng)
                cases.append(Case(truth, pixels))
            parts.append(cases)
        annotations = np.random.default_rng([seed, site, 2])
        WRITERS[spec.layout](site_root(root, spec), parts[0], parts[1], spec.findings, annotations)
    return root
