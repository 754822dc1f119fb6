"""Handing a trained model to the tools a hospital runs (``siteflow-export``): safetensors
weights, TorchScript and ONNX graphs, a MONAI bundle and a model card, in one folder that
``siteflow-infer --model`` reads too."""

from siteflow.export.folder import export_model

__all__ = ["export_model"]
