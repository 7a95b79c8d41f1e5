"""The per-frame step as ONNX graphs (``emvos export --onnx``), and :class:`OnnxPredictor`, which runs
them with numpy and onnxruntime, without PyTorch (``emvos segment --backend onnxruntime``).

``from emvos.onnx import OnnxPredictor`` imports onnxruntime, not PyTorch; :mod:`emvos.onnx.export`
needs PyTorch and the ``onnx`` package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emvos.onnx.predictor import OnnxPredictor, OnnxState

__all__ = ["OnnxPredictor", "OnnxState"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("emvos.onnx.predictor"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
