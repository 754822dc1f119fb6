"""Multi-site strategies, registered by name in ``siteflow.core.registry.STRATEGIES``."""

from siteflow.strategies.base import Carried, SiteRunner, State, Strategy
from siteflow.strategies.federated.fedavg import FedAvgStrategy, FedProxStrategy, FFLStrategy
from siteflow.strategies.joint import JointStrategy
from siteflow.strategies.local import LocalStrategy
from siteflow.strategies.relay import RelayLearner, RelayNetwork, RelayStrategy
from siteflow.strategies.sequential import SequentialStrategy

__all__ = ["Carried", "FedAvgStrategy", "FedProxStrategy", "FFLStrategy", "JointStrategy", "LocalStrategy", "RelayLearner", "RelayNetwork", "RelayStrategy", "SequentialStrategy", "SiteRunner", "State", "Strategy"]
