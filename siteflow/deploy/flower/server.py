"""The server side of a deployed federation: siteflow's federated rounds on Flower's ``Grid``.

What happens in a round is the simulation's own code: the same
:class:`~siteflow.strategies.federated.Federation` samples the sites, configures what they
receive, aggregates their replies with the strategy's ``aggregate`` and saves every round
atomically (the same ``round_state`` as a simulated run, the strategy's own state included),
and the sites' test results become the row ``round<r>`` of the site matrix. The server builds
no dataset: what it needs to know of the data comes from the config.

Every exchange with the sites waits for the replies :func:`~siteflow.deploy.flower.exchange.exchange`'s
way (checking every 0.2 s), and a round is one exchange: its train messages also carry the test
of the round before (see :class:`FederatedServer`).

With ``secure-aggregation=true`` in the run config, every round's training runs Flower's
SecAgg+ workflow (:mod:`siteflow.deploy.flower.secure`): the server sees only the sum of the
sites' masked updates, whose weighted average it hands to the strategy's ``aggregate``.

What comes next is the federation's schedule
(:meth:`~siteflow.strategies.federated.federation.Federation.schedule`), the same steps the
simulation walks: a restarted ServerApp reads the last saved round and runs the remaining ones
(a saved round's test that was not recorded goes with the next round's messages).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Collection, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from siteflow.config import SiteRun
from siteflow.deploy.flower.exchange import exchange
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
    TEST_ROUND,
    TESTED,
    RunSettings,
    experiment_fingerprint,
)
from siteflow.deploy.flower.secure import SecureOutcome, SecureRound, check_strategy
from siteflow.deploy.flower.sites import SiteDirectory
from siteflow.deploy.flower.weights import from_arrays, to_arrays
from siteflow.engine.runner import ExperimentRun
from siteflow.metrics.ranges import out_of_range
from siteflow.strategies.federated import FederatedStrategy, Federation, SiteUpdate, round_stage
from siteflow.strategies.federated.federation import Evaluate, Finish, SaveFinal, Train

log = logging.getLogger(__name__)


class FederatedServer:
    """Runs the rounds of the config's federated strategy on the connected sites.

    One exchange of messages per round: each site sampled for round ``r`` gets a train
    message that also asks it to test round ``r - 1``'s global model (the weights it receives)
    before it trains; a site not sampled gets an evaluate message in the same exchange. The
    last round's model (and a round saved but not tested before a restart) is tested in an
    exchange of its own. Under SecAgg+, every round's test is an exchange of its own.

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
        self.sites = SiteDirectory(run.site_runs)
        self.fingerprint = experiment_fingerprint(run.config)
        self.secure: SecureRound | None = None
        if settings.secure is not None:
            check_strategy(self.strategy, run.config.strategy.name)
            self.secure = SecureRound(settings.secure, settings.round_timeout)

    def execute(self, grid: Grid) -> None:
        """Run the remaining rounds on the sites connected to ``grid``, then the strategy's
        finishing step."""
        nodes = self.sites.wait_for_all(grid, self.settings.wait_for_sites)
        if missing := self.sites.missing(nodes.values()):
            log.warning("starting without %s: not connected after %.0f s", ", ".join(missing), self.settings.wait_for_sites)
        log.info(
            "%s %s; %s", self.run.config.strategy.name, self.run.config.strategy.kwargs,
            f"resuming after round {self.federation.round}" if self.federation.round else "starting at round 1",
        )
        due: int | None = None  # a round whose test goes with the next round's train messages
        for step in self.federation.schedule():
            match step:
                case Train(round_number) if self.secure is None:
                    self._round(grid, round_number, due)
                    due = None
                case Train(round_number):
                    self._secure_round(grid, round_number)
                case Evaluate(round_number) if self.secure is None:
                    due = round_number
                case Evaluate(round_number):
                    self._test(grid, round_number)
                case SaveFinal():
                    self.federation.save_final()
                case Finish():
                    if due is not None:
                        self._test(grid, due)
                        due = None
                    self._finish(grid)
        if due is not None:
            self._test(grid, due)

    def _round(self, grid: Grid, round_number: int, due: int | None) -> None:
        """Round ``round_number``, with the test of round ``due``'s global model if not None
        (the sampled sites test what they receive before they train; the others get it in an
        evaluate message of the same exchange)."""
        sampled = self.federation.sample(round_number)
        payload = to_arrays(self.federation.configure(round_number))
        train = self._nodes(grid, round_number, sampled)
        sent = self._messages(round_number, payload, MessageType.TRAIN, train, None if due is None else {TEST_ROUND: due})
        if due is not None:
            others = self._nodes(grid, due, [name for name in self.federation.site_names if name not in sampled])
            sent.update(self._messages(due, to_arrays(self.federation.global_weights), MessageType.EVALUATE, others))
        answers = self._answers(round_number, self._exchange(grid, round_number, sent), sent)
        if due is not None:
            self._record(round_stage(due), answers)
        updates = []
        for node_id in train:
            if node_id not in answers:
                continue
            name, content = self.sites.name(node_id), answers[node_id]
            try:
                updates.append(SiteUpdate(name, from_arrays(content[ARRAYS]), sample_count(content[METRICS][NUM_EXAMPLES])))
            except (KeyError, TypeError, ValueError) as error:
                log.error("round %d: site %s sent an update that cannot be read (weights or sample count): %s", round_number, name, error)
        self._close(round_number, updates, len(sampled))

    def _close(self, round_number: int, updates: list[SiteUpdate], asked: int) -> None:
        """Aggregate ``updates`` and save the round."""
        self.federation.close_round(round_number, updates, asked)
        log.info("round %d: aggregated %s", round_number, ", ".join(f"{u.site} ({u.num_samples} samples)" for u in updates))

    # -- secure aggregation ---------------------------------------------------------------------

    def _secure_round(self, grid: Grid, round_number: int) -> None:
        """Round ``round_number`` with its training under SecAgg+ (no test rides along)."""
        sampled = self.federation.sample(round_number)
        payload = self.federation.configure(round_number)
        messages = list(self._messages(round_number, to_arrays(payload), MessageType.TRAIN, self._nodes(grid, round_number, sampled)).values())
        outcome = self.secure.train(grid, messages, round_number, self.strategy.weighting)
        self._close(round_number, self._secure_updates(round_number, messages, list(payload), outcome), len(sampled))

    def _secure_updates(
        self, round_number: int, messages: list[Message], sent: list[str], outcome: SecureOutcome
    ) -> list[SiteUpdate]:
        """One update per site in the secure sum of the weights named ``sent`` (less those
        the sites keep), each holding the average (so that the strategy's weighted average of
        them is the average, and its server step follows), as the global weights' dtypes
        (integer counters rounded)."""
        for message in messages:
            if message.metadata.dst_node_id not in outcome.weights:
                log.error("round %d: site %s dropped out of the secure round", round_number, self.sites.name(message.metadata.dst_node_id))
        if not outcome.weights:
            return []
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

    # -- testing --------------------------------------------------------------------------------

    def _test(self, grid: Grid, round_number: int) -> None:
        """Every connected site tests round ``round_number``'s global model (an exchange of
        its own)."""
        sent = self._messages(round_number, to_arrays(self.federation.global_weights), MessageType.EVALUATE, self._nodes(grid, round_number))
        self._record(round_stage(round_number), self._answers(round_number, self._exchange(grid, round_number, sent), sent))

    def _finish(self, grid: Grid) -> None:
        """Ask every site for the strategy's finishing step; record its test results."""
        round_number = self.federation.round
        weights = to_arrays(self.federation.global_weights)
        sent = self._messages(round_number, weights, MessageType.TRAIN, self._nodes(grid, round_number), {PHASE: FINISH})
        self._record(self.strategy.finish_stage, self._answers(round_number, self._exchange(grid, round_number, sent), sent))

    def _record(self, stage: str, answers: dict[int, RecordDict]) -> None:
        """Record the sites' test results (each answer's ``"tested"`` record) as the row
        ``stage``; an answer without the site matrix's metrics, or with a value outside its
        metric's range (a NaN among the site matrix's), is left out with the site's name."""
        metrics = self.run.task.matrix_metrics
        values = {}
        for node_id, content in answers.items():
            name = self.sites.name(node_id)
            try:
                result = {key: float(value) for key, value in content[TESTED].items() if key != TASK_ID}
            except (KeyError, TypeError, ValueError) as error:
                log.error("%s: site %s sent test results that cannot be read: %r", stage, name, error)
                continue
            if missing := [metric for metric in metrics if metric not in result]:
                log.error("%s: site %s sent test results without %s: left out", stage, name, ", ".join(missing))
                continue
            if wrong := [why for key, value in result.items() if (why := out_of_range(key, value, required=key in metrics))]:
                log.error("%s: site %s sent impossible test results (%s): left out", stage, name, "; ".join(wrong))
                continue
            values[name] = result
        if not values:
            log.error("%s: no site returned test results", stage)
            return
        self.run.record(stage, values, trained_site=None)

    # -- messages ---------------------------------------------------------------------------

    def _nodes(self, grid: Grid, round_number: int, sites: Collection[str] | None = None) -> dict[int, SiteRun]:
        """The connected nodes that serve the run's sites (those of ``sites`` only, if
        given); a site of them that is not connected is logged."""
        nodes = {node: site_run for node, site_run in self.sites.connected(grid).items() if sites is None or site_run.task_name in sites}
        for name in self.sites.missing(nodes.values()):
            if sites is None or name in sites:
                log.error("round %d: site %s is not connected", round_number, name)
        return nodes

    def _messages(
        self, round_number: int, arrays: ArrayRecord, kind: str, nodes: Collection[int], extra: dict | None = None
    ) -> dict[int, Message]:
        """node id -> a message of type ``kind`` with ``arrays`` and the config of round
        ``round_number`` (and ``extra`` keys), for each of ``nodes``."""
        config = ConfigRecord({ROUND: round_number, FINGERPRINT: self.fingerprint, **(extra or {})})
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        return {node_id: Message(content, dst_node_id=node_id, message_type=kind) for node_id in nodes}

    def _exchange(self, grid: Grid, round_number: int, sent: dict[int, Message]) -> list[Message]:
        """The replies to ``sent``; how long they took is logged (the sites' work and Flower's
        messaging: the sites' logs tell the two apart)."""
        started = time.monotonic()
        replies = exchange(grid, sent.values(), timeout=self.settings.round_timeout)
        log.info("round %d: %d of %d sites replied in %.1f s", round_number, len(replies), len(sent), time.monotonic() - started)
        return replies

    def _answers(self, round_number: int, replies: Iterable[Message], sent: dict[int, Message]) -> dict[int, RecordDict]:
        """node id -> content of every good reply to ``sent``; failures and silences logged by
        site and by what was asked; replies from nodes that were not asked, and a node's second
        reply, are ignored."""
        answers: dict[int, RecordDict] = {}
        replied = set()
        for reply in replies:
            node_id = reply.metadata.src_node_id
            if node_id not in sent or node_id in replied:
                log.warning("round %d: ignored an unasked or repeated reply from node %d", round_number, node_id)
                continue
            replied.add(node_id)
            if reply.has_error():
                log.error("round %d: site %s failed (%s): %s", round_number, self.sites.name(node_id), _work(sent[node_id]), reply.error.reason)
            else:
                answers[node_id] = reply.content
        for node_id, message in sent.items():
            if node_id not in replied:
                log.error("round %d: site %s did not reply (%s) within %.0f s",
                          round_number, self.sites.name(node_id), _work(message), self.settings.round_timeout)
        return answers


def sample_count(value: object) -> int:
    """A reply's training-sample count as an int: a whole, finite, positive number.

    Raises:
        ValueError: anything else (an infinite or fractional count, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value) or value < 1:
        raise ValueError(f"sample count {value!r} is not a positive whole number")
    return int(value)


def _work(message: Message) -> str:
    """What ``message`` asked of its site, in words (for the log)."""
    config = message.content[CONFIG]
    if message.metadata.message_type == MessageType.EVALUATE:
        return f"testing round {config[ROUND]}"
    if config.get(PHASE) == FINISH:
        return "finishing"
    if TEST_ROUND in config:
        return f"testing round {config[TEST_ROUND]} and training"
    return "training"
