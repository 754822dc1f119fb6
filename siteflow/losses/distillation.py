"""Knowledge-distillation loss between a teacher's and a student's logits."""

from __future__ import annotations

import torch
from torch import Tensor


def distillation_loss(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Temperature-softened cross-entropy from the teacher's to the student's class distribution.

    ``-tau**2 * mean over samples and pixels of sum_c softmax(t / tau)_c * log_softmax(s / tau)_c``.
    The factor ``tau**2`` (Hinton et al., 2015) keeps the gradients' magnitude independent of the
    temperature, since softening by ``tau`` scales them by ``1 / tau**2``. The teacher is detached:
    gradients flow to the student only. Half-precision logits are evaluated in float32.

    Args:
        teacher_logits: ``(N, C, *spatial)`` floating.
        student_logits: same shape as ``teacher_logits``.
        temperature: softening temperature ``tau``, positive.

    Returns:
        Scalar tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits {tuple(teacher_logits.shape)} and student_logits "
            f"{tuple(student_logits.shape)} must have the same shape"
        )
    if teacher_logits.dim() < 2:
        raise ValueError(f"logits must have shape (N, C, *spatial), got {tuple(teacher_logits.shape)}")
    dtype = torch.promote_types(torch.promote_types(teacher_logits.dtype, student_logits.dtype), torch.float32)
    teacher = torch.softmax(teacher_logits.detach().to(dtype) / temperature, 1)
    student = torch.log_softmax(student_logits.to(dtype) / temperature, 1)
    return -(teacher * student).sum(1).mean() * temperature**2
