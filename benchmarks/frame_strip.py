"""Render chosen frames of a segmented DAVIS sequence as a strip: result overlay above ground truth.

Used for the model card's failure cases: give the folder of result PNGs written by
``emvos benchmark`` (``OUT/results/<sequence>``) and the DAVIS root the sequence comes from.

Example::

    python benchmarks/frame_strip.py --davis-root ../shared/data/davis2016-train --sequence kite-walk \\
        --results runs/card/results/kite-walk --frames 10 40 70 --width 320 --out docs/figures/kite-walk.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emvos.io.writers import overlay

#: Gap between tiles and height of the caption band, in pixels.
GAP = 4
CAPTION = 16


def tile(frame: Path, labels: Path, width: int, binary: bool) -> Image.Image:
    """One overlay tile, resized to ``width`` pixels wide; ``binary`` draws every object as id 1."""
    image = np.asarray(Image.open(frame).convert("RGB"))
    mask = np.asarray(Image.open(labels))  # palette indices or grey levels; may hold no object
    if binary:
        mask = (mask > 0).astype(np.uint8)
    drawn = Image.fromarray(overlay(image, mask))
    return drawn.resize((width, round(drawn.height * width / drawn.width)), Image.Resampling.BILINEAR)


def frame_strip(davis_root: Path, sequence: str, results: Path, frames: list[int], width: int,
                binary: bool) -> Image.Image:
    """A grid with one column per frame: the result's overlay on top, the ground truth's below."""
    images = sorted((davis_root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    rows = []
    for folder in (results, davis_root / "Annotations" / "480p" / sequence):
        rows.append([tile(images[i], folder / f"{images[i].stem}.png", width, binary) for i in frames])
    height = rows[0][0].height
    canvas = Image.new("RGB", (len(frames) * (width + GAP) - GAP, 2 * (height + CAPTION) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, name) in enumerate(zip(rows, ("emvos", "ground truth"), strict=True)):
        top = r * (height + CAPTION + GAP)
        for c, (image, index) in enumerate(zip(row, frames, strict=True)):
            left = c * (width + GAP)
            draw.text((left + 2, top + 2), f"{sequence} frame {index}: {name}", fill="black")
            canvas.paste(image, (left, top + CAPTION))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--davis-root", type=Path, required=True)
    parser.add_argument("--sequence", required=True)
    parser.add_argument("--results", type=Path, required=True, help="folder of the sequence's result PNGs")
    parser.add_argument("--frames", type=int, nargs="+", required=True)
    parser.add_argument("--width", type=int, default=320, help="tile width in pixels")
    parser.add_argument("--binary", action="store_true", help="draw every object as one (DAVIS 2016)")
    parser.add_argument("--out", type=Path, required=True, help="JPEG or PNG to write")
    args = parser.parse_args()
    strip = frame_strip(args.davis_root, args.sequence, args.results, args.frames, args.width, args.binary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, quality=85)
    print(f"wrote {args.out} ({strip.width}x{strip.height})")


if __name__ == "__main__":
    main()
