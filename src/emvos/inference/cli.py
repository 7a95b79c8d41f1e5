"""``emvos segment``: segment the objects of a video from their masks."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from emvos.cli import command_summary
from emvos.errors import EmvosInputError
from emvos.inference.prompt_options import add_prompt_options, check_prompt, has_prompt, prompt_masks
from emvos.inference.review import ReviewLog
from emvos.inference.settings import DEFAULT_RESOLUTION, PRECISIONS
from emvos.io import LabelWriter, MaskImage, OverlayWriter, collect_masks, open_frames
from emvos.io.formats import FORMATS, SOFT_FORMATS, result_writer
from emvos.io.frame_range import frames_in_range
from emvos.io.mask_repair import OBJECT_LIMIT
from emvos.io.preflight import check_frame_sizes, check_writable, existing_results
from emvos.io.writers import greyscale_overlay_palette
from emvos.model.config import BRANCH_SETS, Bijective

if TYPE_CHECKING:
    from collections.abc import Iterator

    from emvos.inference.predictor import VideoPredictor, VideoState
    from emvos.io import Frame, FrameSource

#: ``--matching`` choices: the network's branch sets and the bijective test-time replacements of ``sm``.
MATCHING_CHOICES = (*BRANCH_SETS, "bm-kernel", "bm-topk")


def add_inference_options(parser: argparse.ArgumentParser, lookahead: bool = True) -> None:
    """Options shared by every command that runs the network (``segment``, ``benchmark``, ...);
    ``lookahead=False`` for commands that segment frame by frame as a person annotates (``app``)."""
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="emvos checkpoint or official EMVOS state dict (default: the model shipped with emvos)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                        help="resize frames so the shorter side has this length; 0 keeps the size (default 480)")
    parser.add_argument("--matching", choices=MATCHING_CHOICES, default=None,
                        help="matching branches; bm-kernel / bm-topk replace surjective matching with bijective "
                             "matching at test time (default: the branches the model was trained with)")
    parser.add_argument("--k1", type=float, default=None,
                        help="bijective K1 (first frame): kernel std in stride-16 cells or top-K count "
                             "(default: the paper's best, 32 / 128)")
    parser.add_argument("--k2", type=float, default=None,
                        help="bijective K2 (previous frame) (default: the paper's best, 32 / 16)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default), or bf16 (CPU/CUDA) / fp16 (CUDA) autocast: faster, slightly less exact")
    parser.add_argument("--compile", action="store_true",
                        help="compile the network with torch.compile (slow first frames, faster after)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="CUDA only: replay each frame's GPU work from a CUDA graph (one launch per frame)")
    if lookahead:
        parser.add_argument("--lookahead", type=int, default=1,
                            help="frames read ahead and encoded as one batch (default 1); 8 fills a GPU better")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")


def build_predictor(args: argparse.Namespace) -> VideoPredictor:
    """The predictor the inference options describe; checks ``--matching`` against the model.

    Imports PyTorch (``segment`` checks its inputs first, before it does).
    """
    import torch

    from emvos.inference.predictor import VideoPredictor, load_network
    from emvos.runtime import use_cudnn_autotuning

    use_cudnn_autotuning()
    if args.threads is not None:
        if args.threads < 1:
            raise EmvosInputError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device != "auto" and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise EmvosInputError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    model = load_network(args.checkpoint)
    matching = args.matching
    trained = model.config.matching
    if matching in BRANCH_SETS and matching != trained:
        raise EmvosInputError(f"--matching {matching}: this model was trained with {trained} matching and can "
                              f"only run {trained} (or bm-kernel / bm-topk if it has sm)")
    if (args.k1 is not None or args.k2 is not None) and not (matching or "").startswith("bm-"):
        raise EmvosInputError("--k1/--k2 set bijective matching's hyper-parameters; "
                              "add --matching bm-kernel or bm-topk")
    bijective = (Bijective.with_defaults(matching.removeprefix("bm-"), args.k1, args.k2)
                 if matching in ("bm-kernel", "bm-topk") else None)
    return VideoPredictor(model, device=args.device, resolution=args.resolution, bijective=bijective,
                          precision=args.precision, compile=args.compile, cuda_graphs=args.cuda_graphs,
                          lookahead=getattr(args, "lookahead", 1))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos segment``."""
    parser = subparsers.add_parser(
        "segment", help=command_summary("segment"),
        description="Segment the objects of a video. Give the objects' masks at the frame where each first "
                    "appears; emvos writes one indexed PNG of object ids per frame.")
    parser.add_argument("input", type=Path,
                        help="a folder of frames (jpg/png) or a video file (mp4, mov, avi, webm, mkv)")
    parser.add_argument("--mask", type=Path, nargs="+", default=[],
                        help="indexed PNG(s) of object ids (0 = background) named after the frame they annotate "
                             "(a single mask with another name annotates the first frame), or a folder of them")
    add_prompt_options(parser)
    parser.add_argument("--many-objects", action="store_true",
                        help=f"accept masks with more than {OBJECT_LIMIT} objects (else taken for a blurred mask)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the results")
    parser.add_argument("--format", choices=FORMATS, default="palette",
                        help="palette: indexed PNGs (default); binary: a 0/255 PNG per object; soft: each object's "
                             "probability as an 8-bit PNG; npz: labels and probabilities; coco: COCO RLE JSON; "
                             "yolo: YOLO segmentation polygons")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --out (else such a folder is refused)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its first missing frame (palette PNGs, "
                             "--direction forward)")
    parser.add_argument("--overlay", type=Path, default=None, help="also write an mp4 of the masks drawn on the frames")
    parser.add_argument("--direction", choices=("forward", "backward", "both"), default="forward",
                        help="forward (default); backward from the last mask; both: forward and backward from "
                             "the first mask")
    parser.add_argument("--start", type=int, default=0, help="first frame to segment (index from 0; default 0)")
    parser.add_argument("--end", type=int, default=None, help="last frame to segment (default: the last)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_inference_options(parser)
    parser.set_defaults(func=run)


def _check_outputs(args: argparse.Namespace) -> None:
    """``--out`` and ``--overlay`` can be written, and ``--out`` holds no other run's results (unless
    ``--overwrite``, which removes them); before any work."""
    check_writable(args.out, "--out")
    stale = [] if args.resume else existing_results(args.out)
    if stale and not args.overwrite:
        raise EmvosInputError(f"{args.out}: holds {len(stale)} result files of an earlier run (e.g. {stale[0].name}); "
                              "pass --overwrite to replace them, or choose another --out")
    if args.overlay is not None:
        if args.overlay.suffix.lower() != ".mp4":
            raise EmvosInputError(f"{args.overlay}: overlay videos are mp4 files; give a path ending in .mp4")
        if args.overlay.is_dir():
            raise EmvosInputError(f"{args.overlay}: is a folder; give the path of an .mp4 file for --overlay")
        check_writable(args.overlay.parent, "--overlay")
    for path in stale:
        path.unlink()


def _passes(args: argparse.Namespace, masks: list[int], last: int) -> list[tuple[bool, int, int]]:
    """``(reverse, first, last)`` frame ranges to propagate over, in order, for ``--direction`` (``masks``:
    the annotated frames). With ``both``, the backward pass starts again at the first mask's frame."""
    start, end = args.start, last if args.end is None else args.end
    if not 0 <= start <= end <= last:
        raise EmvosInputError(f"--start {start} / --end {end}: the video's frames are 0..{last}, and --start "
                              "must not be after --end")
    inside = [index for index in masks if start <= index <= end]
    if not inside:
        raise EmvosInputError(f"no mask annotates a frame in {start}..{end} (masks at {sorted(masks)}); "
                              "widen --start/--end or give a mask inside them")
    if args.direction == "forward":
        return [(False, start, end)]
    if args.direction == "backward":
        return [(True, start, end)]
    anchor = min(inside)
    return [(False, anchor, end)] + ([(True, start, anchor)] if anchor > start else [])


def _resume_point(args: argparse.Namespace, frames: FrameSource, first: int, last: int) -> int:
    """The first frame of ``first..last`` without a PNG in ``--out`` (``last + 1`` if none)."""
    if args.overwrite or args.format != "palette" or args.direction != "forward":
        raise EmvosInputError("--resume continues palette PNGs written forward; leave out --overwrite, --format "
                              "and --direction")
    index = first
    while index <= last and (args.out / f"{frames.frame_name(index)}.png").is_file():
        index += 1
    return index


def _replayed(predictor: VideoPredictor, state: VideoState, frames: Iterator[Frame],
              masks: dict[int, tuple[Path, MaskImage]], resume_at: int, out: Path,
              overlay: OverlayWriter | None) -> Iterator[Frame]:
    """``frames`` from ``resume_at`` on, after the state was rebuilt from the frames before it:
    their masks given again, the last one's written labels as the previous frame (and the overlay
    drawn from the written PNGs)."""
    for frame in frames:
        if frame.index >= resume_at:
            yield frame
            continue
        with Image.open(out / f"{frame.name}.png") as image:
            written = np.array(image)
        if written.shape != frame.image.shape[:2]:
            raise EmvosInputError(f"{out / frame.name}.png: is not the frames' size; --resume needs the results "
                                  "of a run on this video")
        if frame.index in masks:
            predictor.step(state, frame.image, masks[frame.index][1].labels)
        if frame.index == resume_at - 1:
            predictor.set_previous(state, frame.image, written)
        if overlay is not None:
            overlay.write(frame.image, written)


def run(args: argparse.Namespace) -> int:
    """Check every input, then segment the video, streaming frames in and results out."""
    frames = open_frames(args.input)
    names = frames.names
    if has_prompt(args):
        check_prompt(args, frames)
    elif not args.mask:
        raise EmvosInputError("give the objects' first masks with --mask, or point at one object with --box/--click")
    else:
        masks = collect_masks(args.mask, names if names is not None else [frames.frame_name(0)],
                              frame_size=frames.size, max_objects=None if args.many_objects else OBJECT_LIMIT)
    if args.direction != "forward" and frames.num_frames is None:
        raise EmvosInputError(f"{args.input}: the container does not say how many frames it has, so it cannot be "
                              "propagated backward; re-encode it (e.g. to mp4) or use --direction forward")
    last = (frames.num_frames or 1 << 62) - 1
    passes = _passes(args, [args.frame] if has_prompt(args) else list(masks), last)
    if args.cuda_graphs and args.format in SOFT_FORMATS:
        raise EmvosInputError(f"--format {args.format} needs probabilities, which --cuda-graphs does not keep; "
                              "leave out --cuda-graphs")
    _check_outputs(args)
    resume_at = _resume_point(args, frames, passes[0][1], passes[0][2]) if args.resume else None
    check_frame_sizes(frames)
    predictor = build_predictor(args)
    from emvos.inference.predictor import chunks

    if has_prompt(args):
        masks = prompt_masks(args, frames, predictor.model.encoder)
    first_mask = masks[min(masks)][1]
    overlay_palette = first_mask.palette if first_mask.mode == "P" else greyscale_overlay_palette()
    keep_overlay = args.overlay is not None and args.direction != "forward"  # written in frame order at the end
    held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    review = ReviewLog()
    seen: set[int] = set()
    count = 0
    total = len({i for _, lo, hi in passes for i in range(lo, hi + 1)}) if frames.num_frames is not None else None
    if resume_at is not None and total is not None:
        total -= resume_at - passes[0][1]
    written: set[int] = set()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(LabelWriter(args.out, first_mask.palette, first_mask.mode)
                                     if args.format == "palette" else result_writer(args.format, args.out))
        overlay = (stack.enter_context(OverlayWriter(args.overlay, frames.fps, frames.size, palette=overlay_palette))
                   if args.overlay else None)
        bar = stack.enter_context(tqdm(total=total, unit="frame", disable=args.quiet, desc="segment"))
        for reverse, lo, hi in passes:
            state = predictor.init_state(probabilities=not args.cuda_graphs)
            review.new_pass()
            selected = frames_in_range(frames, lo, hi, reverse=reverse)
            if resume_at is not None:
                selected = _replayed(predictor, state, selected, masks, resume_at, args.out, overlay)
            for chunk in chunks(selected, predictor.lookahead):
                given = [masks.get(frame.index) for frame in chunk]
                preds = predictor.step_many(state, [frame.image for frame in chunk],
                                            [None if g is None else g[1].labels for g in given])
                for frame, pred in zip(chunk, preds, strict=True):
                    review.add(frame.index, frame.name, pred.labels, pred.object_ids, pred.probabilities)
                    if frame.index in written:  # --direction both: the first mask's frame, done forward
                        continue
                    written.add(frame.index)
                    if args.format == "palette":
                        writer.write(frame.name, pred.labels)
                    else:
                        writer.write(frame.name, pred.labels, pred.object_ids, pred.probabilities)
                    if keep_overlay:
                        held[frame.index] = (frame.image, pred.labels)
                    elif overlay is not None:
                        overlay.write(frame.image, pred.labels)
                    seen.update(pred.object_ids)
                bar.update(len(written) - count)
                count = len(written)
                bar.set_postfix(objects=len(preds[-1].object_ids))
        for index in sorted(held):
            overlay.write(*held.pop(index))
    elapsed = time.perf_counter() - started
    review_path = review.write(args.out)
    print(f"segmented {count} frames, {len(seen)} objects in {elapsed:.1f} s ({count / elapsed:.2f} fps) "
          f"-> {args.out}" + (f", overlay {args.overlay}" if args.overlay else ""))
    print(f"review: {len(review.needs_review)} object-frames to check (lost, sudden area change, low confidence) "
          f"-> {review_path}")
    return 0
