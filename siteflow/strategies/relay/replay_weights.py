"""How much each earlier site's replays count for the solver, from their measured quality.

Replays that the previous solver segments as well as it segments real patches of their site
teach what it knew; replays it cannot segment (an image generator that has not learnt to
render the label map) teach the solver wrong pairs and pull it, through distillation, towards
what the old solver says about images unlike any site's. So each earlier site gets a weight in
[0, 1] from its replay quality (:mod:`.replay_quality`):

- with real patches of the site at hand: ``min(1, Dice on replays / Dice on real patches)``
  of the previous solver (1: it segments the replays as well as real patches); but a site
  whose real patches the previous solver segments below ``quality_floor`` counts 0 whatever
  the ratio: the solver holds too little of it to keep, and is no judge of its replays (a
  solver at 0.05 on real patches and 0.07 on replays is no evidence that they are good);
- without (a deployed site holds only its own data): the previous solver's Dice agreement
  with the replayed label maps (the same Dice on replays, taken as it is), which needs no data
  of the earlier site.

The weight rises linearly from 0 at ``quality_floor`` to 1 at ``quality_full``; the learner
scales the replays' segmentation loss and distillation by it, draws no solver replays of a
site of weight 0, and lets replays take the place of real pairs only in proportion to the
weights (:class:`~siteflow.strategies.relay.learner.RelayLearner`).
"""

from __future__ import annotations

from dataclasses import dataclass

from siteflow.strategies.relay.options import RelayOptions
from siteflow.strategies.relay.replay_quality import ReplayQuality

RATIO = "Dice on replays / Dice on real patches"
AGREEMENT = "Dice agreement with the replayed label maps (no real patches here)"
UNIFORM = "replay_weighting: uniform"
UNJUDGED = "Dice on replays / Dice on real patches, but the previous solver's Dice on real patches is below quality_floor: nothing to keep, no judge"


@dataclass(frozen=True)
class ReplayWeight:
    """How much one earlier site's replays count, and why.

    Attributes:
        site: the earlier site's name.
        code: its generator code.
        weight: in [0, 1], the factor of its replays' loss and distillation.
        quality: in [0, 1], the quality the weight comes from (None: not measured).
        measured_by: what ``quality`` is and why the weight follows from it (:data:`RATIO`,
            :data:`UNJUDGED`, :data:`AGREEMENT` or :data:`UNIFORM`).
    """

    site: str
    code: int
    weight: float
    quality: float | None
    measured_by: str

    def summary(self) -> str:
        """One line for the log."""
        if self.quality is None:
            return f"{self.site}'s replays count {self.weight:.2f} ({self.measured_by})"
        return f"{self.site}'s replays count {self.weight:.2f} (quality {self.quality:.3f}: {self.measured_by})"


def replay_quality_score(quality: ReplayQuality) -> tuple[float, str]:
    """(quality in [0, 1], what it is) of one earlier site's replays: the previous solver's
    Dice on replays over its Dice on real patches, capped at 1, when real patches were
    measured (0 when it segments none of them); else its Dice on the replays."""
    if quality.solver_dice_real is None:
        return min(1.0, max(0.0, quality.solver_dice_replay)), AGREEMENT
    if quality.solver_dice_real <= 0.0:
        return 0.0, RATIO
    return min(1.0, max(0.0, quality.solver_dice_replay / quality.solver_dice_real)), RATIO


def weight_from_quality(quality: float, floor: float, full: float) -> float:
    """0 at or below ``floor``, 1 at or above ``full``, linear between (``floor < full``)."""
    return min(1.0, max(0.0, (quality - floor) / (full - floor)))


def replay_weights(options: RelayOptions, qualities: dict[int, ReplayQuality], names: dict[int, str]) -> list[ReplayWeight]:
    """The weight of every earlier site (generator code -> name in ``names``) from its measured
    quality (code -> :class:`ReplayQuality`): by ``options.replay_weighting``, 1 for every site
    with ``uniform``."""
    weights = []
    for code, name in names.items():
        if options.replay_weighting == "uniform":
            weights.append(ReplayWeight(name, code, 1.0, None, UNIFORM))
            continue
        score, measured_by = replay_quality_score(qualities[code])
        weight = weight_from_quality(score, options.quality_floor, options.quality_full)
        real = qualities[code].solver_dice_real
        if real is not None and real < options.quality_floor:
            weight, measured_by = 0.0, UNJUDGED
        weights.append(ReplayWeight(name, code, weight, score, measured_by))
    return weights
