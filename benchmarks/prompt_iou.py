"""Mean IoU of the masks that a box or a few clicks give (:func:`emvos.prompts.prompt_mask`) on DAVIS frames.

For each sequence, frame 0 and its ground-truth mask: the box is the tight box around the true
object; the clicks follow the usual interactive protocol (:func:`emvos.prompts.next_click`), each
one placed in the current mask's largest error, the mask recomputed after each. Prints a Markdown
table (per sequence and the mean) and, with ``--doc``, writes it into that file between the markers
``<!-- prompt-iou:NAME -->`` and ``<!-- /prompt-iou:NAME -->`` (``--marker NAME``).

Example::

    python benchmarks/prompt_iou.py --davis-root DAVIS2016 --sequences bmx-bumps,car-turn \\
        --doc docs/prompts.md --marker tuning
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from emvos.prompts import Click, next_click, prompt_mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(H, W) bool`` masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def score_sequence(root: Path, sequence: str, clicks: int) -> dict[str, float]:
    """IoU from one box, then after each of ``clicks`` clicks, on frame 0 of ``sequence``."""
    frames = sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    image = np.array(Image.open(frames[0]).convert("RGB"))
    truth = np.array(Image.open(root / "Annotations" / "480p" / sequence / f"{frames[0].stem}.png")) > 0
    rows, cols = np.flatnonzero(truth.any(axis=1)), np.flatnonzero(truth.any(axis=0))
    box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    scores = {"box": iou(prompt_mask(image, box), truth)}
    given: list[Click] = []
    predicted = None
    for count in range(1, clicks + 1):
        given.append(next_click(truth, predicted))
        predicted = prompt_mask(image, clicks=given)
        scores[f"{count} click{'s' * (count > 1)}"] = iou(predicted, truth)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis-root", type=Path, required=True, help="DAVIS-2016 layout (JPEGImages/480p, ...)")
    parser.add_argument("--sequences", default=None, help="comma-separated names (default: every sequence)")
    parser.add_argument("--exclude", default="", help="comma-separated names left out")
    parser.add_argument("--marker", default="tuning", help="the doc's table to replace (default tuning)")
    parser.add_argument("--clicks", type=int, default=3, help="clicks per frame (default 3)")
    parser.add_argument("--doc", type=Path, default=None, help="Markdown file whose marked table is replaced")
    args = parser.parse_args()
    names = (args.sequences.split(",") if args.sequences
             else sorted(p.name for p in (args.davis_root / "JPEGImages" / "480p").iterdir() if p.is_dir()))
    names = [name for name in names if name not in args.exclude.split(",")]
    start = time.process_time()
    results = {name: score_sequence(args.davis_root, name, args.clicks) for name in names}
    seconds = (time.process_time() - start) / len(names)
    columns = list(next(iter(results.values())))
    lines = ["| sequence (frame 0) | " + " | ".join(f"IoU {c}" for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{100 * s[c]:.1f}" for c in columns) + " |" for name, s in results.items()]
    lines.append(f"| **mean of {len(names)}** | "
                 + " | ".join(f"**{100 * np.mean([s[c] for s in results.values()]):.1f}**" for c in columns) + " |")
    table = "\n".join(lines) + (f"\n\n{seconds:.1f} s of CPU time per frame for the box and the {args.clicks} "
                                 "click prompts together.")
    print(table)
    if args.doc is not None:
        text = args.doc.read_text()
        begin, end = f"<!-- prompt-iou:{args.marker} -->", f"<!-- /prompt-iou:{args.marker} -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            print(f"{args.doc}: no {begin} ... {end} markers", file=sys.stderr)
            return 2
        args.doc.write_text(pattern.sub(lambda _: f"{begin}\n{table}\n{end}", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
