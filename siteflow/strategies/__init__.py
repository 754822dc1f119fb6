"""Multi-site strategies, registered by name in ``siteflow.registry.STRATEGIES``."""

from siteflow.strategies.base import SiteRunner, State, Strategy
from siteflow.strategies.joint import JointStrategy
from siteflow.strategies.local import LocalStrategy
from siteflow.strategies.sequential import SequentialStrategy

__all__ = ["JointStrategy", "LocalStrategy", "SequentialStrategy", "SiteRunner", "State", "Strategy"]
