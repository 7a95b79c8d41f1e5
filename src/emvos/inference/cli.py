"""``emvos segment``: segment the objects of a video from their masks."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from emvos.commands import command_summary
from emvos.errors import EmvosInputError, ParameterError
from emvos.inference.settings import DEFAULT_ADAPT_STEPS, DEFAULT_RESOLUTION, PRECISIONS
from emvos.io import Frame, LabelWriter, OverlayWriter, collect_masks, open_frames
from emvos.model.config import BRANCH_SETS, Bijective

if TYPE_CHECKING:
    from emvos.inference.predictor import VideoPredictor
    from emvos.onnx.predictor import OnnxPredictor

#: The flag of each predictor parameter, to word the library's :class:`ParameterError` for the command line.
PREDICTOR_FLAGS = {"checkpoint": "--checkpoint", "device": "--device", "resolution": "--resolution",
                   "bijective": "--matching bm-kernel/bm-topk", "precision": "--precision", "compile": "--compile",
                   "cuda_graphs": "--cuda-graphs", "lookahead": "--lookahead"}
#: ``--matching`` choices: the network's branch sets and the bijective test-time replacements of ``sm``.
MATCHING_CHOICES = (*BRANCH_SETS, "bm-kernel", "bm-topk")
#: ``segment --backend`` choices.
BACKENDS = ("pytorch", "onnxruntime")


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
    parser.add_argument("--adapt", type=int, default=None, metavar="STEPS",
                        help="test-time adaptation: fine-tune the decoder for STEPS steps on the first annotated "
                             f"frame before propagating (default {DEFAULT_ADAPT_STEPS}, a few seconds on a CPU; "
                             "0 turns it off: faster start, less accurate)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--onnx``, for the commands that segment whole videos (``segment``, ``batch``)."""
    parser.add_argument("--backend", choices=BACKENDS, default="pytorch",
                        help="pytorch (default), or onnxruntime: the model's ONNX export on onnxruntime's CPU "
                             "runtime, without PyTorch (pip install 'emvos[onnx]')")
    parser.add_argument("--onnx", type=Path, default=None, metavar="DIR",
                        help="with --backend onnxruntime: a folder of emvos export --onnx (default: the model's "
                             "export, made once and cached)")


def make_predictor(args: argparse.Namespace) -> VideoPredictor | OnnxPredictor:
    """The predictor of the inference and backend options (:func:`build_predictor` or :func:`build_onnx_predictor`)."""
    if args.backend == "onnxruntime":
        return build_onnx_predictor(args)
    if args.onnx is not None:
        raise EmvosInputError("--onnx DIR is run by --backend onnxruntime; add it, or leave --onnx out")
    return build_predictor(args)


def build_predictor(args: argparse.Namespace) -> VideoPredictor:
    """The predictor the inference options describe; checks ``--matching`` against the model.

    Imports PyTorch (``segment`` checks its inputs first, before it does).
    """
    import torch

    from emvos.inference.adapt import AdaptSettings
    from emvos.inference.predictor import VideoPredictor, load_network
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
                              adapt=AdaptSettings(steps=steps) if steps else None)
    except ParameterError as error:
        raise EmvosInputError(error.worded(PREDICTOR_FLAGS)) from None


def build_onnx_predictor(args: argparse.Namespace) -> OnnxPredictor:
    """The onnxruntime predictor ``--backend onnxruntime`` asks for; never imports PyTorch.

    Options of the PyTorch backend that change its computation are refused. The exported network
    runs as it is: no test-time adaptation (``--adapt``'s default does not apply; its masks are those
    of the PyTorch backend with ``--adapt 0``).
    """
    refused = [flag for flag, used in (("--device", args.device not in ("auto", "cpu")),
                                       ("--matching", args.matching is not None),
                                       ("--k1/--k2", args.k1 is not None or args.k2 is not None),
                                       ("--precision", args.precision != "fp32"), ("--compile", args.compile),
                                       ("--cuda-graphs", args.cuda_graphs), ("--lookahead", args.lookahead != 1),
                                       ("--adapt", bool(args.adapt)))
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
    try:
        from emvos.onnx.predictor import OnnxPredictor
    except ImportError as exc:
        raise EmvosInputError(f"--backend onnxruntime needs onnxruntime ({exc}); pip install 'emvos[onnx]'") from None
    if args.onnx is not None:
        return OnnxPredictor.from_onnx(args.onnx, resolution=args.resolution, threads=args.threads)
    return OnnxPredictor.from_checkpoint(args.checkpoint, resolution=args.resolution, threads=args.threads)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos segment``."""
    parser = subparsers.add_parser(
        "segment", help=command_summary("segment"),
        description="Segment the objects of a video. Give the objects' masks at the frame where each first "
                    "appears; emvos writes one indexed PNG of object ids per frame.")
    parser.add_argument("input", type=Path,
                        help="a folder of frames (jpg/png) or a video file (mp4, mov, avi, webm, mkv)")
    parser.add_argument("--mask", type=Path, nargs="+", required=True,
                        help="indexed PNG(s) of object ids (0 = background) named after the frame they annotate "
                             "(a single mask with another name annotates the first frame), or a folder of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the label PNGs")
    parser.add_argument("--overlay", type=Path, default=None, help="also write an mp4 of the masks drawn on the frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_inference_options(parser)
    add_backend_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Segment the video and print what was done."""
    done = segment_video(args)
    if done.adaptations:
        print(f"adapted to {done.adaptations} mask(s) in {done.adapt_seconds:.1f} s")
    print(f"segmented {done.frames} frames, {done.objects} objects in {done.seconds:.1f} s ({done.fps:.2f} fps) "
          f"-> {args.out}" + (f", overlay {args.overlay}" if args.overlay else ""))
    return 0


@dataclass(frozen=True)
class Segmented:
    """What :func:`segment_video` did: frames written, objects seen, seconds from the first frame to the last
    PNG, and the test-time adaptations made on the way (:attr:`VideoState.adaptations`) and their seconds."""

    frames: int
    objects: int
    seconds: float
    adaptations: int = 0
    adapt_seconds: float = 0.0

    @property
    def fps(self) -> float:
        """Frames per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def segment_video(args: argparse.Namespace, predictor: VideoPredictor | OnnxPredictor | None = None) -> Segmented:
    """Check every input of ``segment``'s ``args``, then segment the video, streaming frames in and PNGs out.

    ``predictor``: one to reuse (``emvos batch`` keeps one per worker); by default the one the
    arguments describe.
    """
    frames = open_frames(args.input)
    names = frames.names
    masks = collect_masks(args.mask, names if names is not None else [frames.frame_name(0)],
                          frame_size=frames.size)
    if args.out.exists() and not args.out.is_dir():
        raise EmvosInputError(f"{args.out}: exists and is a file; give --out a folder path")
    if args.overlay is not None and args.overlay.suffix.lower() != ".mp4":
        raise EmvosInputError(f"{args.overlay}: overlay videos are mp4 files; give a path ending in .mp4")
    if predictor is None:
        predictor = make_predictor(args)
    first_mask = masks[min(masks)][1]
    state = predictor.init_state()
    seen: set[int] = set()
    count = 0
    start = time.perf_counter()
    decoded: dict[int, Frame] = {}  # frames read ahead, until their prediction comes back

    def images() -> Iterator[np.ndarray]:
        for frame in frames:
            decoded[frame.index] = frame
            yield frame.image

    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(LabelWriter(args.out, first_mask.palette, first_mask.mode))
        overlay = (stack.enter_context(OverlayWriter(args.overlay, frames.fps, frames.size,
                                                     palette=first_mask.palette))
                   if args.overlay else None)
        bar = stack.enter_context(tqdm(total=frames.num_frames, unit="frame", disable=args.quiet, desc="segment"))
        for pred in predictor.propagate(state, images(), {index: mask.labels for index, (_, mask) in masks.items()}):
            frame = decoded.pop(pred.index)
            writer.write(frame.name, pred.labels)
            if overlay is not None:
                overlay.write(frame.image, pred.labels)
            seen.update(pred.object_ids)
            count += 1
            bar.set_postfix(fps=f"{count / (time.perf_counter() - start):.1f}", objects=len(pred.object_ids),
                            refresh=False)
            bar.update(1)
    return Segmented(count, len(seen), time.perf_counter() - start, len(state.adaptations),
                     sum(a.seconds for a in state.adaptations))
