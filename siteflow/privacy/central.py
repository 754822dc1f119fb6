"""Central differential privacy on the server of a federation (DP-FedAvg, McMahan et al.,
2018), with fixed or adaptive clipping (Andrew et al., 2021), as Flower's
``DifferentialPrivacyServerSide{Fixed,Adaptive}Clipping`` wrappers do it.

Every round, each site's update ``delta_i = w_i - w_global`` (over the floating-point tensors
it sends) is scaled to an L2 norm of at most ``C``, and one Gaussian draw ``xi`` of standard
deviation ``z_update * C / n`` (``n``: the round's updates) is added to every clipped update.
The aggregation, a weighted average whose weights sum to 1, then yields ``w_global +
mean(clipped) + xi``: the noisy average, whatever the aggregation does with it afterwards
(FedAdam's server step is post-processing). Equal weighting is required, so that one site
moves the average by at most ``C / n``.

Adaptive clipping: each site's bit ``b_i = 1[|delta_i| <= C]``; the server adds
``N(0, sigma_b^2)`` to their count and moves ``C <- C * exp(-eta * (b_noisy / n - gamma))``
(the paper's Algorithm 1, ``gamma`` the target quantile of unclipped updates). The update
noise multiplier is raised to ``z_update = (z^-2 - (2 sigma_b)^-2)^-1/2`` so that both
releases together cost what noise multiplier ``z`` costs (Flower's
``compute_adaptive_noise_params``). Flower clips with the current norm and noises with the
updated one; here the noise uses the norm the round clipped with, as in the paper.

Accounting: site-level DP, the rounds composed by Opacus' accountant with noise multiplier
``z`` and sampling rate the strategy's client ``fraction``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping, Sequence

import torch

from siteflow.core.errors import OptionError
from siteflow.core.extras import MissingExtra, optional_module, require
from siteflow.core.types import Weights
from siteflow.privacy.accounting import epsilon

flower_dp = optional_module("flwr.supercore.differential_privacy", "flower", "central differential privacy (central_dp)")


@dataclass(frozen=True)
class CentralDPOptions:
    """The strategy option ``central_dp`` (see the module's docstring).

    Args:
        noise_multiplier: ``z``, the noise in units of the clipping norm (> 0).
        clip_norm: the clipping norm ``C`` (> 0); with ``adaptive``, its first value.
        adaptive: adapt ``C`` every round towards the ``target_quantile`` of the update norms.
        target_quantile: ``gamma``, the share of updates to leave unclipped, in [0, 1].
        clip_learning_rate: ``eta``, the step of the geometric update of ``C`` (> 0).
        clipped_count_stddev: ``sigma_b``, the noise on the count of unclipped updates
            (default: the number of sampled sites / 20).
        delta: the delta epsilon is reported at, in (0, 1).
        accountant: Opacus' ``"rdp"`` or ``"prv"``.
    """

    noise_multiplier: float
    clip_norm: float = 1.0
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    clipped_count_stddev: float | None = None
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "clip_norm", "clip_learning_rate"):
            if not getattr(self, name) > 0:
                raise OptionError(f"central_dp.{name}", f"must be greater than 0, got {getattr(self, name)}")
        if not 0 <= self.target_quantile <= 1:
            raise OptionError("central_dp.target_quantile", f"must be in [0, 1], got {self.target_quantile}")
        if self.clipped_count_stddev is not None and not self.clipped_count_stddev > 0:
            raise OptionError("central_dp.clipped_count_stddev", f"must be greater than 0, got {self.clipped_count_stddev}")
        if not 0 < self.delta < 1:
            raise OptionError("central_dp.delta", f"must be in (0, 1), got {self.delta}")
        if self.accountant not in ("rdp", "prv"):
            raise OptionError("central_dp.accountant", f"must be 'rdp' or 'prv', got {self.accountant!r}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> "CentralDPOptions":
        """The options of a ``central_dp`` mapping; an unknown or missing key, or a missing
        extra (Flower's noise, Opacus' accounting), is an OptionError."""
        try:
            require("flwr.supercore.differential_privacy", "flower", "central differential privacy")
            require("opacus.accountants", "privacy", "central differential privacy's accounting")
        except MissingExtra as error:
            raise OptionError("central_dp", str(error)) from None
        known = [field.name for field in fields(cls)]
        for key in options:
            if key not in known:
                raise OptionError(f"central_dp.{key}", f"unknown option (allowed: {', '.join(known)})")
        if "noise_multiplier" not in options:
            raise OptionError("central_dp.noise_multiplier", "required option is missing")
        return cls(**options)


def update_norm(update: Weights, reference: Weights) -> float:
    """The L2 norm of ``update - reference`` over ``update``'s floating-point tensors (a
    tensor without a counterpart in ``reference``, such as SCAFFOLD's control variate, counts
    as it is)."""
    squares = sum(float((tensor.double() - _base(reference, name, tensor)).square().sum()) for name, tensor in _floating(update))
    return math.sqrt(squares)


def clip_update(update: Weights, reference: Weights, clip_norm: float) -> tuple[Weights, bool]:
    """``reference + (update - reference) * min(1, clip_norm / norm)`` over ``update``'s
    floating-point tensors (the others as sent; see :func:`update_norm`), and whether it was
    left unclipped (``norm <= clip_norm``)."""
    norm = update_norm(update, reference)
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    clipped = dict(update)
    for name, tensor in _floating(update):
        base = _base(reference, name, tensor)
        clipped[name] = (base + (tensor.double() - base) * factor).to(tensor.dtype)
    return clipped, norm <= clip_norm


class CentralDP:
    """The server's central DP over the rounds: clipping norm, noise, accounting.

    Args:
        options: the strategy's ``central_dp``.
        seed: the study's seed; round ``r``'s noise is drawn from ``seed`` and ``r`` alone.
        sample_rate: the share of sites sampled per round (the strategy's ``fraction``).
        sites: the number of sites a round samples (the default ``clipped_count_stddev`` is
            a twentieth of it).
    """

    def __init__(self, options: CentralDPOptions, *, seed: int, sample_rate: float, sites: int) -> None:
        self.options = options
        self.seed = seed
        self.sample_rate = sample_rate
        self.count_stddev, self.update_noise_multiplier = 0.0, options.noise_multiplier
        if options.adaptive:
            try:
                self.count_stddev, self.update_noise_multiplier = flower_dp.compute_adaptive_noise_params(
                    options.noise_multiplier, sites, options.clipped_count_stddev
                )
            except ValueError:
                stddev = options.clipped_count_stddev or sites / 20
                raise OptionError(
                    "central_dp.clipped_count_stddev", f"is {stddev:g} (default: sites / 20), too low for noise_multiplier "
                    f"{options.noise_multiplier:g}: adaptive clipping needs noise_multiplier < 2 * clipped_count_stddev"
                ) from None
        self.clip_norm = options.clip_norm
        self.clip_norms: list[float] = []
        self.unclipped: list[int] = []

    def privatize(self, round_number: int, global_weights: Weights, updates: Sequence[Weights]) -> list[Weights]:
        """The sites' ``updates`` of ``round_number``, each clipped around ``global_weights``
        and all moved by the same Gaussian draw (so their weighted average is the noisy one);
        with ``adaptive``, the clipping norm moves for the next round."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + round_number + zlib.crc32(b"central_dp"))
        clipped, unclipped = zip(*(clip_update(update, global_weights, self.clip_norm) for update in updates))
        std = flower_dp.compute_stdv(self.update_noise_multiplier, self.clip_norm, len(updates))
        noise = {
            name: torch.normal(0.0, std, tensor.shape, generator=generator, dtype=torch.float64)
            for name, tensor in clipped[0].items() if tensor.is_floating_point()
        }
        noisy = [
            {name: (tensor.double() + noise[name]).to(tensor.dtype) if name in noise else tensor for name, tensor in update.items()}
            for update in clipped
        ]
        self.clip_norms.append(self.clip_norm)
        self.unclipped.append(sum(unclipped))
        if self.options.adaptive:
            count = sum(unclipped) + (float(torch.normal(0.0, self.count_stddev, (1,), generator=generator)) if self.count_stddev else 0.0)
            self.clip_norm *= math.exp(-self.options.clip_learning_rate * (count / len(updates) - self.options.target_quantile))
        return noisy

    def report(self) -> dict[str, Any]:
        """The accounting after the rounds so far: the options, the noise multipliers, every
        round's clipping norm and unclipped count, and epsilon at ``delta`` (Opacus'
        accountant over the rounds, sampling rate the client fraction)."""
        rounds = len(self.clip_norms)
        history = [(self.options.noise_multiplier, self.sample_rate, rounds)]
        spent = epsilon(history, delta=self.options.delta, accountant=self.options.accountant)
        return {
            "options": asdict(self.options),
            "update_noise_multiplier": self.update_noise_multiplier,
            "clipped_count_stddev": self.count_stddev,
            "sample_rate": self.sample_rate,
            "rounds": rounds,
            "epsilon": spent,
            "clip_norms": list(self.clip_norms),
            "unclipped": list(self.unclipped),
            "next_clip_norm": self.clip_norm,
        }

    def restore(self, report: Mapping[str, Any]) -> None:
        """Continue after the rounds of an earlier :meth:`report` (a resumed federation)."""
        self.clip_norms = [float(v) for v in report["clip_norms"]]
        self.unclipped = [int(v) for v in report["unclipped"]]
        self.clip_norm = float(report["next_clip_norm"])


def _floating(state: Weights) -> list[tuple[str, torch.Tensor]]:
    return [(name, tensor) for name, tensor in state.items() if tensor.is_floating_point()]


def _base(reference: Weights, name: str, tensor: torch.Tensor) -> torch.Tensor | float:
    """What ``tensor`` (``name`` of an update) is a change from, in float64: the reference's
    tensor of that name, else 0."""
    return reference[name].double() if name in reference else 0.0
