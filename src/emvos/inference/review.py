"""Which frames a person should check: each object's area and confidence per frame, and the frames
where an object is lost, changes area suddenly or is segmented with low confidence.

Written beside the masks as ``review.json``::

    {"frames": [{"index": 0, "name": "00000", "objects": {"1": {"area": 5120, "confidence": 0.97}}}, ...],
     "needs_review": [{"index": 41, "name": "00041", "object": 1, "reason": "lost", ...}, ...]}

An object's confidence at a frame is the mean probability the network gives it over the pixels it
is labelled at (0 when it has none); ``None`` when probabilities were not kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emvos.io.files import write_text_atomically

REVIEW_FILE = "review.json"
#: An object's area changing by this factor or more from one frame to the next is sudden.
AREA_CHANGE = 2.0
#: Objects smaller than this (pixels) in both frames are not flagged for area changes or loss.
MIN_AREA = 64
#: Confidence below this is low.
LOW_CONFIDENCE = 0.5


def object_confidence(labels: np.ndarray, object_ids: tuple[int, ...],
                      probabilities: np.ndarray | None) -> dict[int, tuple[int, float | None]]:
    """Each object's ``(area in pixels, confidence)`` at one frame.

    Args:
        labels: ``(H, W) uint8`` object ids.
        object_ids: The objects tracked at the frame.
        probabilities: ``(len(object_ids), H, W) uint8`` probability x 255, or ``None``.

    Returns:
        ``{id: (area, confidence)}``; confidence in ``[0, 1]``, ``None`` without probabilities.
    """
    result: dict[int, tuple[int, float | None]] = {}
    for slot, object_id in enumerate(object_ids):
        pixels = labels == object_id
        area = int(pixels.sum())
        confidence = None
        if probabilities is not None:
            confidence = round(float(probabilities[slot][pixels].mean()) / 255, 4) if area else 0.0
        result[object_id] = (area, confidence)
    return result


@dataclass
class ReviewLog:
    """Collects each frame's objects (:meth:`add`) and writes ``review.json`` (:meth:`write`)."""

    frames: list[dict[str, object]] = field(default_factory=list)
    needs_review: list[dict[str, object]] = field(default_factory=list)
    _previous: dict[int, int] = field(default_factory=dict)
    _recorded: set[int] = field(default_factory=set)

    def new_pass(self) -> None:
        """Start another pass over frames (``--direction both``): changes are measured within a pass."""
        self._previous = {}

    def add(self, index: int, name: str, labels: np.ndarray, object_ids: tuple[int, ...],
            probabilities: np.ndarray | None) -> None:
        """Record one frame (in the order of propagation); flags it when an object needs review.

        A frame recorded before (a pass's first frame, done by the pass before) only sets the areas
        the next frame is compared with.
        """
        objects = object_confidence(labels, object_ids, probabilities)
        if index in self._recorded:
            self._previous.update({i: area for i, (area, _) in objects.items()})
            return
        self._recorded.add(index)
        self.frames.append({"index": index, "name": name,
                            "objects": {str(i): {"area": a, "confidence": c} for i, (a, c) in objects.items()}})
        for object_id, (area, confidence) in objects.items():
            before = self._previous.get(object_id)
            reason = None
            if before is not None and before >= MIN_AREA and area == 0:
                reason = "lost"
            elif before and area and max(before, area) >= MIN_AREA and max(area / before, before / area) >= AREA_CHANGE:
                reason = "area change"
            elif confidence is not None and area and confidence < LOW_CONFIDENCE:
                reason = "low confidence"
            if reason is not None:
                self.needs_review.append({"index": index, "name": name, "object": object_id, "reason": reason,
                                          "area_before": before, "area": area, "confidence": confidence})
            self._previous[object_id] = area

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/review.json`` atomically; returns its path."""
        target = Path(folder) / REVIEW_FILE
        frames = sorted(self.frames, key=lambda frame: frame["index"])  # type: ignore[arg-type, return-value]
        write_text_atomically(target, json.dumps({"frames": frames, "needs_review": self.needs_review}, indent=1))
        return target
