"""What travels in relay learning: the solver and two conditional generators, and the
midpoint merge with the received copy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siteflow.models.generators import ImageGenerator, LabelGenerator


class RelayNetwork(nn.Module):
    """What travels: the segmentation solver and the two conditional generators."""

    def __init__(self, solver: nn.Module, label_generator: LabelGenerator, image_generator: ImageGenerator) -> None:
        super().__init__()
        self.solver = solver
        self.label_generator = label_generator
        self.image_generator = image_generator

    @torch.no_grad()
    def replay(self, sites: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate (images (N, C_in, S, S), labels (N, S, S) int64) of the given site codes (N,)."""
        z_label = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        labels = self.label_generator(z_label, sites).argmax(dim=1)
        z_image = torch.randn(len(sites), self.label_generator.z_dim, device=sites.device)
        images = self.image_generator(z_image, sites, F.one_hot(labels, num_classes).movedim(-1, 1).float())
        return images, labels


@torch.no_grad()
def merge_by_samples(network: nn.Module, old: nn.Module, samples_here: int, samples_before: int) -> None:
    """``theta = (n * theta + M * theta_old) / (M + n)`` for every float parameter and buffer."""
    if samples_before == 0:
        return
    weight_old = samples_before / (samples_before + samples_here)
    old_state = old.state_dict()
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point():
            tensor.lerp_(old_state[name].to(tensor.device), weight_old)
