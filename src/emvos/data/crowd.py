"""A crowd benchmark: real DAVIS objects, many of them small, pasted into real DAVIS videos.

Each video is a DAVIS sequence (its object is object 1) with ``objects - 1`` further objects pasted
in. Each pasted object is cut from a DAVIS sequence frame by frame with its own motion and
deformation, scaled so that it covers a random area (log-uniform in ``area`` pixels, so most are
small), drifts slowly across the frame, and is layered in front of what was there before it or, now
and then, behind it. Sequences shorter than the video play forwards and backwards (ping-pong).

Written in DAVIS-2017 layout, it is scored like any multi-object benchmark (``emvos benchmark``,
``emvos eval``), and measures what DAVIS-2016 cannot: many objects, small objects, look-alikes (an
object may be pasted several times), occlusion. Build it from sequences no model was trained on.
Its metadata file records, per video, the source sequence of each object (``object_sources``), so
that a lost object can be told lost to a copy of itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from emvos.data.base import read_labels
from emvos.data.video import AnnotatedVideo, pair_frames
from emvos.errors import EmvosInputError
from emvos.io.masks import write_label_png

#: Sequence names of a written benchmark: ``crowd-0000``, ``crowd-0001``, ...
SEQUENCE_PREFIX = "crowd-"
#: File, at the root of a written benchmark, recording how it was generated.
METADATA_FILE = "crowd.json"
#: JPEG quality of the written frames.
JPEG_QUALITY = 90
#: Most objects in one video (palette PNG ids 1..254).
MAX_OBJECTS = 254
#: Probability that a pasted object passes behind what was pasted before it.
BEHIND_P = 0.3
#: Largest side of a pasted object, relative to the frame's shorter side.
MAX_SIDE = 0.5


@dataclass(frozen=True)
class PastedObject:
    """How one object is cut and placed: output position = (source position - anchor) * scale + start + velocity * t.

    Attributes:
        video: Index of the source sequence.
        offset: Source frame of the video's frame 0 (later frames ping-pong from it).
        scale: Source pixels to output pixels.
        anchor: ``(x, y)`` centroid of the object in its source frame ``offset``.
        start: ``(x, y)`` where the anchor lands in the video's frame 0.
        velocity: ``(x, y)`` drift in pixels per frame.
        behind: Whether it passes behind the objects pasted before it.
    """

    video: int
    offset: int
    scale: float
    anchor: tuple[float, float]
    start: tuple[float, float]
    velocity: tuple[float, float]
    behind: bool


def ping_pong(t: int, length: int) -> int:
    """Frame of a ``length``-frame sequence shown at time ``t`` when it plays forwards, then backwards, ..."""
    if length == 1:
        return 0
    period = 2 * length - 2
    t %= period
    return t if t < length else period - t


class _Sources:
    """The source sequences, their binary object masks and a cache of decoded frames."""

    def __init__(self, root: Path, sequences: Sequence[str]) -> None:
        self.videos: list[AnnotatedVideo] = []
        for name in sequences:
            images, masks = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
            if not images.is_dir() or not masks.is_dir():
                raise EmvosInputError(f"{root}: sequence {name!r} not found (needs {images} and {masks}); "
                                      "fix --source or --sequences")
            video, _ = pair_frames(images, masks)
            if not video.images:
                raise EmvosInputError(f"{masks}: no annotated frame; choose another sequence")
            self.videos.append(video)
        self.load = lru_cache(maxsize=256)(self._load)

    def _load(self, video: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3) uint8`` RGB and ``(H, W) bool`` object of one source frame."""
        source = self.videos[video]
        with Image.open(source.images[frame]) as image:
            rgb = np.asarray(image.convert("RGB"))
        return rgb, read_labels(source.masks[frame]) != 0


def _plan(rng: np.random.Generator, sources: _Sources, objects: int, size: tuple[int, int],
          area: tuple[float, float], speed: float) -> list[PastedObject]:
    """Draw the pasted objects of one video (objects 2..``objects``)."""
    height, width = size
    plans = []
    for _ in range(objects - 1):
        video = int(rng.integers(len(sources.videos)))
        frames = len(sources.videos[video].images)
        offset = int(rng.integers(frames))
        mask = sources.load(video, offset)[1]
        for _ in range(frames):  # the first frame from the drawn one on that shows the object
            if mask.any():
                break
            offset = (offset + 1) % frames
            mask = sources.load(video, offset)[1]
        if not mask.any():
            raise EmvosInputError(f"{sources.videos[video].images[0].parent}: no frame shows an object; "
                                  "choose another sequence")
        ys, xs = np.nonzero(mask)
        extent = max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) + 1
        wanted = math.exp(rng.uniform(math.log(area[0]), math.log(area[1])))
        scale = min(math.sqrt(wanted / ys.size), MAX_SIDE * min(height, width) / extent)
        start = (float(rng.uniform(0.05, 0.95) * width), float(rng.uniform(0.05, 0.95) * height))
        velocity = tuple(float(v) for v in rng.uniform(-speed, speed, 2) * min(height, width))
        plans.append(PastedObject(video, offset, scale, (float(xs.mean()), float(ys.mean())), start,
                                  (velocity[0], velocity[1]), bool(rng.random() < BEHIND_P)))
    return plans


def _paste(canvas: np.ndarray, ids: np.ndarray, plan: PastedObject, object_id: int, t: int,
           sources: _Sources) -> None:
    """Paste object ``object_id`` as it is at time ``t`` into ``canvas`` ``(H, W, 3) float32`` and
    ``ids`` ``(H, W)``, both in place."""
    frames = len(sources.videos[plan.video].images)
    rgb, mask = sources.load(plan.video, ping_pong(plan.offset + t, frames))
    if not mask.any():
        return  # the object is out of its own frame at this time
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    left = (x0 - plan.anchor[0]) * plan.scale + plan.start[0] + plan.velocity[0] * t
    top = (y0 - plan.anchor[1]) * plan.scale + plan.start[1] + plan.velocity[1] * t
    out_w, out_h = max(1, round((x1 - x0) * plan.scale)), max(1, round((y1 - y0) * plan.scale))
    patch = np.asarray(Image.fromarray(rgb[y0:y1, x0:x1]).resize((out_w, out_h), Image.Resampling.BILINEAR),
                       dtype=np.float32)
    alpha = np.asarray(Image.fromarray(mask[y0:y1, x0:x1].astype(np.float32)).resize(
        (out_w, out_h), Image.Resampling.BILINEAR), dtype=np.float32).clip(0.0, 1.0)
    left_i, top_i = round(left), round(top)
    height, width = ids.shape
    cy0, cx0 = max(top_i, 0), max(left_i, 0)
    cy1, cx1 = min(top_i + out_h, height), min(left_i + out_w, width)
    if cy0 >= cy1 or cx0 >= cx1:
        return  # drifted out of the frame
    a = alpha[cy0 - top_i:cy1 - top_i, cx0 - left_i:cx1 - left_i]
    if plan.behind:
        a = a * (ids[cy0:cy1, cx0:cx1] == 0)
    region = canvas[cy0:cy1, cx0:cx1]
    region *= 1 - a[..., None]
    region += patch[cy0 - top_i:cy1 - top_i, cx0 - left_i:cx1 - left_i] * a[..., None]
    ids[cy0:cy1, cx0:cx1][a > 0.5] = object_id


def render_crowd_frame(sources: _Sources, scene: int, plans: Sequence[PastedObject], t: int,
                       size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of a crowd video.

    Returns:
        ``(H, W, 3) uint8`` RGB and ``(H, W) uint8`` ids: 1 the scene's object, 2.. the pasted ones.
    """
    height, width = size
    rgb, mask = sources.load(scene, ping_pong(t, len(sources.videos[scene].images)))
    canvas = np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    ids = np.array(Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST),
                   dtype=np.uint8)
    for index, plan in enumerate(plans):
        _paste(canvas, ids, plan, index + 2, t, sources)
    return canvas.round().clip(0, 255).astype(np.uint8), ids


def write_crowd_benchmark(out: str | Path, *, source: str | Path, sequences: Sequence[str], videos: int,
                          objects: int, length: int, size: tuple[int, int], seed: int,
                          area: tuple[float, float] = (300.0, 20000.0), speed: float = 0.002,
                          split: str = "val", progress: Callable[[str], object] | None = None) -> list[str]:
    """Render a crowd benchmark into a new folder, in DAVIS-2017 layout::

        OUT/JPEGImages/480p/crowd-0000/00000.jpg ...   frames (the folder is 480p whatever the size)
        OUT/Annotations/480p/crowd-0000/00000.png ...  palette PNGs: 1 the scene's object, 2.. pasted
        OUT/ImageSets/2017/<split>.txt                 the sequence names
        OUT/crowd.json                                 how it was generated; each object's area in frame 0

    Video ``i`` has scene ``sequences[i % len(sequences)]`` and is drawn from
    ``numpy.random.default_rng([seed, i])``: the same arguments give identical files.

    Args:
        out: A folder that does not exist yet, or is empty.
        source: A DAVIS folder (``JPEGImages/480p``, ``Annotations/480p``); any nonzero id is the object.
        sequences: The sequences that give scenes and pasted objects.
        videos: Number of videos, at least 1.
        objects: Objects per video (the scene's and the pasted ones), 1..254.
        length: Frames per video, at least 3.
        size: ``(H, W)`` of the frames.
        seed: Non-negative seed.
        area: Range of the pasted objects' areas in frame 0, in output pixels (log-uniform).
        speed: Largest drift per frame, relative to the frame's shorter side.
        split: Name of the split file.
        progress: Called with each sequence's name once it is written.

    Returns:
        The sequence names.

    Raises:
        EmvosInputError: an argument is out of range, ``out`` is not empty, or a sequence is missing.
    """
    out = Path(out)
    checks = [
        (videos >= 1, f"--videos must be at least 1, got {videos}"),
        (1 <= objects <= MAX_OBJECTS, f"--objects must lie in 1..{MAX_OBJECTS}, got {objects}"),
        (length >= 3, f"--frames must be at least 3 (the DAVIS protocol scores frames 1 to L - 2), got {length}"),
        (min(size) >= 16, f"--size must be at least 16x16, got {size[1]}x{size[0]}"),
        (seed >= 0, f"--seed must be non-negative, got {seed}"),
        (0 < area[0] <= area[1], f"--area must be a range of positive areas, got {area}"),
        (speed >= 0, f"--speed must be non-negative, got {speed}"),
        (bool(sequences), "--sequences: name at least one sequence"),
        (bool(split) and "/" not in split and not split.startswith("."), f"--split {split!r} is not a file name"),
        (not out.exists() or (out.is_dir() and not any(out.iterdir())),
         f"{out}: exists and is not an empty folder; give --out a new folder"),
    ]
    for ok, message in checks:
        if not ok:
            raise EmvosInputError(message)
    sources = _Sources(Path(source), sequences)
    names = [f"{SEQUENCE_PREFIX}{index:04d}" for index in range(videos)]
    records = []
    for index, name in enumerate(names):
        rng = np.random.default_rng([seed, index])
        scene = index % len(sequences)
        plans = _plan(rng, sources, objects, size, area, speed)
        frames_dir, masks_dir = (out / kind / "480p" / name for kind in ("JPEGImages", "Annotations"))
        frames_dir.mkdir(parents=True)
        masks_dir.mkdir(parents=True)
        first_areas: list[int] = []
        for t in range(length):
            rgb, ids = render_crowd_frame(sources, scene, plans, t, size)
            if t == 0:
                first_areas = np.bincount(ids.ravel(), minlength=objects + 1)[1:].tolist()
            Image.fromarray(rgb).save(frames_dir / f"{t:05d}.jpg", quality=JPEG_QUALITY)
            write_label_png(masks_dir / f"{t:05d}.png", ids)
        records.append({"name": name, "scene": sequences[scene], "first_frame_areas": first_areas,
                        "object_sources": [sequences[scene], *(sequences[plan.video] for plan in plans)]})
        if progress is not None:
            progress(name)
    split_file = out / "ImageSets" / "2017" / f"{split}.txt"
    split_file.parent.mkdir(parents=True)
    split_file.write_text("".join(f"{name}\n" for name in names))
    metadata = {
        "generator": "emvos synth crowd", "source": str(source), "sequences": list(sequences), "seed": seed,
        "videos": videos, "objects": objects, "frames": length, "size": {"height": size[0], "width": size[1]},
        "area": list(area), "speed": speed, "split": split, "videos_written": records,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return names
