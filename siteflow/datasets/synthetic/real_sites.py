"""The ``real`` profile of the synthetic vessel sites: each site drawn as its release looks.

DRIVE (565 x 584) and STARE (700 x 605) with a circular field of view, CHASE_DB1 (999 x 960)
with wider vessels that carry a central light reflex, on a darker, more textured retina with
a large black surround (its release ships no field-of-view mask). Vessels have their real
widths at native resolution: trunks of 7-13 pixels at the disc, capillaries of 1-2 pixels.
Every site's retina has choroid-like blotches, an illumination falloff towards the rim, a fine
grain and noise. These are the differences that matter when one model (or one federation)
learns from all three: image size, the share of black surround, vessel width and contrast.
"""

from __future__ import annotations

from siteflow.datasets.synthetic.render import Difficulty, Look, SiteDrawing, SiteStyle, VesselTree


def _tree(height: int, width: int, trunk: tuple[float, float], thinnest: float) -> VesselTree:
    """A dense tree of real widths (in pixels) for an image of ``height`` x ``width``."""
    return VesselTree.in_pixels(
        min(height, width) / 2, trunk, thinnest, taper=0.955, fork_probability=0.22, fork_thinning=0.72, max_segments=4000
    )


REAL_VESSEL_SITES: dict[str, SiteDrawing] = {
    "DRIVE": SiteDrawing(
        SiteStyle(height=584, width=565, cast=(1.0, 1.0, 1.0), contrast=1.0, blur=0.6, noise=0.015),
        Difficulty(vessel_width=1.0, vessel_contrast=0.55, texture=0.12),
        Look(fov_radius=0.93, brightness=1.0, falloff=0.35, tree=_tree(584, 565, (7, 9), 1.0), grain=0.04),
    ),
    "STARE": SiteDrawing(
        SiteStyle(height=605, width=700, cast=(1.08, 0.95, 0.9), contrast=1.1, blur=0.8, noise=0.02),
        Difficulty(vessel_width=1.0, vessel_contrast=0.5, texture=0.15),
        Look(fov_radius=1.08, brightness=0.95, falloff=0.4, tree=_tree(605, 700, (8, 10), 1.2), grain=0.05),
    ),
    "CHASE_DB1": SiteDrawing(
        SiteStyle(height=960, width=999, cast=(1.1, 0.9, 0.85), contrast=1.2, blur=1.0, noise=0.025),
        Difficulty(vessel_width=1.0, vessel_contrast=0.8, texture=0.3),
        Look(fov_radius=0.78, brightness=0.6, falloff=0.55, tree=_tree(960, 999, (10, 13), 1.5), reflex=0.35, grain=0.1),
    ),
}
"""The ``real`` profile's drawing of each vessel site, by release folder."""
