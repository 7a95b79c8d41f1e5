"""``emvos visualize``: figures of the matching study; the logic lives in :mod:`emvos.visualize`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.inference.settings import DEFAULT_RESOLUTION
from emvos.io import check_mask_size, open_frames, read_mask
from emvos.model.config import DEFAULT_KERNEL_K, DEFAULT_TOPK_K


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos visualize`` and its figures."""
    parser = subparsers.add_parser("visualize", help=command_summary("visualize"),
                                   description="Render figures of the matching study as PNG files.")
    figures = parser.add_subparsers(title="figures", metavar="FIGURE", required=True)
    _add_matching_parser(figures)
    _add_toy_parser(figures)


def _add_matching_parser(figures: argparse._SubParsersAction) -> None:
    parser = figures.add_parser(
        "matching", help="foreground score maps of SM, BM (kernel, top-K) and EM for one frame (paper Figure 4)",
        description="Match a query frame against a reference frame and its mask with every matcher, and render "
                    "the reference with its mask, the query, and the foreground score map of surjective (SM), "
                    "bijective (BM: kernel and top-K, applied to SM at test time, so they reuse the sm branch's "
                    "keys) and equalized (EM) matching, each normalised to the same range. Needs a model trained "
                    "with sm+em for all maps; the maps of a branch the model lacks are grey.")
    parser.add_argument("input", type=Path, help="a folder of frames (jpg/png) or a video file")
    parser.add_argument("--mask", type=Path, required=True,
                        help="indexed PNG of object ids (0 = background) annotating the reference frame")
    parser.add_argument("--frame", type=int, required=True, help="index of the query frame (from 0)")
    parser.add_argument("--reference", type=int, default=0, help="index of the reference frame (default 0)")
    parser.add_argument("--object", type=int, default=None,
                        help="object id to take as the foreground (default: every object of the mask)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="emvos checkpoint or official EMVOS state dict (default: the model shipped with emvos)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                        help="shorter side frames are resized to before matching; 0 keeps the size (default 480)")
    parser.add_argument("--kernel-k", type=float, default=DEFAULT_KERNEL_K,
                        help=f"BM kernel: Gaussian std in stride-16 cells (default {DEFAULT_KERNEL_K:g}, "
                             "the paper's best K1)")
    parser.add_argument("--topk-k", type=int, default=DEFAULT_TOPK_K,
                        help=f"BM top-K: query pixels each reference pixel keeps (default {DEFAULT_TOPK_K}, "
                             "the paper's best K1)")
    parser.add_argument("--out", type=Path, required=True, help="the figure, a .png file")
    parser.set_defaults(func=run_matching)


def _add_toy_parser(figures: argparse._SubParsersAction) -> None:
    parser = figures.add_parser(
        "toy", help="the Figure-1-style toy: SM, BM and EM on five reference and five query pixels",
        description="Render the distractor toy case of the matching tests: affinity matrices and scores of "
                    "surjective, bijective and equalized matching.")
    parser.add_argument("--out", type=Path, required=True, help="the figure, a .png file")
    parser.set_defaults(func=run_toy)


def _check_out(out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise EmvosInputError(f"{out}: figures are PNG files; give --out a path ending in .png")
    if out.is_dir():
        raise EmvosInputError(f"{out}: is a folder; give --out a .png file path")


def _frames_at(source: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """Decode the frames of ``source`` at ``indices``, stopping after the last one."""
    frames = open_frames(source)
    for index in sorted(indices):
        if index < 0:
            raise EmvosInputError(f"frame index {index} is negative; frames are numbered from 0")
        if frames.num_frames is not None and index >= frames.num_frames:
            raise EmvosInputError(f"{source}: has {frames.num_frames} frames (0..{frames.num_frames - 1}); "
                                  f"frame {index} does not exist")
    found: dict[int, np.ndarray] = {}
    for frame in frames:  # leaving the loop early stops the decoding thread
        if frame.index in indices:
            found[frame.index] = frame.image
        if len(found) == len(indices):
            break
    missing = sorted(indices - set(found))
    if missing:
        raise EmvosInputError(f"{source}: ends before frame {missing[0]}")
    return found


def run_matching(args: argparse.Namespace) -> int:
    """Check the inputs, compute the score maps and write the figure."""
    import torch  # imported once the command runs, not to parse its options

    from emvos.inference.predictor import VideoPredictor
    from emvos.visualize.scores import matching_score_maps, render_matching_figure

    _check_out(args.out)
    if args.kernel_k <= 0 or args.topk_k < 1:
        raise EmvosInputError(f"--kernel-k must be > 0 and --topk-k >= 1, got {args.kernel_k:g} and {args.topk_k}")
    if args.resolution < 0:
        raise EmvosInputError(f"--resolution must be 0 (keep) or a positive shorter side, got {args.resolution}")
    if args.device != "auto" and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise EmvosInputError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    mask = read_mask(args.mask)
    if args.object is not None and args.object not in mask.object_ids:
        raise EmvosInputError(f"{args.mask}: has no object {args.object} (objects: "
                              f"{', '.join(map(str, mask.object_ids))}); pick one with --object")
    frames = _frames_at(args.input, {args.reference, args.frame})
    reference, query = frames[args.reference], frames[args.frame]
    check_mask_size(mask, reference.shape[:2], args.mask)
    foreground = mask.labels == args.object if args.object is not None else mask.labels > 0

    model = VideoPredictor.from_checkpoint(args.checkpoint, device=args.device).model
    scores = matching_score_maps(model, reference, foreground, query, kernel_k=args.kernel_k, topk_k=args.topk_k,
                                 resolution=args.resolution)
    figure = render_matching_figure(reference, foreground, query, scores, reference_index=args.reference,
                                    query_index=args.frame)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    missing = [name for name, values in scores.maps.items() if values is None]
    note = f" (no {', '.join(missing)}: the model is {model.config.matching})" if missing else ""
    print(f"wrote {args.out}: frame {args.frame} against frame {args.reference}{note}")
    return 0


def run_toy(args: argparse.Namespace) -> int:
    """Write the toy figure."""
    from emvos.visualize.toy import render_toy_figure

    _check_out(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render_toy_figure().save(args.out)
    print(f"wrote {args.out}")
    return 0
