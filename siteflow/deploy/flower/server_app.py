"""The ServerApp: the federated rounds of a siteflow config on the sites' SuperNodes.

The run config names the config (``config``: a name under ``configs/`` or a YAML path) and
the run (``note``, ``exps-root``); outputs go to ``<exps-root>/<config>/<note>/`` as for a
simulated run: ``checkpoints/global/round_state.safetensors`` after every round (a restarted
run resumes from it), ``checkpoints/global/final.safetensors``, ``results/`` (site matrices
with one row per round, ``summary.json``, ``progress.json``) and ``logs/``.
``predict_test.py -c <config> -n <note>`` evaluates the final global weights.
"""

from __future__ import annotations

import logging
import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from siteflow.config import load_config
from siteflow.config.folders import run_folder
from siteflow.core.site_matrix import matrix_table
from siteflow.deploy.flower.logs import log_to
from siteflow.deploy.flower.protocol import RunSettings
from siteflow.deploy.flower.server import FederatedServer
from siteflow.engine.runner import ExperimentRun

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or resume) the federation of the run config's experiment."""
    settings = RunSettings.from_run_config(context.run_config)
    config = load_config(settings.config)
    run = ExperimentRun(config, run_folder(settings.exps_root, config.name, settings.note, note_key="run config note"))
    log_to(run.folder.logs / f"flower_server_{time.strftime('%Y-%m-%d_%H-%M-%S')}.log")
    with run.folder.locked():
        run.prepare(check_data=False)  # the sites check their own data
        FederatedServer(run, settings).execute(grid)
        summary = run.write_results()
    metric = run.task.matrix_metrics[0]
    table = matrix_table(run.results, summary["sites"], metric)
    log.info("site matrix of %s (row: after round, column: test site)\n%s", metric, table)
    log.info("final mean %s %s; results in %s", metric, summary[metric]["final_mean"], run.folder.results_dir)
