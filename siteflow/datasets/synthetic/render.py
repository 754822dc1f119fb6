"""Drawing of synthetic fundus photographs, and the acquisition style of each site.

Everything is a pure function of a NumPy generator and a few sizes: the same generator state
gives the same pixels, which makes the written data sets byte-identical for a seed.
Coordinates are normalised: the image centre is (0, 0) and 1 is half the shorter side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

FOV_RADIUS = 0.95
RETINA_RGB = (0.80, 0.36, 0.17)
DISC_RGB = (0.92, 0.62, 0.38)
CUP_RGB = (1.00, 0.95, 0.82)
OUTSIDE_GREY = 0.02
VESSEL_DARKENING = (0.45, 0.62, 0.62)  # fraction of R, G, B removed at the vessel centre
CAST_STRENGTH = 0.15  # amplitude of the per-site RGB gains around 1
SUPERSAMPLING = 3  # vessels are drawn this many times finer, then box-averaged
VESSEL_STEP = 0.05  # length of one random-walk step
TAPER = 0.97  # thickness ratio between consecutive steps
MIN_VESSEL = 0.012  # a branch stops when thinner than this
FORK_PROBABILITY = 0.12  # chance that a step starts a side branch
FORK_THINNING = 0.75  # thickness of a side branch relative to its parent
MIN_FORK = 0.018  # side branches start at least this thick (thinner ones would be stubs)
MAX_VESSEL_SEGMENTS = 400


@dataclass(frozen=True)
class SiteStyle:
    """Acquisition style of one site: native size in pixels, RGB gains (colour cast),
    contrast around mid-grey, Gaussian blur radius in pixels and noise standard deviation
    (in [0, 1] intensity units)."""

    height: int
    width: int
    cast: tuple[float, float, float]
    contrast: float
    blur: float
    noise: float


@dataclass(frozen=True)
class Fundus:
    """One drawn eye before the site's style: ``image`` float32 (H, W, 3) in [0, 1]; ``fov``,
    ``disc`` (cup included), ``cup`` and ``vessels`` bool (H, W)."""

    image: np.ndarray
    fov: np.ndarray
    disc: np.ndarray
    cup: np.ndarray
    vessels: np.ndarray


def site_style(site: int, num_sites: int, native_size: tuple[int, int], aspect: float) -> SiteStyle:
    """The style of site ``site`` (0-based) of ``num_sites``.

    Width grows linearly from ``native_size[0]`` (first site) to ``native_size[1]`` (last);
    height = width * ``aspect``. Casts turn around the colour circle, so that no two sites
    share one; contrast, blur and noise are spread over their ranges in shifted orders, so
    that no site is the easiest on every axis.
    """

    def spread(shift: int) -> float:
        return ((site + shift) % num_sites) / (num_sites - 1) if num_sites > 1 else 0.0

    def gain(channel: int) -> float:
        hue = 2 * math.pi * (site / num_sites - channel / 3)
        return 1.0 + CAST_STRENGTH * math.cos(hue)

    progress = site / (num_sites - 1) if num_sites > 1 else 0.0
    width = round(native_size[0] + (native_size[1] - native_size[0]) * progress)
    return SiteStyle(
        height=round(width * aspect),
        width=width,
        cast=(gain(0), gain(1), gain(2)),
        contrast=1.2 - 0.5 * spread(0),
        blur=1.0 * spread(1),
        noise=0.01 + 0.04 * spread(2),
    )


@dataclass(frozen=True)
class Difficulty:
    """How hard the vessels are to see: ``vessel_width`` scales their drawn thickness (the tree
    is the same), ``vessel_contrast`` their darkening, and ``texture`` is the amplitude of a
    blotchy choroid-like pattern that multiplies the retina (0: a smooth retina). The default
    draws the original eyes, pixel for pixel."""

    vessel_width: float = 1.0
    vessel_contrast: float = 1.0
    texture: float = 0.0


@dataclass(frozen=True)
class VesselTree:
    """How the vessel tree grows, in normalised units (1 = half the shorter side): ``trunk``,
    the (low, high) range of the trunks' thickness where they leave the disc; a branch shrinks
    by ``taper`` every step and stops below ``min_thickness``; a step starts a side branch
    with ``fork_probability``, ``fork_thinning`` times as thick, if that is at least
    ``min_fork``; at most ``max_segments`` steps in all. The default grows the demo's trees."""

    trunk: tuple[float, float] = (0.035, 0.05)
    min_thickness: float = MIN_VESSEL
    taper: float = TAPER
    fork_probability: float = FORK_PROBABILITY
    fork_thinning: float = FORK_THINNING
    min_fork: float = MIN_FORK
    max_segments: int = MAX_VESSEL_SEGMENTS

    @classmethod
    def in_pixels(cls, half: float, trunk: tuple[float, float], thinnest: float, **options: float) -> VesselTree:
        """A tree whose trunks are ``trunk`` pixels thick and whose branches thin down to
        ``thinnest`` pixels, in an image whose shorter side is ``2 * half`` pixels; side
        branches start at least ``1.5 * thinnest`` thick."""
        return cls(
            trunk=(trunk[0] / half, trunk[1] / half), min_thickness=thinnest / half, min_fork=1.5 * thinnest / half, **options
        )


@dataclass(frozen=True)
class Look:
    """How an eye is lit and photographed beyond its site's :class:`SiteStyle`:
    ``fov_radius``, the field of view's radius (1 = half the shorter side; above 1 the
    disc is cut by the image's border; the anatomy scales with it); ``brightness``, a factor on
    the retina; ``falloff``, the share of light lost at the rim (light times
    ``1 - falloff * r**4``); ``tree``, the vessels' growth; ``reflex``, the share of the
    darkening given back along the centre line of vessels at least 5 pixels wide (the light
    reflex of wide vessels); ``grain``, the amplitude of a fine texture (a few pixels across)
    over the retina, besides the :class:`Difficulty`'s blotches. The default draws the demo's
    eyes, pixel for pixel."""

    fov_radius: float = FOV_RADIUS
    brightness: float = 1.0
    falloff: float = 0.3
    tree: VesselTree = VesselTree()
    reflex: float = 0.0
    grain: float = 0.0


@dataclass(frozen=True)
class SiteDrawing:
    """Everything that makes one site's pictures: its acquisition style, how hard its vessels
    are, and how its eyes are lit and photographed."""

    style: SiteStyle
    difficulty: Difficulty = Difficulty()
    look: Look = Look()


def draw_fundus(
    rng: np.random.Generator, height: int, width: int, difficulty: Difficulty = Difficulty(), look: Look = Look()
) -> Fundus:
    """A fundus-like eye: dark outside a circular field of view, orange-red retina lit by a
    gradient, a darker macula, a bright elliptic optic disc (left or right, random size) with
    a brighter cup inside, and dark-red branching vessels that start at the disc; then the
    ``difficulty``'s texture and the ``look``'s grain (drawn last, so that they leave the eye's
    geometry unchanged)."""
    half = min(height, width) / 2
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x = (x + 0.5 - width / 2) / half
    y = (y + 0.5 - height / 2) / half
    fov = x**2 + y**2 <= look.fov_radius**2
    if look.fov_radius != FOV_RADIUS:  # the anatomy scales with the field of view
        x, y = x * (FOV_RADIUS / look.fov_radius), y * (FOV_RADIUS / look.fov_radius)

    side = rng.choice([-1.0, 1.0])
    disc_x, disc_y = side * rng.uniform(0.3, 0.45), rng.uniform(-0.15, 0.15)
    disc_rx = rng.uniform(0.22, 0.3)
    disc_ry = disc_rx * rng.uniform(0.95, 1.15)
    cup_ratio = rng.uniform(0.4, 0.65)
    cup_x = disc_x + rng.uniform(-0.12, 0.12) * disc_rx
    cup_y = disc_y + rng.uniform(-0.12, 0.12) * disc_ry

    def disc_d_at(cx: float, cy: float) -> np.ndarray:
        """Elliptic distance (H, W) from (cx, cy), in units of the disc's radii."""
        return np.sqrt(((x - cx) / disc_rx) ** 2 + ((y - cy) / disc_ry) ** 2)

    disc_d = disc_d_at(disc_x, disc_y)
    cup_d = disc_d_at(cup_x, cup_y) / cup_ratio

    light_angle = rng.uniform(0, 2 * math.pi)
    light = 0.85 + 0.2 * (x * math.cos(light_angle) + y * math.sin(light_angle))
    light *= 1.0 - look.falloff * (x**2 + y**2) ** 2
    macula_x, macula_y = disc_x - side * rng.uniform(0.45, 0.55), disc_y + rng.uniform(-0.05, 0.05)
    light *= 1.0 - 0.3 * np.exp(-((x - macula_x) ** 2 + (y - macula_y) ** 2) / (2 * 0.12**2))
    image = light[..., None] * np.asarray(RETINA_RGB, dtype=np.float32)
    if look.brightness != 1.0:
        image *= look.brightness

    image = _blend(image, DISC_RGB, np.clip((1.0 - disc_d) / 0.1 + 0.5, 0.0, 1.0) * 0.9)
    image = _blend(image, CUP_RGB, np.clip((1.0 - cup_d) / 0.12 + 0.5, 0.0, 1.0) * 0.9)

    geometry = (disc_x, disc_y, disc_rx)
    if look.fov_radius != FOV_RADIUS:  # back to image units: the vessels are drawn in them
        geometry = tuple(value * look.fov_radius / FOV_RADIUS for value in geometry)
    alpha, reflex = _vessel_alpha(rng, height, width, geometry[:2], geometry[2], difficulty.vessel_width, look)
    alpha *= fov
    darkening = alpha if look.reflex == 0 else alpha * (1.0 - look.reflex * reflex)
    image *= 1.0 - darkening[..., None] * np.asarray(VESSEL_DARKENING, dtype=np.float32) * difficulty.vessel_contrast
    if difficulty.texture > 0:
        image *= 1.0 + difficulty.texture * _texture(rng, height, width)[..., None]
    if look.grain > 0:
        grain = ndimage.gaussian_filter(rng.standard_normal((height, width)), 1.5)
        image *= 1.0 + look.grain * (grain / (np.abs(grain).max() + 1e-12))[..., None].astype(np.float32)
    image[~fov] = OUTSIDE_GREY
    return Fundus(image.astype(np.float32), fov, disc_d <= 1.0, cup_d <= 1.0, alpha >= 0.5)


def apply_style(fundus: Fundus, style: SiteStyle, rng: np.random.Generator) -> np.ndarray:
    """The photograph of ``fundus`` as site ``style`` takes it: uint8 (H, W, 3)."""
    image = fundus.image * np.asarray(style.cast, dtype=np.float32)
    image = 0.4 + (image - 0.4) * style.contrast
    image[~fundus.fov] = OUTSIDE_GREY
    picture = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    if style.blur > 0:
        picture = picture.filter(ImageFilter.GaussianBlur(style.blur))
    noisy = np.asarray(picture, dtype=np.float32) + rng.normal(0.0, style.noise * 255, image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _blend(image: np.ndarray, rgb: tuple[float, float, float], weight: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) moved towards colour ``rgb`` by ``weight`` (H, W) in [0, 1]."""
    return image + weight[..., None] * (np.asarray(rgb, dtype=np.float32) - image)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A blotchy pattern, float32 (H, W) in [-1, 1]: white noise smoothed at three scales
    (1/40, 1/20 and 1/10 of the shorter side), each normalised and summed, then rescaled."""
    side = min(height, width)
    layers = [ndimage.gaussian_filter(rng.standard_normal((height, width)), side * scale) for scale in (0.025, 0.05, 0.1)]
    pattern = sum(layer / (np.abs(layer).max() + 1e-12) for layer in layers)
    return (pattern / (np.abs(pattern).max() + 1e-12)).astype(np.float32)


def _vessel_alpha(
    rng: np.random.Generator,
    height: int,
    width: int,
    disc: tuple[float, float],
    disc_radius: float,
    width_scale: float = 1.0,
    look: Look = Look(),
) -> tuple[np.ndarray, np.ndarray]:
    """Vessel coverage, float32 (H, W) in [0, 1]: random-walk branches (grown as
    ``look.tree`` says, inside ``look.fov_radius``) that leave the disc in four arcades and a
    few nasal trunks, thinning and forking as they go; drawn ``width_scale`` times as thick as
    they are. Also the coverage, float32 (H, W), of the centre lines of the vessels at least 5
    pixels wide (their light reflex: a third of their width), all zeros when
    ``look.reflex`` is 0."""
    tree = look.tree
    scale = min(height, width) / 2 * SUPERSAMPLING
    centre = np.array([width, height], dtype=np.float64) * SUPERSAMPLING / 2
    canvas = Image.new("L", (width * SUPERSAMPLING, height * SUPERSAMPLING), 0)
    draw = ImageDraw.Draw(canvas)
    reflex = Image.new("L", canvas.size, 0)
    draw_reflex = ImageDraw.Draw(reflex) if look.reflex > 0 else None

    trunk_angles = [-math.pi / 2 - 0.5, -math.pi / 2 + 0.5, math.pi / 2 - 0.5, math.pi / 2 + 0.5]
    trunk_angles += list(rng.uniform(0, 2 * math.pi, size=rng.integers(1, 3)))
    branches = [
        (
            np.asarray(disc) + 0.6 * disc_radius * np.array([math.cos(a), math.sin(a)]),
            a + rng.normal(0, 0.2),
            rng.uniform(*tree.trunk),
        )
        for a in trunk_angles
    ]
    segments = 0
    while branches and segments < tree.max_segments:
        origin, angle, thickness = branches.pop()
        points, angles, thicknesses = _walk(rng, origin, angle, thickness, tree, look.fov_radius)
        segments += len(thicknesses)
        pixels = points * scale + centre
        widths = np.maximum(1, np.round(thicknesses * scale * width_scale)).astype(int)
        for first, last in _runs(widths):
            run = [tuple(p) for p in pixels[first : last + 2]]
            draw.line(run, fill=255, width=int(widths[first]), joint="curve")
            for x, y in (run[0], run[-1]):
                r = widths[first] / 2
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
            if draw_reflex is not None and widths[first] >= 5 * SUPERSAMPLING:
                draw_reflex.line(run, fill=255, width=max(1, int(widths[first]) // 3), joint="curve")
        forking = rng.random(len(thicknesses)) < tree.fork_probability
        forks = np.flatnonzero(forking & (thicknesses * tree.fork_thinning >= tree.min_fork))
        sides = 2 * rng.integers(0, 2, size=len(forks)) - 1
        turns = sides * rng.uniform(0.5, 1.0, size=len(forks))
        branches += [
            (points[i + 1], angles[i] + turn, thicknesses[i] * tree.fork_thinning)
            for i, turn in zip(forks, turns)
        ]
    alpha = np.asarray(canvas.reduce(SUPERSAMPLING), dtype=np.float32) / 255.0
    return alpha, np.asarray(reflex.reduce(SUPERSAMPLING), dtype=np.float32) / 255.0


def _walk(
    rng: np.random.Generator, origin: np.ndarray, angle: float, thickness: float, tree: VesselTree, reach: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One branch: a random walk from ``origin`` (2,) that tapers until it is thinner than
    ``tree.min_thickness`` or leaves the disc of radius ``reach``. Returns the points
    (n + 1, 2), and the direction and thickness of each of its n segments."""
    steps = max(0, math.floor(math.log(tree.min_thickness / thickness) / math.log(tree.taper)) + 1)
    angles = angle + np.cumsum(rng.normal(0, 0.2, size=steps))
    moves = VESSEL_STEP * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = origin + np.concatenate([np.zeros((1, 2)), np.cumsum(moves, axis=0)])
    outside = np.flatnonzero((points[:-1] ** 2).sum(axis=1) >= reach**2)
    count = outside[0] if len(outside) else steps
    return points[: count + 1], angles[:count], thickness * tree.taper ** np.arange(count)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index pairs of the runs of equal consecutive ``values``."""
    breaks = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [len(values) - 1]])
    return [(int(a), int(b)) for a, b in zip(starts, ends)] if len(values) else []
