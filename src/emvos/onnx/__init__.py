"""The per-frame step as ONNX graphs (``emvos export --onnx``), and :class:`OnnxPredictor`, which runs
them with numpy and onnxruntime, without PyTorch (``emvos segment --backend onnxruntime``).

``from emvos.onnx import OnnxPredictor`` imports onnxruntime, not PyTorch; :mod:`emvos.onnx.export`
needs PyTorch and the ``onnx`` package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvos.lazy import lazy_exports

if TYPE_CHECKING:
    from emvos.onnx.predictor import OnnxPredictor, OnnxState

__all__ = ["OnnxPredictor", "OnnxState"]

__getattr__, __dir__ = lazy_exports(__name__, {"emvos.onnx.predictor": ("OnnxPredictor", "OnnxState")})
