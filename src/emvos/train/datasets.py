"""Training datasets by kind, the iteration-indexed batch sampler, and a synthetic dataset.

Every training dataset is map-style and of virtually unlimited length; sample ``k`` is a function of
the dataset's seed and ``k`` alone. The trainer asks iteration ``t`` for samples
``t * batch_size + j`` (``j < batch_size``, split between processes), so the data of a run resumed at
iteration ``t`` is exactly that of an uninterrupted run, whatever the number of loader workers.

A sample is ``{"frames": (L, 3, S, S) float in [0, 1], "masks": (L, S, S) int64 in {0, 1}}``, or, for
kinds that read cached encoder features, ``{"features": Features(...) of L frames, "masks": ...}``
(see :class:`emvos.data.cached.CachedDavisClips`).

Kinds and their ``options`` (besides clip length, crop size and seed, which the stage sets):

* ``static``: pseudo-videos (:class:`emvos.data.StaticPseudoVideos`) of the frames of image + mask
  folders under ``root``: ``images`` and ``masks`` (default ``JPEGImages/480p`` and
  ``Annotations/480p``, the DAVIS layout), ``sequences`` / ``exclude`` (first-level folders to keep
  or leave out), and the pseudo-video augmentation options.
* ``coco``: pseudo-videos of COCO images (needs ``pycocotools``): ``annotations`` (default
  ``annotations/instances_train2017.json``) and ``images`` (default ``train2017``) under ``root``,
  and the pseudo-video augmentation options.
* ``yolo``: pseudo-videos of images with YOLO segmentation polygons, one instance per polygon (e.g.
  COCO128-seg): ``images`` and ``labels`` (default ``images/train2017``, ``labels/train2017``) under
  ``root``, the pseudo-video augmentation options, and ``joint`` / ``joint_objects`` (several
  instances of an image tracked together, like joint composites).
* ``davis``: :class:`emvos.data.DavisClips` (``year``, ``split``, ``sequences``, ``exclude``, ...).
* ``davis-cached``: :class:`emvos.data.cached.CachedDavisClips`, DAVIS clips of the frozen encoder's
  cached features (``scales``, ``cache_dir``, and the ``davis`` scan options): built on first use
  from the network's encoder, reused afterwards; no photometric augmentation and no swap-and-attach.
* ``ytvos``: :class:`emvos.data.YTVOSClips` (``split``, ``videos``, ``exclude``, ...).
* ``composite``: :class:`emvos.data.composite.CompositeClips`, multi-object copy-paste composites of
  DAVIS clips (``max_pasted``, ``plain_p``, ``lookalike_p``, ``scale``, ``speed``, ``behind_p``,
  ``attach_p``, ``joint`` and the ``davis`` scan options).
* ``synthetic``: :class:`SyntheticClips`, no files (``motion``).
* ``mix``: :class:`MixedClips`, samples of several kinds mixed by weight: ``options: {parts: [{kind,
  root, options, weight}, ...]}``; held-out sequences are left out of every part when one of them
  reads the validation folder.
* ``distractors``: :class:`emvos.data.DistractorClips`, targets among look-alike distractors rendered on
  the fly (``difficulty`` and the knobs of :class:`emvos.data.synthetic.DistractorSettings`,
  ``frame_size``); ``root``, optional, is a folder of photos to cut textures from.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from emvos.data import (
    VIRTUAL_LENGTH,
    DavisClips,
    DistractorClips,
    StaticPseudoVideos,
    YTVOSClips,
    coco_instances,
    image_folder_pairs,
)
from emvos.data.cached import CachedDavisClips
from emvos.data.composite import CompositeClips
from emvos.data.features import NamedEncoder
from emvos.data.static import yolo_instances
from emvos.errors import EmvosInputError

if TYPE_CHECKING:  # the config module reads this one's registry (TrainConfig.validate); types only here
    from emvos.train.config import DataConfig

#: ``(data, clip_len, size, seed, exclude)``, plus ``encoder=`` for kinds registered with ``uses_encoder``.
DatasetBuilder = Callable[..., Dataset]
_REGISTRY: dict[str, DatasetBuilder] = {}
_READS_FILES: set[str] = set()
_USES_ENCODER: set[str] = set()


def register_dataset(kind: str, reads_files: bool = True,
                     uses_encoder: bool = False) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator making a builder ``(data, clip_len, size, seed, exclude) -> Dataset`` available as ``kind``.

    ``exclude`` lists sequences the dataset must leave out (the held-out validation sequences, when
    the dataset reads the validation folder). ``reads_files``: the kind needs an existing ``root``.
    ``uses_encoder``: the kind's samples are features of the network's frozen encoder, which the
    builder receives as a further argument ``encoder`` (:class:`emvos.data.features.NamedEncoder`).
    """

    def wrap(builder: DatasetBuilder) -> DatasetBuilder:
        _REGISTRY[kind] = builder
        if reads_files:
            _READS_FILES.add(kind)
        if uses_encoder:
            _USES_ENCODER.add(kind)
        return builder

    return wrap


def uses_encoder(kind: str) -> bool:
    """Whether the samples of dataset kind ``kind`` are encoder features (built with the network's encoder)."""
    return kind in _USES_ENCODER


def dataset_kinds() -> list[str]:
    """The dataset kinds stages can use."""
    return sorted(_REGISTRY)


def check_data_root(data: DataConfig) -> None:
    """Raise :class:`EmvosInputError` when a kind that reads files has no existing ``root`` folder."""
    if data.kind in _READS_FILES and not (data.root and Path(data.root).is_dir()):
        raise EmvosInputError(f"{data.root or '(empty)'}: {data.kind} data root not found; "
                              f"set the stage's data.root to the dataset folder")


def build_dataset(data: DataConfig, clip_len: int, size: int, seed: int,
                  exclude: Sequence[str] = (), encoder: NamedEncoder | None = None) -> Dataset:
    """The training dataset a stage describes.

    Args:
        data: kind, root and constructor options.
        clip_len: frames per sample.
        size: side of the square crops.
        seed: the dataset's seed.
        exclude: sequences to leave out.
        encoder: the network's frozen encoder, needed by kinds that read its cached features
            (:func:`uses_encoder`).

    Raises:
        ValueError: the kind needs ``encoder`` and none was given.
        EmvosInputError: unknown kind, missing root, or options the dataset does not take.
    """
    if data.kind not in _REGISTRY:
        raise EmvosInputError(f"unknown dataset kind {data.kind!r}; choose one of {', '.join(dataset_kinds())}")
    if uses_encoder(data.kind):
        if encoder is None:
            raise ValueError(f"encoder: dataset kind {data.kind!r} reads encoder features; pass the network's encoder")
        return _REGISTRY[data.kind](data, clip_len, size, seed, exclude, encoder=encoder)
    return _REGISTRY[data.kind](data, clip_len, size, seed, exclude)


def _check_options(factory: Callable[..., Any], data: DataConfig, kwargs: dict[str, Any]) -> None:
    """Raise a one-line input error when ``factory(<first argument>, **kwargs)`` would not accept them."""
    try:
        inspect.signature(factory).bind(None, **kwargs)
    except TypeError as exc:
        raise EmvosInputError(f"stage data ({data.kind} at {data.root or '-'}): options {sorted(data.options)}: "
                              f"{exc}; see {factory.__module__}.{factory.__qualname__}") from None


def _options(data: DataConfig, exclude: Sequence[str]) -> dict[str, Any]:
    """A copy of the stage's options with ``exclude`` added to any ``exclude`` they list."""
    options = dict(data.options)
    if exclude:
        options["exclude"] = sorted({*options.get("exclude", ()), *exclude})
    return options


def _clip_kwargs(options: dict[str, Any], clip_len: int, size: int, seed: int) -> dict[str, Any]:
    return {**options, "clip_length": clip_len, "crop_size": size, "seed": seed}


def _video_clips(cls: Callable[..., Dataset]) -> DatasetBuilder:
    """A builder of ``cls(root, clip_length=..., crop_size=..., seed=..., **options)`` (DAVIS, YouTube-VOS)."""

    def build(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
        kwargs = _clip_kwargs(_options(data, exclude), clip_len, size, seed)
        _check_options(cls, data, kwargs)
        return cls(data.root, **kwargs)

    return build


register_dataset("davis")(_video_clips(DavisClips))
register_dataset("ytvos")(_video_clips(YTVOSClips))
register_dataset("composite")(_video_clips(CompositeClips))


@register_dataset("davis-cached", uses_encoder=True)
def _build_davis_cached(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str],
                        encoder: NamedEncoder) -> Dataset:
    """DAVIS clips of cached encoder features (the cache is built here when missing)."""
    kwargs = {**_clip_kwargs(_options(data, exclude), clip_len, size, seed), "encoder": encoder}
    _check_options(CachedDavisClips, data, kwargs)
    try:
        return CachedDavisClips(data.root, **kwargs)
    except ValueError as exc:
        raise EmvosInputError(f"stage data (davis-cached at {data.root}): {exc}") from None


@register_dataset("static")
def _build_static(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    """Pseudo-videos of the frames of image + mask folders (DAVIS layout by default)."""
    options = _options(data, exclude)
    source = {k: options.pop(k) for k in ("sequences", "exclude") if k in options}
    images, masks = options.pop("images", "JPEGImages/480p"), options.pop("masks", "Annotations/480p")
    kwargs = _clip_kwargs(options, clip_len, size, seed)
    _check_options(StaticPseudoVideos, data, kwargs)
    root = Path(data.root)
    return StaticPseudoVideos(image_folder_pairs(root / images, root / masks, **source), **kwargs)


@register_dataset("coco")
def _build_coco(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    """Pseudo-videos of the images of a COCO instances json (needs ``pycocotools``)."""
    options = _options(data, ())
    annotations = options.pop("annotations", "annotations/instances_train2017.json")
    images = options.pop("images", "train2017")
    kwargs = _clip_kwargs(options, clip_len, size, seed)
    _check_options(StaticPseudoVideos, data, kwargs)
    root = Path(data.root)
    return StaticPseudoVideos(coco_instances(root / annotations, root / images), **kwargs)


@register_dataset("yolo")
def _build_yolo(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    """Pseudo-videos of images with YOLO segmentation polygons (e.g. COCO128-seg)."""
    options = _options(data, ())
    images, labels = options.pop("images", "images/train2017"), options.pop("labels", "labels/train2017")
    kwargs = _clip_kwargs(options, clip_len, size, seed)
    _check_options(StaticPseudoVideos, data, kwargs)
    root = Path(data.root)
    return StaticPseudoVideos(yolo_instances(root / images, root / labels), **kwargs)


class MixedClips(Dataset):
    """Samples of several datasets mixed by weight: sample ``k`` comes from part ``i`` with probability ``w_i``.

    The part is drawn from ``numpy.random.default_rng([seed, k])``; the sample is the part's own
    sample ``k``, so a mix is as deterministic as its parts.

    Args:
        parts: the datasets (each of the same sample format).
        weights: their relative weights, positive.
        seed: the mix's seed.
    """

    def __init__(self, parts: Sequence[Dataset], weights: Sequence[float], seed: int) -> None:
        if not parts or len(parts) != len(weights) or any(w <= 0 for w in weights):
            raise ValueError(f"weights: one positive weight per part, got {list(weights)} for {len(parts)} parts")
        self.parts, self.seed = list(parts), seed
        self.p = np.asarray(weights, dtype=np.float64) / float(sum(weights))

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, k: int) -> dict[str, Any]:
        """Sample ``k`` of the part drawn for ``k``."""
        part = int(np.random.default_rng([self.seed, k]).choice(len(self.parts), p=self.p))
        return self.parts[part][k]


def mix_parts(data: DataConfig) -> list[tuple[DataConfig, float]]:
    """The parts of a ``mix`` stage (``options: {parts: [{kind, root, options, weight}, ...]}``) with their weights.

    Raises:
        EmvosInputError: the parts are not a list of such mappings.
    """
    parts = data.options.get("parts")
    if set(data.options) != {"parts"} or not isinstance(parts, list) or not parts:
        raise EmvosInputError("stage data (mix): options must be {parts: [{kind, root, options, weight}, ...]}")
    result = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or "kind" not in part or not set(part) <= {"kind", "root", "options", "weight"}:
            raise EmvosInputError(f"stage data (mix): part {i} must be a mapping with kind and optional root, "
                                  f"options, weight; got {part!r}")
        if part["kind"] not in _REGISTRY or part["kind"] == "mix" or uses_encoder(part["kind"]):
            raise EmvosInputError(f"stage data (mix): part {i} has kind {part['kind']!r}; choose one of "
                                  f"{', '.join(k for k in dataset_kinds() if k != 'mix' and not uses_encoder(k))}")
        result.append((dataclasses.replace(data, kind=part["kind"], root=str(part.get("root", "")),
                                           options=dict(part.get("options") or {})), float(part.get("weight", 1.0))))
    return result


def data_roots(data: DataConfig) -> list[str]:
    """The folders a stage's data reads (those of its parts for a ``mix``)."""
    return [part.root for part, _ in mix_parts(data)] if data.kind == "mix" else [data.root]


@register_dataset("mix", reads_files=False)
def _build_mix(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    """Several kinds mixed by weight (:class:`MixedClips`); ``exclude`` goes to every part."""
    parts = mix_parts(data)
    for part, _ in parts:
        check_data_root(part)
    datasets = [build_dataset(part, clip_len, size, seed + 1 + i, exclude) for i, (part, _) in enumerate(parts)]
    try:
        return MixedClips(datasets, [w for _, w in parts], seed)
    except ValueError as exc:
        raise EmvosInputError(f"stage data (mix): {exc}") from None


class IterationSampler(Sampler[list[int]]):
    """Batches of sample indices by iteration: iteration ``t`` reads ``t * batch_size + j``.

    With ``world_size`` processes, process ``rank`` takes the ``rank``-th contiguous slice of each
    iteration's ``batch_size`` indices, so the processes together read exactly one global batch.

    Args:
        batch_size: global batch size (a multiple of ``world_size``).
        start: first iteration.
        stop: iteration to stop before.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, batch_size: int, start: int, stop: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise EmvosInputError(f"batch size {batch_size} does not split over {world_size} processes; "
                                  "use a multiple of the process count")
        self.batch_size, self.start, self.stop = batch_size, start, stop
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[list[int]]:
        for t in range(self.start, self.stop):
            first = t * self.batch_size + self.offset
            yield list(range(first, first + self.local))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _smooth_noise(rng: np.random.Generator, channels: int, size: int, cells: int) -> Tensor:
    """``(channels, size, size)`` values in [0, 1] varying smoothly over ``cells`` cells."""
    coarse = torch.from_numpy(rng.random((1, channels, cells, cells), dtype=np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]


class SyntheticClips(Dataset):
    """Clips of a textured ellipse moving over a textured background; needs no files.

    For smoke tests of the training pipeline (and of a machine) without a dataset. Sample ``k`` is
    a function of ``(seed, k)``.

    Args:
        clip_len: frames per clip ``L``.
        size: side ``S`` of the square frames.
        seed: the dataset's seed.
        motion: largest displacement of the object per frame, as a fraction of ``S``.
    """

    def __init__(self, clip_len: int, size: int, seed: int, motion: float = 0.04) -> None:
        self.clip_len, self.size, self.seed, self.motion = clip_len, size, seed, motion

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        """Sample ``k``: ``frames (L, 3, S, S)`` in [0, 1] and ``masks (L, S, S)`` int64 in {0, 1}."""
        rng = np.random.default_rng([self.seed, k])
        s, length = self.size, self.clip_len
        background = _smooth_noise(rng, 3, s, 6)
        tint = torch.from_numpy(rng.random(3, dtype=np.float32)).view(3, 1, 1)
        texture = (_smooth_noise(rng, 3, s, 3) + tint) / 2
        radii = rng.uniform(0.12, 0.3, 2) * s
        start = rng.uniform(0.3, 0.7, 2) * s
        velocity = rng.uniform(-self.motion, self.motion, 2) * s
        angle = rng.uniform(0, math.pi)
        yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32),
                                indexing="ij")
        frames, masks = [], []
        for t in range(length):
            cy, cx = start + velocity * t
            dy, dx = yy - cy, xx - cx
            cos, sin = math.cos(angle + 0.05 * t), math.sin(angle + 0.05 * t)  # slowly turning
            u, v = dx * cos + dy * sin, dy * cos - dx * sin
            inside = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0
            frames.append(torch.where(inside, texture, background))
            masks.append(inside.long())
        return {"frames": torch.stack(frames), "masks": torch.stack(masks)}


@register_dataset("distractors", reads_files=False)
def _build_distractors(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    """Targets among look-alike distractors, rendered on the fly; ``root`` (optional): texture photos."""
    kwargs = _clip_kwargs(dict(data.options), clip_len, size, seed)
    _check_options(DistractorClips, data, kwargs)
    return DistractorClips(data.root or None, **kwargs)


@register_dataset("synthetic", reads_files=False)
def _build_synthetic(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    kwargs = {**data.options, "size": size, "seed": seed}
    _check_options(SyntheticClips, data, kwargs)
    return SyntheticClips(clip_len, **kwargs)
