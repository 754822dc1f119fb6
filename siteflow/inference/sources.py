"""Where a trained model comes from: a run folder (``-c CONFIG -n NOTE``), a hand-over file
(verified as on arrival) or an exported folder (its weights checked against its model card's
digest). Each gives a :class:`LoadedModel`: the network in eval mode and its
:class:`~siteflow.inference.recipe.ModelRecipe`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from safetensors.torch import load as load_safetensors
from torch import nn

from siteflow.config import ExperimentConfig, InferenceConfig, SiteConfig
from siteflow.core.atomic import load_weights
from siteflow.core.io import weights_sha256
from siteflow.core.registry import DATASETS, MODELS, STRATEGIES
from siteflow.datasets import DataError
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.run_folder import RunFolder
from siteflow.engine.seeds import seed_folders
from siteflow.handover import read_handover
from siteflow.inference.recipe import INFERABLE_TASKS, ModelRecipe
from siteflow.tasks import build_task
from siteflow.metrics import youden_thresholds
from siteflow.tasks.base import Task
from siteflow.tasks.multilabel.prediction import predict_scores

log = logging.getLogger(__name__)

CARD_JSON = "model_card.json"
WEIGHTS_FILE = "models/model.safetensors"


class ModelSourceError(ValueError):
    """A model cannot be loaded: the message names the file or option."""


@dataclass
class LoadedModel:
    """A trained network in eval mode, ``(N, C_in, *spatial) -> (N, C, *spatial)`` logits or
    ``(N, L)`` label logits, and what running it needs."""

    recipe: ModelRecipe
    network: nn.Module
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What the model card says of the model's making: config, run, stage, sites, seed."""


def from_run_folder(config: ExperimentConfig, run_dir: Path, *, stage: str | None = None, site: str | None = None) -> LoadedModel:
    """The model of a finished stage of the run in ``run_dir`` (the last one by default).

    A run whose sites keep their own models needs ``site``: a local run's (each site's last
    stage), FedBN's, Ditto's, FedPer's and FFL's (each stage's own version of the site).
    ``site`` also chooses whose preprocessing and inference the model runs with (default: the
    site that trained the stage, else the first site).
    """
    run_dir = Path(run_dir)
    if seed_folders(run_dir) and not (run_dir / "results" / "progress.json").is_file():
        seeds = ", ".join(p.name for p in seed_folders(run_dir).values())
        raise ModelSourceError(f"{run_dir} is a study over seeds: give one seed's run with -n <note>/seed<k> ({seeds})")
    folder = RunFolder(run_dir)
    sites = {s.task_name: s for s in config.sites}
    if site is not None and site not in sites:
        raise ModelSourceError(f"--site: no site named {site!r} in {config.name} (sites: {', '.join(sites)})")
    trained_by = {row.stage: row.trained_site for row in folder.results}
    stage, path, site, own = _chosen_weights(folder, trained_by, stage, site, local=config.strategy.name == "local")
    trained = trained_by.get(stage)
    chosen = sites[site or (trained if trained in sites else config.sites[0].task_name)]
    task = build_task(config)
    network = STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs).solver_from(task)(load_weights(path))
    name = f"{run_dir}:{stage}" + (f"[{site}]" if own else "")
    recipe = recipe_of(config, task, chosen, name, own_site=own)
    provenance = {"config": config.name, "strategy": config.strategy.name, "seed": config.seed, "run": str(run_dir),
                  "stage": stage, "site": chosen.task_name, "sites": _sample_counts(config),
                  "test_metrics": next((row.values for row in folder.results if row.stage == stage), {}),
                  "site_matrix": {f.stem.removeprefix("site_matrix_"): f.read_text() for f in sorted(folder.results_dir.glob("site_matrix_*.csv"))}}
    return LoadedModel(_with_thresholds(recipe, task, network.eval(), chosen), network.eval(), provenance)


def _chosen_weights(
    folder: RunFolder, trained_by: dict[str, str | None], stage: str | None, site: str | None, *, local: bool
) -> tuple[str, Path, str | None, bool]:
    """(stage, weights file, site, whether they are the site's own) of the model that
    ``stage`` and ``site`` choose in ``folder`` (see :func:`from_run_folder`)."""
    models = folder.stage_weights()
    if not models:
        raise ModelSourceError(f"no trained weights in {folder.path}: train first with the same -c and -n")
    names = [name for name, _, _ in models]
    if stage is None and local:  # every stage is one site's own model
        if site is None:
            raise ModelSourceError(
                f"{folder.path} is a local run: each site trained its own model "
                f"({', '.join(filter(None, trained_by.values()))}): choose one with --site"
            )
        stage = next((name for name in reversed(names) if trained_by.get(name) == site), None)
        if stage is None:
            raise ModelSourceError(f"--site: no finished stage of {folder.path} was trained by site {site!r}")
    if stage is None:
        stage = names[-1]
    elif stage not in names:
        raise ModelSourceError(f"--stage: no finished stage named {stage!r} in {folder.path} (finished: {', '.join(names)})")
    _, path, own = models[names.index(stage)]
    if not own:
        return stage, path, site, False
    if site is None and len(own) > 1:
        raise ModelSourceError(f"stage {stage!r} of {folder.path} keeps one model per site ({', '.join(own)}): choose one with --site")
    site = site or next(iter(own))
    if site not in own:
        raise ModelSourceError(f"--site: stage {stage!r} has no model of site {site!r} (it has: {', '.join(own)})")
    return stage, own[site], site, True


def from_handover(config: ExperimentConfig, path: Path, *, key: bytes | None = None, site: str | None = None) -> LoadedModel:
    """The solver of the hand-over file ``path``, verified as a receiving site verifies it
    (digest, signature with ``key``, strategy, model, shapes; see
    :func:`~siteflow.handover.read_handover`); the preprocessing is that of ``site`` in
    ``config`` (default: the last site that trained the file's weights)."""
    task = build_task(config)
    strategy = STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs)
    expected = strategy.build_network(task).state_dict()
    weights, manifest = read_handover(
        path,
        key=key,
        model_name=config.model.name,
        model_kwargs=config.model.kwargs,
        strategy=config.strategy.name,
        strategy_options=config.strategy.kwargs,
        expected_shapes={name: tensor.shape for name, tensor in expected.items()},
        expected_dtypes={name: tensor.dtype for name, tensor in expected.items()},
    )
    sites = {s.task_name: s for s in config.sites}
    if site is not None and site not in sites:
        raise ModelSourceError(f"--site: no site named {site!r} in {config.name} (sites: {', '.join(sites)})")
    last = manifest.sites[-1].task_name if manifest.sites else None
    chosen = sites[site or (last if last in sites else config.sites[0].task_name)]
    network = strategy.solver_from(task)(weights).eval()
    recipe = recipe_of(config, task, chosen, Path(path).name, own_site=False)
    provenance = {"config": config.name, "strategy": config.strategy.name, "seed": config.seed, "handover": str(path), "site": chosen.task_name,
                  "trained_by": [{"site": s.task_name, "samples": s.num_samples} for s in manifest.sites]}
    return LoadedModel(_with_thresholds(recipe, task, network, chosen), network, provenance)


def from_export(folder: Path) -> LoadedModel:
    """The model of a folder written by ``siteflow-export``: its ``model_card.json`` read, its
    ``model.safetensors`` checked against the card's SHA-256 digest, then loaded."""
    folder = Path(folder)
    card_path, weights_path = folder / CARD_JSON, folder / WEIGHTS_FILE
    for path in (card_path, weights_path):
        if not path.is_file():
            raise ModelSourceError(f"{folder} is not an exported model: {path.name} is missing")
    try:
        card = json.loads(card_path.read_text())
        recipe = ModelRecipe.from_json(card["recipe"])
        digest = card["weights_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ModelSourceError(f"{card_path}: not a readable model card ({type(error).__name__}: {error})") from None
    try:
        weights = load_safetensors(weights_path.read_bytes())
    except Exception as error:  # untrusted bytes: whatever the parser raises is a refusal
        raise ModelSourceError(f"{weights_path}: not a valid safetensors file ({type(error).__name__}: {error})") from None
    if not hmac.compare_digest(weights_sha256(weights), str(digest)):
        raise ModelSourceError(f"{weights_path}: the weights do not match the SHA-256 digest of {card_path.name} (corrupted or altered)")
    try:
        network = recipe.load(weights)
    except RuntimeError as error:
        raise ModelSourceError(f"{weights_path}: the weights do not fit the card's {recipe.model_name}: {str(error).splitlines()[0]}") from None
    return LoadedModel(recipe, network, card.get("provenance", {}))


def _sample_counts(config: ExperimentConfig) -> list[dict[str, Any]]:
    """Each site of ``config`` and its training samples (None where its data is not here)."""
    counts = []
    for site in config.sites:
        try:
            samples = build_dataset(site, "train").num_samples if site.available else None
        except (DataError, ValueError, OSError):
            samples = None
        counts.append({"site": site.task_name, "samples": samples})
    return counts


def recipe_of(config: ExperimentConfig, task: Task, site: SiteConfig, name: str, *, own_site: bool) -> ModelRecipe:
    """The recipe of ``config``'s model as ``site`` preprocesses and runs it (its dataset's
    ``input_preprocessing``, its ``train.inference``); a site's own multi-label model answers
    that site's labels only (``own_site``). CT normalisation takes its statistics from the
    site's training data, which must then be here."""
    kind = getattr(MODELS.get(config.model.name), "task", None) or task.specs[site.task_name].task
    if kind not in INFERABLE_TASKS:
        raise ModelSourceError(
            f"{config.name}: a {kind} model makes no predictions to write (siteflow-infer runs {' and '.join(INFERABLE_TASKS)} models)"
        )
    try:
        preprocessing = DATASETS.get(site.dataset.name).input_preprocessing(**site.dataset.kwargs)
    except ValueError as error:
        raise ModelSourceError(f"site {site.task_name!r}: {error}") from None
    if getattr(preprocessing, "needs_statistics", False):
        preprocessing = dataclasses.replace(preprocessing, preprocessing=build_dataset(site, "train").preprocessing)
    train = next((t.train for t in config.site_runs if t.site.task_name == site.task_name), config.site_runs[-1].train)
    inference = train.inference if kind == "segmentation" else InferenceConfig(mode="whole")
    labels = task.specs[site.task_name].class_names if kind == "multilabel" and own_site else None
    return ModelRecipe(name, kind, tuple(task.class_names), preprocessing, inference, config.model.name, dict(config.model.kwargs), labels)


def _with_thresholds(recipe: ModelRecipe, task: Task, network: nn.Module, site: SiteConfig) -> ModelRecipe:
    """A multi-label ``recipe`` with the decision thresholds that maximise Youden's J on
    ``site``'s validation split (as ``predict_test.py`` chooses them), where that split is here
    (else none: ``predictions.csv`` then has probabilities only)."""
    if recipe.task != "multilabel" or not site.available:
        return recipe
    train = task.config.site_runs[0].train
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False)
    try:
        data = task.dataset([site], "val")
    except (DataError, ValueError, OSError) as error:
        log.warning("no decision thresholds: site %s's validation data cannot be read (%s)", site.task_name, error)
        return recipe
    learner = task.learner(network, task.build_loss(train), train)
    val = predict_scores(trainer, learner, data, task.config.num_workers, train.batch_size)
    thresholds = youden_thresholds(val["scores"], val["labels"], val["mask"])
    return dataclasses.replace(recipe, thresholds=tuple(float(t) for t in thresholds))
