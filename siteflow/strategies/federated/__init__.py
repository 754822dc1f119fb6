"""Federated strategies: one round API (:mod:`.base`), driven in-process (:mod:`.simulation`)
or on Flower (``siteflow.deploy.flower``); one file per algorithm."""

from siteflow.strategies.federated.base import FederatedStrategy, SiteUpdate
from siteflow.strategies.federated.federation import ROUND_STATE, Federation, TooFewSites, round_stage
from siteflow.strategies.federated.fedavg import FedAvgStrategy
from siteflow.strategies.federated.fedprox import FedProxStrategy, ProximalTerm
from siteflow.strategies.federated.ffl import FFLStrategy
from siteflow.strategies.federated.site import FederatedSite
from siteflow.strategies.federated.store import SiteStore

__all__ = [
    "ROUND_STATE",
    "FFLStrategy",
    "FedAvgStrategy",
    "FedProxStrategy",
    "FederatedSite",
    "FederatedStrategy",
    "Federation",
    "ProximalTerm",
    "SiteStore",
    "SiteUpdate",
    "TooFewSites",
    "round_stage",
]
