"""What a run costs, known before it trains: the images it trains on (``--dry-run``'s
estimate) and, for a federated run, the bytes each site sends and receives."""

from __future__ import annotations

from collections import Counter

from siteflow.config import ExperimentConfig
from siteflow.core.registry import STRATEGIES
from siteflow.datasets.pooling import build_dataset
from siteflow.strategies.base import Strategy
from siteflow.strategies.federated import FederatedStrategy
from siteflow.tasks import build_task


def _strategy(config: ExperimentConfig) -> Strategy:
    return STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs)


def participations(strategy: FederatedStrategy, config: ExperimentConfig) -> Counter:
    """How many rounds each trained site of ``config`` takes part in (client sampling drawn as
    the run draws it, from the run's seed)."""
    names = [site_run.task_name for site_run in config.site_runs]
    counts: Counter = Counter({name: 0 for name in names})
    for round_number in range(1, strategy.rounds + 1):
        counts.update(strategy.sample_sites(round_number, names, seed=config.seed))
    return counts


def training_images(config: ExperimentConfig) -> int:
    """The images a run of ``config`` trains on, over all its stages (an estimate of its work):
    federated, each round's sites times their local epochs (or steps times the batch size);
    otherwise every trained site's images times its epochs, times the times each site trains
    (the strategy's ``site_visits``: the cycles of a cyclic sequential run). Joint pools the
    same images; relay's generators and the continual baselines' penalties make a stage
    dearer than its image count says."""
    strategy = _strategy(config)
    sizes = {site_run.task_name: build_dataset(site_run.site, "train").num_samples for site_run in config.site_runs}
    if isinstance(strategy, FederatedStrategy):
        batch = config.site_runs[0].train.batch_size
        per_round = {
            name: (strategy.local_steps * batch if strategy.local_steps else strategy.local_epochs * size)
            for name, size in sizes.items()
        }
        return sum(per_round[name] * n for name, n in participations(strategy, config).items())
    return strategy.site_visits() * sum(site_run.train.epochs * sizes[site_run.task_name] for site_run in config.site_runs)


def communicated_bytes(config: ExperimentConfig) -> dict[str, int] | None:
    """For a federated run, each site's bytes sent and received: per round it takes part in,
    the shared weights once down and once up (every weight of the model but those the
    strategy keeps at the site, FedBN's normalisation, FedPer's head...); extra state that
    some strategies send (SCAFFOLD's control variates) is not counted. None otherwise."""
    strategy = _strategy(config)
    if not isinstance(strategy, FederatedStrategy):
        return None
    task = build_task(config)
    kept = strategy.local_keys(task)
    shared = sum(t.numel() * t.element_size() for name, t in task.build_model().state_dict().items() if name not in kept)
    return {name: 2 * shared * n for name, n in participations(strategy, config).items()}
