"""The ClientApp that each hospital's SuperNode runs: its own site, nothing else.

``flower-supernode ... --node-config "task-id=<id>"`` names the site (optionally also
``config="<the site's YAML>"``, ``exps-root="<folder>"``, ``gpu=<index>``,
``worker="<socket>"``); the run config names the experiment. Three kinds of message:

- query: which site this node serves (its task id), answered without touching any data;
- train: what the server sends in a round -> the strategy's site step -> what the site sends
  back and its training-sample count (what never leaves the site stays on its disk); with
  ``test-round``, the site first tests that round's global model (what it received) and the
  reply carries the metrics too; with ``phase=finish``, the strategy's finishing step,
  answered with its test metrics;
- evaluate: the global weights of a round -> the metrics on the site's own test split.

Train and evaluate are :func:`siteflow.deploy.flower.handlers.answer`. Flower runs every
message in a fresh process: without ``worker``, that process imports the training stack
(torch, Lightning: seconds to tens of seconds) for each train and evaluate message; with it,
the hospital's long-running site worker (:mod:`siteflow.deploy.flower.worker`) answers them
and this process imports only Flower. A failure raises, and Flower returns it to the server
as an error reply. In a run with ``secure-aggregation=true``, Flower's ``secaggplus_mod``
(:mod:`siteflow.deploy.flower.secure`) runs here around the train handler and masks the
site's update before it leaves.
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from siteflow.deploy.flower.protocol import CONFIG, METRICS, TASK_ID, NodeSettings


def secure_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` around the train messages of a secure round (a run with
    ``secure-aggregation=true``); other messages pass through, and only a secure round
    imports it."""
    if not _is_secure(message):
        return call_next(message, context)
    from flwr.client.mod import secaggplus_mod

    return secaggplus_mod(message, context, call_next)


app = ClientApp(mods=[secure_mod])


@app.query()
def identify(message: Message, context: Context) -> Message:
    """Answer which site this SuperNode serves."""
    task_id = NodeSettings.from_node_config(context.node_config).task_id
    return Message(RecordDict({METRICS: MetricRecord({TASK_ID: task_id})}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """The site step of a round (or the finishing step) from what the server sent; in a
    secure round, from and to the layout of Flower's SecAgg+ (which masks the reply)."""
    if not _is_secure(message):
        return Message(_answer(message, context), reply_to=message)
    from siteflow.deploy.flower.secure import fit_result, instructions

    content, names = instructions(message.content)
    reply = _answer(message, context, content)
    return Message(fit_result(reply, names, content[CONFIG]), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Test the received global model on the site's own test split."""
    return Message(_answer(message, context), reply_to=message)


def _is_secure(message: Message) -> bool:
    """Whether ``message`` belongs to a secure round (SecAgg+'s configs ride along)."""
    return message.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in message.content.config_records


def _answer(message: Message, context: Context, content: RecordDict | None = None) -> RecordDict:
    """The reply's content to ``message`` (with ``content`` instead of its own, if given):
    from the node's site worker if it names one, else from here."""
    content = message.content if content is None else content
    worker = NodeSettings.from_node_config(context.node_config).worker
    if worker is not None:
        from siteflow.deploy.flower.worker import ask

        return ask(worker, message.metadata.message_type, content, context)
    from siteflow.deploy.flower.handlers import answer

    return answer(message.metadata.message_type, content, context)
