"""Training data: clips of frames with one target object, drawn deterministically from a seed.

Every dataset here is a map-style :class:`torch.utils.data.Dataset` of virtually unlimited length
(:data:`VIRTUAL_LENGTH`) whose item ``k`` depends only on ``(seed, k)`` (see
:class:`ClipDataset`); a sample is ``{"frames": (L, 3, S, S) float32 RGB in [0, 1],
"masks": (L, S, S) int64 in {0, 1}}``. The trainer applies :func:`swap_and_attach` to batches.

* :class:`StaticPseudoVideos`: pre-training on static images (:func:`coco_instances`,
  :func:`image_folder_pairs`).
* :class:`DavisClips`, :class:`YTVOSClips`: main training on DAVIS 2016/2017 and YouTube-VOS.
* :class:`DistractorClips`: targets among look-alike distractors, rendered on the fly
  (:mod:`emvos.data.synthetic`, which also writes them to disk as a benchmark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvos.lazy import lazy_exports

if TYPE_CHECKING:
    from emvos.data.base import MAX_DRAWS, SKIP_REASONS, VIRTUAL_LENGTH, ClipDataset, SampleSkipped
    from emvos.data.davis import DAVIS_YEARS, DavisClips
    from emvos.data.static import (
        CocoImage,
        PairedImage,
        StaticImage,
        StaticImages,
        StaticPseudoVideos,
        coco_instances,
        image_folder_pairs,
    )
    from emvos.data.synthetic import DistractorClips, DistractorSettings, DistractorVideo
    from emvos.data.transforms import CropBox, swap_and_attach
    from emvos.data.video import AnnotatedVideo, VideoClips
    from emvos.data.ytvos import YTVOSClips

__all__ = [
    "AnnotatedVideo",
    "ClipDataset",
    "CocoImage",
    "CropBox",
    "DAVIS_YEARS",
    "DavisClips",
    "DistractorClips",
    "DistractorSettings",
    "DistractorVideo",
    "MAX_DRAWS",
    "PairedImage",
    "SKIP_REASONS",
    "SampleSkipped",
    "StaticImage",
    "StaticImages",
    "StaticPseudoVideos",
    "VIRTUAL_LENGTH",
    "VideoClips",
    "YTVOSClips",
    "coco_instances",
    "image_folder_pairs",
    "swap_and_attach",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "emvos.data.base": ("MAX_DRAWS", "SKIP_REASONS", "VIRTUAL_LENGTH", "ClipDataset", "SampleSkipped"),
    "emvos.data.davis": ("DAVIS_YEARS", "DavisClips"),
    "emvos.data.static": ("CocoImage", "PairedImage", "StaticImage", "StaticImages", "StaticPseudoVideos",
                          "coco_instances", "image_folder_pairs"),
    "emvos.data.synthetic": ("DistractorClips", "DistractorSettings", "DistractorVideo"),
    "emvos.data.transforms": ("CropBox", "swap_and_attach"),
    "emvos.data.video": ("AnnotatedVideo", "VideoClips"),
    "emvos.data.ytvos": ("YTVOSClips",),
})
