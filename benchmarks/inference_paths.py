"""Time the reference network against the copies prepared for inference, on a real video.

The shipped model (or ``--checkpoint``) segments the first frames of a DAVIS sequence as
``emvos segment`` does by default (480p, fp32, huge pages and kept memory; test-time adaptation
off, since it runs once per video whatever the network), through each of these networks in turn:

* ``reference``: the network as trained, in PyTorch's default memory format (``VideoPredictor(optimize=False)``);
* ``prepared``: what ``emvos segment`` runs (:func:`emvos.inference.optimize.prepare_for_inference`):
  BatchNorm folded by PyTorch's ``fuse_conv_bn_eval``, channels-last;
* with ``--compile``, ``prepared+compile``: ``prepared`` compiled by ``torch.compile`` with Inductor's
  freezing (``--compile``'s path).

The variants alternate within each round (A, B, C, A, B, C, ...), after one warm-up pass each,
so that a machine whose speed drifts slows them alike. Per propagated frame two times are kept:
wall time (the model's seconds, as ``propagate`` reports them) and the process's CPU time
(less sensitive to other processes taking the cores). The table gives the medians over all rounds
and their ratios to ``reference``, and the share of pixels equal to ``reference``'s; ``--doc``
writes it as a Markdown page with the command that made it.

Example::

    python benchmarks/inference_paths.py --sequence bear --frames 8 --rounds 5 --threads 2 \\
        --doc docs/inference-paths.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from emvos.runtime import keep_freed_memory, use_huge_pages

use_huge_pages()  # before PyTorch allocates its first tensor, as the emvos command does
keep_freed_memory()

import numpy as np  # noqa: E402 - after the allocator settings above
import torch  # noqa: E402
from _page import page_head  # noqa: E402 - benchmarks/, the script's own folder
from PIL import Image  # noqa: E402

from emvos.inference.predictor import FramePrediction, VideoPredictor, load_network  # noqa: E402
from emvos.io.masks import read_label_png  # noqa: E402
from emvos.model.network import EMVOS  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "davis2016-train"


def predictors(model: EMVOS, resolution: int, compiled: bool) -> dict[str, VideoPredictor]:
    """The variants, by name, as CPU predictors without adaptation."""
    variants = {"reference": VideoPredictor(model, device="cpu", resolution=resolution, optimize=False, adapt=None),
                "prepared": VideoPredictor(model, device="cpu", resolution=resolution, adapt=None)}
    if compiled:
        variants["prepared+compile"] = VideoPredictor(model, device="cpu", resolution=resolution, compile=True,
                                                      adapt=None)
    return variants


def run(predictor: VideoPredictor, frames: list[np.ndarray], first: np.ndarray) -> tuple[np.ndarray, list[float],
                                                                                      list[float]]:
    """Segment ``frames`` from ``first``: ``(F, H, W)`` labels, and the wall and CPU seconds of each
    propagated frame (the first, given, frame left out)."""
    wall: list[float] = []
    cpu: list[float] = []
    last = [time.process_time()]

    def on_frame(prediction: FramePrediction, seconds: float) -> None:
        now = time.process_time()
        wall.append(seconds)
        cpu.append(now - last[0])
        last[0] = now

    labels = [p.labels for p in predictor.propagate(predictor.init_state(), frames, {0: first}, on_frame=on_frame)]
    return np.stack(labels), wall[1:], cpu[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="a DAVIS-layout folder")
    parser.add_argument("--sequence", default="bear")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--resolution", type=int, default=480)
    parser.add_argument("--frames", type=int, default=8, help="propagated frames per pass")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes of each variant, alternating")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also time prepared+compile (long warm-up)")
    parser.add_argument("--doc", type=Path, default=None, help="write the results as this Markdown page")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = sorted((args.root / "JPEGImages" / "480p" / args.sequence).glob("*.jpg"))[:args.frames + 1]
    if len(images) < 2:
        parser.error(f"{args.root / 'JPEGImages' / '480p' / args.sequence}: needs at least 2 frames")
    frames = [np.asarray(Image.open(path).convert("RGB")) for path in images]
    first = read_label_png(args.root / "Annotations" / "480p" / args.sequence / f"{images[0].stem}.png",
                           opaque_alpha=True).labels
    variants = predictors(load_network(args.checkpoint), args.resolution, args.compile)
    started, load_before = datetime.now(timezone.utc), os.getloadavg()[0]
    labels = {name: run(predictor, frames, first)[0] for name, predictor in variants.items()}  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, predictor in variants.items():
            _, w, c = run(predictor, frames, first)
            wall[name] += w
            cpu[name] += c
    load_after = os.getloadavg()[0]
    ref_wall, ref_cpu = statistics.median(wall["reference"]), statistics.median(cpu["reference"])
    rows = []
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        same = (labels[name] == labels["reference"]).mean()
        rows.append(f"| {name} | {w * 1000:.1f} | {w / ref_wall:.3f} | {c * 1000:.1f} | {c / ref_cpu:.3f} | "
                    f"{same:.6f} |")
    page = "\n".join([
        *page_head("The reference network and the copies prepared for inference", started),
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores; load average {load_before:.1f} before and "
        f"{load_after:.1f} after (other work shares this machine); PyTorch {torch.__version__}, "
        f"{args.threads} threads.",
        f"- Work: DAVIS `{args.sequence}`, its first frame's mask given and the {len(frames) - 1} frames after it "
        f"propagated, resolution {args.resolution}, fp32, no test-time adaptation; {args.rounds} rounds with the "
        "variants in turn (after one warm-up pass each); medians over every propagated frame of every round.",
        "- Variants (see the script's docstring): `reference` = the network as trained; `prepared` = what "
        "`emvos segment` runs (BatchNorm folded by `fuse_conv_bn_eval`, channels-last)"
        + ("; `prepared+compile` = `prepared` compiled by `torch.compile` with Inductor's freezing." if args.compile
           else "."),
        "- CPU time is the process's, per frame: on a shared machine it moves less than wall time.",
        "",
        "| variant | wall ms/frame | wall / reference | CPU ms/frame | CPU / reference | pixels = reference |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    print(page)
    if args.doc is not None:
        args.doc.write_text(page, encoding="utf-8")

if __name__ == "__main__":
    main()
