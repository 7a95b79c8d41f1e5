"""A synthetic distractor benchmark: targets moving among look-alike distractors.

Each video shows ``targets`` textured objects (the objects to segment, ids ``1..N``) and, for each
target, ``distractors`` look-alikes of it (background, id 0) over a textured, slowly panning
background. Objects are star-shaped blobs whose outline sways over time, with anti-aliased edges and
a soft drop shadow; they move smoothly (targets and wandering distractors on Lissajous paths inside
the frame, crossing and entering distractors in straight lines with a sideways wobble), turn and
breathe in scale, and occlude each other in a fixed depth order.

Textures are cut from pictures: photos from a folder (:class:`TextureSource`, e.g. the DAVIS frames)
or, without one, procedural patterns (clouds, marble, cells). A distractor's texture is cut from its
target's picture, so at full similarity it is a clone of the target (texture, colours, shape and size)
that only its position and motion tell apart.

Everything is drawn from a ``numpy.random.Generator``: a video is a pure function of the generator's
state, the settings, the frame size and length, and the texture folder's files.

* :class:`DistractorSettings`: the knobs; :meth:`DistractorSettings.from_difficulty` maps one
  difficulty in ``[0, 1]`` to all of them (:data:`EASIEST`, :data:`HARDEST`).
* :func:`render_distractor_video`: one video in memory (:class:`DistractorVideo`).
* :func:`write_distractor_benchmark`: a benchmark on disk in DAVIS-2017 layout.
* :class:`DistractorClips`: the same videos as a training dataset (kind ``distractors``).
"""

from __future__ import annotations

import colorsys
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from emvos.data.base import ClipDataset, Sample, SampleSkipped, read_rgb
from emvos.data.transforms import CROP_RATIO, CROP_SCALE, Labels
from emvos.errors import EmvosInputError
from emvos.io import FRAME_EXTENSIONS, natural_sort_key
from emvos.io.masks import write_label_png

FloatArray = npt.NDArray[np.float32]

#: Sequence names of a written benchmark: ``dist-0000``, ``dist-0001``, ...
SEQUENCE_PREFIX = "dist-"
#: File, at the root of a written benchmark, recording how it was generated.
METADATA_FILE = "distractors.json"
#: Folder, next to ``Annotations``, holding each frame's visible distractors (ids ``1..D``).
DISTRACTOR_FOLDER = "Distractors"
#: JPEG quality of the written frames.
JPEG_QUALITY = 90
#: Smallest frame side the generator accepts.
MIN_SIDE = 32
#: Most objects (targets and distractors) in one video.
MAX_OBJECTS = 254

#: Object radius range, as a fraction of the frame's shorter side.
RADIUS_RANGE = (0.08, 0.15)
#: Harmonics of an outline (``cos(k theta)``, ``k = 2..``) and the largest amplitude of the first one.
HARMONICS = 4
HARMONIC_AMPLITUDE = 0.25
#: Relative sway of the harmonics' amplitudes over time (the outline deforms by this much).
SWAY = 0.3
#: Relative amplitude of an object's breathing scale.
BREATHING = 0.08
#: Width of the anti-aliased edge ramp, in pixels.
EDGE_WIDTH = 1.2
#: Drop shadow: offset and blur (fractions of the object's reach) and darkening at its core.
SHADOW_OFFSET = (0.10, 0.16)
SHADOW_BLUR = 0.25
SHADOW_DARKNESS = 0.35
#: Darkening of an object's rim (a hint of volume).
RIM_DARKNESS = 0.25
#: Background panning speed, relative to the objects' speed.
PAN_SPEED = 0.25
#: Share of the distractors layered in front of the targets.
FRONT_SHARE = 0.5
#: A target must show at least this share of its own area in frame 0.
MIN_VISIBLE_FIRST = 0.5
#: Scenes drawn before giving up on one where every target is visible in frame 0.
SCENE_ATTEMPTS = 20


@dataclass(frozen=True)
class DistractorSettings:
    """What the videos of a distractor benchmark look like.

    Attributes:
        targets: Objects to segment per video (ids ``1..targets``), each visible in frame 0.
        distractors: Look-alike distractors per target; they are background (id 0).
        similarity: ``0..1``, how closely a distractor copies its target. Its texture is cut from
            the target's picture at an offset of ``(1 - similarity) / 2`` of the picture's side,
            its colours are hue-rotated by ``(1 - similarity) * 90..180`` degrees and their
            brightness scaled by up to ``exp(+-0.4 (1 - similarity))``, and its outline and size are
            ``similarity``-weighted mixes of the target's and random ones. 1: a clone.
        speed: Mean speed of the objects, as a fraction of the frame's shorter side per frame.
        occlusion: ``0..1``, share of the distractors sent across their target's path (the others
            wander). Half of all distractors are layered in front of the targets, so half of the
            crossings occlude the target; the other half pass behind it.
        entering: ``0..1``, share of the distractors that start outside the frame and enter it.
    """

    targets: int = 2
    distractors: int = 3
    similarity: float = 0.6
    speed: float = 0.015
    occlusion: float = 0.5
    entering: float = 0.25

    def __post_init__(self) -> None:
        for name in ("targets", "distractors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if self.targets < 1:
            raise ValueError(f"targets must be at least 1, got {self.targets}")
        if self.distractors < 0:
            raise ValueError(f"distractors must be at least 0, got {self.distractors}")
        if self.targets * (1 + self.distractors) > MAX_OBJECTS:
            raise ValueError(f"targets * (1 + distractors) must be at most {MAX_OBJECTS}, "
                             f"got {self.targets} * (1 + {self.distractors})")
        for name in ("similarity", "occlusion", "entering"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if not 0.0 <= self.speed <= 0.25:
            raise ValueError(f"speed must lie in [0, 0.25] (shorter sides per frame), got {self.speed}")

    @classmethod
    def from_difficulty(cls, difficulty: float, **overrides: Any) -> DistractorSettings:
        """Settings interpolated linearly between :data:`EASIEST` (0) and :data:`HARDEST` (1).

        Every knob but ``targets`` grows with the difficulty; ``distractors`` is rounded to an integer,
        the others to 6 decimals.

        Args:
            difficulty: In ``[0, 1]``.
            **overrides: Fields to set instead (e.g. ``targets=1``, ``similarity=1.0``).

        Raises:
            ValueError: ``difficulty`` is out of range, or an override is unknown or out of range.
        """
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown distractor settings {unknown}")

        def mix(name: str) -> float:
            return round((1 - difficulty) * getattr(EASIEST, name) + difficulty * getattr(HARDEST, name), 6)

        mixed = cls(targets=EASIEST.targets, distractors=round(mix("distractors")), similarity=mix("similarity"),
                    speed=mix("speed"), occlusion=mix("occlusion"), entering=mix("entering"))
        return replace(mixed, **overrides)


#: Difficulty 0: one dissimilar, slow, wandering distractor per target.
EASIEST = DistractorSettings(targets=2, distractors=1, similarity=0.25, speed=0.004, occlusion=0.1, entering=0.0)
#: Difficulty 1: five clones per target, fast, most crossing its path, half entering the frame.
HARDEST = DistractorSettings(targets=2, distractors=5, similarity=1.0, speed=0.03, occlusion=0.9, entering=0.5)


# -- pictures ---------------------------------------------------------------------------------------
def _value_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> FloatArray:
    """``(height, width)`` smooth noise: a random grid of about ``cells`` cells along the longer side,
    upsampled bicubically."""
    longer = max(height, width)
    grid_h = max(2, round(cells * height / longer) + 1)
    grid_w = max(2, round(cells * width / longer) + 1)
    grid = Image.fromarray(rng.random((grid_h, grid_w), dtype=np.float32))  # mode F
    return np.asarray(grid.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _fbm(rng: np.random.Generator, height: int, width: int, cells: float, octaves: int) -> FloatArray:
    """``(height, width)`` fractal noise in ``[0, 1]``: ``octaves`` octaves of value noise from ``cells``."""
    total = np.zeros((height, width), np.float32)
    for octave in range(octaves):
        total += 0.5**octave * _value_noise(rng, height, width, cells * 2**octave)
    low, high = float(total.min()), float(total.max())
    return ((total - low) / max(high - low, 1e-6)).astype(np.float32)


def _cells(rng: np.random.Generator, height: int, width: int) -> FloatArray:
    """``(height, width)`` Voronoi cells in ``[0, 1]``: a random shade per cell, darker borders.

    Computed at a third of the resolution and upsampled bilinearly (which also softens the borders).
    """
    small_h, small_w = max(2, height // 3), max(2, width // 3)
    count = int(rng.integers(30, 120))
    points = (rng.random((count, 2)) * (small_h, small_w)).astype(np.float32)
    shades = rng.random(count).astype(np.float32)
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    dist = np.hypot(ys[..., None] - points[:, 0], xs[..., None] - points[:, 1])  # (h, w, count)
    nearest = np.partition(dist, 1, axis=2)
    cell_size = math.sqrt(small_h * small_w / count)
    border = np.clip((nearest[..., 1] - nearest[..., 0]) / (0.12 * cell_size), 0, 1)
    field = 0.7 * shades[dist.argmin(axis=2)] + 0.3 * border
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _marble(rng: np.random.Generator, height: int, width: int) -> FloatArray:
    """``(height, width)`` turbulent stripes in ``[0, 1]``."""
    angle = rng.uniform(0, math.pi)
    stripes = rng.uniform(3, 10)
    turbulence = rng.uniform(2, 6)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    phase = 2 * math.pi * stripes * (xs * math.cos(angle) + ys * math.sin(angle))
    return (0.5 + 0.5 * np.sin(phase + turbulence * _fbm(rng, height, width, 4, 4))).astype(np.float32)


def _colour_ramp(rng: np.random.Generator, values: FloatArray) -> FloatArray:
    """Map ``(H, W)`` values in ``[0, 1]`` to ``(H, W, 3)`` RGB through a ramp of 4 related colours."""
    hue = rng.random()
    hsv = np.stack([
        (hue + rng.uniform(-0.08, 0.08, 4) + (rng.random(4) < 0.25) * 0.5) % 1.0,
        rng.uniform(0.15, 0.85, 4),
        np.sort(rng.uniform(0.15, 0.95, 4)),
    ], axis=1)
    colours = np.array([colorsys.hsv_to_rgb(*row) for row in hsv], dtype=np.float32)  # (4, 3)
    stops = np.linspace(0, 1, 4)
    return np.stack([np.interp(values, stops, colours[:, c]) for c in range(3)], axis=2).astype(np.float32)


def procedural_picture(rng: np.random.Generator, height: int, width: int) -> FloatArray:
    """A procedural texture: clouds, marble or cells, coloured by a random ramp, with fine grain.

    Returns:
        ``(height, width, 3)`` float32 RGB in ``[0, 1]``.
    """
    kind = int(rng.integers(3))
    if kind == 0:
        values = _fbm(rng, height, width, rng.uniform(3, 8), 5)
    elif kind == 1:
        values = _marble(rng, height, width)
    else:
        values = _cells(rng, height, width)
    grain = _fbm(rng, height, width, max(height, width) / 8, 2)
    picture = _colour_ramp(rng, values) * (0.85 + 0.3 * grain[..., None])
    return np.clip(picture, 0, 1).astype(np.float32)


class TextureSource:
    """The pictures textures are cut from: photos in a folder, or procedural patterns.

    Args:
        folder: Photos (``.jpg``, ``.jpeg``, ``.png``, searched recursively, in natural order of their
            paths; for a DAVIS or YouTube-VOS root, only its ``JPEGImages`` folder, so masks are not
            taken for photos), or ``None`` for :func:`procedural_picture`.

    Raises:
        EmvosInputError: ``folder`` is not a folder or holds no image.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.files: list[Path] = []
        if self.folder is None:
            return
        if not self.folder.is_dir():
            raise EmvosInputError(f"{self.folder}: texture source is not a folder; pass a folder of photos "
                                  "(e.g. a DAVIS root) or leave it out for procedural textures")
        search = self.folder / "JPEGImages" if (self.folder / "JPEGImages").is_dir() else self.folder
        self.files = sorted(
            (path for path in search.rglob("*") if path.suffix.lower() in FRAME_EXTENSIONS and path.is_file()),
            key=lambda path: natural_sort_key(path.relative_to(search).as_posix()),
        )
        if not self.files:
            raise EmvosInputError(f"{self.folder}: texture source has no .jpg/.png images; pass a folder of photos")

    def describe(self) -> str:
        """``procedural`` or the folder."""
        return "procedural" if self.folder is None else str(self.folder)

    def picture(self, rng: np.random.Generator, height: int, width: int) -> FloatArray:
        """A ``(height, width, 3)`` float32 RGB picture in ``[0, 1]``.

        A photo is scaled to cover the size (times a random zoom of 1 to 1.3), randomly mirrored,
        and cropped at a random position.

        Raises:
            SampleSkipped: a photo cannot be decoded (``unreadable``).
        """
        if not self.files:
            return procedural_picture(rng, height, width)
        image = read_rgb(self.files[int(rng.integers(len(self.files)))])
        zoom = max(height / image.height, width / image.width) * rng.uniform(1.0, 1.3)
        size = (max(width, math.ceil(image.width * zoom)), max(height, math.ceil(image.height * zoom)))
        photo = np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255
        if rng.random() < 0.5:
            photo = photo[:, ::-1]
        top = int(rng.integers(photo.shape[0] - height + 1))
        left = int(rng.integers(photo.shape[1] - width + 1))
        return np.ascontiguousarray(photo[top:top + height, left:left + width])


def _hue_rotation(angle: float) -> npt.NDArray[np.float32]:
    """``(3, 3)`` rotation of RGB colours about the grey axis by ``angle`` radians."""
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rotation = math.cos(angle) * np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * np.outer(k, k)
    return rotation.astype(np.float32)


# -- scene ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Outline:
    """A star-shaped outline ``r(theta, t) = radius * (1 + sum_k a_k(t) cos(k theta + phi_k))``, ``k = 2..``,
    each amplitude swaying as ``a_k(t) = a_k * (1 + SWAY * sin(w_k t + psi_k))``."""

    radius: float
    amplitudes: npt.NDArray[np.float64]  # (K,)
    phases: npt.NDArray[np.float64]  # (K,)
    sway_rates: npt.NDArray[np.float64]  # (K,) radians per frame
    sway_phases: npt.NDArray[np.float64]  # (K,)

    @staticmethod
    def random(rng: np.random.Generator, radius: float) -> _Outline:
        orders = np.arange(2, 2 + HARMONICS)
        return _Outline(radius, rng.uniform(0, HARMONIC_AMPLITUDE, HARMONICS) * 2 / orders,
                        rng.uniform(0, 2 * math.pi, HARMONICS), rng.uniform(0.02, 0.12, HARMONICS),
                        rng.uniform(0, 2 * math.pi, HARMONICS))

    def like(self, rng: np.random.Generator, similarity: float) -> _Outline:
        """A look-alike: amplitudes, phases and radius mixed with random ones by ``1 - similarity``."""
        other = _Outline.random(rng, self.radius)
        change = 1 - similarity
        return _Outline(self.radius * math.exp(change * rng.uniform(-0.4, 0.4)),
                        similarity * self.amplitudes + change * other.amplitudes,
                        self.phases + change * rng.uniform(-math.pi, math.pi, HARMONICS),
                        other.sway_rates, other.sway_phases)

    @property
    def reach(self) -> float:
        """The largest radius the outline can have."""
        return self.radius * (1 + (1 + SWAY) * float(self.amplitudes.sum()))

    def at(self, u: npt.NDArray[np.float64], v: npt.NDArray[np.float64], rho: npt.NDArray[np.float64],
           t: int) -> npt.NDArray[np.float64]:
        """Radii ``r(theta, t)`` in the directions of points ``(u, v)`` at distance ``rho`` from the
        centre (all of one shape).

        ``sum_k a_k cos(k theta + phi_k)`` is the real part of the polynomial ``sum_k a_k e^(i phi_k) z^k``
        in ``z = e^(i theta) = (u + i v) / rho``, evaluated by Horner's rule (no trigonometry per pixel).
        """
        sway = self.amplitudes * (1 + SWAY * np.sin(self.sway_rates * t + self.sway_phases))
        coefficients = sway * np.exp(1j * self.phases)  # of z^2, z^3, ...
        z = (u + 1j * v) / np.maximum(rho, 1e-9)
        poly = np.full(z.shape, coefficients[-1], dtype=np.complex128)
        for c in coefficients[-2::-1]:
            poly = poly * z + c
        return self.radius * (1 + (poly * z * z).real)


@dataclass(frozen=True)
class _Object:
    """A textured object and its pose in every frame.

    Attributes:
        outline: Its shape (in object coordinates, before scaling).
        texture: RGB, ``P x P`` pixels centred on the object, ``P > 2 * outline.reach``.
        centres: ``(L, 2)`` centre ``(x, y)`` in pixels per frame.
        angles: ``(L,)`` rotation in radians.
        scales: ``(L,)`` scale.
    """

    outline: _Outline
    texture: Image.Image
    centres: npt.NDArray[np.float64]
    angles: npt.NDArray[np.float64]
    scales: npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Scene:
    """Objects back to front, with the role of each, over a panning background.

    Attributes:
        background: ``(H + 2m + 1, W + 2m + 1, 3)`` float32 RGB.
        pan: ``(L, 2)`` offset ``(x, y)`` of the frame in ``background``, in ``[0, 2m]``.
        objects: Back to front.
        target_ids: Per object, its target id ``1..N``, or 0 for a distractor.
        distractor_ids: Per object, its distractor id ``1..D`` (those of target ``i`` follow those of
            target ``i - 1``), or 0 for a target.
    """

    background: FloatArray
    pan: npt.NDArray[np.float64]
    objects: list[_Object]
    target_ids: list[int]
    distractor_ids: list[int]


def _lissajous(rng: np.random.Generator, length: int, size: tuple[int, int], reach: float,
               speed: float) -> npt.NDArray[np.float64]:
    """``(L, 2)`` centres on a Lissajous path that keeps an object of ``reach`` inside the frame,
    at about ``speed`` pixels per frame."""
    height, width = size
    room = np.maximum(np.array([width, height]) / 2 - reach - 1, 0.0)
    amplitude = room * rng.uniform(0.4, 1.0, 2)
    centre = np.array([width, height]) / 2 + rng.uniform(-1, 1, 2) * (room - amplitude)
    ratio = np.array([1.0, rng.uniform(0.6, 1.4)])
    spread = math.sqrt(float(((amplitude * ratio) ** 2).sum()) / 2)
    omega = ratio * (speed / spread if spread > 0 else 0.0)
    t = np.arange(length, dtype=np.float64)[:, None]
    return centre + amplitude * np.sin(omega * t + rng.uniform(0, 2 * math.pi, 2))


def _line(start: npt.NDArray[np.float64], direction: npt.NDArray[np.float64], speed: float, t0: float,
          length: int, rng: np.random.Generator, reach: float) -> npt.NDArray[np.float64]:
    """``(L, 2)`` centres passing ``start`` at frame ``t0`` along ``direction``, with a sideways wobble."""
    t = np.arange(length, dtype=np.float64)[:, None]
    normal = np.array([-direction[1], direction[0]])
    wobble = rng.uniform(0, 0.3) * reach * np.sin(rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * math.pi))
    return start + direction * speed * (t - t0) + normal * wobble


def _inside(point: npt.NDArray[np.float64], size: tuple[int, int], margin: float) -> bool:
    height, width = size
    return margin <= point[0] <= width - margin and margin <= point[1] <= height - margin


def _distractor_path(rng: np.random.Generator, length: int, size: tuple[int, int], reach: float, speed: float,
                     target: npt.NDArray[np.float64], target_reach: float, crossing: bool,
                     entering: bool) -> npt.NDArray[np.float64]:
    """``(L, 2)`` centres of a distractor of ``reach`` whose target, of ``target_reach``, moves along
    ``target`` ``(L, 2)``.

    Crossing: passes through the target's centre at a frame in the second half of the video, and not
    before it has had time to come from clear of the target (or heads for it, when entering).
    Entering: starts just outside a random side of the frame. Else: wanders on a Lissajous path.
    """
    height, width = size
    speed = speed * rng.uniform(0.7, 1.3)
    frames = np.arange(length)

    def target_at(t: float) -> npt.NDArray[np.float64]:
        return np.array([np.interp(t, frames, target[:, 0]), np.interp(t, frames, target[:, 1])])

    if entering:
        side = int(rng.integers(4))
        along = rng.uniform(reach, (height if side < 2 else width) - reach)  # y on the left/right sides
        out = reach + 1.0  # just outside: left, right, top or bottom
        start = np.array([[-out, along], [width + out, along], [along, -out], [along, height + out]][side])
        aim = np.array([rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)])
        if crossing:  # aim where the target will be when the distractor gets there
            meet = rng.uniform(0.5, 0.9) * (length - 1)
            for _ in range(3):
                aim = target_at(meet)
                meet = min(float(np.linalg.norm(aim - start)) / max(speed, 1e-6), length - 1.0)
        direction = (aim - start) / max(float(np.linalg.norm(aim - start)), 1e-6)
        return _line(start, direction, speed, 0.0, length, rng, reach)
    if crossing:
        clear = (reach + target_reach) / max(speed, 1e-6)  # frames to come from clear of the target
        meet = min(max(rng.uniform(0.5, 0.9) * (length - 1), clear), length - 1.0)
        anchor = target_at(meet)
        candidates = [np.array([math.cos(a), math.sin(a)]) for a in rng.uniform(0, 2 * math.pi, 8)]
        # Prefer a direction that starts the distractor inside the frame.
        direction = next((d for d in candidates if _inside(anchor - d * speed * meet, size, reach)), candidates[0])
        return _line(anchor, direction, speed, meet, length, rng, reach)
    return _lissajous(rng, length, size, reach, speed)


def _separated(centre: npt.NDArray[np.float64], reach: float, others: Sequence[tuple[npt.NDArray[np.float64], float]]
               ) -> bool:
    """Whether a disc of ``reach`` at ``centre`` misses every ``(centre, reach)`` of ``others``."""
    return all(float(np.linalg.norm(centre - c)) >= reach + r for c, r in others)


def _motion(rng: np.random.Generator, length: int, reach: float, speed: float
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(angles, scales)``, each ``(L,)``: a steady turn and a slow breathing."""
    t = np.arange(length, dtype=np.float64)
    spin = rng.uniform(-0.5, 0.5) * speed / max(reach, 1.0)
    angles = rng.uniform(0, 2 * math.pi) + spin * t
    scales = 1 + BREATHING * np.sin(rng.uniform(0.02, 0.1) * t + rng.uniform(0, 2 * math.pi))
    return angles, scales


def _patch(picture: FloatArray, top: int, left: int, side: int) -> Image.Image:
    """The ``side x side`` square of ``picture`` ``(h, w, 3)`` at ``(top, left)``, as an RGB image."""
    square = picture[top:top + side, left:left + side]
    return Image.fromarray(np.clip(np.rint(square * 255), 0, 255).astype(np.uint8))


def _look_alike(rng: np.random.Generator, target: _Object, source: tuple[FloatArray, int, int],
                similarity: float) -> tuple[_Outline, Image.Image]:
    """Outline and texture of a distractor resembling ``target``, whose texture was cut from
    ``source`` = ``(picture, top, left)``."""
    picture, top, left = source
    change = 1 - similarity
    outline = target.outline.like(rng, similarity)
    side = min(picture.shape[0], 2 * math.ceil(outline.reach) + 5)
    heading = rng.uniform(0, 2 * math.pi)
    shift = change * picture.shape[0] / 2
    top = int(np.clip(top + round(shift * math.sin(heading)), 0, picture.shape[0] - side))
    left = int(np.clip(left + round(shift * math.cos(heading)), 0, picture.shape[1] - side))
    hue = change * math.pi * rng.uniform(0.5, 1.0) * (1 if rng.random() < 0.5 else -1)
    gain = math.exp(change * rng.uniform(-0.4, 0.4))
    recoloured = picture[top:top + side, left:left + side] @ _hue_rotation(hue).T * gain
    return outline, _patch(recoloured, 0, 0, side)


def _draw_scene(rng: np.random.Generator, settings: DistractorSettings, size: tuple[int, int], length: int,
                textures: TextureSource) -> _Scene:
    """Draw every random choice of one video."""
    height, width = size
    short = min(height, width)
    speed = settings.speed * short
    pan_speed = PAN_SPEED * speed
    margin = math.ceil(pan_speed * (length - 1) / 2) + 1
    background = textures.picture(rng, height + 2 * margin + 1, width + 2 * margin + 1)
    heading = rng.uniform(0, 2 * math.pi)
    t = np.arange(length, dtype=np.float64)[:, None] - (length - 1) / 2
    pan = margin + pan_speed * t * np.array([math.cos(heading), math.sin(heading)])

    targets: list[_Object] = []
    sources: list[tuple[FloatArray, int, int]] = []
    placed: list[tuple[npt.NDArray[np.float64], float]] = []  # frame-0 discs of the targets
    for _ in range(settings.targets):
        outline = _Outline.random(rng, rng.uniform(*RADIUS_RANGE) * short)
        reach = outline.reach * (1 + BREATHING)
        for _ in range(50):  # targets apart in frame 0, so that each is visible
            centres = _lissajous(rng, length, size, reach, speed)
            if _separated(centres[0], reach, placed):
                break
        placed.append((centres[0], reach))
        picture = textures.picture(rng, short, short)
        side = min(short, 2 * math.ceil(outline.reach) + 5)
        top, left = (int(v) for v in rng.integers(0, short - side + 1, 2))
        sources.append((picture, top, left))
        targets.append(_Object(outline, _patch(picture, top, left, side), centres, *_motion(rng, length, reach, speed)))

    behind: list[tuple[int, _Object]] = []
    in_front: list[tuple[int, _Object]] = []
    for number, (target, source) in enumerate(zip(targets, sources, strict=True)):
        target_reach = target.outline.reach * (1 + BREATHING)
        for j in range(settings.distractors):
            outline, texture = _look_alike(rng, target, source, settings.similarity)
            reach = outline.reach * (1 + BREATHING)
            crossing = bool(rng.random() < settings.occlusion)
            entering = bool(rng.random() < settings.entering)
            front = bool(rng.random() < FRONT_SHARE)
            centres = _distractor_path(rng, length, size, reach, speed, target.centres, target_reach, crossing,
                                       entering)
            distractor = _Object(outline, texture, centres, *_motion(rng, length, reach, speed))
            # A distractor that would cover a target in frame 0 goes behind the targets.
            layer = in_front if front and _separated(centres[0], reach, placed) else behind
            layer.append((number * settings.distractors + j + 1, distractor))
    order = [int(i) for i in rng.permutation(len(targets))]
    objects = [o for _, o in behind] + [targets[i] for i in order] + [o for _, o in in_front]
    target_ids = [0] * len(behind) + [i + 1 for i in order] + [0] * len(in_front)
    distractor_ids = [d for d, _ in behind] + [0] * len(order) + [d for d, _ in in_front]
    return _Scene(background, pan, objects, target_ids, distractor_ids)


# -- rendering --------------------------------------------------------------------------------------
def _translate(background: FloatArray, offset: npt.NDArray[np.float64], size: tuple[int, int]) -> FloatArray:
    """The ``size`` window of ``background`` at fractional ``offset`` ``(x, y)``, bilinearly: ``(H, W, 3)``."""
    height, width = size
    x, y = float(offset[0]), float(offset[1])
    col, row = int(x), int(y)
    fx, fy = np.float32(x - col), np.float32(y - row)

    def window(dr: int, dc: int) -> FloatArray:
        return background[row + dr:row + dr + height, col + dc:col + dc + width]

    top = window(0, 0) * (1 - fx) + window(0, 1) * fx
    bottom = window(1, 0) * (1 - fx) + window(1, 1) * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32, copy=False)


def _draw_object(canvas: FloatArray, owner: Labels, obj: _Object, index: int, t: int) -> int:
    """Draw ``obj`` as it is in frame ``t`` over what is drawn: a soft shadow, then the textured object
    with an anti-aliased edge.

    Pixels the object covers at least half are given to it in ``owner`` (``index``).

    Returns:
        The number of those pixels.
    """
    height, width = owner.shape
    cx, cy = obj.centres[t]
    scale = obj.scales[t]
    reach = obj.outline.reach * scale
    shadow = np.array(SHADOW_OFFSET) * reach
    blur = SHADOW_BLUR * reach
    pad = reach + float(np.abs(shadow).max()) + blur + 2
    x0, x1 = max(0, math.floor(cx - pad)), min(width, math.ceil(cx + pad))
    y0, y1 = max(0, math.floor(cy - pad)), min(height, math.ceil(cy + pad))
    if x0 >= x1 or y0 >= y1:
        return 0
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx  # pixel centres relative to the object's
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
    region = canvas[y0:y1, x0:x1]
    # The shadow: a blurred disc of the outline's mean radius (the blur hides the outline's detail).
    shade = np.clip((obj.outline.radius * scale - np.hypot(dx - shadow[0], dy - shadow[1])) / blur + 0.5, 0, 1)
    region *= (1 - SHADOW_DARKNESS * shade)[..., None].astype(np.float32)

    cos, sin = math.cos(obj.angles[t]), math.sin(obj.angles[t])
    u = (cos * dx + sin * dy) / scale  # object coordinates
    v = (cos * dy - sin * dx) / scale
    rho = np.hypot(u, v)
    radius = obj.outline.at(u, v, rho, t)
    alpha = np.clip((radius - rho) * scale / EDGE_WIDTH + 0.5, 0, 1)  # radial distance to the edge, in pixels
    # Texture: u = (cos * (X - cx) + sin * (Y - cy)) / scale about the texture's centre, as an affine map
    # of the region's continuous coordinates X = x0 + x, Y = y0 + y (PIL samples at pixel centres).
    half = obj.texture.width / 2
    coefficients = (cos / scale, sin / scale, (cos * (x0 - cx) + sin * (y0 - cy)) / scale + half,
                    -sin / scale, cos / scale, (cos * (y0 - cy) - sin * (x0 - cx)) / scale + half)
    texture = obj.texture.transform((x1 - x0, y1 - y0), Image.Transform.AFFINE, coefficients,
                                    Image.Resampling.BILINEAR)
    colour = np.asarray(texture, dtype=np.float32) * np.float32(1 / 255)
    colour *= (1 - RIM_DARKNESS * np.clip(rho / radius, 0, 1) ** 4)[..., None].astype(np.float32)
    region += alpha[..., None].astype(np.float32) * (colour - region)
    covered = alpha >= 0.5
    owner[y0:y1, x0:x1][covered] = index
    return int(np.count_nonzero(covered))


def _render_frame(scene: _Scene, t: int, size: tuple[int, int]
                  ) -> tuple[npt.NDArray[np.uint8], Labels, npt.NDArray[np.int64]]:
    """Frame ``t``.

    Returns:
        ``(image, owner, own)``: ``(H, W, 3) uint8`` RGB; ``(H, W) uint8``, at each pixel ``1 +`` the
        index in ``scene.objects`` of the front object there, 0 on the background; and each object's
        own covered pixels ``(objects,)``, before occlusion by the objects in front.
    """
    canvas = _translate(scene.background, scene.pan[t], size)  # a new array
    owner = np.zeros(size, np.uint8)
    own = np.array([_draw_object(canvas, owner, obj, i + 1, t) for i, obj in enumerate(scene.objects)])
    image = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return image, owner, own


@dataclass(frozen=True)
class DistractorVideo:
    """One rendered video of the distractor benchmark.

    Attributes:
        frames: ``(L, H, W, 3) uint8`` RGB.
        labels: ``(L, H, W) uint8`` target ids ``1..N`` where a target is in front, 0 elsewhere
            (background and distractors).
        distractors: ``(L, H, W) uint8`` ids ``1..D`` where a distractor is in front, 0 elsewhere; the
            distractors of target ``i`` are ``(i - 1) * k + 1 .. i * k``, ``k`` distractors per target.
        occlusion: ``(L, N) float32``, per frame, the share of each target's area (inside the frame)
            that objects in front of it hide.
    """

    frames: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    distractors: npt.NDArray[np.uint8]
    occlusion: npt.NDArray[np.float32]


def render_distractor_video(rng: np.random.Generator, settings: DistractorSettings, size: tuple[int, int],
                            length: int, textures: TextureSource | None = None) -> DistractorVideo:
    """Draw and render one video.

    Scenes are drawn until every target shows at least :data:`MIN_VISIBLE_FIRST` of its area in
    frame 0 (the first scene, but for rare crowded ones).

    Args:
        rng: All the video's randomness.
        settings: The knobs.
        size: ``(H, W)`` of the frames, both at least :data:`MIN_SIDE`.
        length: ``L``, number of frames, at least 1.
        textures: Where textures come from (default: procedural).

    Raises:
        ValueError: ``size`` or ``length`` is out of range.
        SampleSkipped: a texture photo cannot be decoded (``unreadable``), or no scene among
            :data:`SCENE_ATTEMPTS` shows every target in frame 0 (``no_object``).
    """
    if min(size) < MIN_SIDE:
        raise ValueError(f"frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {size[1]}x{size[0]}")
    if length < 1:
        raise ValueError(f"a video needs at least one frame, got {length}")
    textures = textures or TextureSource()
    for _ in range(SCENE_ATTEMPTS):
        scene = _draw_scene(rng, settings, size, length, textures)
        first = _render_frame(scene, 0, size)
        targets = [i for i, target in enumerate(scene.target_ids) if target]
        visible = np.bincount(first[1].ravel(), minlength=len(scene.objects) + 1)[1:]
        if all(visible[i] >= MIN_VISIBLE_FIRST * first[2][i] > 0 for i in targets):
            break
    else:
        raise SampleSkipped("no_object", f"no scene among {SCENE_ATTEMPTS} showed every target in frame 0")
    target_lut = np.array([0, *scene.target_ids], np.uint8)
    distractor_lut = np.array([0, *scene.distractor_ids], np.uint8)
    by_target = sorted(targets, key=lambda i: scene.target_ids[i])
    frames, labels, distractors, occlusion = [], [], [], []
    for t in range(length):
        image, owner, own = first if t == 0 else _render_frame(scene, t, size)
        visible = np.bincount(owner.ravel(), minlength=len(scene.objects) + 1)[1:]
        frames.append(image)
        labels.append(target_lut[owner])
        distractors.append(distractor_lut[owner])
        occlusion.append([1 - visible[i] / own[i] if own[i] else 0.0 for i in by_target])
    return DistractorVideo(np.stack(frames), np.stack(labels), np.stack(distractors),
                           np.array(occlusion, np.float32))


def parse_size(text: str, name: str = "size") -> tuple[int, int]:
    """``WxH`` (e.g. ``854x480``) -> ``(H, W)``; raises :class:`EmvosInputError` naming ``name`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise EmvosInputError(f"{name} {text!r}: expected WIDTHxHEIGHT, such as 854x480")
    return int(match.group(2)), int(match.group(1))


# -- on disk ----------------------------------------------------------------------------------------
def write_distractor_benchmark(out: str | Path, *, videos: int, length: int, settings: DistractorSettings,
                               seed: int, size: tuple[int, int] = (480, 854),
                               texture_source: str | Path | None = None, split: str = "val",
                               progress: Callable[[str], object] | None = None) -> list[str]:
    """Render a distractor benchmark into a new folder, in DAVIS-2017 layout::

        OUT/JPEGImages/480p/dist-0000/00000.jpg ...     frames (the folder is 480p whatever the size)
        OUT/Annotations/480p/dist-0000/00000.png ...    palette PNGs: targets 1..N, 0 elsewhere
        OUT/Distractors/480p/dist-0000/00000.png ...    palette PNGs: distractors 1..D (for analysis)
        OUT/ImageSets/2017/<split>.txt                  the sequence names
        OUT/distractors.json                            how it was generated, mean occlusion per target

    Video ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so the first videos of a
    benchmark do not depend on how many are written, and the same arguments give identical files.

    Args:
        out: A folder that does not exist yet, or is empty.
        videos: Number of videos, at least 1.
        length: Frames per video, at least 3 (the DAVIS protocol scores frames 1 to L - 2).
        settings: The knobs (:meth:`DistractorSettings.from_difficulty`).
        seed: Non-negative seed.
        size: ``(H, W)`` of the frames.
        texture_source: Folder of photos to cut textures from (:class:`TextureSource`); ``None``:
            procedural textures.
        split: Name of the split file.
        progress: Called with each sequence's name once it is written.

    Returns:
        The sequence names.

    Raises:
        EmvosInputError: an argument is out of range, ``out`` is not empty, or a texture photo cannot
            be decoded.
    """
    out = Path(out)
    if videos < 1:
        raise EmvosInputError(f"--videos must be at least 1, got {videos}")
    if length < 3:
        raise EmvosInputError(f"--frames must be at least 3 (the DAVIS protocol scores frames 1 to L - 2), "
                              f"got {length}")
    if seed < 0:
        raise EmvosInputError(f"--seed must be non-negative, got {seed}")
    if min(size) < MIN_SIDE:
        raise EmvosInputError(f"--size must be at least {MIN_SIDE}x{MIN_SIDE}, got {size[1]}x{size[0]}")
    if not split or "/" in split or split.startswith("."):
        raise EmvosInputError(f"--split {split!r} is not a file name; use e.g. val")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EmvosInputError(f"{out}: exists and is not an empty folder; give --out a new folder")
    textures = TextureSource(texture_source)
    names = [f"{SEQUENCE_PREFIX}{index:04d}" for index in range(videos)]
    sequences = []
    for index, name in enumerate(names):
        try:
            video = render_distractor_video(np.random.default_rng([seed, index]), settings, size, length, textures)
        except SampleSkipped as skip:
            raise EmvosInputError(f"{name}: {skip}") from None
        folders = [out / kind / "480p" / name for kind in ("JPEGImages", "Annotations", DISTRACTOR_FOLDER)]
        for folder in folders:
            folder.mkdir(parents=True)
        for t in range(length):
            Image.fromarray(video.frames[t]).save(folders[0] / f"{t:05d}.jpg", quality=JPEG_QUALITY)
            write_label_png(folders[1] / f"{t:05d}.png", video.labels[t])
            write_label_png(folders[2] / f"{t:05d}.png", video.distractors[t])
        sequences.append({"name": name, "mean_occlusion": [round(float(x), 4) for x in video.occlusion.mean(0)]})
        if progress is not None:
            progress(name)
    split_file = out / "ImageSets" / "2017" / f"{split}.txt"
    split_file.parent.mkdir(parents=True)
    split_file.write_text("".join(f"{name}\n" for name in names))
    metadata = {
        "generator": "emvos synth distractors",
        "seed": seed,
        "videos": videos,
        "frames": length,
        "size": {"height": size[0], "width": size[1]},
        "texture_source": textures.describe(),
        "split": split,
        "settings": asdict(settings),
        "sequences": sequences,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return names


# -- training ---------------------------------------------------------------------------------------
class DistractorClips(ClipDataset):
    """Distractor videos rendered on the fly as training clips (dataset kind ``distractors``).

    Sample ``k``: a video of ``clip_length`` frames of ``frame_size`` drawn from
    ``default_rng([seed, k])``, then the common augmentation of
    :meth:`~emvos.data.base.ClipDataset._render` (flips; balanced crop on frame 0, the target picked
    among the targets inside it). Distractors are background, as in the benchmark.
    """

    def __init__(
        self,
        texture_source: str | Path | None = None,
        *,
        seed: int,
        clip_length: int,
        crop_size: int,
        difficulty: float = 0.5,
        frame_size: tuple[int, int] | None = None,
        targets: int | None = None,
        distractors: int | None = None,
        similarity: float | None = None,
        speed: float | None = None,
        occlusion: float | None = None,
        entering: float | None = None,
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
    ) -> None:
        """Set the knobs.

        Args:
            texture_source: Folder of photos for the textures (:class:`TextureSource`); ``None``:
                procedural.
            seed: Dataset seed: sample ``k`` depends only on ``(seed, k)``.
            clip_length: ``L``.
            crop_size: ``S``.
            difficulty: In ``[0, 1]`` (:meth:`DistractorSettings.from_difficulty`).
            frame_size: ``(H, W)`` the videos are rendered at; default ``S x S`` (at least
                :data:`MIN_SIDE`).
            targets, distractors, similarity, speed, occlusion, entering: Settings to use instead of
                the difficulty's (see :class:`DistractorSettings`).
            crop_scale: Crop-area range relative to the 480p frame.
            crop_ratio: Crop aspect-ratio range.

        Raises:
            EmvosInputError: a setting is out of range, or ``texture_source`` is not a folder of images.
        """
        super().__init__(seed=seed, clip_length=clip_length, crop_size=crop_size, crop_scale=crop_scale,
                         crop_ratio=crop_ratio)
        given = {"targets": targets, "distractors": distractors, "similarity": similarity, "speed": speed,
                 "occlusion": occlusion, "entering": entering}
        try:
            self.settings = DistractorSettings.from_difficulty(
                difficulty, **{k: v for k, v in given.items() if v is not None})
        except ValueError as exc:
            raise EmvosInputError(f"distractors dataset: {exc}") from None
        side = max(crop_size, MIN_SIDE)
        self.frame_size = (side, side) if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        if min(self.frame_size) < MIN_SIDE:
            raise EmvosInputError(f"distractors dataset: frame_size must be at least {MIN_SIDE}x{MIN_SIDE}, "
                                  f"got {self.frame_size}")
        self.textures = TextureSource(texture_source)

    def describe(self) -> str:
        return f"DistractorClips({self.textures.describe()})"

    def _draw(self, rng: np.random.Generator) -> Sample:
        video = render_distractor_video(rng, self.settings, self.frame_size, self.clip_length, self.textures)

        def load_frame(position: int) -> tuple[Image.Image, Labels]:
            return Image.fromarray(video.frames[position]), video.labels[position]

        return self._render(load_frame, rng)
