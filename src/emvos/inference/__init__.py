"""Streaming inference: the video predictor, its per-video state, and the ``segment`` command.

The predictor is imported when first used (``from emvos.inference import VideoPredictor``), so that
the ``segment`` command can parse its arguments and check its inputs before PyTorch loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emvos.inference.predictor import FramePrediction, VideoPredictor, VideoState

__all__ = ["FramePrediction", "VideoPredictor", "VideoState"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("emvos.inference.predictor"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
