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
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emvos.data.base import read_labels
from emvos.data.video import pair_frames
from emvos.eval.metrics import region_similarity
from emvos.inference.predictor import VideoPredictor, adapt_settings, load_network
from emvos.inference.settings import DEFAULT_REACH

#: Frames the window takes to pan away from the target, and to pan back.
PAN_FRAMES = 10


def pan_offsets(masks: list[np.ndarray], window: float, hold: int, start: int) -> list[int] | None:
    """Left edge of each frame's window (``window`` of the width, full height) in a pan away from the
    target and back, from each frame's ``(H, W)`` target mask.

    The window follows the target's centre, pans to the side of the frame farther from it over
    ``PAN_FRAMES`` frames from frame ``start``, stays there ``hold`` frames and pans back. ``None``
    when the video is too short, or the target stays in view (too wide) or is out of view at frame 0.
    """
    width = masks[0].shape[1]
    side = round(window * width)
    leave, away, back, home = start, start + PAN_FRAMES, start + PAN_FRAMES + hold, start + 2 * PAN_FRAMES + hold
    if home > len(masks):
        return None
    centres, last = [], width / 2
    for mask in masks:
        xs = np.nonzero(mask.any(axis=0))[0]
        last = (xs.min() + xs.max()) / 2 if xs.size else last
        centres.append(last)
    far = 0 if centres[leave] > width / 2 else width - side
    lefts = []
    for t, centre in enumerate(centres):
        follow = min(max(centre - side / 2, 0), width - side)
        if t < leave or t >= home:
            weight = 0.0
        elif t < away:
            weight = (t - leave) / (away - leave)
        else:
            weight = 1.0 if t < back else 1 - (t - back) / (home - back)
        lefts.append(round((1 - weight) * follow + weight * far))
    absent = [not mask[:, left:left + side].any() for mask, left in zip(masks, lefts, strict=True)]
    return None if absent[0] or sum(absent) < hold // 2 else lefts


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
    parser.add_argument("--reach", type=float, default=DEFAULT_REACH,
                        help=f"each object's reach around its previous box, in its size (default {DEFAULT_REACH}, "
                             "emvos segment's; 0: everywhere)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = adapt_settings(args.checkpoint, args.adapt, json.loads(args.settings))
    predictor = VideoPredictor(load_network(args.checkpoint), device="cpu", resolution=args.resolution,
                               adapt=settings, reach=args.reach or None)
    rows: dict[str, dict[str, object]] = {}
    print(f"{'sequence':16s} {'frames':>6s} {'J':>6s} {'before':>6s} {'after':>6s} {'ghost':>6s}")
    for name in args.sequences.split(","):
        video, _ = pair_frames(args.source / "JPEGImages" / "480p" / name, args.source / "Annotations" / "480p" / name)
        masks = [read_labels(p) != 0 for p in video.masks]
        lefts = pan_offsets(masks, args.window, args.hold, args.start)
        if lefts is None:
            print(f"{name:16s} skipped: the target stays in view of a {args.window:.2f}-wide window")
            continue
        side = round(args.window * masks[0].shape[1])
        images = [np.asarray(Image.open(p).convert("RGB"))[:, left:left + side] for p, left in zip(video.images, lefts,
                                                                                                 strict=True)]
        truth = [mask[:, left:left + side] for mask, left in zip(masks, lefts, strict=True)]
        state = predictor.init_state()
        predicted = [p.labels != 0 for p in predictor.propagate(state, images, {0: truth[0].astype(np.uint8)})]
        scores = region_similarity(np.stack(truth[1:]), np.stack(predicted[1:]))
        visible = [bool(m.any()) for m in truth[1:]]
        gone = visible.index(False)
        back = gone + visible[gone:].index(True)
        after = scores[back:][np.array(visible[back:])]
        ghost = [bool(p.any()) for p, v in zip(predicted[1:], visible, strict=True) if not v]
        row = rows[name] = {"J": float(scores.mean()), "before": float(scores[:gone].mean()),
                            "after": float(after.mean()), "ghost": float(np.mean(ghost)),
                            "per_frame": [float(s) for s in scores], "true_area": [int(m.sum()) for m in truth[1:]],
                            "predicted_area": [int(p.sum()) for p in predicted[1:]]}
        print(f"{name:16s} {len(images):6d} {row['J']:6.3f} {row['before']:6.3f} {row['after']:6.3f} "
              f"{row['ghost']:6.2f}")
    mean = {k: float(np.mean([row[k] for row in rows.values()])) for k in ("J", "before", "after", "ghost")}
    print(f"{'mean':16s} {'':6s} {mean['J']:6.3f} {mean['before']:6.3f} {mean['after']:6.3f} {mean['ghost']:6.2f}")
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "sequences": rows, "mean": mean}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reentry.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
