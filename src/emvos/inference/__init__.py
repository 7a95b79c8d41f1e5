"""Streaming inference: the video predictor, its per-video state, and the ``segment`` command.

The predictor is imported when first used (``from emvos.inference import VideoPredictor``), so that
the ``segment`` command can parse its arguments and check its inputs before PyTorch loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvos.lazy import lazy_exports

if TYPE_CHECKING:
    from emvos.inference.predictor import FramePrediction, VideoPredictor, VideoState

__all__ = ["FramePrediction", "VideoPredictor", "VideoState"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "emvos.inference.predictor": ("FramePrediction", "VideoPredictor", "VideoState"),
})
