"""The federated strategies deployed on Flower's deployment engine (SuperLink + SuperNodes).

- :mod:`siteflow.deploy.flower.server_app`: the ``ServerApp``; it runs the config's strategy
  rounds on the connected sites, aggregates with the simulation's code, saves every round
  atomically (a restarted run resumes) and records the site matrix.
- :mod:`siteflow.deploy.flower.client_app`: the ``ClientApp``; each hospital's SuperNode trains
  and tests only its own site (``--node-config "task-id=<id>"``), in the ClientApp's process
  or in the hospital's long-running site worker (:mod:`siteflow.deploy.flower.worker`, which
  keeps the training stack imported); what a site answers is
  :mod:`siteflow.deploy.flower.handlers`.
- :mod:`siteflow.deploy.flower.secure`: secure aggregation with Flower's SecAgg+
  (``secure-aggregation=true`` in the run config).
- ``flower-app/`` at the repository root is the Flower App that ``flwr run`` submits.

This package is the top floor: it uses the strategies, the runner and the config; nothing
below imports it.
"""

from siteflow.core.extras import require

require("flwr", "flower", "deploying federated training on Flower")
