"""What a site answers to the server's train and evaluate messages: the ClientApp's work.

:func:`answer` takes a message's kind and content and the node's context and returns the
content of the reply. The ClientApp calls it in its own process, or hands the message to the
hospital's long-running site worker (:mod:`siteflow.deploy.flower.worker`), which calls it in
a process that has the training stack imported already. It imports torch and Lightning (via
the site): the ClientApp imports this module only when a message needs it.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, MessageType, MetricRecord, RecordDict

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
    NodeSettings,
    RunSettings,
)
from siteflow.deploy.flower.site import DeployedSite
from siteflow.deploy.flower.weights import from_arrays, to_arrays


def answer(kind: str, content: RecordDict, context: Context) -> RecordDict:
    """The reply's content to a message of type ``kind`` (``MessageType.TRAIN`` or
    ``EVALUATE``) with ``content`` (``"arrays"``: the weights; ``"config"``: round,
    fingerprint, phase, test round):

    - train: the strategy's site step -> ``{"arrays": what the site sends back, "metrics":
      {task-id, num-examples}}``; with ``test-round=<r>``, the site first tests round r's
      global model (the global weights in what it received) -> ``"tested"``: {task-id, test
      metrics} in the reply too; with ``phase=finish``, the strategy's finishing step ->
      ``{"tested": {task-id, test metrics}}``;
    - evaluate: the global weights tested on the site's own test split -> ``{"tested":
      {task-id, test metrics}}``.
    """
    config: ConfigRecord = content[CONFIG]
    site = deployed_site(context, server_fingerprint=str(config[FINGERPRINT]))
    try:
        return _reply(site, kind, config, content)
    except Exception:
        _sites.clear()  # the next message starts from the site's disk, as a fresh process would
        raise


def deployed_site(context: Context, *, server_fingerprint: str) -> DeployedSite:
    """The site of ``context``'s node in its run: built at the run's first message (the config
    validated, the strategy and network built, the site's data checked) and reused for the next
    ones in this process (a site worker answers every message of a run; a ClientApp's own
    process, one). The server's fingerprint is checked at every message; another run (its Flower
    run id or run config), or a message whose answer failed, builds the site afresh."""
    run_settings, node = RunSettings.from_run_config(context.run_config), NodeSettings.from_node_config(context.node_config)
    key = (context.run_id, run_settings, node)
    site = _sites.get(key)
    if site is None:
        site = DeployedSite(run_settings, node, server_fingerprint=server_fingerprint)
        _sites.clear()  # one run at a time: the previous run's site is let go
        _sites[key] = site
    else:
        site.check(server_fingerprint)
    return site


_sites: dict[tuple[int, RunSettings, NodeSettings], DeployedSite] = {}
"""The site built for the latest (run, run config, node) of this process (see :func:`deployed_site`)."""


def _reply(site: DeployedSite, kind: str, config: ConfigRecord, content: RecordDict) -> RecordDict:
    """The reply's content (see :func:`answer`)."""
    round_number = int(config[ROUND])
    received = from_arrays(content[ARRAYS])
    if kind == MessageType.EVALUATE:
        return RecordDict({TESTED: _tested(site, site.test(received, round_number))})
    if kind != MessageType.TRAIN:
        raise ValueError(f"a site answers train and evaluate messages, not {kind!r}")
    if config.get(PHASE) == FINISH:
        return RecordDict({TESTED: _tested(site, site.finish(received))})
    reply = RecordDict()
    if TEST_ROUND in config:
        reply[TESTED] = _tested(site, site.test(site.strategy.received_global_weights(received), int(config[TEST_ROUND])))
    update = site.train(received, round_number)
    reply[ARRAYS] = to_arrays(update.weights)
    reply[METRICS] = MetricRecord({TASK_ID: site.task_id, NUM_EXAMPLES: update.num_samples})
    return reply


def _tested(site: DeployedSite, values: dict[str, float]) -> MetricRecord:
    return MetricRecord({TASK_ID: site.task_id, **values})
