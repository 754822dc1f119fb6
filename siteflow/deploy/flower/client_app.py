"""The ClientApp that each hospital's SuperNode runs: its own site, nothing else.

``flower-supernode ... --node-config "task-id=<id>"`` names the site (optionally also
``config="<the site's YAML>"``, ``exps-root="<folder>"``, ``gpu=<index>``); the run config
names the experiment. Three kinds of message:

- query: which site this node serves (its task id), answered without touching any data;
- train: what the server sends in a round -> the strategy's site step -> what the site sends
  back and its training-sample count (what never leaves the site stays on its disk); with
  ``phase=finish``, the strategy's finishing step, answered with its test metrics;
- evaluate: the global weights of a round -> the metrics on the site's own test split.

A failure raises, and Flower returns it to the server as an error reply. Every message runs
in a fresh process: the training stack (torch, Lightning) is imported only by the handlers
that train or test, so that a query is answered in about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

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
    NodeSettings,
    RunSettings,
)

if TYPE_CHECKING:
    from siteflow.deploy.flower.site import DeployedSite

app = ClientApp()


@app.query()
def identify(message: Message, context: Context) -> Message:
    """Answer which site this SuperNode serves."""
    task_id = NodeSettings.from_node_config(context.node_config).task_id
    return Message(RecordDict({METRICS: MetricRecord({TASK_ID: task_id})}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """The site step of a round (or the finishing step) from what the server sent."""
    from siteflow.deploy.flower.weights import from_arrays, to_arrays

    site, round_number = _site(message, context)
    received = from_arrays(message.content[ARRAYS])
    if message.content[CONFIG].get(PHASE) == FINISH:
        values = site.finish(received)
        return Message(RecordDict({METRICS: MetricRecord({TASK_ID: site.task_id, **values})}), reply_to=message)
    update = site.train(received, round_number)
    metrics = MetricRecord({TASK_ID: site.task_id, NUM_EXAMPLES: update.num_samples})
    return Message(RecordDict({ARRAYS: to_arrays(update.weights), METRICS: metrics}), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Test the received global model on the site's own test split."""
    from siteflow.deploy.flower.weights import from_arrays

    site, round_number = _site(message, context)
    values = site.test(from_arrays(message.content[ARRAYS]), round_number)
    return Message(RecordDict({METRICS: MetricRecord({TASK_ID: site.task_id, **values})}), reply_to=message)


def _site(message: Message, context: Context) -> tuple[DeployedSite, int]:
    """The site this node serves, checked against the server's experiment, and the round."""
    from siteflow.deploy.flower.site import DeployedSite

    config: ConfigRecord = message.content[CONFIG]
    site = DeployedSite(
        RunSettings.from_run_config(context.run_config),
        NodeSettings.from_node_config(context.node_config),
        server_fingerprint=str(config[FINGERPRINT]),
    )
    return site, int(config[ROUND])
