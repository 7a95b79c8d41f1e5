"""``emvos segment``: segment the objects of a video from their masks, or from a box or clicks."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tqdm import tqdm

from emvos.commands import command_summary
from emvos.errors import EmvosInputError, ParameterError
from emvos.inference.prompt_options import add_prompt_options, check_prompt, has_prompt, prompt_masks
from emvos.inference.review import ReviewLog
from emvos.inference.settings import (
    DEFAULT_ADAPT_STEPS,
    DEFAULT_REACH,
    DEFAULT_RESOLUTION,
    DEFAULT_ZOOM_SIZE,
    PRECISIONS,
    check_checkpoint,
)
from emvos.io import LabelWriter, OverlayWriter, collect_masks, greyscale_overlay_palette, open_frames
from emvos.io.formats import FORMATS, SOFT_FORMATS, ResultWriter, result_writer
from emvos.io.frame_range import FrameRange, frames_in_range
from emvos.io.mask_repair import OBJECT_LIMIT
from emvos.io.masks import read_label_png
from emvos.io.preflight import check_frame_sizes, check_writable, existing_results
from emvos.model.config import BRANCH_SETS, Bijective

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np

    from emvos.inference.adapt import AdaptReport
    from emvos.inference.predictor import VideoPredictor, VideoState
    from emvos.io import Frame, FrameSource, MaskImage
    from emvos.onnx.predictor import OnnxPredictor

    Predictor = VideoPredictor | OnnxPredictor

#: The flag of each predictor parameter, to word the library's :class:`ParameterError` for the command line.
PREDICTOR_FLAGS = {"checkpoint": "--checkpoint", "device": "--device", "resolution": "--resolution",
                   "bijective": "--matching bm-kernel/bm-topk", "precision": "--precision", "compile": "--compile",
                   "cuda_graphs": "--cuda-graphs", "lookahead": "--lookahead", "threads": "--threads",
                   "zoom": "--zoom", "reach": "--reach"}
#: ``--matching`` choices: the network's branch sets and the bijective test-time replacements of ``sm``.
MATCHING_CHOICES = (*BRANCH_SETS, "bm-kernel", "bm-topk")
#: ``segment --backend`` choices.
BACKENDS = ("pytorch", "onnxruntime")


def add_inference_options(parser: argparse.ArgumentParser, lookahead: bool = True) -> None:
    """Options shared by every command that runs the network (``segment``, ``benchmark``, ...);
    ``lookahead=False`` for commands that segment frame by frame as a person annotates (``app``)."""
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="emvos checkpoint, official EMVOS state dict, or a shipped model: emvos-lite "
                             "(the default, fast) or emvos-base (more accurate, slower)")
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
    parser.add_argument("--adapt", type=int, default=None, metavar="STEPS",
                        help="test-time adaptation: fine-tune the decoder for STEPS steps on the first annotated "
                             f"frame before propagating (default {DEFAULT_ADAPT_STEPS}, a few seconds on a CPU; "
                             "0 turns it off: faster start, less accurate; the onnxruntime backend does not adapt)")
    parser.add_argument("--zoom", type=int, default=None, metavar="SIZE",
                        help="small objects are also tracked in a window of their own, cut from the frame around "
                             f"them and resized to SIZE pixels a side (default {DEFAULT_ZOOM_SIZE}; 0 turns it off; "
                             "each small object costs one more, smaller, encoder pass per frame; the onnxruntime "
                             "backend does not zoom)")
    parser.add_argument("--reach", type=float, default=None, metavar="R",
                        help="look for each object only within R times its size around where it was in the "
                             f"previous frame, so that it cannot jump to a look-alike across the frame (default "
                             f"{DEFAULT_REACH}; 0 looks everywhere; a lost object is looked for everywhere; the "
                             "onnxruntime backend looks everywhere)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--onnx``, for the commands that segment whole videos (``segment``, ``batch``)."""
    parser.add_argument("--backend", choices=BACKENDS, default="pytorch",
                        help="pytorch (default), or onnxruntime: the model's ONNX export on onnxruntime's CPU "
                             "runtime, without PyTorch (pip install 'emvos[onnx]')")
    parser.add_argument("--onnx", type=Path, default=None, metavar="DIR",
                        help="with --backend onnxruntime: a folder of emvos export --onnx (default: the model's "
                             "export, made once and cached)")


def check_backend_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, what ``--backend onnxruntime`` cannot do: the PyTorch backend's options
    that change its computation, ``--onnx`` with ``--checkpoint``, or onnxruntime not installed; and
    ``--onnx`` without it. The exported network runs as it is: no test-time adaptation, no zoomed
    windows and no reach (the defaults of ``--adapt``, ``--zoom`` and ``--reach`` do not apply; its
    masks are those of the PyTorch backend with ``--adapt 0 --zoom 0 --reach 0``)."""
    if args.backend != "onnxruntime":
        if args.onnx is not None:
            raise EmvosInputError("--onnx DIR is run by --backend onnxruntime; add it, or leave --onnx out")
        return
    refused = [flag for flag, used in (("--device", args.device not in ("auto", "cpu")),
                                       ("--matching", args.matching is not None),
                                       ("--k1/--k2", args.k1 is not None or args.k2 is not None),
                                       ("--precision", args.precision != "fp32"), ("--compile", args.compile),
                                       ("--cuda-graphs", args.cuda_graphs), ("--lookahead", args.lookahead != 1),
                                       ("--adapt", bool(args.adapt)), ("--zoom", bool(args.zoom)),
                                       ("--reach", bool(args.reach)))
               if used]
    if refused:
        raise EmvosInputError(f"{', '.join(refused)}: PyTorch backend options; leave them out with "
                              "--backend onnxruntime (it runs the exported fp32 model on the CPU)")
    if args.onnx is not None and args.checkpoint is not None:
        raise EmvosInputError("--onnx DIR already holds a model; give either --onnx or --checkpoint")
    if args.threads is not None and args.threads < 1:
        raise EmvosInputError(f"--threads must be at least 1, got {args.threads}")
    if args.resolution < 0:
        raise EmvosInputError(f"--resolution must be 0 (keep) or a positive shorter side, got {args.resolution}")
    if importlib.util.find_spec("onnxruntime") is None:
        raise EmvosInputError("--backend onnxruntime needs onnxruntime; pip install 'emvos[onnx]'")


def make_predictor(args: argparse.Namespace) -> Predictor:
    """The predictor of the inference and backend options (:func:`build_predictor` or :func:`build_onnx_predictor`)."""
    check_backend_options(args)
    return build_onnx_predictor(args) if args.backend == "onnxruntime" else build_predictor(args)


def build_predictor(args: argparse.Namespace) -> VideoPredictor:
    """The predictor the inference options describe; checks ``--matching`` against the model.

    Imports PyTorch (``segment`` checks its inputs first, before it does).
    """
    import torch

    from emvos.inference.predictor import VideoPredictor, adapt_settings, load_network
    from emvos.inference.zoom import zoom_settings
    from emvos.runtime import use_cudnn_autotuning

    use_cudnn_autotuning()
    if args.threads is not None:
        if args.threads < 1:
            raise EmvosInputError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device != "auto" and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise EmvosInputError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    steps = DEFAULT_ADAPT_STEPS if args.adapt is None else args.adapt
    if steps < 0:
        raise EmvosInputError(f"--adapt must be 0 (off) or a number of steps, got {steps}")
    try:
        zoom = zoom_settings(args.zoom)
    except ValueError:
        raise EmvosInputError(f"--zoom must be 0 (off) or a window side of at least 64 pixels, "
                              f"got {args.zoom}") from None
    reach = DEFAULT_REACH if args.reach is None else args.reach
    if not 0 <= reach < float("inf"):
        raise EmvosInputError(f"--reach must be 0 (look everywhere) or a positive share of an object's size, "
                              f"got {args.reach}")
    try:
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
                              lookahead=getattr(args, "lookahead", 1),
                              adapt=adapt_settings(args.checkpoint, steps),
                              zoom=zoom, reach=reach or None)
    except ParameterError as error:
        raise EmvosInputError(error.worded(PREDICTOR_FLAGS)) from None


def build_onnx_predictor(args: argparse.Namespace) -> OnnxPredictor:
    """The onnxruntime predictor ``--backend onnxruntime`` asks for (:func:`check_backend_options`);
    never imports PyTorch."""
    check_backend_options(args)
    from emvos.onnx.predictor import OnnxPredictor

    try:
        if args.onnx is not None:
            return OnnxPredictor.from_onnx(args.onnx, resolution=args.resolution, threads=args.threads)
        return OnnxPredictor.from_checkpoint(args.checkpoint, resolution=args.resolution, threads=args.threads)
    except ParameterError as error:
        raise EmvosInputError(error.worded(PREDICTOR_FLAGS)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos segment``."""
    parser = subparsers.add_parser(
        "segment", help=command_summary("segment"),
        description="Segment the objects of a video. Give the objects' masks at the frame where each first "
                    "appears; emvos writes one indexed PNG of object ids per frame.")
    _add_arguments(parser)
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """``segment``'s arguments (:func:`add_parser`, :func:`segment_arguments`)."""
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
    add_backend_options(parser)


def segment_arguments(input: Path, masks: Sequence[Path], out: Path) -> argparse.Namespace:
    """What ``emvos segment INPUT --mask MASKS --out OUT`` parses to: every other option at its default
    (``emvos batch`` sets its own inference options on it for each video)."""
    parser = argparse.ArgumentParser(prog="emvos segment")
    _add_arguments(parser)
    args = parser.parse_args(["--out", str(out), "--", str(input)])
    args.mask = list(masks)
    return args


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


def _rebuild(predictor: VideoPredictor, state: VideoState, frames: Iterator[Frame],
             masks: dict[int, tuple[Path, MaskImage]], resume_at: int, out: Path,
             overlay: OverlayWriter | None) -> None:
    """Rebuild the state of an interrupted run from ``frames``, those before ``resume_at``: their
    masks given again, the last one's written labels as the previous frame (and the overlay drawn
    from the written PNGs)."""
    for frame in frames:
        written = read_label_png(out / f"{frame.name}.png", what="result mask").labels
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
    """Segment the video and print what was done."""
    done = segment_video(args)
    if done.adaptations:
        print(f"adapted to {len(done.adaptations)} mask(s) in {sum(a.seconds for a in done.adaptations):.1f} s")
    print(f"segmented {done.frames} frames, {done.objects} objects in {done.seconds:.1f} s ({done.fps:.2f} fps) "
          f"-> {args.out}" + (f", overlay {args.overlay}" if args.overlay else ""))
    print(f"review: {done.to_review} object-frames to check (lost, sudden area change, low confidence) "
          f"-> {done.review}")
    return 0


@dataclass(frozen=True)
class Segmented:
    """What :func:`segment_video` did.

    Attributes:
        frames: frames written.
        objects: objects seen.
        seconds: from the first frame to the last result written.
        review: the review file (:mod:`emvos.inference.review`).
        to_review: the object-frames it flags.
        adaptations: what each test-time adaptation did (PyTorch backend).
    """

    frames: int
    objects: int
    seconds: float
    review: Path
    to_review: int
    adaptations: tuple[AdaptReport, ...] = ()

    @property
    def fps(self) -> float:
        """Frames per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def segment_video(args: argparse.Namespace, predictor: Predictor | None = None) -> Segmented:
    """Check every input of ``segment``'s ``args``, then segment the video, streaming frames in and
    results out.

    ``predictor``: one to reuse (``emvos batch`` keeps one per worker); by default the one the
    arguments describe (:func:`make_predictor`).
    """
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
    check_backend_options(args)
    check_checkpoint(args.checkpoint)
    if args.resume and args.backend != "pytorch":
        raise EmvosInputError("--resume sets the model's previous frame from a written PNG, which the onnxruntime "
                              "backend cannot; leave out --backend onnxruntime or --resume")
    keeps_probabilities = not args.cuda_graphs and args.backend == "pytorch"
    if args.format in SOFT_FORMATS and not keeps_probabilities:
        raise EmvosInputError(f"--format {args.format} needs probabilities, which "
                              + ("--cuda-graphs does not keep; leave out --cuda-graphs" if args.cuda_graphs else
                                 "--backend onnxruntime does not give; use --backend pytorch"))
    _check_outputs(args)
    resume_at = _resume_point(args, frames, passes[0][1], passes[0][2]) if args.resume else None
    check_frame_sizes(frames)
    if predictor is None:
        predictor = make_predictor(args)
    if has_prompt(args):  # clicks without a box are seeded by the encoder's features (the shipped one's on onnx)
        masks = prompt_masks(args, frames, None if args.backend == "onnxruntime"
                             else cast("VideoPredictor", predictor).model.encoder)
    first_mask = masks[min(masks)][1]
    overlay_palette = first_mask.palette if first_mask.mode == "P" else greyscale_overlay_palette()
    keep_overlay = args.overlay is not None and args.direction != "forward"  # written in frame order at the end
    held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    review = ReviewLog()
    seen: set[int] = set()
    adaptations: list[AdaptReport] = []
    total = len({i for _, lo, hi in passes for i in range(lo, hi + 1)}) if frames.num_frames is not None else None
    if resume_at is not None and total is not None:
        total -= resume_at - passes[0][1]
    written: set[int] = set()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer: LabelWriter | ResultWriter = (LabelWriter(args.out, first_mask.palette, first_mask.mode)
                                              if args.format == "palette" else result_writer(args.format, args.out))
        stack.enter_context(writer)
        overlay = (stack.enter_context(OverlayWriter(args.overlay, frames.fps, frames.size, palette=overlay_palette))
                   if args.overlay else None)
        bar = stack.enter_context(tqdm(total=total, unit="frame", disable=args.quiet, desc="segment"))
        for reverse, lo, hi in passes:
            state: Any = predictor.init_state(probabilities=keeps_probabilities)  # the predictor's own state type
            review.new_pass()
            if resume_at is not None:  # forward, one pass: the state rebuilt from the results written before
                _rebuild(cast("VideoPredictor", predictor), state, frames_in_range(frames, lo, resume_at - 1),
                         masks, resume_at, args.out, overlay)
                lo = resume_at
            clip = FrameRange(frames, lo, hi)  # the clip's frame i is the video's frame lo + i
            given = {index - lo: mask.labels for index, (_, mask) in masks.items() if lo <= index <= hi}
            for pred in predictor.propagate(state, clip, given, direction="backward" if reverse else "forward"):
                frame = clip.take(pred.index)
                review.add(frame.index, frame.name, pred.labels, pred.object_ids, pred.probabilities)
                if frame.index in written:  # --direction both: the first mask's frame, done forward
                    continue
                written.add(frame.index)
                if isinstance(writer, LabelWriter):
                    writer.write(frame.name, pred.labels)
                else:
                    writer.write(frame.name, pred.labels, pred.object_ids, pred.probabilities)
                if keep_overlay:
                    held[frame.index] = (frame.image, pred.labels)
                elif overlay is not None:
                    overlay.write(frame.image, pred.labels)
                seen.update(pred.object_ids)
                bar.set_postfix(objects=len(pred.object_ids), refresh=False)
                bar.update(1)
            adaptations += state.adaptations
        for index in sorted(held):  # held only with an overlay
            if overlay is not None:
                overlay.write(*held.pop(index))
    elapsed = time.perf_counter() - started
    review_path = review.write(args.out)
    return Segmented(len(written), len(seen), elapsed, review_path, len(review.needs_review), tuple(adaptations))
