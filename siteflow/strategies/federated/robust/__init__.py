"""Robust aggregation: rules that bound what one site's update can do to the global weights.

A federated strategy of the FedAvg family averages the sites' updates by sample count; one
site that sends scaled or sign-flipped weights, or claims a huge sample count, moves that
average wherever it likes. The strategy option ``robust`` replaces the average by one of the
rules registered here, by name, with its options beside the name::

    common:
      strategy:
        name: fedavg            # or fedprox, fedbn, fedadam, ... : any strategy whose
        kwargs:                 # aggregate is FederatedStrategy.aggregate's average
          robust: {name: trimmed_mean, beta: 0.2}

The rule runs inside :meth:`~siteflow.strategies.federated.base.FederatedStrategy.aggregate`,
where the plain weighted average ran, so it composes with every strategy that builds on that
average (a server optimiser steps along the robust aggregate; FedBN's local layers stay
local; SCAFFOLD's control variates move by the rule's aggregate of the sites' deltas), simulated and on Flower
alike. A new rule is one file: a :class:`~siteflow.strategies.federated.robust.base.RobustRule`
registered in :data:`ROBUST_RULES`.
"""

from __future__ import annotations

from typing import Any, Mapping

from siteflow.core.errors import OptionError
from siteflow.core.registry import UnknownNameError
from siteflow.strategies.federated.robust import clipping, krum, median, trimmed_mean  # noqa: F401  (they register)
from siteflow.strategies.federated.robust.base import ROBUST_RULES, RobustRule

__all__ = ["ROBUST_RULES", "RobustRule", "build_rule"]


def build_rule(options: Mapping[str, Any]) -> RobustRule:
    """The rule named by ``options["name"]``, built with the other keys as its options.

    Raises:
        OptionError: (option ``robust``) no name, an unknown name (with the nearest), or an
            option the rule refuses.
    """
    if not isinstance(options, Mapping) or not isinstance(options.get("name"), str):
        raise OptionError("robust", f"needs a rule's name, e.g. {{name: median}} (one of {', '.join(ROBUST_RULES.names())}), got {options!r}")
    kwargs = {key: value for key, value in options.items() if key != "name"}
    try:
        rule = ROBUST_RULES.get(options["name"])
    except UnknownNameError as error:
        raise OptionError("robust", str(error)) from None
    try:
        return rule(**kwargs)
    except (TypeError, ValueError) as error:
        raise OptionError("robust", f"{options['name']}: {error}") from None

