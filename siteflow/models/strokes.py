"""A label generator for thin curvilinear structures (vessels, nerves, ducts): label maps drawn
as strokes, for generative replay (relay learning).

A convolutional generator learns such maps slowly: a few hundred to a thousand adversarial
steps give it blobs and worms, never one- to three-pixel lines. Drawing the map as the union
of a few smooth curves of learnt place, bend and width builds thinness and continuity in, so
that the adversarial game only has to learn where the curves go, how many there are, and how
wide and bent they are.
"""

from __future__ import annotations

import torch
from torch import nn

from siteflow.models.generators import MAX_SITES, NEGATIVE_SLOPE, check_size

MAX_HALF_WIDTH = 4.0  # pixels: the widest curve by default
MIN_HALF_WIDTH = 0.75  # pixels: a curve this wide covers a pixel centre wherever it passes (8-connected)
REACH = 0.25  # control points may lie this fraction of the side beyond the square, so curves cross its edges


class StrokeLabelGenerator(nn.Module):
    """Draws binary label maps of a site as strokes: (z (N, z_dim), site (N,) int64) -> logits
    (N, 2, S, S), background logit 0 and foreground logit ``l``.

    An MLP maps the noise and the site's embedding to ``strokes`` quadratic Bezier curves, each
    three control points, a half-width between :data:`MIN_HALF_WIDTH` and ``max_half_width``
    pixels and a presence logit ``a``. A pixel at distance ``d`` from curve k (measured to the
    polyline through ``points`` points of the curve) has ``l_k = (half_width_k - d) / softness
    + a_k``, and ``l`` is the log-sum-exp over the curves (a smooth maximum): the pixel is
    foreground (``l > 0``) within a curve's half-width of a present curve, and a curve whose
    presence logit is very negative draws nothing.

    Args:
        num_classes: must be 2 (background and the structure).
        image_size: side S, a power of two >= 16.
        z_dim: size of the noise vector.
        strokes: the most curves a map can have.
        hidden: width of the MLP's two hidden layers.
        max_half_width: the widest half-width, in pixels.
        points: points per curve of the polyline distances are measured to (>= 2).
        softness: pixels over which the logit grows by one at a curve's edge.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        *,
        z_dim: int = 64,
        strokes: int = 8,
        hidden: int = 256,
        max_half_width: float = MAX_HALF_WIDTH,
        points: int = 12,
        softness: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes != 2:
            raise ValueError(f"strokes draw binary label maps (2 classes: background and the structure), got {num_classes} classes")
        check_size(image_size)
        if strokes < 1 or points < 2 or hidden < 1:
            raise ValueError(f"need strokes >= 1, points >= 2 and hidden >= 1, got {strokes}, {points}, {hidden}")
        if not (max_half_width > MIN_HALF_WIDTH and softness > 0):
            raise ValueError(f"need max_half_width > {MIN_HALF_WIDTH} and softness > 0, got {max_half_width}, {softness}")
        self.z_dim = z_dim
        self.strokes = strokes
        self.image_size = image_size
        self.max_half_width = max_half_width
        self.softness = softness
        self.site_embedding = nn.Embedding(MAX_SITES, z_dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * z_dim, hidden),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(hidden, strokes * 8),  # per curve: 3 control points (x, y), half-width, presence
        )
        t = torch.linspace(0.0, 1.0, points)
        self.register_buffer("bernstein", torch.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2], dim=1), persistent=False)  # (T, 3)
        centres = torch.arange(image_size, dtype=torch.float32) + 0.5
        rows, cols = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("pixels", torch.stack([cols, rows], dim=-1).reshape(-1, 2), persistent=False)  # (S * S, 2) as (x, y)

    def forward(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        params = self.mlp(torch.cat([z, self.site_embedding(site)], dim=1)).view(len(z), self.strokes, 8)
        control = (torch.tanh(params[..., :6]) * (0.5 + REACH) + 0.5) * self.image_size  # (N, K, 6) in pixels
        half_width = MIN_HALF_WIDTH + (self.max_half_width - MIN_HALF_WIDTH) * torch.sigmoid(params[..., 6])  # (N, K)
        curve_logits = (half_width[..., None] - self.distances(control.view(len(z), self.strokes, 3, 2))) / self.softness
        foreground = torch.logsumexp(curve_logits + params[..., 7:8], dim=1).view(len(z), 1, self.image_size, self.image_size)
        return torch.cat([torch.zeros_like(foreground), foreground], dim=1)

    def distances(self, control: torch.Tensor) -> torch.Tensor:
        """Distance of every pixel centre to every curve: control points (N, K, 3, 2) as (x, y)
        pixels -> (N, K, S * S), to the polyline through the curve's points."""
        points = torch.einsum("tc,nkcd->nktd", self.bernstein, control)  # (N, K, T, 2)
        start, step = points[:, :, :-1, None], points[:, :, 1:, None] - points[:, :, :-1, None]  # segments (N, K, T-1, 1, 2)
        x, y = self.pixels[:, 0] - start[..., 0], self.pixels[:, 1] - start[..., 1]  # pixel offsets from the starts (N, K, T-1, P)
        step_x, step_y = step[..., 0], step[..., 1]
        along = ((x * step_x + y * step_y) / (step_x.square() + step_y.square()).clamp_min(1e-6)).clamp(0, 1)
        squared = (x - along * step_x).square() + (y - along * step_y).square()
        return squared.amin(dim=2).add(1e-12).sqrt()  # the epsilon keeps the gradient finite on a curve
