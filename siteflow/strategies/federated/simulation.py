"""The in-process driver of the federated rounds: every site in turn, in one process.

The sites run the same :class:`~siteflow.strategies.federated.site.FederatedSite` step as a
deployed site, each with its own store under ``<run>/sites/<site>/``; the server's side is
the same :class:`~siteflow.strategies.federated.federation.Federation` as on Flower, whose
schedule says what comes next.

Memory does not grow with the number of sites: one site trains at a time (its data read
when it trains, with the dataset's ``cache: disk`` or ``none``), and each update waits for
the average in the site's folder (``sites/<site>/sent/``), read back one tensor at a time
by the weighted average (:class:`~siteflow.strategies.federated.store.StoredWeights`).
Robust rules, central DP and SCAFFOLD's control variates read every update whole.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from pytorch_lightning.utilities import rank_zero_only

from siteflow.core.atomic import OutputError
from siteflow.core.types import Weights
from siteflow.strategies.base import SetupRefused, StudyContext
from siteflow.strategies.federated.base import FederatedStrategy, SiteUpdate, round_stage
from siteflow.strategies.federated.federation import Evaluate, Federation, Finish, SaveFinal, Train
from siteflow.strategies.federated.site import FederatedSite
from siteflow.strategies.federated.store import LOCAL

SENT = "sent"
"""The name under which a site's update waits in its store for the round's average."""


log = logging.getLogger(__name__)


def simulate(strategy: FederatedStrategy, context: StudyContext) -> None:
    """Run (or resume) the rounds of ``strategy`` over the sites of ``context``: every step of
    the federation's schedule (each round's sampled sites train, the global model is tested
    when due, then each site's finishing step)."""
    federation = Federation(strategy, context)
    sites = [FederatedSite(context, site_run) for site_run in context.site_runs]
    for step in federation.schedule():
        match step:
            case Train(round_number):
                train_round(strategy, federation, sites, round_number)
            case Evaluate():
                test_round(strategy, federation, sites)
            case SaveFinal():
                federation.save_final(own_models(strategy, federation, sites) or None)
            case Finish():
                finished = finish_sites(strategy, federation, sites)
                context.save_final(strategy.finish_stage, federation.global_weights, save_dir=strategy.finish_stage, own_weights=finished)
                solver = strategy.solver_from(context.task)
                context.test(strategy.finish_stage, federation.global_weights, solver, trained_site=None, own_weights=finished)


def train_round(strategy: FederatedStrategy, federation: Federation, sites: list[FederatedSite], round_number: int) -> None:
    """Round ``round_number``: each sampled site's step in turn (a site that fails is logged
    and left out), then the federation closes the round."""
    received = federation.configure(round_number)
    sampled = federation.sample(round_number)
    updates = []
    for site in (site for site in sites if site.name in sampled):
        try:
            updates.append(on_disk(site, strategy.site_step(site, received, round_number), round_number))
        except (OutputError, SetupRefused):  # the run's own folder or settings: every site would fail
            raise
        except Exception:
            log.exception("round %d: site %s failed, left out of the round", round_number, site.name)
        gc.collect()  # the site's trainer, model and optimiser: freed now, not sites later
    federation.close_round(round_number, updates, len(sampled))


def on_disk(site: FederatedSite, update: SiteUpdate, round_number: int) -> SiteUpdate:
    """``update`` with its weights saved in the site's store and read back from there one
    tensor at a time (by the first process of a DDP run, which alone writes the store; the
    others keep theirs in memory)."""
    if rank_zero_only.rank != 0:
        return update
    site.store.save(SENT, round_number, dict(update.weights))
    return dataclasses.replace(update, weights=site.store.stored(SENT, round_number))


def finish_sites(strategy: FederatedStrategy, federation: Federation, sites: list[FederatedSite]) -> dict[str, Weights]:
    """Each site's model after its finishing step; a site whose step fails is logged and
    left out (it is tested with the global weights), as a failed site is left out of a round."""
    finished = {}
    for site in sites:
        try:
            finished[site.name] = strategy.site_finish(site, federation.global_weights)
        except (OutputError, SetupRefused):
            raise
        except Exception:
            log.exception("%s: site %s failed its finishing step, left out", strategy.finish_stage, site.name)
    return finished


def own_models(strategy: FederatedStrategy, federation: Federation, sites: list[FederatedSite]) -> dict[str, Weights]:
    """Each site's model after the federation's last round, for the sites that keep weights."""
    after = federation.round + 1
    return {
        site.name: strategy.site_start_weights(site, federation.global_weights, before=after)
        for site in sites
        if site.store.rounds(LOCAL)
    }


def test_round(strategy: FederatedStrategy, federation: Federation, sites: list[FederatedSite]) -> None:
    """Test the global model of the last round on every site (each with its own kept weights)."""
    own = own_models(strategy, federation, sites)
    solver = strategy.solver_from(federation.context.task)
    federation.context.test(round_stage(federation.round), federation.global_weights, solver, trained_site=None, own_weights=own or None)
