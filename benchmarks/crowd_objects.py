"""How many objects a model keeps through a crowd video (``emvos synth crowd``): the small-object test.

Segments each sequence of a crowd benchmark from its first-frame mask as ``emvos benchmark`` does, then
counts, at chosen frames, the objects of the first frame that are still found: *kept* when the
predicted mask overlaps the object's true mask with IoU >= ``--iou`` (0.5), *present* when it
overlaps it at all. Objects that are fully hidden in the truth at that frame are counted apart::

    emvos synth crowd --out runs/crowd44 --source ../shared/data/davis2016-train \\
        --sequences bmx-bumps,car-turn,dog-agility,kite-walk,mallard-water \\
        --videos 1 --objects 44 --frames 100 --size 1920x1080
    python benchmarks/crowd_objects.py --root runs/crowd44 --out runs/crowd44-result

prints one table per sequence and writes ``crowd-objects.json`` (per object and frame IoU) into ``--out``.
Each object not kept is counted as lost to whoever else holds most of its true pixels: the background, a
copy of itself (an object cut from the same source sequence, read from the benchmark's ``crowd.json``),
or another object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from emvos.eval.benchmark import segment_sequence
from emvos.inference.predictor import VideoPredictor, adapt_settings, load_network
from emvos.inference.settings import DEFAULT_REACH
from emvos.inference.zoom import parse_zoom
from emvos.io import natural_sort_key
from emvos.io.masks import read_label_png


def object_ious(truth: np.ndarray, predicted: np.ndarray, objects: list[int]) -> list[float | None]:
    """IoU of each object in one frame; ``None`` where the object is hidden in ``truth`` ``(H, W)``."""
    ious: list[float | None] = []
    for object_id in objects:
        gt, pred = truth == object_id, predicted == object_id
        union = np.count_nonzero(gt | pred)
        ious.append(None if not gt.any() else np.count_nonzero(gt & pred) / union)
    return ious


def lost_to(truth: np.ndarray, predicted: np.ndarray, object_id: int, sources: dict[int, str] | None) -> str:
    """Who, apart from the object itself, holds most of a lost object's true pixels: ``background``,
    ``copy`` (an object cut from the same source sequence, when ``sources`` is known), or ``other``."""
    holders = np.bincount(predicted[truth == object_id].ravel(), minlength=max(int(predicted.max()), object_id) + 1)
    holders[object_id] = 0
    holder = int(np.argmax(holders))
    if holder == 0:
        return "background"
    return "copy" if sources is not None and sources.get(holder) == sources.get(object_id) else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a crowd benchmark (emvos synth crowd --out)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--adapt", type=int, default=None,
                        help="adaptation steps (0: off; default: the model's, with the settings its file recommends)")
    parser.add_argument("--resolution", type=int, default=480)
    parser.add_argument("--frames", default="4,25,50,99", help="frames to count at (comma-separated)")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zoom", default="{}",
                        help="zoomed windows of small objects: 0 for none, or ZoomSettings fields as JSON over "
                             "emvos segment's (default {}: the same)")
    parser.add_argument("--reach", type=float, default=DEFAULT_REACH,
                        help=f"each object's reach around its previous box, in its size (default {DEFAULT_REACH}, "
                             "emvos segment's; 0: everywhere)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = adapt_settings(args.checkpoint, args.adapt)
    predictor = VideoPredictor(load_network(args.checkpoint), device="cpu", resolution=args.resolution,
                               adapt=settings, zoom=parse_zoom(args.zoom), reach=args.reach or None)
    report = {"settings": vars(args) | {"root": str(args.root), "out": str(args.out),
                                         "checkpoint": str(args.checkpoint)}, "sequences": {}}
    names = (args.root / "ImageSets" / "2017" / "val.txt").read_text().split()
    metadata = args.root / "crowd.json"
    written = json.loads(metadata.read_text()).get("videos_written", []) if metadata.exists() else []
    object_sources = {record["name"]: dict(enumerate(record["object_sources"], start=1))
                      for record in written if "object_sources" in record}
    for name in names:
        annotations = args.root / "Annotations" / "480p" / name
        timing = segment_sequence(predictor, args.root / "JPEGImages" / "480p" / name, annotations / "00000.png",
                                  args.out / name)
        truth_files = sorted(annotations.glob("*.png"), key=lambda p: natural_sort_key(p.name))
        objects = [int(i) for i in np.unique(read_label_png(truth_files[0]).labels) if i]
        per_frame = [object_ious(read_label_png(path).labels, read_label_png(args.out / name / path.name).labels,
                                 objects) for path in truth_files]
        print(f"{name}: {len(objects)} objects, {timing.frames} frames, {timing.total_seconds:.0f} s")
        print("frame  kept  present  hidden  lost to: background  copy  other")
        counts = {}
        for t in (int(f) for f in args.frames.split(",") if int(f) < len(per_frame)):
            ious = per_frame[t]
            kept = sum(1 for v in ious if v is not None and v >= args.iou)
            present = sum(1 for v in ious if v is not None and v > 0)
            hidden = sum(1 for v in ious if v is None)
            truth = read_label_png(truth_files[t]).labels
            predicted = read_label_png(args.out / name / truth_files[t].name).labels
            lost = [lost_to(truth, predicted, oid, object_sources.get(name))
                    for oid, v in zip(objects, ious, strict=True) if v is not None and v < args.iou]
            by = {kind: lost.count(kind) for kind in ("background", "copy", "other")}
            counts[t] = {"kept": kept, "present": present, "hidden": hidden, "lost_to": by}
            print(f"{t:5d}  {kept:4d}  {present:7d}  {hidden:6d}  {by['background']:19d}  {by['copy']:4d}  "
                  f"{by['other']:5d}")
        report["sequences"][name] = {"objects": objects, "timing": dataclasses.asdict(timing), "counts": counts,
                                     "iou": per_frame}
    (args.out / "crowd-objects.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
