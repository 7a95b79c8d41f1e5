"""Multi-object training clips made from single-object ones: copy-paste composites.

A composite clip is a DAVIS clip (the *scene*) with a few more objects pasted into it. Each pasted
object is cut, with its own motion, from another clip of the same dataset; it is shrunk to a random
scale (small objects), drifts at a random velocity (objects cross, occlude each other, leave the
frame and come back), and is layered in front of the scene's object or behind it. Sometimes the
pasted object is a clone of the scene's own object: a look-alike distractor with the same
appearance and motion in another place.

The target is one of the objects visible in the first frame, drawn uniformly; every other object is
background. This is how inference sees a multi-object video (each object against all the others,
:mod:`emvos.inference.aggregate`), and what single-object DAVIS-2016 clips never show: a target
beside other objects, look-alikes among them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from emvos.data.base import ClipDataset, Sample, SampleSkipped
from emvos.data.davis import DavisClips
from emvos.data.transforms import CROP_RATIO, CROP_SCALE, MIN_OBJECT_PIXELS

#: Smallest side of a pasted clip, in pixels.
MIN_PASTE_SIDE = 8


class CompositeClips(ClipDataset):
    """Copy-paste composites of DAVIS clips (see the module docstring).

    Draws, in order: the scene clip (:meth:`DavisClips._draw`); whether the clip stays plain
    (``plain_p``); the number of pasted objects (uniform in ``1..max_pasted``); for each, whether it
    clones the scene (``lookalike_p``), its source clip, scale, start, velocity and layer; then the
    target among the objects covering at least ``MIN_OBJECT_PIXELS`` pixels of frame 0 (or, when
    none does, among those present at all).

    Args:
        root: The DAVIS folder (see :class:`DavisClips`).
        max_pasted: Most objects pasted into one clip, ``>= 1``.
        plain_p: Probability that a clip is the scene alone.
        lookalike_p: Probability that a pasted object is a clone of the scene's object.
        scale: Range of a pasted clip's side relative to the crop (log-uniform), within ``(0, 1]``.
        speed: Largest drift of a pasted object per frame, relative to the crop side.
        behind_p: Probability that a pasted object passes behind the scene's object.
        attach_p: Probability that a pasted object is carried by the scene's object: placed on it
            and moving with its centre, like a bag on a person (drawn only when positive, so that
            samples without it stay as they were).
        joint: Keep every object instead of drawing a target: ``masks`` are then ids, ``1..K`` for
            the ``K`` objects visible in frame 0 (in the order of their ids) and 0 for the rest,
            which the trainer tracks together (:meth:`emvos.train.Trainer` unrolls such clips with
            soft aggregation).
        year, split, sequences, exclude, resolution: The clips' source (see :class:`DavisClips`).
        clip_length: ``L``.
        crop_size: ``S``.
        seed: Dataset seed: sample ``k`` depends only on ``(seed, k)``.
        crop_scale: Crop-area range of the scene and source clips.
        crop_ratio: Crop aspect-ratio range.

    Raises:
        ValueError: an option is out of range.
        EmvosInputError: the DAVIS folder is unusable (see :class:`DavisClips`).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        max_pasted: int = 3,
        plain_p: float = 0.2,
        lookalike_p: float = 0.3,
        scale: tuple[float, float] = (0.15, 0.8),
        speed: float = 0.03,
        behind_p: float = 0.3,
        attach_p: float = 0.0,
        joint: bool = False,
        year: int = 2016,
        split: str | None = "train",
        sequences: Sequence[str] | None = None,
        exclude: Collection[str] = (),
        resolution: str = "480p",
        clip_length: int = 10,
        crop_size: int = 384,
        seed: int = 0,
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
    ) -> None:
        super().__init__(seed=seed, clip_length=clip_length, crop_size=crop_size, crop_scale=crop_scale,
                         crop_ratio=crop_ratio, joint=joint)
        if max_pasted < 1:
            raise ValueError(f"max_pasted must be >= 1, got {max_pasted}")
        for name, p in (("plain_p", plain_p), ("lookalike_p", lookalike_p), ("behind_p", behind_p),
                        ("attach_p", attach_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must be a range within (0, 1], got {scale}")
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.clips = DavisClips(root, year=year, split=split, sequences=sequences, exclude=exclude,
                                resolution=resolution, clip_length=clip_length, crop_size=crop_size, seed=seed,
                                crop_scale=crop_scale, crop_ratio=crop_ratio)
        self.excluded = self.clips.excluded
        self.max_pasted, self.plain_p, self.lookalike_p = max_pasted, plain_p, lookalike_p
        self.scale, self.speed, self.behind_p = (float(scale[0]), float(scale[1])), speed, behind_p
        self.attach_p = attach_p

    def describe(self) -> str:
        return f"CompositeClips({self.clips.root})"

    def _draw(self, rng: np.random.Generator) -> Sample:
        scene = self.clips._draw(rng)
        if rng.random() < self.plain_p:
            return scene
        frames, ids = scene["frames"].clone(), scene["masks"].clone()  # id 1: the scene's object
        carrier = _centres(scene["masks"]) if self.attach_p > 0 else None
        for j in range(int(rng.integers(1, self.max_pasted + 1))):
            lookalike = bool(rng.random() < self.lookalike_p)
            attached = self.attach_p > 0 and not lookalike and bool(rng.random() < self.attach_p)
            source = scene if lookalike else self.clips._draw(rng)
            low = max(self.scale[0], 0.6) if lookalike else self.scale[0]
            high = min(self.scale[1], 0.45) if attached else self.scale[1]
            side = max(MIN_PASTE_SIDE, round(self.crop_size * math.exp(rng.uniform(math.log(min(low, high)),
                                                                                     math.log(high)))))
            self._paste(frames, ids, source, object_id=j + 2, side=side, rng=rng,
                        carrier=carrier if attached else None)
        counts = torch.bincount(ids[0].flatten(), minlength=int(ids.max()) + 1)[1:]
        present = torch.nonzero(counts).flatten()
        if present.numel() == 0:
            raise SampleSkipped("no_object", "no object of the composite is in its first frame")
        if self.joint:
            lut = torch.zeros(int(ids.max()) + 1, dtype=torch.int64)
            lut[present + 1] = torch.arange(1, present.numel() + 1)
            return {"frames": frames, "masks": lut[ids]}
        large = present[counts[present] >= MIN_OBJECT_PIXELS]
        candidates = large if large.numel() else present
        target = int(candidates[int(rng.integers(candidates.numel()))]) + 1
        return {"frames": frames, "masks": (ids == target).to(torch.int64)}

    def _paste(self, frames: Tensor, ids: Tensor, source: Sample, *, object_id: int, side: int,
               rng: np.random.Generator, carrier: np.ndarray | None = None) -> None:
        """Paste ``source``'s object, shrunk to ``side``, into ``frames``/``ids`` in place.

        Args:
            frames: ``(L, 3, S, S)`` float32 RGB of the composite.
            ids: ``(L, S, S)`` int64 object ids of the composite (0 = background).
            source: A sample whose ``masks`` mark the object to paste.
            object_id: The pasted object's id.
            side: Side of the shrunk source clip, in pixels.
            rng: Draws the start, velocity and layer.
            carrier: ``(L, 2)`` ``(y, x)`` centres of the object that carries the pasted one, which
                then starts on it (its centre within half a side of the carrier's) and moves with it.
        """
        size, length = self.crop_size, self.clip_length
        shrunk = F.interpolate(source["frames"], size=(side, side), mode="bilinear", antialias=True,
                               align_corners=False)
        alpha = F.interpolate(source["masks"][:, None].float(), size=(side, side), mode="bilinear",
                              antialias=True, align_corners=False)[:, 0].clamp_(0.0, 1.0)
        start = rng.uniform(-side / 2, size - side / 2, 2)
        velocity = rng.uniform(-self.speed, self.speed, 2) * size
        behind = bool(rng.random() < self.behind_p)
        if carrier is not None:
            path = carrier + rng.uniform(-side / 2, side / 2, 2) - side / 2
        else:
            path = start + velocity * np.arange(length)[:, None]
        for t in range(length):
            top, left = (int(round(v)) for v in path[t])
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + side, size), min(left + side, size)
            if y0 >= y1 or x0 >= x1:
                continue  # out of the frame at this time
            a = alpha[t, y0 - top:y1 - top, x0 - left:x1 - left]
            if behind:
                a = a * (ids[t, y0:y1, x0:x1] != 1)
            region = frames[t, :, y0:y1, x0:x1]
            region.mul_(1 - a).add_(shrunk[t, :, y0 - top:y1 - top, x0 - left:x1 - left] * a)
            ids[t, y0:y1, x0:x1][a > 0.5] = object_id


def _centres(masks: Tensor) -> np.ndarray:
    """``(L, 2)`` ``(y, x)`` centre of each frame's mask ``(L, S, S)``; a frame without it keeps the last centre."""
    centres = np.zeros((masks.shape[0], 2))
    last = np.array([masks.shape[1] / 2, masks.shape[2] / 2])
    for t, mask in enumerate(masks):
        points = torch.nonzero(mask)
        if len(points):
            last = points.float().mean(0).numpy().astype(np.float64)
        centres[t] = last
    return centres
