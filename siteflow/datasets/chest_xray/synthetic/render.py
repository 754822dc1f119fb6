"""Drawing of synthetic chest radiographs (PA view), their findings, and each site's style.

Everything is a pure function of a NumPy generator and a few sizes, so the same generator
state gives the same pixels. Coordinates are normalised: the image centre is (0, 0), x grows
to the image's right (the patient's left), y downwards, and 1 is half the image's side.
Intensities are in [0, 1], 0 black (air) and 1 white (bone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumonia", "edema", "pneumothorax")

AIR, SOFT_TISSUE, LUNG, HEART, FLUID = 0.04, 0.52, 0.2, 0.78, 0.62
HEART_WIDTH = 0.27  # normal heart: half-width, so a cardio-thoracic ratio near 0.42
CARDIOMEGALY_WIDTH = 0.38  # enlarged heart: ratio near 0.6


@dataclass(frozen=True)
class SiteStyle:
    """Acquisition style of one site: native size in pixels (square), body scale (patient
    size and collimation), gamma and contrast of the detector's response, Gaussian blur radius
    in pixels and noise standard deviation (in [0, 1] intensity units)."""

    size: int
    scale: float
    gamma: float
    contrast: float
    blur: float
    noise: float


@dataclass(frozen=True)
class Chest:
    """The geometry of one patient: body scale, the two lungs (centre x, centre y, half-width,
    half-height; right lung first, on the image's left) and the heart (centre, half-sizes)."""

    scale: float
    lungs: tuple[tuple[float, float, float, float], tuple[float, float, float, float]]
    heart: tuple[float, float, float, float]


def site_style(site: int, num_sites: int, native_size: tuple[int, int]) -> SiteStyle:
    """The style of site ``site`` (0-based) of ``num_sites``: the native side grows linearly
    from ``native_size[0]`` (first site) to ``native_size[1]`` (last); scale, gamma, contrast,
    blur and noise are spread over their ranges in shifted orders, so that no site is the
    easiest on every axis."""

    def spread(shift: int) -> float:
        return ((site + shift) % num_sites) / (num_sites - 1) if num_sites > 1 else 0.0

    progress = site / (num_sites - 1) if num_sites > 1 else 0.0
    return SiteStyle(
        size=round(native_size[0] + (native_size[1] - native_size[0]) * progress),
        scale=0.88 + 0.14 * spread(1),
        gamma=0.75 + 0.6 * spread(2),
        contrast=1.15 - 0.35 * spread(3),
        blur=0.9 * spread(0),
        noise=0.01 + 0.03 * spread(2),
    )


def draw_chest(
    rng: np.random.Generator, size: int, scale: float, findings: dict[str, bool]
) -> np.ndarray:
    """A chest radiograph float32 (size, size) in [0, 1] showing the ``findings`` that are
    true (keys: :data:`FINDINGS`), for a patient of body ``scale`` (jittered per image).

    Anatomy: dark background, soft-tissue torso, two dark lung fields with vascular markings
    that thicken towards the hila, a bright mediastinum and spine, a heart shadow low and to
    the patient's left, clavicles and rib arcs over the lungs. Findings: cardiomegaly widens
    the heart shadow; pleural effusion fills a lung base with fluid up to a meniscus (higher
    at the chest wall); pneumonia is a patchy opacity in one lung; edema a bilateral hazy
    opacity around the hila; pneumothorax a dark rim without markings around a collapsed
    lung, at an apex, edged by a thin pleural line.
    """
    chest = _draw_geometry(rng, scale, findings["cardiomegaly"])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (x + 0.5 - size / 2) / (size / 2)
    y = (y + 0.5 - size / 2) / (size / 2)
    s = chest.scale

    torso = ((x / (0.95 * s)) ** 4 + ((y - 0.15) / (1.15 * s)) ** 4) <= 1.0
    image = np.where(torso, SOFT_TISSUE, AIR).astype(np.float32)
    lungs = [_ellipse(x, y, *lung) for lung in chest.lungs]
    lung = np.maximum(lungs[0], lungs[1])
    texture = _smooth_noise(rng, size, 3.0) * 0.05 + _smooth_noise(rng, size, 1.0) * 0.03
    hila = np.exp(-(np.minimum(np.hypot(x + 0.2 * s, y), np.hypot(x - 0.2 * s, y)) / (0.3 * s)))
    markings = 0.09 * hila + texture
    if findings["pneumothorax"]:
        pleural_line, rim = _pneumothorax(rng, x, y, chest, lungs)
        markings = markings * (1.0 - rim)
        lung_level = LUNG - 0.12 * rim + 0.1 * pleural_line
    else:
        lung_level = np.full_like(x, LUNG)
    image = image + lung * (lung_level + markings - image)

    opacity = np.zeros_like(x)
    if findings["edema"]:
        opacity += 0.4 * hila**1.5 * (0.75 + 0.5 * _smooth_noise(rng, size, 1.5)) * lung
    if findings["pneumonia"]:
        side = int(rng.integers(0, 2))
        opacity += _pneumonia(rng, x, y, chest.lungs[side], chest.scale, size) * lungs[side]
    image = image + np.clip(opacity, 0.0, 0.45) * (1.0 - 0.3 * image)

    if findings["pleural_effusion"]:
        image = _effusion(rng, x, y, chest, lungs, image)

    mediastinum = np.clip(1.0 - np.abs(x) / (0.13 * s), 0, 1) * (y < 0.3) * (y > -0.9 * s) * torso
    image = np.maximum(image, 0.66 * np.clip(mediastinum * 3, 0, 1) * mediastinum**0.3)
    heart = _ellipse(x, y, *chest.heart)
    image = image + heart * (HEART - image)
    image = image + 0.06 * np.clip(1.0 - np.abs(x) / (0.06 * s), 0, 1) * torso
    image = image + _bones(x, y, s) * torso
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def apply_style(chest: np.ndarray, style: SiteStyle, rng: np.random.Generator) -> np.ndarray:
    """The radiograph of ``chest`` float32 (H, W) as site ``style`` acquires it: float32 (H, W)
    in [0, 1] after gamma, contrast around mid-grey, blur and noise."""
    image = np.clip(0.5 + (chest**style.gamma - 0.5) * style.contrast, 0.0, 1.0)
    if style.blur > 0:
        image = gaussian_filter(image, style.blur, mode="nearest")
    noisy = image + rng.normal(0.0, style.noise, image.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _draw_geometry(rng: np.random.Generator, scale: float, enlarged_heart: bool) -> Chest:
    """Lungs and heart of one patient, jittered around the site's body ``scale``."""
    s = scale * rng.uniform(0.94, 1.06)
    shift = rng.uniform(-0.04, 0.04)
    lungs = (
        (-0.38 * s + shift, -0.08 * s, rng.uniform(0.25, 0.28) * s, rng.uniform(0.58, 0.64) * s),
        (0.37 * s + shift, -0.06 * s, rng.uniform(0.23, 0.26) * s, rng.uniform(0.55, 0.6) * s),
    )
    half_width = (CARDIOMEGALY_WIDTH if enlarged_heart else HEART_WIDTH) * rng.uniform(0.88, 1.12)
    half_height = (0.25 if enlarged_heart else 0.21) * rng.uniform(0.93, 1.07)
    heart = (0.08 * s + shift, 0.3 * s, half_width * s, half_height * s)
    return Chest(s, lungs, heart)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Soft inside-indicator (H, W) in [0, 1] of an ellipse, about one pixel of ramp at 64 px."""
    distance = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 - distance) / 0.06 + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Smooth random field (size, size) in about [-1, 1]: white noise on a coarse grid of
    ``cells`` per half-side, upsampled bicubically."""
    grid = max(2, round(2 * cells) + 1)
    coarse = rng.normal(0.0, 1.0, (grid, grid)).astype(np.float32)
    picture = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(picture, dtype=np.float32) / 1.5, -1.0, 1.0)


def _bones(x: np.ndarray, y: np.ndarray, s: float) -> np.ndarray:
    """Brightness (H, W) added by the clavicles and the posterior rib arcs."""
    ribs = np.zeros_like(x)
    for side in (-1.0, 1.0):
        lateral = np.clip(side * x / s, 0.0, 1.0)
        phase = (y / s + 0.95 - 0.55 * (lateral - 0.45) ** 2) / 0.2
        band = np.clip(1.0 - np.abs(phase - np.round(phase)) / 0.17, 0.0, 1.0)
        ribs += 0.08 * band * (lateral > 0.12) * (lateral < 0.85) * (y / s < 0.45)
        clavicle = np.abs(y / s + 0.72 + 0.1 * lateral) < 0.035
        ribs += 0.18 * clavicle * (lateral > 0.05) * (lateral < 0.62)
    return ribs


def _pneumonia(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    lung: tuple[float, float, float, float],
    scale: float,
    size: int,
) -> np.ndarray:
    """Patchy opacity (H, W) for ``lung`` (centre, half-sizes): a cluster of blurred blobs in
    its middle or lower zone, mottled by fine noise."""
    lung_x, lung_y, half_width, half_height = lung
    cx = lung_x + rng.uniform(-0.3, 0.3) * half_width
    cy = lung_y + rng.uniform(-0.1, 0.5) * half_height
    patch = np.zeros_like(x)
    for _ in range(rng.integers(3, 6)):
        bx, by = cx + rng.normal(0, 0.07 * scale), cy + rng.normal(0, 0.09 * scale)
        sigma = rng.uniform(0.06, 0.11) * scale
        patch += np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2))
    mottled = np.clip(patch, 0.0, 1.0) * (0.8 + 0.35 * _smooth_noise(rng, size, 6.0))
    return 0.42 * np.clip(mottled, 0.0, 1.0)


def _effusion(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    chest: Chest,
    lungs: list[np.ndarray],
    image: np.ndarray,
) -> np.ndarray:
    """``image`` with pleural fluid in one lung base (both in a quarter of the cases): uniform
    opacity below a meniscus that rises towards the chest wall, blunting the costophrenic
    angle."""
    sides = [0, 1] if rng.random() < 0.25 else [int(rng.integers(0, 2))]
    for side in sides:
        cx, cy, rx, ry = chest.lungs[side]
        level = cy + ry * rng.uniform(0.25, 0.5)
        lateral = np.clip((x - cx) / rx * (1.0 if side else -1.0), -1.0, 1.5)
        surface = level - 0.45 * ry * np.clip(lateral, 0.0, None) ** 2
        fluid = np.clip((y - surface) / 0.05 + 0.5, 0.0, 1.0) * np.clip(lungs[side] * 1.6, 0, 1)
        image = image + fluid * (FLUID - image)
    return image


def _pneumothorax(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, chest: Chest, lungs: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The collapsed lung's pleural line (H, W) and the air rim (H, W) in [0, 1] around it:
    one lung shrunk towards its hilum by 15-30 %, the rim kept to the upper two thirds (the
    apex, where air collects in an upright patient)."""
    side = int(rng.integers(0, 2))
    cx, cy, rx, ry = chest.lungs[side]
    shrink = rng.uniform(0.7, 0.85)
    hilum_x = cx + (rx * 0.6 if side == 0 else -rx * 0.6)
    centre_x, centre_y = hilum_x + (cx - hilum_x) * shrink, cy + 0.25 * ry * (1 - shrink)
    inner = _ellipse(x, y, centre_x, centre_y, rx * shrink, ry * shrink)
    upper = np.clip((cy + 0.35 * ry - y) / (0.2 * ry), 0.0, 1.0)
    rim = lungs[side] * (1.0 - inner) * upper
    line = np.clip(1.0 - np.abs(inner - 0.5) * 2.5, 0.0, 1.0) * upper * lungs[side]
    return line, rim
