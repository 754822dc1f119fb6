"""The network as graphs that run without siteflow's Python code: TorchScript (traced) and
ONNX (torch's dynamo exporter), with a dynamic batch and spatial size where the network
allows; each is checked against the PyTorch network on an input of another size, and marked
fixed-size where it does not match there."""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from siteflow.core.atomic import atomic_path
from siteflow.core.extras import optional_module

onnxruntime = optional_module("onnxruntime", "export", "exporting a model to ONNX")

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
"""Largest difference of logits between a graph and the PyTorch network, relative to the
largest logit (at least 1): float32 sums in another order differ by about 1e-7 of it."""


@dataclass(frozen=True)
class GraphExport:
    """One exported graph: its file (relative to the export folder) and whether it accepts
    other sizes than ``example_shape`` (checked, not assumed)."""

    file: str
    dynamic: bool
    example_shape: tuple[int, ...]


def example_inputs(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded example input of ``shape`` (N, C, *spatial) and one of another batch and
    spatial size, to check that an exported graph is not fixed to the example."""
    generator = torch.Generator().manual_seed(0)
    other = (shape[0] + 1, shape[1], *(size + 3 for size in shape[2:]))
    return torch.randn(shape, generator=generator), torch.randn(other, generator=generator)


def _matches(outputs: torch.Tensor, expected: torch.Tensor) -> bool:
    scale = max(1.0, float(expected.abs().max()))
    return outputs.shape == expected.shape and float((outputs - expected).abs().max()) <= TOLERANCE * scale


@torch.inference_mode()
def export_torchscript(network: nn.Module, shape: tuple[int, ...], path: Path) -> GraphExport:
    """``network`` traced into TorchScript on an example of ``shape``, saved atomically."""
    example, other = example_inputs(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(network, example, check_trace=False)
    try:
        dynamic = _matches(traced(other), network(other))
    except RuntimeError:
        dynamic = False
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return GraphExport(path.name, dynamic, tuple(shape))


def export_onnx(network: nn.Module, shape: tuple[int, ...], path: Path) -> GraphExport:
    """``network`` exported to ONNX (input ``image``, output ``logits``) with a dynamic batch
    and spatial size (torch's dynamo exporter), saved atomically; where the exporter cannot
    keep the sizes dynamic, with the example's fixed size."""
    example, other = example_inputs(shape)
    argument = next(name for name in inspect.signature(network.forward).parameters if name != "self")
    dynamic_shapes = {argument: {axis: torch.export.Dim.DYNAMIC for axis in range(len(shape)) if axis != 1}}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on absent torchvision operators are no concern here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(network, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=dynamic_shapes, verbose=False)
        except Exception as error:  # the exporter's failures are many kinds; fixed-size is the fallback
            log.warning("ONNX export with dynamic sizes failed (%s: %s); exporting at the fixed size %s",
                        type(error).__name__, str(error).splitlines()[0], list(shape))
            program = torch.onnx.export(network, (example,), dynamo=True, input_names=["image"], output_names=["logits"], verbose=False)
        finally:
            exporter_log.setLevel(level)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = network(other)
    try:
        dynamic = _matches(torch.from_numpy(session.run(None, {"image": other.numpy()})[0]), expected)
    except Exception:  # onnxruntime raises its own error types for a shape the graph cannot take
        dynamic = False
    return GraphExport(path.name, dynamic, tuple(shape))


def onnx_network(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX Runtime session of the graph at ``path`` as a network: images (N, C, *spatial)
    float32 -> logits, as :class:`~siteflow.inference.predictor.Predictor` runs it."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": images.detach().cpu().numpy()})[0])

    return run
