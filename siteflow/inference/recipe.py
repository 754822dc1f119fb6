"""What a trained model needs to run on new inputs, apart from its weights: its task and
classes, the training's preprocessing and inference, the network to build. A run folder, a
hand-over file and an exported folder all give one (see :mod:`siteflow.inference.sources`);
the exported folder's model card carries it as JSON, so that an exported model runs without
the study's config or data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from siteflow.config import InferenceConfig
from siteflow.core.registry import MODELS
from siteflow.datasets.chest_xray.inputs import XrayInput
from siteflow.datasets.inputs import ImageInput, InputPreprocessing
from siteflow.datasets.volumes.inputs import VolumeInput
from siteflow.datasets.volumes.preprocessing import Preprocessing

TaskKind = Literal["segmentation", "multilabel"]
INFERABLE_TASKS = ("segmentation", "multilabel")


@dataclass(frozen=True)
class ModelRecipe:
    """A trained model's description.

    Attributes:
        name: the model, as ``predictions.csv`` names it (run, stage and site, or hand-over file).
        task: ``segmentation`` (label maps) or ``multilabel`` (a probability per label).
        class_names: the network's outputs: segmentation classes (background first) or labels.
        input: the training's preprocessing of one input.
        inference: how the network runs over a whole image (segmentation: one pass or
            sliding windows); ``whole`` for classifiers.
        model_name, model_kwargs: the registered network and its options (without
            ``in_channels`` and ``num_classes``, which ``input`` and ``class_names`` give).
        labels: multi-label: the labels this model answers (a site's own head answers only its
            site's labels); None: all of ``class_names``.
        thresholds: multi-label: the decision threshold of each label of ``class_names``,
            chosen on validation data (Youden's J); None where no validation data was at hand.
    """

    name: str
    task: TaskKind
    class_names: tuple[str, ...]
    input: InputPreprocessing
    inference: InferenceConfig
    model_name: str
    model_kwargs: Mapping[str, Any]
    labels: tuple[str, ...] | None = None
    thresholds: tuple[float, ...] | None = None

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.input.spatial_dims

    @property
    def answered(self) -> tuple[str, ...]:
        """The classes or labels whose outputs mean something (see ``labels``)."""
        return self.labels if self.labels is not None else self.class_names

    def build_network(self) -> nn.Module:
        """A new network of this recipe (untrained), in eval mode."""
        kwargs = {**self.model_kwargs, "in_channels": self.input.channels, "num_classes": len(self.class_names)}
        return MODELS.get(self.model_name)(**kwargs).eval()

    def load(self, weights: Mapping[str, torch.Tensor]) -> nn.Module:
        """The network loaded with ``weights`` (strictly: every name and shape), in eval mode."""
        network = self.build_network()
        network.load_state_dict(dict(weights))
        return network.eval()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "input": self.input.to_json(),
            "inference": dataclasses.asdict(self.inference),
            "model_name": self.model_name,
            "model_kwargs": dict(self.model_kwargs),
            "labels": None if self.labels is None else list(self.labels),
            "thresholds": None if self.thresholds is None else list(self.thresholds),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ModelRecipe:
        """The recipe that :meth:`to_json` wrote; ValueError naming what is missing or wrong."""
        try:
            task = value["task"]
            if task not in INFERABLE_TASKS:
                raise ValueError(f"task {task!r} cannot be run on new inputs (only {', '.join(INFERABLE_TASKS)})")
            inference = dict(value["inference"])
            if inference.get("roi_size") is not None:
                inference["roi_size"] = tuple(int(v) for v in inference["roi_size"])
            return cls(
                name=str(value["name"]),
                task=task,
                class_names=tuple(value["class_names"]),
                input=input_from_json(value["input"]),
                inference=InferenceConfig(**inference),
                model_name=str(value["model_name"]),
                model_kwargs=dict(value["model_kwargs"]),
                labels=None if value.get("labels") is None else tuple(value["labels"]),
                thresholds=None if value.get("thresholds") is None else tuple(float(v) for v in value["thresholds"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"the model description lacks or mistypes {error}") from None


def input_from_json(value: Mapping[str, Any]) -> InputPreprocessing:
    """The preprocessing that an input's ``to_json`` wrote; ValueError for an unknown kind."""
    kind = value.get("kind")
    if kind in ("image", "xray"):
        size = value["img_size"]
        options = (int(value["channels"]), None if size is None else (int(size[0]), int(size[1])),
                   (float(value["out_range"][0]), float(value["out_range"][1])))
        return ImageInput(*options) if kind == "image" else XrayInput(*options)
    if kind == "volume":
        options = dict(value["preprocessing"])
        for key in ("spacing", "ct_window"):
            options[key] = None if options[key] is None else tuple(float(v) for v in options[key])
        options["ct_statistics"] = tuple(tuple(float(v) for v in row) for row in options["ct_statistics"])
        return VolumeInput(int(value["channels"]), Preprocessing(**options))
    raise ValueError(f"input preprocessing of unknown kind {kind!r} (image, xray or volume)")
