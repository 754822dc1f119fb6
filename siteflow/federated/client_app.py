"""The ClientApp that each hospital's SuperNode runs: its own site, nothing else.

``flower-supernode ... --node-config "task-id=<id>"`` names the site (optionally also
``config="<the site's YAML>"``, ``exps-root="<folder>"``, ``gpu=<index>``); the run config
names the experiment. Three kinds of message:

- query: which site this node serves (its task id), answered without touching any data;
- train: the global weights of the previous round -> train the site for the round -> the
  shared weights and the training-sample count (FedBN's normalisation weights stay here);
- evaluate: the global weights of a round -> the metrics on the site's own test split.

A failure raises, and Flower returns it to the server as an error reply.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from siteflow.federated.protocol import (
    ARRAYS,
    CONFIG,
    FINGERPRINT,
    METRICS,
    NUM_EXAMPLES,
    ROUND,
    TASK_ID,
    NodeSettings,
    RunSettings,
)

app = ClientApp()


@app.query()
def identify(message: Message, context: Context) -> Message:
    """Answer which site this SuperNode serves."""
    task_id = NodeSettings.from_node_config(context.node_config).task_id
    return Message(RecordDict({METRICS: MetricRecord({TASK_ID: task_id})}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the site for one round from the received global weights."""
    site, round_number = _site(message, context)
    from siteflow.federated.weights import from_arrays, to_arrays

    update = site.train(from_arrays(message.content[ARRAYS]), round_number)
    metrics = MetricRecord({TASK_ID: site.task.task_id, NUM_EXAMPLES: update.num_samples})
    return Message(RecordDict({ARRAYS: to_arrays(update.weights), METRICS: metrics}), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Test the received global model on the site's own test split."""
    site, round_number = _site(message, context)
    from siteflow.federated.weights import from_arrays

    values = site.test(from_arrays(message.content[ARRAYS]), round_number)
    return Message(RecordDict({METRICS: MetricRecord({TASK_ID: site.task.task_id, **values})}), reply_to=message)


def _site(message: Message, context: Context):
    """The site this node serves, checked against the server's experiment, and the round."""
    # imported here: a query (and loading this module) must not pay for torch and Lightning
    from siteflow.federated.site import FederatedSite

    config: ConfigRecord = message.content[CONFIG]
    site = FederatedSite(RunSettings.from_run_config(context.run_config), NodeSettings.from_node_config(context.node_config))
    site.check(str(config[FINGERPRINT]))
    return site, int(config[ROUND])
