"""Streaming inference: the video predictor, its per-video state, and the ``segment`` command."""

from emvos.inference.predictor import FramePrediction, VideoPredictor, VideoState

__all__ = ["FramePrediction", "VideoPredictor", "VideoState"]
