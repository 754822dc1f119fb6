"""What travels in relay learning: the solver and two conditional generators, and the
midpoint merge with the received copy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siteflow.models.generators import ImageGenerator, LabelGenerator
from siteflow.models.strokes import StrokeLabelGenerator


class RelayNetwork(nn.Module):
    """What travels: the segmentation solver and the two conditional generators."""

    def __init__(self, solver: nn.Module, label_generator: LabelGenerator | StrokeLabelGenerator, image_generator: ImageGenerator) -> None:
        super().__init__()
        self.solver = solver
        self.label_generator = label_generator
        self.image_generator = image_generator

    @torch.no_grad()
    def replay(
        self, sites: torch.Tensor, num_classes: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate (images (N, C_in, S, S) in [-1, 1], labels (N, S, S) int64) of the given
        site codes (N,) int64: a label map from the label generator, then an image rendered
        from it; the noises are drawn from ``generator`` (default: the global stream)."""
        z_label = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device, generator=generator)
        z_image, noise = self.image_generator.sample_noise(len(sites), device=sites.device, generator=generator)
        labels = self.label_generator(z_label, sites).argmax(dim=1)
        images = self.image_generator(z_image, sites, F.one_hot(labels, num_classes).movedim(-1, 1).float(), noise)
        return images, labels


@torch.no_grad()
def merge_by_samples(network: nn.Module, old: nn.Module, samples_here: int, samples_before: int, *, share: float = 1.0) -> None:
    """``theta = (n * theta + M * theta_old) / (M + n)`` for every float parameter and buffer
    (n = ``samples_here``, M = ``samples_before``); nothing seen before (M = 0): unchanged.
    ``share`` in [0, 1] scales the old weights' part ``M / (M + n)`` (0: unchanged)."""
    if samples_before == 0 or share == 0.0:
        return
    weight_old = share * samples_before / (samples_before + samples_here)
    old_state = old.state_dict()
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point():
            tensor.lerp_(old_state[name].to(tensor.device), weight_old)


def random_crops(
    images: torch.Tensor, labels: torch.Tensor, size: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random ``size`` x ``size`` crop per sample, the same window for the image and its
    labels: (images (N, C, H, W), labels (N, H, W)) -> ((N, C, size, size), (N, size, size)).
    Inputs already of that side come back unchanged."""
    height, width = images.shape[-2:]
    if size > min(height, width):
        raise ValueError(f"cannot crop {size}x{size} patches from {height}x{width} images")
    if (height, width) == (size, size):
        return images, labels
    tops = torch.randint(0, height - size + 1, (len(images),), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (len(images),), generator=generator).tolist()
    windows = [(slice(top, top + size), slice(left, left + size)) for top, left in zip(tops, lefts)]
    return (
        torch.stack([image[:, rows, cols] for image, (rows, cols) in zip(images, windows)]),
        torch.stack([label[rows, cols] for label, (rows, cols) in zip(labels, windows)]),
    )
