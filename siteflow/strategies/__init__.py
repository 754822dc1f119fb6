"""Multi-site strategies; importing this package registers them in
:data:`siteflow.core.registry.STRATEGIES`."""

from siteflow.strategies.base import SiteInput, StudyContext, Strategy, Trainee
from siteflow.strategies.continual import EWCStrategy, LwFStrategy, OWMStrategy, SIStrategy
from siteflow.strategies.federated import FedAvgStrategy, FederatedStrategy, FedProxStrategy, FFLStrategy
from siteflow.strategies.joint import JointStrategy
from siteflow.strategies.local import LocalStrategy
from siteflow.strategies.relay import RelayStrategy
from siteflow.strategies.sequential import SequentialStrategy

__all__ = [
    "SiteInput",
    "EWCStrategy",
    "FFLStrategy",
    "FedAvgStrategy",
    "FedProxStrategy",
    "FederatedStrategy",
    "JointStrategy",
    "LocalStrategy",
    "LwFStrategy",
    "OWMStrategy",
    "RelayStrategy",
    "SIStrategy",
    "SequentialStrategy",
    "Strategy",
    "StudyContext",
    "Trainee",
]
