"""Secure aggregation of a deployed round with Flower's SecAgg+ (Bell et al., CCS 2020).

With ``secure-aggregation=true`` in the run config, a round's training runs Flower's
``SecAggPlusWorkflow`` on the server and its ``secaggplus_mod`` in every ClientApp: each site
scales its update by its weight, quantises it, adds pairwise masks shared with its neighbours
and sends only the masked integers; the server sums them, and the masks cancel (those of a
site that dropped out after the key exchange are rebuilt from the secret shares of at least
``threshold`` of its neighbours). The server learns the weighted average of the updates and
nothing per site; the average is exact up to the quantisation: each site's scaled weights are
clipped to ``[-clipping_range, clipping_range]`` and rounded (stochastically) to
``quantization_range`` levels over that range.

Flower's workflow drives the legacy message layout (``fitins.*``, ``fitres.*``) and the legacy
``Strategy`` interface; this module translates: :class:`SecureRound` runs one round of the
workflow from the server's train messages and returns the average; :func:`instructions` and
:func:`fit_result` are the ClientApp's side (numpy only, no torch), around which the ClientApp
runs Flower's ``secaggplus_mod``.

Only strategies whose server step needs nothing but the weighted average of what the sites
send run under SecAgg+: the FedAvg family (FedAvg, FedProx, FedBN, FedPer, Ditto, FFL) and the
server optimisers (FedAvgM, FedAdam, FedYogi, FedAdagrad), whose step follows the average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common.recorddict_compat import (
    fitres_to_recorddict,
    recorddict_to_fitins,
)
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from siteflow.deploy.flower.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SecureSettings,
)
from siteflow.deploy.flower.weights import pack, unpack
from siteflow.strategies.federated import FederatedStrategy

NAMES = "weight-names"
"""Config key of a secure train message: the weights' names, one a line, in the order of the
legacy parameter list."""
WEIGHTING = "secagg-weighting"
"""Config key: ``"samples"`` (a site's weight is its training-sample count) or ``"equal"``."""
MAX_WEIGHT = "secagg-max-weight"
"""Config key: the largest weight a site may have (the workflow's ``max_weight``)."""

def check_strategy(strategy: FederatedStrategy, name: str) -> None:
    """Refuse a strategy whose aggregation needs more than the weighted average of the sites'
    updates (it declares ``aggregates_by_weighted_mean``: SCAFFOLD sums control variates over
    all sites), that
    clips each site's update on the server (central differential privacy), or that
    aggregates robustly (a median or Krum needs every site's update)."""
    if strategy.central_dp is not None:
        raise ValueError(
            "run config secure-aggregation=true: common.strategy.kwargs.central_dp clips each site's update on the "
            "server, which SecAgg+ hides from it; drop central_dp or use secure-aggregation=false"
        )
    if strategy.robust is not None:
        raise ValueError(
            "run config secure-aggregation=true: common.strategy.kwargs.robust needs each site's update, which SecAgg+ "
            "hides from the server (it sees their sum only); drop robust or use secure-aggregation=false"
        )
    if not strategy.aggregates_by_weighted_mean:
        raise ValueError(
            f"run config secure-aggregation=true: strategy {name!r} (common.strategy.name) aggregates more than the "
            "weighted average of the sites' updates, which is all SecAgg+ reveals to the server; use a strategy of "
            "the FedAvg family or a server optimiser (fedavgm, fedadam, fedyogi, fedadagrad), or secure-aggregation=false"
        )


# -- the server's side ----------------------------------------------------------------------


@dataclass
class SecureOutcome:
    """What a secure round leaves the server: the weighted average of the updates (numpy
    arrays in the order of the names the sites were sent, less those they keep) and the
    weight of every site whose masked update is in it (node id -> weight)."""

    average: list[np.ndarray] = field(default_factory=list)
    weights: dict[int, int] = field(default_factory=dict)


class SecureRound:
    """One round's training under Flower's ``SecAggPlusWorkflow``.

    Args:
        settings: the run config's SecAgg+ settings.
        timeout: seconds to wait for the sites' replies in each of the protocol's four stages.
    """

    def __init__(self, settings: SecureSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    def train(self, grid: Grid, messages: list[Message], round_number: int, weighting: str) -> SecureOutcome:
        """Run the protocol for the train ``messages`` (content ``{"arrays", "config"}``, one
        per site); an outcome without sites if too many dropped out."""
        instructions = {message.metadata.dst_node_id: _fit_instructions(message, weighting, self.settings.max_weight)
                        for message in messages}
        collector = _Collector(grid, instructions)
        state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: round_number}),
                            MAIN_PARAMS_RECORD: ArrayRecord()})
        context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=state, run_config={}),
                                strategy=collector)
        workflow = SecAggPlusWorkflow(
            num_shares=1.0,  # every site holds a share of every other's keys
            reconstruction_threshold=self.settings.threshold,
            max_weight=self.settings.max_weight,
            clipping_range=self.settings.clipping_range,
            quantization_range=self.settings.quantization_range,
            timeout=self.timeout,
        )
        workflow(grid, context)
        return collector.outcome


def _fit_instructions(message: Message, weighting: str, max_weight: float) -> FitIns:
    """A train message's content as the legacy ``FitIns`` the workflow sends, the weights'
    names in the config."""
    arrays = unpack(message.content[ARRAYS])
    config = dict(message.content[CONFIG])
    config.update({NAMES: "\n".join(arrays), WEIGHTING: weighting, MAX_WEIGHT: float(max_weight)})
    return FitIns(ndarrays_to_parameters(list(arrays.values())), config)


class _Collector(LegacyStrategy):
    """The legacy strategy the workflow drives: hands it the round's instructions, keeps the
    average it returns (every result's parameters are the average)."""

    def __init__(self, grid: Grid, instructions: dict[int, FitIns]) -> None:
        self.grid = grid
        self.instructions = instructions
        self.outcome = SecureOutcome()

    def configure_fit(self, server_round, parameters, client_manager) -> list[tuple[ClientProxy, FitIns]]:
        return [(GridClientProxy(node_id, self.grid, self.grid.run.run_id), fitins) for node_id, fitins in self.instructions.items()]

    def aggregate_fit(self, server_round, results, failures):
        if results:
            self.outcome.average = parameters_to_ndarrays(results[0][1].parameters)
            self.outcome.weights = {proxy.node_id: result.num_examples for proxy, result in results}
        return None, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


# -- the site's side (the ClientApp's process) ---------------------------------------------------


def instructions(content: RecordDict) -> tuple[RecordDict, list[str]]:
    """A secure train message's content as siteflow's ``{"arrays", "config"}``, and the
    names of the weights in the order they came."""
    fitins = recorddict_to_fitins(content, keep_input=True)
    config = dict(fitins.config)
    names = str(config.pop(NAMES)).split("\n")
    arrays = parameters_to_ndarrays(fitins.parameters)
    if len(names) != len(arrays):
        raise ValueError(f"secure round: {len(arrays)} weights but {len(names)} names")
    return RecordDict({ARRAYS: pack(dict(zip(names, arrays))), CONFIG: ConfigRecord(config)}), names


def fit_result(reply: RecordDict, names: list[str], config: ConfigRecord) -> RecordDict:
    """siteflow's reply ``{"arrays", "metrics"}`` as the legacy ``FitRes`` layout that the
    mod masks: the weights in the order of ``names`` (those the site sent), its weight
    (training samples, or 1 with equal weighting), checked against the round's ``max_weight``."""
    arrays = unpack(reply[ARRAYS])
    metrics = dict(reply[METRICS])
    weight = 1 if config[WEIGHTING] == "equal" else int(metrics[NUM_EXAMPLES])
    if weight > float(config[MAX_WEIGHT]):
        raise ValueError(
            f"secure round: this site's weight ({weight} training samples) exceeds the run config's "
            f"secagg-max-weight={config[MAX_WEIGHT]}; raise it to at least the largest site's sample count"
        )
    # 0-d weights (BatchNorm's counters) as 1-element vectors: Flower's unmasking scales the
    # sum in place, which a numpy scalar does not take (the server reshapes them back)
    ndarrays = [np.atleast_1d(arrays[name]) for name in names if name in arrays]
    result = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(ndarrays), weight, metrics)
    return fitres_to_recorddict(result, keep_input=True)
