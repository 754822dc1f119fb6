"""The server side of a deployed federation: siteflow's federated rounds as a Flower strategy.

Flower's ``Strategy.start`` drives the rounds (send to the sites, wait for their replies,
aggregate, evaluate); what happens in them is the simulation's own code: the same
:class:`~siteflow.strategies.federated.Federation` configures what the sites receive,
aggregates their replies with the strategy's ``aggregate`` and saves every round atomically
(the same ``round_state`` as a simulated run, the strategy's own state included), and the
sites' test results become the row ``round<r>`` of the site matrix. The server builds no
dataset: what it needs to know of the data comes from the config.

With ``secure-aggregation=true`` in the run config, every round's training runs Flower's
SecAgg+ workflow (:mod:`siteflow.deploy.flower.secure`): the server sees only the sum of the
sites' masked updates, whose weighted average it hands to the strategy's ``aggregate``.

Flower has no resume of its own: a restarted ServerApp reads the last saved round and asks
Flower for the remaining rounds only (Flower numbers them from 1 again; :meth:`round_of`
maps them back).
"""

from __future__ import annotations

import logging
from typing import Collection, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from siteflow.config import TaskConfig
from siteflow.deploy.flower.protocol import (
    ARRAYS,
    CONFIG,
    FINGERPRINT,
    FINISH,
    METRICS,
    NUM_EXAMPLES,
    PHASE,
    ROUND,
    TASK_ID,
    RunSettings,
    experiment_fingerprint,
)
from siteflow.deploy.flower.secure import SecureOutcome, SecureRound, check_strategy
from siteflow.deploy.flower.sites import SiteDirectory
from siteflow.deploy.flower.weights import from_arrays, to_arrays
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import FederatedStrategy, Federation, SiteUpdate, round_stage

log = logging.getLogger(__name__)


class FederatedServer(Strategy):
    """Runs the rounds of the config's federated strategy on the connected sites.

    Args:
        run: the server's run (its folder holds the round state, results and logs).
        settings: the run config (timeouts).
    """

    def __init__(self, run: ExperimentRun, settings: RunSettings) -> None:
        if not isinstance(run.strategy, FederatedStrategy):
            raise ValueError(f"{run.config.source}: strategy {run.config.strategy.name!r} is not federated")
        self.run = run
        self.strategy: FederatedStrategy = run.strategy
        self.settings = settings
        self.federation = Federation(self.strategy, run)
        self.resumed_after = self.federation.round
        self.sites = SiteDirectory(run.tasks)
        self.fingerprint = experiment_fingerprint(run.config)
        self._asked: dict[int, TaskConfig] = {}
        self._sampled: list[str] = []
        self.secure: SecureRound | None = None
        if settings.secure is not None:
            check_strategy(self.strategy, run.config.strategy.name)
            self.secure = SecureRound(settings.secure, settings.round_timeout)

    def round_of(self, server_round: int) -> int:
        """The study's round number of Flower's ``server_round`` in this run."""
        return self.resumed_after + server_round

    def execute(self, grid: Grid) -> None:
        """Run the remaining rounds on the sites connected to ``grid``, then the strategy's
        finishing step."""
        nodes = self.sites.wait_for_all(grid, self.settings.wait_for_sites)
        if missing := self.sites.missing(nodes.values()):
            log.warning("starting without %s: not connected after %.0f s", ", ".join(missing), self.settings.wait_for_sites)
        arrays = to_arrays(self.federation.global_weights)
        if self.federation.done:  # resumed after the last round: its final weights may not be saved yet
            self.federation.save_final()
        if self.federation.pending_test():  # server_round 0 is the last saved round
            messages = self.configure_evaluate(0, arrays, ConfigRecord(), grid)
            self.aggregate_evaluate(0, grid.send_and_receive(messages, timeout=self.settings.round_timeout))
        remaining = self.strategy.rounds - self.federation.round
        if self.secure is None:
            self.start(grid, arrays, num_rounds=remaining, timeout=self.settings.round_timeout)
        else:
            self._start_secure(grid, arrays, remaining)
        if self.strategy.finishes and not self.run.recorded(self.strategy.finish_stage):
            self._finish(grid)

    # -- Flower's strategy hooks -----------------------------------------------------------

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info(
            "%s %s; %s",
            self.run.config.strategy.name,
            self.run.config.strategy.kwargs,
            f"resuming after round {self.resumed_after}" if self.resumed_after else "starting at round 1",
        )

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """What the strategy sends every connected site for round ``round_of(server_round)``."""
        payload = to_arrays(self.federation.configure(self.round_of(server_round)))
        self._sampled = self.federation.sample(self.round_of(server_round))
        return self._messages(server_round, payload, config, grid, MessageType.TRAIN, sites=self._sampled)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the sites' updates (the strategy's ``aggregate``) and save the round."""
        round_number = self.round_of(server_round)
        updates = []
        for name, content in self._answers(round_number, replies, "training"):
            try:
                updates.append(SiteUpdate(name, from_arrays(content[ARRAYS]), int(content[METRICS][NUM_EXAMPLES])))
            except (KeyError, TypeError, ValueError) as error:
                log.error("round %d: site %s sent an update without weights or sample count: %r", round_number, name, error)
        return self._close(round_number, updates)

    def _close(self, round_number: int, updates: list[SiteUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """Aggregate ``updates`` and save the round (the final weights after the last)."""
        self.federation.close_round(round_number, updates, len(self._sampled))
        if self.federation.done:
            self.federation.save_final()
        log.info("round %d: aggregated %s", round_number, ", ".join(f"{u.site} ({u.num_samples} samples)" for u in updates))
        return to_arrays(self.federation.global_weights), MetricRecord({"sites": len(updates)})

    # -- secure aggregation ---------------------------------------------------------------------

    def _start_secure(self, grid: Grid, arrays: ArrayRecord, num_rounds: int) -> None:
        """Flower's ``Strategy.start`` with every round's training under SecAgg+."""
        for server_round in range(1, num_rounds + 1):
            messages = list(self.configure_train(server_round, arrays, ConfigRecord(), grid))
            round_number = self.round_of(server_round)
            outcome = self.secure.train(grid, messages, round_number, self.strategy.weighting)
            arrays, _ = self._close(round_number, self._secure_updates(round_number, messages, outcome))
            evaluate = list(self.configure_evaluate(server_round, arrays, ConfigRecord(), grid))
            self.aggregate_evaluate(server_round, grid.send_and_receive(evaluate, timeout=self.settings.round_timeout))

    def _secure_updates(self, round_number: int, messages: list[Message], outcome: SecureOutcome) -> list[SiteUpdate]:
        """One update per site in the secure sum, each holding the average (so that the
        strategy's weighted average of them is the average, and its server step follows), as
        the global weights' dtypes (integer counters rounded)."""
        for message in messages:
            if message.metadata.dst_node_id not in outcome.weights:
                log.error("round %d: site %s dropped out of the secure round", round_number, self.sites.name(message.metadata.dst_node_id))
        if not outcome.weights:
            return []
        sent = list(messages[0].content[ARRAYS])
        names = [name for name in sent if name not in self.federation.local_keys]
        if len(names) != len(outcome.average):
            log.error("round %d: the secure sum holds %d weights, the sites keep all but %d: round left out",
                      round_number, len(outcome.average), len(names))
            return []
        average = {}
        for name, array in zip(names, outcome.average):
            like = self.federation.global_weights[name]
            tensor = torch.from_numpy(array)
            average[name] = (tensor if like.is_floating_point() else tensor.round()).to(like.dtype).reshape(like.shape)
        return [SiteUpdate(self.sites.name(node_id), average, weight) for node_id, weight in outcome.weights.items()]

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """The global weights to every connected site to test, if this round is tested."""
        if not self.strategy.tests_after(self.round_of(server_round)):
            return []
        return self._messages(server_round, arrays, config, grid, MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Record the sites' test results as the row ``round<r>`` of the site matrix (nothing
        in a round that is not tested: no site was asked)."""
        if not self.strategy.tests_after(self.round_of(server_round)):
            return None
        return self._record(round_stage(self.round_of(server_round)), self.round_of(server_round), replies)

    def _finish(self, grid: Grid) -> None:
        """Ask every site for the strategy's finishing step; record its test results."""
        config = ConfigRecord({PHASE: FINISH})
        last = self.federation.round - self.resumed_after  # Flower's number of the last round
        messages = self._messages(last, to_arrays(self.federation.global_weights), config, grid, MessageType.TRAIN)
        self._record(self.strategy.finish_stage, self.federation.round, grid.send_and_receive(messages, timeout=self.settings.round_timeout))

    def _record(self, stage: str, round_number: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Record the sites' test results as the row ``stage``; a reply without the site
        matrix's metrics is left out with the site's name."""
        metrics = self.run.task.matrix_metrics
        values = {}
        for name, content in self._answers(round_number, replies, "testing"):
            try:
                result = {key: float(value) for key, value in content[METRICS].items() if key != TASK_ID}
            except (KeyError, TypeError, ValueError) as error:
                log.error("%s: site %s sent test results that cannot be read: %r", stage, name, error)
                continue
            if missing := [metric for metric in metrics if metric not in result]:
                log.error("%s: site %s sent test results without %s: left out", stage, name, ", ".join(missing))
                continue
            values[name] = result
        if not values:
            log.error("%s: no site returned test results", stage)
            return None
        self.run.record(stage, values, trained_site=None)
        return MetricRecord({f"mean-{metrics[0]}": sum(v[metrics[0]] for v in values.values()) / len(values)})

    # -- helpers ----------------------------------------------------------------------------

    def _messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, kind: str, sites: Collection[str] | None = None
    ) -> list[Message]:
        """One message to every connected site (of ``sites`` only, if given)."""
        round_number = self.round_of(server_round)
        self._asked = {node: task for node, task in self.sites.connected(grid).items() if sites is None or task.task_name in sites}
        for name in self.sites.missing(self._asked.values()):
            if sites is None or name in sites:
                log.error("round %d: site %s is not connected", round_number, name)
        config[ROUND] = round_number
        config[FINGERPRINT] = self.fingerprint
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        return [Message(content, dst_node_id=node_id, message_type=kind) for node_id in self._asked]

    def _answers(self, round_number: int, replies: Iterable[Message], what: str) -> Iterable[tuple[str, RecordDict]]:
        """(site name, content) of every good reply; failures and silences logged by site;
        replies from nodes that were not asked, and a node's second reply, are ignored."""
        replied = set()
        for reply in replies:
            node_id = reply.metadata.src_node_id
            if node_id not in self._asked or node_id in replied:
                log.warning("round %d: ignored an unasked or repeated reply from node %d (%s)", round_number, node_id, what)
                continue
            replied.add(node_id)
            if reply.has_error():
                log.error("round %d: site %s failed (%s): %s", round_number, self.sites.name(node_id), what, reply.error.reason)
            else:
                yield self.sites.name(node_id), reply.content
        for node_id, task in self._asked.items():
            if node_id not in replied:
                log.error("round %d: site %s did not reply (%s) within %.0f s",
                          round_number, task.task_name, what, self.settings.round_timeout)
