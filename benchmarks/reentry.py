"""Does a model find its target again after the target has left the frame? The re-entry test.

A virtual camera pans over a DAVIS sequence: a window of ``--window`` of the frame's width follows the
target, pans away until the target is out of view for ``--hold`` frames, and pans back. Every
sequence whose target fits such a path is segmented from its first-frame mask (as ``emvos
benchmark`` does, in memory) and scored per frame with J (a frame where truth and prediction are
both empty scores 1)::

    python benchmarks/reentry.py --source ../shared/data/davis2016-train \\
        --sequences bmx-bumps,car-turn,dog-agility,kite-walk,mallard-water --out runs/reentry

prints, per sequence and in all: J over every frame, J *before* the target leaves, J *after* it is
back (the frames from its return on, where it is in view), and *ghost*, the share of frames without
the target in view where the prediction is not empty. ``reentry.json`` in ``--out`` keeps every
frame's J and the true and predicted areas.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emvos.data.base import read_labels
from emvos.data.video import pair_frames
from emvos.eval.metrics import region_similarity
from emvos.inference.adapt import AdaptSettings
from emvos.inference.predictor import VideoPredictor, adapt_settings, load_network


@dataclass(frozen=True)
class PanPlan:
    """Frames of the pan: follow the target until ``leave``, away from ``away`` to ``back``, home at ``home``."""

    leave: int
    away: int
    back: int
    home: int


def pan_video(frames: list[np.ndarray], masks: list[np.ndarray], window: float, hold: int,
              start: int) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Crop each ``(H, W, 3)`` frame and ``(H, W)`` mask to a window that pans away from the target and back.

    The window (``window`` of the width, full height) is centred on the target, pans to the side of
    the frame farther from the target over 10 frames from frame ``start``, stays there ``hold``
    frames and pans back over 10 frames. Returns ``None`` when the target stays in view (too wide).
    """
    height, width = masks[0].shape
    side = round(window * width)
    plan = PanPlan(start, start + 10, start + 10 + hold, start + 20 + hold)
    if plan.home > len(frames):
        return None
    centres, last = [], width / 2
    for mask in masks:
        xs = np.nonzero(mask.any(axis=0))[0]
        last = (xs.min() + xs.max()) / 2 if xs.size else last
        centres.append(last)
    away = 0 if centres[plan.leave] > width / 2 else width - side
    out_frames, out_masks = [], []
    for t, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        follow = min(max(centres[t] - side / 2, 0), width - side)
        if t < plan.leave or t >= plan.home:
            weight = 0.0
        elif t < plan.away:
            weight = (t - plan.leave) / (plan.away - plan.leave)
        elif t < plan.back:
            weight = 1.0
        else:
            weight = 1 - (t - plan.back) / (plan.home - plan.back)
        left = round((1 - weight) * follow + weight * away)
        out_frames.append(frame[:, left:left + side])
        out_masks.append(mask[:, left:left + side])
    absent = [not m.any() for m in out_masks]
    if sum(absent) < hold // 2 or absent[0]:
        return None
    return out_frames, out_masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a DAVIS-2016 folder")
    parser.add_argument("--sequences", required=True, help="comma-separated sequence names")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--adapt", type=int, default=None,
                        help="adaptation steps (0: off; default: the model's, with the settings its file recommends)")
    parser.add_argument("--settings", default="{}",
                        help="AdaptSettings fields as JSON, over the model file's (e.g. '{\"absent_p\": 0.5}')")
    parser.add_argument("--window", type=float, default=0.45, help="window width, a fraction of the frame's")
    parser.add_argument("--hold", type=int, default=15, help="frames the window stays away")
    parser.add_argument("--start", type=int, default=15, help="frame the pan starts")
    parser.add_argument("--resolution", type=int, default=480, help="shorter side the frames are segmented at")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = adapt_settings(args.checkpoint, args.adapt)
    if settings is not None:
        settings = AdaptSettings.from_dict(dataclasses.asdict(settings) | json.loads(args.settings))
    predictor = VideoPredictor(load_network(args.checkpoint), device="cpu", resolution=args.resolution,
                               adapt=settings)
    report: dict[str, object] = {"settings": {k: str(v) for k, v in vars(args).items()}, "sequences": {}}
    totals: dict[str, list[float]] = {"all": [], "before": [], "after": [], "ghost": []}
    print(f"{'sequence':16s} {'frames':>6s} {'J':>6s} {'before':>6s} {'after':>6s} {'ghost':>6s}")
    for name in args.sequences.split(","):
        video, _ = pair_frames(args.source / "JPEGImages" / "480p" / name, args.source / "Annotations" / "480p" / name)
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in video.images]
        masks = [read_labels(p) != 0 for p in video.masks]
        panned = pan_video(frames, masks, args.window, args.hold, args.start)
        if panned is None:
            print(f"{name:16s} skipped: the target stays in view of a {args.window:.2f}-wide window")
            continue
        images, truth = panned
        state = predictor.init_state()
        predicted = [p.labels != 0 for p in predictor.propagate(state, images, {0: truth[0].astype(np.uint8)})]
        scores = region_similarity(np.stack(truth[1:]), np.stack(predicted[1:]))
        visible = [bool(m.any()) for m in truth[1:]]
        gone = visible.index(False)
        back = gone + visible[gone:].index(True)
        before, after = scores[:gone], scores[back:][np.array(visible[back:])]
        ghost = [bool(p.any()) for p, v in zip(predicted[1:], visible, strict=True) if not v]
        row = {"J": float(scores.mean()), "before": float(before.mean()), "after": float(after.mean()),
               "ghost": float(np.mean(ghost)), "per_frame": [float(s) for s in scores],
               "true_area": [int(m.sum()) for m in truth[1:]], "predicted_area": [int(p.sum()) for p in predicted[1:]]}
        report["sequences"][name] = row  # type: ignore[index]
        for key, value in (("all", row["J"]), ("before", row["before"]), ("after", row["after"]),
                           ("ghost", row["ghost"])):
            totals[key].append(value)  # type: ignore[arg-type]
        print(f"{name:16s} {len(images):6d} {row['J']:6.3f} {row['before']:6.3f} {row['after']:6.3f} "
              f"{row['ghost']:6.2f}")
    mean = {k: float(np.mean(v)) for k, v in totals.items() if v}
    report["mean"] = mean
    print(f"{'mean':16s} {'':6s} {mean['all']:6.3f} {mean['before']:6.3f} {mean['after']:6.3f} {mean['ghost']:6.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reentry.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
