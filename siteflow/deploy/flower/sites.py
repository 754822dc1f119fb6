"""The server's directory of sites: which connected SuperNode serves which site.

Flower knows nodes by id only (and a restarted SuperNode comes back with a new id), so the
server asks every node it has not seen yet with a query message; the node answers with its
``task-id``. With it, every failure and every result is logged with the site's name.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from siteflow.config import SiteRun
from siteflow.deploy.flower.exchange import exchange
from siteflow.deploy.flower.protocol import METRICS, TASK_ID

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 120.0
"""Seconds to wait for new nodes to say which site they serve."""


class SiteDirectory:
    """Node ids -> the sites of ``site_runs`` they serve, learnt by asking each new node.

    Args:
        site_runs: the sites the run trains.
    """

    def __init__(self, site_runs: Sequence[SiteRun]) -> None:
        self.site_runs = {site_run.task_id: site_run for site_run in site_runs}
        self._site_of: dict[int, SiteRun] = {}
        self._left_out: set[int] = set()

    def name(self, node_id: int) -> str:
        """The name of the site that node ``node_id`` serves (or the node, if unknown)."""
        site_run = self._site_of.get(node_id)
        return site_run.task_name if site_run else f"<node {node_id}>"

    def connected(self, grid: Grid) -> dict[int, SiteRun]:
        """The connected nodes that serve a site of the run, asking the new ones first."""
        node_ids = list(grid.get_node_ids())
        self._identify(grid, [n for n in node_ids if n not in self._site_of and n not in self._left_out])
        return {node_id: self._site_of[node_id] for node_id in node_ids if node_id in self._site_of}

    def wait_for_all(self, grid: Grid, seconds: float) -> dict[int, SiteRun]:
        """:meth:`connected`, once every site is connected or ``seconds`` have passed."""
        deadline = time.monotonic() + seconds
        while True:
            nodes = self.connected(grid)
            missing = self.missing(nodes.values())
            if not missing or time.monotonic() >= deadline:
                return nodes
            log.info("waiting for the sites to connect: %s", ", ".join(missing))
            time.sleep(3)

    def missing(self, served: Iterable[SiteRun]) -> list[str]:
        """The names of the run's sites that no node in ``served`` serves."""
        present = {site_run.task_id for site_run in served}
        return [site_run.task_name for task_id, site_run in self.site_runs.items() if task_id not in present]

    def _identify(self, grid: Grid, node_ids: list[int]) -> None:
        if not node_ids:
            return
        queries = [Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY) for node_id in node_ids]
        for reply in exchange(grid, queries, timeout=QUERY_TIMEOUT):
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                log.error("node %d did not say which site it serves (left out): %s", node_id, reply.error.reason)
                self._left_out.add(node_id)
                continue
            try:
                task_id = int(reply.content[METRICS][TASK_ID])
            except (KeyError, TypeError, ValueError, OverflowError) as error:
                log.error("node %d did not say which site it serves (left out): %s", node_id, error)
                self._left_out.add(node_id)
                continue
            site_run = self.site_runs.get(task_id)
            if site_run is None:
                log.error("node %d serves task id %d, which this run does not train (left out)", node_id, task_id)
                self._left_out.add(node_id)
                continue
            for other, other_run in list(self._site_of.items()):
                if other_run.task_id == task_id:  # a restarted SuperNode has a new id
                    log.warning("site %s: node %d replaces node %d", site_run.task_name, node_id, other)
                    del self._site_of[other]
                    self._left_out.add(other)
            self._site_of[node_id] = site_run
            log.info("node %d serves site %s (task %d)", node_id, site_run.task_name, task_id)
