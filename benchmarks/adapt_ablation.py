"""Score test-time adaptation settings on DAVIS sequences: the rows of the model card's ablation.

Each sequence is segmented from its first-frame mask as ``emvos benchmark`` does, with
:class:`emvos.inference.adapt.AdaptSettings` built from ``--settings`` (JSON; the fields not given keep
the model's: the defaults with what its file recommends, e.g. emvos-base's learning rate;
``{"steps": 0}`` turns adaptation off), then scored with the official protocol::

    python benchmarks/adapt_ablation.py --settings '{"lr": 1e-4}' --out runs/adapt-lr1e-4 \\
        --davis-root ../shared/data/davis2016-train --year 2016 \\
        --sequences bmx-bumps,car-turn,dog-agility,kite-walk,mallard-water

prints J&F and writes the scores (``emvos eval``'s files) and ``adapt.json`` (the settings, and each
sequence's frames and seconds) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from emvos.eval.benchmark import segment_sequence
from emvos.eval.davis import evaluate_results, format_report, write_reports
from emvos.inference.predictor import VideoPredictor, adapt_settings, load_network
from emvos.inference.settings import DEFAULT_REACH
from emvos.inference.zoom import parse_zoom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="{}", help="AdaptSettings fields as JSON (default: the defaults)")
    parser.add_argument("--davis-root", type=Path, required=True)
    parser.add_argument("--year", type=int, choices=(2016, 2017), default=2016)
    parser.add_argument("--sequences", required=True, help="comma-separated sequence names")
    parser.add_argument("--resolution", type=int, default=480)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zoom", default="{}",
                        help="zoomed windows of small objects: 0 for none, or ZoomSettings fields as JSON over "
                             "emvos segment's (default {}: the same)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reach", type=float, default=DEFAULT_REACH,
                        help=f"each object's reach around its previous box, in its size (default {DEFAULT_REACH}, "
                             "emvos segment's; 0: everywhere)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = adapt_settings(args.checkpoint, overrides=json.loads(args.settings))
    predictor = VideoPredictor(load_network(args.checkpoint), device="cpu", resolution=args.resolution,
                               adapt=settings, zoom=parse_zoom(args.zoom), reach=args.reach or None)
    sequences = args.sequences.split(",")
    timings = []
    for name in sequences:
        timing = segment_sequence(predictor, args.davis_root / "JPEGImages" / "480p" / name,
                                  args.davis_root / "Annotations" / "480p" / name / "00000.png", args.out / name)
        timings.append(dataclasses.asdict(timing))
    result = evaluate_results(args.out, args.davis_root, year=args.year, split="train", sequences=sequences,
                              workers=args.threads)
    write_reports(result, args.out)
    print(format_report(result))
    record = dataclasses.asdict(settings) if settings else {"steps": 0}
    (args.out / "adapt.json").write_text(json.dumps({"settings": record, "sequences": timings}, indent=2))


if __name__ == "__main__":
    main()
