"""A disk cache of a frozen encoder's features of every annotated training frame.

The encoder is frozen, so the features of a training frame never change while a network trains;
encoding them once instead of at every iteration is most of a training step's time saved. Each
frame is encoded whole, at one or more scales, and again mirrored left-right (the features of a
mirrored frame are not the mirrored features: the encoder is not symmetric). Training crops are then
cut from the cached maps at windows aligned to the encoder's coarsest stride
(:class:`emvos.data.cached.CachedDavisClips`).

Layout, under ``cache_dir``::

    v<format>/<encoder>-<weights sha256, 16 hex>/
        encoder.json                        name and full digest of the encoder's weights
        <data root name>-<path sha256, 8 hex>/<scale>/<sequence>/
            s4.npy, s8.npy, s16.npy         (2, N, C, H/s, W/s) float16; index 0 plain, 1 mirrored
            labels.npy                      (N, H, W) uint8 object ids at the scale (not mirrored)
            frames.json                     frame names, image file sizes, unreadable frames; written last

The key holds a digest of every weight and buffer of the encoder, so a cache made with other
weights is never read: changed weights make a new key, which is built afresh. A frame whose image
or mask cannot be read (or whose sizes differ) is listed as unreadable, with a warning, and left
out of the clips, as the pixel datasets skip it. A sequence whose
frames (names or image file sizes) changed is encoded again. A sequence folder appears only when
complete (written beside it, then renamed), so an interrupted build leaves nothing half-written
that a later run would read.

A scale is the frame's shorter side in pixels; both sides are rounded to multiples of the stride
(:func:`scaled_size`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from emvos.data.base import SampleSkipped, logger, read_labels, read_rgb
from emvos.data.video import AnnotatedVideo
from emvos.model.encoders.base import Encoder, Features

#: Version of the layout above; part of the path, so that a changed layout is never misread.
CACHE_FORMAT = 1
#: Feature levels and their strides, in :class:`Features` order.
LEVELS = (("s4", 4), ("s8", 8), ("s16", 16))


@dataclass(frozen=True)
class NamedEncoder:
    """A frozen encoder with the name it is registered under (part of the cache key).

    Attributes:
        name: e.g. ``efficientnet_lite0``.
        module: the encoder; encoding runs on the device of its parameters.
    """

    name: str
    module: Encoder


def default_cache_dir() -> Path:
    """``$EMVOS_CACHE/features``, else ``$XDG_CACHE_HOME/emvos/features`` (default ``~/.cache``)."""
    if os.environ.get("EMVOS_CACHE"):
        return Path(os.environ["EMVOS_CACHE"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emvos" / "features"


def weights_digest(encoder: Encoder) -> str:
    """SHA-256 (hex) of the encoder's parameters and persistent buffers, by name, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def scaled_size(height: int, width: int, scale: int, stride: int = 16) -> tuple[int, int]:
    """``(H, W)`` of a ``height x width`` frame resized to shorter side ``scale``, sides rounded to ``stride``.

    E.g. 480x854 at 480 -> 480x848, at 384 -> 384x688.
    """
    factor = scale / min(height, width)
    return (max(stride, round(height * factor / stride) * stride), max(stride, round(width * factor / stride) * stride))


def scaled_frame(image: Image.Image, size: tuple[int, int], mirrored: bool) -> torch.Tensor:
    """An RGB frame resized to ``size = (H, W)`` (bicubic), mirrored left-right when asked.

    Returns:
        ``(3, H, W)`` float32 in ``[0, 1]``: what the cache encodes.
    """
    pixels = np.asarray(image.resize(size[::-1], Image.Resampling.BICUBIC), dtype=np.uint8)
    if mirrored:
        pixels = pixels[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)


def scaled_labels(labels: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """``(H, W)`` object ids resized to ``size`` (nearest neighbour)."""
    return np.asarray(Image.fromarray(labels).resize(size[::-1], Image.Resampling.NEAREST), dtype=np.uint8)


def _process_alive(pid: str) -> bool:
    """Whether a process ``pid`` (decimal text) runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _frame_size(video: AnnotatedVideo) -> tuple[int, int]:
    """``(H, W)`` of the first frame of ``video`` whose image file opens (``(1, 1)`` if none does)."""
    for path in video.images:
        try:
            with Image.open(path) as image:
                return image.size[1], image.size[0]
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return 1, 1


def _frame_record(video: AnnotatedVideo) -> dict[str, object]:
    return {"frames": [p.stem for p in video.images], "bytes": [p.stat().st_size for p in video.images]}


@dataclass(frozen=True)
class CachedSequence:
    """The cached features of one sequence at one scale, opened as read-only memory maps.

    Attributes:
        features: per level, ``(2, N, C, H/s, W/s)`` float16 (index 0 plain, 1 mirrored).
        labels: ``(N, H, W)`` uint8 object ids at the scale.
        unreadable: indices of frames that could not be read (their features and labels are zeros).
    """

    features: Features
    labels: npt.NDArray[np.uint8]
    unreadable: frozenset[int]


class FeatureCache:
    """The cached features of a list of videos at some scales, for one encoder's weights.

    Use :meth:`build` (which encodes only what is missing or stale) and :meth:`open`.

    Args:
        cache_dir: the cache's root folder (:func:`default_cache_dir` is the usual one).
        data_root: the dataset's folder (part of the key, so two datasets never share entries).
        encoder: the frozen encoder and its name.
        scales: shorter sides, in pixels, the frames are encoded at.
    """

    def __init__(self, cache_dir: str | Path, data_root: str | Path, encoder: NamedEncoder,
                 scales: Sequence[int]) -> None:
        if not scales or any(int(s) < 16 for s in scales):
            raise ValueError(f"scales must list shorter sides of at least 16 pixels, got {list(scales)}")
        self.encoder = encoder
        self.scales = [int(s) for s in scales]
        self.digest = weights_digest(encoder.module)
        root = Path(data_root).resolve()
        root_key = f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
        self.key_dir = Path(cache_dir) / f"v{CACHE_FORMAT}" / f"{encoder.name}-{self.digest[:16]}"
        self.folder = self.key_dir / root_key
        self.stride = encoder.module.feature_info.stride

    def _sequence_dir(self, scale: int, name: str) -> Path:
        return self.folder / str(scale) / name

    def is_current(self, video: AnnotatedVideo, scale: int) -> bool:
        """Whether ``video`` is cached at ``scale`` for the frames it has now."""
        record = self._sequence_dir(scale, video.name) / "frames.json"
        if not record.is_file():
            return False
        stored = json.loads(record.read_text())
        return {k: stored.get(k) for k in ("frames", "bytes")} == _frame_record(video)

    def build(self, videos: Sequence[AnnotatedVideo], progress: Callable[[str], None] | None = None) -> int:
        """Encode the videos not yet cached (or cached for other frames) at every scale.

        Args:
            videos: the annotated frames of each sequence.
            progress: called with one line per sequence encoded (default: printed to stderr).

        Returns:
            Frames encoded (each counted once per scale; its mirrored copy not counted).
        """
        say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
        todo = [(v, s) for v in videos for s in self.scales if not self.is_current(v, s)]
        if not todo:
            return 0
        self.key_dir.mkdir(parents=True, exist_ok=True)
        (self.key_dir / "encoder.json").write_text(json.dumps(
            {"encoder": self.encoder.name, "weights_sha256": self.digest, "format": CACHE_FORMAT}) + "\n")
        total, encoded = sum(len(v.images) for v, _ in todo), 0
        for video, scale in todo:
            self._build_sequence(video, scale)
            encoded += len(video.images)
            say(f"feature cache {self.folder}: encoded {video.name} at {scale} ({encoded}/{total} frames)")
        return encoded

    def _build_sequence(self, video: AnnotatedVideo, scale: int) -> None:
        final = self._sequence_dir(scale, video.name)
        for partial in final.parent.glob(f"{final.name}.partial-*"):
            if not _process_alive(partial.name.rpartition("-")[2]):  # left by an interrupted build
                shutil.rmtree(partial, ignore_errors=True)
        work = final.with_name(f"{final.name}.partial-{os.getpid()}")
        work.mkdir(parents=True)
        try:
            self._encode_sequence(video, scale, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)

    def _encode_sequence(self, video: AnnotatedVideo, scale: int, work: Path) -> None:
        size = scaled_size(*_frame_size(video), scale, self.stride)
        module = self.encoder.module
        device = next(module.parameters()).device
        n = len(video.images)
        channels = module.feature_info.channels
        maps = [np.lib.format.open_memmap(work / f"{level}.npy", mode="w+", dtype=np.float16,
                                          shape=(2, n, c, size[0] // s, size[1] // s))
                for (level, s), c in zip(LEVELS, channels, strict=True)]
        labels = np.zeros((n, *size), dtype=np.uint8)
        unreadable = []
        for i, (image_path, mask_path) in enumerate(zip(video.images, video.masks, strict=True)):
            try:
                ids = read_labels(mask_path)
                image = read_rgb(image_path, ids.shape)
            except SampleSkipped as skipped:
                logger.warning("feature cache: %s left out of the clips (%s): %s", video.name, skipped.reason, skipped)
                unreadable.append(i)
                continue
            labels[i] = scaled_labels(ids, size)
            pair = torch.stack([scaled_frame(image, size, mirrored) for mirrored in (False, True)]).to(device)
            with torch.no_grad():
                features = module(pair)
            for array, level in zip(maps, features, strict=True):
                array[:, i] = level.to(torch.float16).cpu().numpy()
        for array in maps:
            array.flush()
        del maps
        np.save(work / "labels.npy", labels)
        record = {**_frame_record(video), "size": list(size), "unreadable": unreadable}
        (work / "frames.json").write_text(json.dumps(record) + "\n")

    def open(self, video: AnnotatedVideo, scale: int) -> CachedSequence:
        """The cached features and labels of ``video`` at ``scale`` (memory-mapped, read-only).

        Raises:
            FileNotFoundError: not built (call :meth:`build` first).
        """
        folder = self._sequence_dir(scale, video.name)
        if not (folder / "frames.json").is_file():
            raise FileNotFoundError(f"{folder}: no cached features; build the cache first")
        features = Features(*(np.load(folder / f"{level}.npy", mmap_mode="r") for level, _ in LEVELS))
        unreadable = frozenset(json.loads((folder / "frames.json").read_text())["unreadable"])
        return CachedSequence(features, np.load(folder / "labels.npy", mmap_mode="r"), unreadable)
