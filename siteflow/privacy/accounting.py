"""Privacy accounting with Opacus' accountants, and the ledger that makes a site's epsilon add
up over its stages and rounds.

A subsampled Gaussian mechanism run ``steps`` times with noise multiplier ``z`` and sampling
rate ``q`` is one entry ``(z, q, steps)`` of an accountant's history; the epsilon at ``delta``
of several entries is their composition. :class:`PrivacyLedger` keeps the entries of one
site (one per stage or round, a re-run stage replacing its own) in a JSON file on the site's
disk, so that the epsilon after round ``r`` counts every earlier round, across processes and
restarts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence


from siteflow.core.atomic import safe_name, write_json
from siteflow.core.extras import optional_module
from siteflow.privacy import CENTRAL_FILE, SITES_DIR

opacus_accountants = optional_module("opacus.accountants", "privacy", "DP-SGD's privacy accounting")
opacus_utils = optional_module("opacus.accountants.utils", "privacy", "DP-SGD's privacy accounting")

Accountant = Literal["rdp", "prv"]


@dataclass(frozen=True)
class Spent:
    """One stage of a site's private training: ``steps`` noisy steps with noise multiplier
    ``noise_multiplier`` on Poisson batches of rate ``sample_rate``, and the site's epsilon
    (at the ledger's delta) after it, counting its earlier stages."""

    stage: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float


def epsilon(history: Sequence[tuple[float, float, int]], *, delta: float, accountant: Accountant = "rdp") -> float:
    """The epsilon at ``delta`` of the composition of ``history``, entries ``(noise_multiplier,
    sample_rate, steps)``, by Opacus' ``accountant``; 0 for an empty history."""
    steps = [entry for entry in history if entry[2] > 0]
    if not steps:
        return 0.0
    counter = opacus_accountants.create_accountant(accountant)
    counter.history = [(float(z), float(q), int(n)) for z, q, n in steps]
    return float(counter.get_epsilon(delta=delta))


def noise_for(target_epsilon: float, *, delta: float, sample_rate: float, steps: int, accountant: Accountant = "rdp") -> float:
    """The noise multiplier whose ``steps`` steps at ``sample_rate`` spend ``target_epsilon``
    at ``delta`` (Opacus' ``get_noise_multiplier``, to within its 0.01 tolerance)."""
    return float(
        opacus_utils.get_noise_multiplier(
            target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant
        )
    )


class PrivacyLedger:
    """The private stages of one site, in ``<folder>/<site>.json`` (written atomically).

    Args:
        folder: the site's privacy folder.
        site: the site's name (the stage's sites joined by ``+`` when several train pooled).
        delta: the delta every epsilon is given at.
        accountant: Opacus' accountant, ``"rdp"`` or ``"prv"``.
    """

    def __init__(self, folder: Path, site: str, *, delta: float, accountant: Accountant) -> None:
        self.path = Path(folder) / f"{safe_name(site)}.json"
        self.site = site
        self.delta = delta
        self.accountant = accountant

    def stages(self) -> list[Spent]:
        """The stages recorded so far, in order."""
        if not self.path.is_file():
            return []
        return [Spent(**entry) for entry in json.loads(self.path.read_text())["stages"]]

    def noise_multiplier(self) -> float | None:
        """The noise multiplier of the first recorded stage (a site keeps its first one), or None."""
        stages = self.stages()
        return stages[0].noise_multiplier if stages else None

    def record(self, stage: str, *, noise_multiplier: float, sample_rate: float, steps: int) -> Spent:
        """Record ``stage`` (replacing an earlier record of the same stage: a re-run) and
        return it with the site's epsilon after it."""
        kept = [s for s in self.stages() if s.stage != stage]
        history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in kept] + [(noise_multiplier, sample_rate, steps)]
        spent = Spent(stage, noise_multiplier, sample_rate, steps, epsilon(history, delta=self.delta, accountant=self.accountant))
        write_json(self.path, {
            "site": self.site, "delta": self.delta, "accountant": self.accountant,
            "epsilon": spent.epsilon, "stages": [asdict(s) for s in [*kept, spent]],
        })
        return spent


def read_ledgers(folder: Path) -> dict[str, dict]:
    """Every ledger in ``folder`` (site name -> its JSON content); empty without the folder."""
    if not Path(folder).is_dir():
        return {}
    ledgers = (json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json")))
    return {ledger["site"]: ledger for ledger in ledgers}


def privacy_summary(results_dir: Path) -> dict:
    """The privacy spent in a run, for its ``summary.json``: ``{"privacy": {"dp_sgd": {site:
    {"epsilon", "delta", "accountant", "per_stage": {stage: epsilon}}}, "central_dp": {...}}}``
    from the ledgers under ``results_dir`` (:data:`~siteflow.privacy.SITES_DIR`,
    :data:`~siteflow.privacy.CENTRAL_FILE`); empty when nothing was trained privately."""
    privacy: dict = {}
    ledgers = read_ledgers(Path(results_dir) / SITES_DIR)
    if ledgers:
        privacy["dp_sgd"] = {
            site: {
                "epsilon": ledger["epsilon"], "delta": ledger["delta"], "accountant": ledger["accountant"],
                "noise_multiplier": ledger["stages"][0]["noise_multiplier"],
                "per_stage": {stage["stage"]: stage["epsilon"] for stage in ledger["stages"]},
            }
            for site, ledger in ledgers.items()
        }
    central = Path(results_dir) / CENTRAL_FILE
    if central.is_file():
        privacy["central_dp"] = json.loads(central.read_text())
    return {"privacy": privacy} if privacy else {}
