"""relay: sequential hand-over with knowledge retention by generative replay and distillation.

After Bo et al., "Relay Learning", npj Digital Medicine 6:204 (2023). The model travels from
site to site (as a hand-over file between offline hospitals) together with two conditional
generators: one draws label maps of a site, the other renders an image of a site from a label
map (SPADE: the map modulates every block). They work on squares of the replay side: the
solver's training input, or patches of it (``replay_size``). At site ``k``:

1. a frozen copy of everything received is kept (the *old* networks), and the replays it
   draws of every earlier site are measured against real pairs (:mod:`.replay_quality`);
2. stage 1, the first half of the site's epochs: generators, fresh discriminators (which stay
   at the site) and the solver train on site ``k``'s real data, the generators conditioned on
   site ``k``'s code, the discriminators behind DiffAugment with lazy R1 and the minibatch
   standard deviation (:mod:`.adversarial`);
3. midpoint: every travelling network is averaged with its old copy by sample counts,
   ``theta = (n_k * theta + M * theta_old) / (M + n_k)`` (M: samples seen before), unless
   ``merge: none``;
4. stage 2: a fraction of every batch (half by default) is replay from the *old* generators
   for earlier sites drawn uniformly; the generators learn from real and replayed data, and
   the solver from both (the replays augmented as the site's training images) plus
   distillation towards the *old* solver's soft predictions on the replayed images (the
   reference code distilled from the current solver, a no-op), each earlier site's replays
   and distillation weighted by the replay quality measured in step 1
   (:mod:`.replay_weights`; ``replay_weighting: uniform``: all count fully).

Site codes are positions in the chain of the hand-over (first appearance), so they need no
coordination; the sample counts come from the chain too.
"""

from siteflow.strategies.relay.learner import RelayLearner
from siteflow.strategies.relay.network import RelayNetwork, merge_by_samples
from siteflow.strategies.relay.options import RelayOptions, RelayPosition
from siteflow.strategies.relay.strategy import RelayStrategy

__all__ = ["RelayLearner", "RelayNetwork", "RelayOptions", "RelayPosition", "RelayStrategy", "merge_by_samples"]
