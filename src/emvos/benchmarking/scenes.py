"""The scenes ``emvos speed`` segments: seeded synthetic videos, and their mp4s and first-frame masks on disk.

The files are written by the library's own writers (:class:`emvos.io.mp4.Mp4Writer` and
:func:`emvos.io.masks.write_label_png`, both atomic), so the end-to-end timings read what
``emvos segment`` would read.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from emvos.io.masks import write_label_png
from emvos.io.mp4 import Mp4Writer


def frame_size(height: int) -> tuple[int, int]:
    """``(H, W)`` of a 16:9 frame of the given height with an even width (480 -> 854, as DAVIS)."""
    return height, 2 * round(height * 8 / 9)


class SyntheticVideo:
    """A seeded moving scene: a panning textured background and ``discs`` striped discs moving over it.

    Frames are generated on demand from their index (nothing is stored), so any length costs the
    same memory. In frame 0 the discs sit apart on a grid; disc ``i`` is object ``i + 1``.

    Args:
        size: ``(H, W)`` of the frames.
        discs: how many discs move in the scene.
        seed: seeds the texture, the colours and the motion.
    """

    def __init__(self, size: tuple[int, int], discs: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        h, w = size
        self.size = size
        self.margin = max(h, w) // 10
        big = (h + 2 * self.margin, w + 2 * self.margin)
        coarse = rng.integers(0, 256, (big[0] // 12 + 2, big[1] // 12 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((big[1], big[0]), Image.Resampling.BICUBIC), np.int16)
        grain = rng.integers(-20, 21, smooth.shape, dtype=np.int16)
        self.background = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        cols = max(1, math.ceil(math.sqrt(discs * w / h)))
        rows = math.ceil(discs / cols)
        cell = min(h / rows, w / cols)
        self.centres = np.array([((i // cols + 0.5) * h / rows, (i % cols + 0.5) * w / cols) for i in range(discs)])
        self.radii = rng.uniform(0.25, 0.4, discs) * cell
        self.amplitude = 0.3 * cell
        self.speeds = rng.uniform(0.02, 0.08, (discs, 2))
        self.colours = rng.integers(0, 200, (discs, 3))

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``: ``(H, W, 3) uint8`` RGB and its ``(H, W) uint8`` disc ids (0: background)."""
        h, w = self.size
        m = self.margin
        dy = m + round(m * math.sin(index / 37))
        dx = m + round(m * math.cos(index / 53))
        image = self.background[dy:dy + h, dx:dx + w].copy()
        labels = np.zeros((h, w), np.uint8)
        for i, ((cy, cx), r) in enumerate(zip(self.centres, self.radii, strict=True)):
            cy += self.amplitude * math.sin(self.speeds[i, 0] * index + i)
            cx += self.amplitude * math.cos(self.speeds[i, 1] * index + i)
            y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            stripes = ((yy + xx) // 6 % 2 * 55).astype(np.int16) + np.zeros_like(xx, dtype=np.int16)
            image[y0:y1, x0:x1][inside] = (self.colours[i] + stripes[inside, None]).astype(np.uint8)
            labels[y0:y1, x0:x1][inside] = i + 1
        return image, labels

    def frame(self, index: int) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB of frame ``index``."""
        return self.draw(index)[0]

    def first_mask(self, objects: int) -> np.ndarray:
        """``(H, W) uint8`` ids 1..``objects`` of the first ``objects`` discs in frame 0."""
        labels = self.draw(0)[1]
        return np.where(labels <= objects, labels, 0).astype(np.uint8)


def write_video(path: Path, scene: SyntheticVideo, frames: int, fps: int = 24) -> Path:
    """Encode frames ``0..frames-1`` of ``scene`` into an mp4 (H.264 when available)."""
    with Mp4Writer(path, fps, scene.size, preset="veryfast") as video:
        for i in range(frames):
            video.write(scene.frame(i))
    return path


class SceneFiles:
    """A run's scratch folder: its scenes, their mp4s and first-frame masks (made once each), and outputs.

    The folder is emptied first: nothing an earlier run left there is reused.

    Args:
        root: the folder (created; removed by the run when it ends).
        discs: discs of every scene (the most objects a cell tracks).
    """

    def __init__(self, root: Path, discs: int) -> None:
        self.root = root
        self.discs = discs
        self._scenes: dict[int, SyntheticVideo] = {}
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)

    def scene(self, height: int) -> SyntheticVideo:
        """The scene at a resolution (the same for every model and mode)."""
        if height not in self._scenes:
            self._scenes[height] = SyntheticVideo(frame_size(height), self.discs)
        return self._scenes[height]

    def video(self, height: int, frames: int) -> Path:
        """An mp4 of the first ``frames`` frames of the scene."""
        path = self.root / f"scene-{height}p-{frames}.mp4"
        return path if path.is_file() else write_video(path, self.scene(height), frames)

    def mask(self, height: int, objects: int) -> Path:
        """The first-frame mask PNG (DAVIS palette) of ``objects`` objects."""
        path = self.root / f"mask-{height}p-{objects}.png"
        if not path.is_file():
            write_label_png(path, self.scene(height).first_mask(objects))
        return path
