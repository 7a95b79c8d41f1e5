"""Validation during training: segment held-out DAVIS-layout sequences and score them with J&F.

Each held-out sequence is segmented from its first annotation with :class:`VideoPredictor` (the
inference path users run), optionally on its first ``max_frames`` frames only. Scoring follows the
DAVIS semi-supervised protocol of :mod:`emvos.eval`: every object of the first annotation is scored
on its own (objects that appear later are not given, nor scored), the first and last segmented
frames are not scored, and ``J&F`` is the mean of J-Mean and F-Mean over all objects.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emvos.data.base import read_labels
from emvos.errors import EmvosInputError
from emvos.eval.metrics import object_statistics, region_and_boundary
from emvos.inference.predictor import VideoPredictor
from emvos.io import natural_sort_key, open_frames
from emvos.model.network import EMVOS

#: The resolution folder of the DAVIS layout.
RESOLUTION_FOLDER = "480p"


@dataclass(frozen=True)
class ValidationResult:
    """Scores of one validation.

    Attributes:
        jf: J&F-Mean (mean of :attr:`j` and :attr:`f`).
        j: J-Mean over all objects.
        f: F-Mean over all objects.
        per_sequence: J&F-Mean of each sequence's objects.
    """

    jf: float
    j: float
    f: float
    per_sequence: dict[str, float]


@dataclass(frozen=True)
class _Sequence:
    name: str
    frames: Path
    annotations: list[Path]  # one per segmented frame
    first: np.ndarray  # (H, W) uint8 ids of the first annotation


class HeldOutValidator:
    """Scores a network on held-out sequences of a DAVIS-layout folder.

    Args:
        root: folder with ``JPEGImages/480p/<seq>`` frames and ``Annotations/480p/<seq>`` PNGs.
        sequences: the held-out sequence names.
        resolution: shorter side frames are segmented at (0 keeps their size).
        max_frames: segment only the first this many frames of each sequence (0: all).

    Raises:
        EmvosInputError: a missing folder, or frames without an annotation.
    """

    def __init__(self, root: str | Path, sequences: list[str], resolution: int, max_frames: int = 0) -> None:
        root = Path(root)
        self.resolution = resolution
        self.sequences: list[_Sequence] = []
        for name in sequences:
            frames = root / "JPEGImages" / RESOLUTION_FOLDER / name
            annotations = root / "Annotations" / RESOLUTION_FOLDER / name
            if not frames.is_dir() or not annotations.is_dir():
                raise EmvosInputError(f"{root}: validation sequence {name!r} not found (needs {frames} and "
                                      f"{annotations}); fix val.root or val.sequences")
            stems = sorted((p.stem for p in frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                           key=natural_sort_key)
            stems = stems[:max_frames] if max_frames else stems
            pngs = [annotations / f"{stem}.png" for stem in stems]
            missing = [p.name for p in pngs if not p.is_file()]
            if len(stems) < 3 or missing:
                raise EmvosInputError(f"{annotations}: validation needs at least 3 frames, each annotated "
                                      f"(missing: {', '.join(missing[:3]) or 'none'}); choose another sequence")
            first = read_labels(pngs[0])
            if not first.any():
                raise EmvosInputError(f"{pngs[0]}: the first annotation of validation sequence {name!r} has no "
                                      "object; choose another sequence")
            self.sequences.append(_Sequence(name, frames, pngs, first))

    def __call__(self, model: EMVOS, device: torch.device) -> ValidationResult:
        """Segment every held-out sequence with ``model`` and score it.

        Args:
            model: the network (left in evaluation mode).
            device: where to run it.
        """
        predictor = VideoPredictor(model, device=device, resolution=self.resolution)
        j_means: list[float] = []
        f_means: list[float] = []
        per_sequence: dict[str, float] = {}
        for seq in self.sequences:
            images = (frame.image for frame in itertools.islice(open_frames(seq.frames), len(seq.annotations)))
            predicted = [p.labels for p in predictor.propagate(predictor.init_state(), images, {0: seq.first})]
            scored = slice(1, len(predicted) - 1)  # the given first frame and the last frame are not scored
            pred = np.stack(predicted[scored])
            gt = np.stack([read_labels(p) for p in seq.annotations[scored]])
            seq_j, seq_f = [], []
            for object_id in (int(i) for i in np.unique(seq.first) if i != 0):
                j, f = region_and_boundary(gt == object_id, pred == object_id)
                seq_j.append(object_statistics(j).mean)
                seq_f.append(object_statistics(f).mean)
            j_means += seq_j
            f_means += seq_f
            per_sequence[seq.name] = (float(np.mean(seq_j)) + float(np.mean(seq_f))) / 2
        j_mean, f_mean = float(np.mean(j_means)), float(np.mean(f_means))
        return ValidationResult((j_mean + f_mean) / 2, j_mean, f_mean, per_sequence)
