"""DAVIS training clips cut from cached encoder features instead of decoded frames.

The frozen encoder's features of every annotated frame are computed once
(:class:`emvos.data.features.FeatureCache`); a sample is a window of those maps and of the masks,
so a training step runs only the trainable network (keys, matching, decoder).

Sampling (sample ``k`` depends only on ``(seed, k)``), in draw order: a sequence (uniform), its
frames reversed (probability 0.5), a start frame (uniform), then the next ``L - 1`` frames as
:class:`emvos.data.video.VideoClips` takes them; a scale (uniform among ``scales``), mirrored
left-right (probability 0.5); then the window: ``S x S`` pixels at a uniformly random position
aligned to the encoder's stride (16) in the scaled frame, balanced on the first frame as
:func:`emvos.data.transforms.balanced_crop` (:func:`~emvos.data.transforms.choose_target`). The
same window, scale and mirroring serve every frame of the clip.

What a sample's features are, exactly: for frame ``t``, the encoder's features of the **whole**
frame resized to the scale (and mirrored), cut at the window (rows ``top / s`` to
``(top + S) / s`` and the same for columns, at each stride ``s``), stored in float16. They are
not the features of the ``S x S`` crop encoded alone: within the encoder's receptive field of the
window's border, the crop alone would see zero padding where the cached features saw the rest of
the frame. Inference encodes whole frames, so the cached features are what it sees.

Differences from :class:`~emvos.data.davis.DavisClips`:

* **No photometric augmentation** can be applied: colour changes would change the features, which
  are computed once. (The pixel datasets have none either, as the official recipe.)
* **Scales instead of a resized crop box**: the zoom comes from the cached scales, and the window
  is square in the scaled frame (no aspect-ratio jitter); a scale needs both scaled sides at least
  the crop size.
* **Left-right mirroring only**: no vertical flip (its features are not cached).
* The trainer skips **swap-and-attach** for these samples: pasting another clip's object would
  need the features of the composited frame, which no cache holds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from emvos.data.base import ClipDataset, Sample, SampleSkipped
from emvos.data.davis import DavisClips
from emvos.data.features import LEVELS, CachedSequence, FeatureCache, NamedEncoder, default_cache_dir
from emvos.data.transforms import choose_target
from emvos.data.video import clip_positions
from emvos.model.encoders.base import Features

#: Scales (shorter sides in pixels) a cache holds by default.
DEFAULT_SCALES = (480, 384)


class CachedDavisClips(ClipDataset):
    """DAVIS 2016/2017 training clips of cached features (see the module docstring).

    A sample is ``{"features": Features(s4 (L, C4, S/4, S/4), s8 (L, C8, S/8, S/8),
    s16 (L, C16, S/16, S/16)) float16, "masks": (L, S, S) int64 in {0, 1},
    "window": (5,) int64 (sequence index, scale index, mirrored, top, left),
    "frames": (L,) int64 frame indices in the sequence}``.

    Building it encodes whatever the cache lacks (one progress line per sequence).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        encoder: NamedEncoder,
        scales: Sequence[int] = DEFAULT_SCALES,
        cache_dir: str | Path | None = None,
        year: int = 2017,
        split: str | None = "train",
        sequences: Sequence[str] | None = None,
        exclude: Collection[str] = (),
        resolution: str = "480p",
        clip_length: int = 10,
        crop_size: int = 384,
        seed: int = 0,
    ) -> None:
        """Scan the sequences as :class:`~emvos.data.davis.DavisClips` does and build the missing cache.

        Args:
            root: The DAVIS folder.
            encoder: The frozen encoder (and its name) whose features are cached.
            scales: Shorter sides, in pixels, of the cached frames; each must make both sides of a
                frame at least ``crop_size``.
            cache_dir: The cache's root folder (default :func:`emvos.data.features.default_cache_dir`).
            year, split, sequences, exclude, resolution: As :class:`~emvos.data.davis.DavisClips`.
            clip_length: ``L``.
            crop_size: ``S``, a multiple of the encoder's stride.
            seed: Dataset seed.

        Raises:
            ValueError: ``crop_size`` not a multiple of the stride, or a scale too small for it.
            EmvosInputError: as :class:`~emvos.data.davis.DavisClips`, or an unreadable frame.
        """
        super().__init__(seed=seed, clip_length=clip_length, crop_size=crop_size)
        stride = encoder.module.feature_info.stride
        if crop_size % stride:
            raise ValueError(f"crop_size {crop_size} must be a multiple of the encoder's stride {stride}")
        scan = DavisClips(root, year=year, split=split, sequences=sequences, exclude=exclude,
                          resolution=resolution)
        self.root, self.videos, self.binary = scan.root, scan.videos, scan.binary
        self.excluded = scan.excluded
        self.stride = stride
        self.cache = FeatureCache(cache_dir or default_cache_dir(), root, encoder, scales)
        self.cache.build(self.videos)
        self._open: dict[tuple[int, int], CachedSequence] = {}
        for index in range(len(self.videos)):
            for scale in range(len(self.cache.scales)):
                height, width = self._sequence(index, scale).labels.shape[1:]
                if min(height, width) < crop_size:
                    raise ValueError(f"scales: {self.cache.scales[scale]} makes {self.videos[index].name} "
                                     f"{width}x{height}, smaller than crop_size {crop_size}; use larger scales")
        self._open.clear()  # each DataLoader worker opens its own memory maps

    def describe(self) -> str:
        return f"CachedDavisClips({self.root})"

    def _sequence(self, index: int, scale: int) -> CachedSequence:
        if (index, scale) not in self._open:
            self._open[index, scale] = self.cache.open(self.videos[index], self.cache.scales[scale])
        return self._open[index, scale]

    def _draw(self, rng: np.random.Generator) -> Sample:
        index = int(rng.integers(len(self.videos)))
        order = list(range(len(self.videos[index].images)))
        if rng.random() < 0.5:
            order.reverse()
        start = int(rng.integers(len(order)))
        frame_ids = [order[p] for p in clip_positions(len(order), start, self.clip_length)]
        scale = int(rng.integers(len(self.cache.scales)))
        mirrored = bool(rng.random() < 0.5)
        cached = self._sequence(index, scale)
        if cached.unreadable.intersection(frame_ids):
            raise SampleSkipped("unreadable", f"{self.videos[index].name}: a frame of the clip could not be read")
        size, stride = self.crop_size, self.stride

        def labels(frame: int) -> np.ndarray:
            ids = cached.labels[frame, :, ::-1] if mirrored else cached.labels[frame]
            return (ids != 0).astype(np.uint8) if self.binary else ids

        first = labels(frame_ids[0])
        height, width = first.shape

        def draw() -> tuple[tuple[int, int], np.ndarray]:
            top = int(rng.integers((height - size) // stride + 1)) * stride
            left = int(rng.integers((width - size) // stride + 1)) * stride
            return (top, left), first[top:top + size, left:left + size]

        choice = choose_target(draw, rng)
        if choice is None:
            raise SampleSkipped("no_object", "the clip's first frame has no object inside the window")
        (top, left), object_id = choice
        masks = np.stack([labels(f)[top:top + size, left:left + size] == object_id for f in frame_ids])
        levels = []
        for (_, s), level in zip(LEVELS, cached.features, strict=True):
            cut = level[int(mirrored), frame_ids, :, top // s:(top + size) // s, left // s:(left + size) // s]
            levels.append(torch.from_numpy(np.ascontiguousarray(cut)))
        return {
            "features": Features(*levels),  # type: ignore[dict-item]  # a tuple of tensors, unrolled by the trainer
            "masks": torch.from_numpy(masks).to(torch.int64),
            "window": torch.tensor([index, scale, int(mirrored), top, left], dtype=torch.int64),
            "frames": torch.tensor(frame_ids, dtype=torch.int64),
        }
