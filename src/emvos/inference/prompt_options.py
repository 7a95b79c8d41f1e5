"""``segment``'s ``--box`` and ``--click`` options: the first mask from a box or clicks instead of ``--mask``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emvos.errors import EmvosInputError
from emvos.io import FrameSource, MaskImage
from emvos.prompts import Click, parse_box, parse_click, prompt_mask

if TYPE_CHECKING:
    from emvos.model.encoders import Encoder


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        return parse_box(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _click(text: str) -> Click:
    try:
        return parse_click(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    """Register ``--box``, ``--click``, ``--frame`` and ``--object``."""
    parser.add_argument("--box", type=_box, default=None, metavar="X0,Y0,X1,Y1",
                        help="instead of --mask: a box around the object in pixels (left, top, right, bottom)")
    parser.add_argument("--click", type=_click, action="append", default=[], metavar="X,Y[,+|-]",
                        help="instead of --mask: a point on the object (+, the default) or on the background (-); "
                             "repeat for more; with or without --box")
    parser.add_argument("--frame", type=int, default=0,
                        help="the frame (index from 0) that --box / --click point into (default 0)")
    parser.add_argument("--object", type=int, default=1, help="the id the prompted object gets (default 1)")


def has_prompt(args: argparse.Namespace) -> bool:
    """Whether ``--box`` or ``--click`` was given."""
    return args.box is not None or bool(args.click)


def check_prompt(args: argparse.Namespace, frames: FrameSource) -> None:
    """Refuse a prompt that cannot work, before any work: with ``--mask``, out of the frame or the video."""
    if args.mask:
        raise EmvosInputError("give either --mask or --box/--click, not both")
    if args.box is None and not any(click.positive for click in args.click):
        raise EmvosInputError("--click with only background points (-): add --box or a click on the object")
    if not 1 <= args.object <= 255:
        raise EmvosInputError(f"--object {args.object}: object ids are 1..255")
    if args.frame < 0 or (frames.num_frames is not None and args.frame >= frames.num_frames):
        raise EmvosInputError(f"--frame {args.frame}: {frames.path} has {frames.num_frames} frames (0.."
                              f"{(frames.num_frames or 1) - 1})")
    height, width = frames.size
    if args.box is not None:
        x0, y0, x1, y1 = args.box
        if not (0 <= min(x0, x1) and max(x0, x1) <= width and 0 <= min(y0, y1) and max(y0, y1) <= height) \
                or abs(x1 - x0) < 2 or abs(y1 - y0) < 2:
            raise EmvosInputError(f"--box {x0},{y0},{x1},{y1}: must lie inside the {width}x{height} frame "
                                  "and cover at least 2x2 pixels")
    for click in args.click:
        if not (0 <= click.x < width and 0 <= click.y < height):
            raise EmvosInputError(f"--click {click.x:g},{click.y:g}: outside the {width}x{height} frame")


def prompt_masks(args: argparse.Namespace, frames: FrameSource,
                 encoder: Encoder | None = None) -> dict[int, tuple[Path, MaskImage]]:
    """The mask the prompt gives, in :func:`emvos.io.collect_masks`'s form: ``{--frame: (path, mask)}``.

    The path is the name the frame's mask would have; ``encoder`` seeds clicks without a box.
    """
    frame = next(frame for frame in frames if frame.index == args.frame)
    mask = prompt_mask(frame.image, args.box, args.click, encoder=encoder)
    labels = np.where(mask, np.uint8(args.object), np.uint8(0))
    print(f"prompt: {int(mask.sum())} pixels of frame {frame.name} ({100 * mask.mean():.1f}%) -> object {args.object}")
    return {args.frame: (Path(f"{frame.name}.png"), MaskImage(labels=labels, palette=None, mode="P"))}
