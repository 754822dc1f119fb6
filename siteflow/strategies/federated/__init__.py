"""Federated strategies: one base class, :class:`FederatedStrategy`, whose hooks make the round
API (:mod:`.base`); the server's side between rounds and the schedule of what comes next
(:mod:`.federation`), walked in-process (:mod:`.simulation`) or on Flower
(``siteflow.deploy.flower``); one file per algorithm."""

from siteflow.strategies.federated.base import FederatedStrategy, SiteUpdate, round_stage
from siteflow.strategies.federated.ditto import DittoStrategy
from siteflow.strategies.federated.fedadagrad import FedAdagradStrategy
from siteflow.strategies.federated.fedadam import FedAdamStrategy
from siteflow.strategies.federated.fedavg import FedAvgStrategy
from siteflow.strategies.federated.fedavgm import FedAvgMStrategy
from siteflow.strategies.federated.federation import ROUND_STATE, Federation, TooFewSites
from siteflow.strategies.federated.fedopt import AdaptiveServerOptimizer, ServerOptimizer
from siteflow.strategies.federated.fedper import FedPerStrategy
from siteflow.strategies.federated.fedprox import FedProxStrategy, ProximalTerm
from siteflow.strategies.federated.fedyogi import FedYogiStrategy
from siteflow.strategies.federated.ffl import FFLStrategy
from siteflow.strategies.federated.scaffold import ScaffoldStrategy
from siteflow.strategies.federated.site import FederatedSite
from siteflow.strategies.federated.store import SiteStore

__all__ = [
    "ROUND_STATE",
    "AdaptiveServerOptimizer",
    "DittoStrategy",
    "FFLStrategy",
    "FedAdagradStrategy",
    "FedAdamStrategy",
    "FedAvgMStrategy",
    "FedAvgStrategy",
    "FedPerStrategy",
    "FedProxStrategy",
    "FedYogiStrategy",
    "FederatedSite",
    "FederatedStrategy",
    "Federation",
    "ProximalTerm",
    "ScaffoldStrategy",
    "ServerOptimizer",
    "SiteStore",
    "SiteUpdate",
    "TooFewSites",
    "round_stage",
]
