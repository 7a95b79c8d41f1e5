"""``emvos export``: turn a training checkpoint into a small model file for inference and shipping.

A training checkpoint (``best.pt``/``last.pt`` of ``emvos train``) carries the optimizer state, RNG
states and progress besides the weights. The exported file keeps what inference needs (model config
and weights, the frozen encoder's with their origin and licence), optionally in float16 (the
encoder stays float32), plus the provenance: the training config, the step and the validation
metrics. The file needs no weights package to load.

``emvos export --onnx DIR [--checkpoint FILE]`` writes instead the per-frame step of a model (the
shipped one by default) as ONNX graphs for onnxruntime (:mod:`emvos.onnx`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emvos.commands import command_summary
from emvos.errors import EmvosInputError


def export_model(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """Write the inference model of a training checkpoint to ``out`` (atomically).

    Args:
        checkpoint: a checkpoint written by ``emvos train``.
        out: destination file (``.pt``).
        half: store the weights as float16, the frozen encoder's excepted (they load back as float32).

    Returns:
        The written path.
    """
    out = Path(out)
    if out.is_dir():
        raise EmvosInputError(f"{out}: is a folder; give the model file to write, e.g. {out / 'model.pt'}")
    from emvos.model.checkpoint import load_model, save_checkpoint  # PyTorch: not needed to parse the options
    from emvos.train.trainer import read_training_checkpoint

    data = read_training_checkpoint(checkpoint)
    model = load_model(checkpoint)
    trained = {"train_config": data["train_config"], "step": data.get("step"), "stage": data["stage_name"],
               "metrics": data["metrics"]}
    save_checkpoint(out, model, half=half, trained=trained, adapt=dict(data.get("adapt") or {}))
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos export``."""
    parser = subparsers.add_parser(
        "export", help=command_summary("export"),
        usage="emvos export CHECKPOINT OUT [--fp32]\n       emvos export --onnx DIR [--checkpoint FILE]",
        description="Keep only what inference needs from a checkpoint of emvos train (model config and weights, "
                    "plus the training config and validation metrics for provenance); the result loads with "
                    "--checkpoint everywhere. With --onnx: write a model's per-frame step as ONNX graphs, which "
                    "emvos segment --backend onnxruntime --onnx DIR runs without PyTorch.")
    parser.add_argument("checkpoint", nargs="?", help="a best.pt or last.pt written by emvos train")
    parser.add_argument("out", nargs="?", help="model file to write")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16, half the size)")
    parser.add_argument("--onnx", type=Path, default=None, metavar="DIR",
                        help="write the per-frame step as ONNX graphs to this folder instead")
    parser.add_argument("--checkpoint", dest="onnx_checkpoint", type=Path, default=None, metavar="FILE",
                        help="with --onnx: the model to export, an emvos checkpoint or the official EMVOS weights "
                             "(default: the model shipped with emvos)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print the size of the written file(s)."""
    if args.onnx is not None:
        return _run_onnx(args)
    if args.onnx_checkpoint is not None:
        raise EmvosInputError("--checkpoint FILE names the model for --onnx DIR; to slim a training checkpoint "
                              "give it as the first argument: emvos export CHECKPOINT OUT")
    if args.checkpoint is None or args.out is None:
        raise EmvosInputError("give a training checkpoint and the file to write (emvos export CHECKPOINT OUT), "
                              "or --onnx DIR")
    out = export_model(args.checkpoint, args.out, half=not args.fp32)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    """``--onnx DIR``: check the options, export, and list the written graphs."""
    if args.checkpoint is not None or args.out is not None or args.fp32:
        raise EmvosInputError("--onnx DIR takes the model as --checkpoint FILE and no other argument "
                              "(emvos export --onnx DIR [--checkpoint FILE])")
    if args.onnx.exists() and not args.onnx.is_dir():
        raise EmvosInputError(f"{args.onnx}: exists and is a file; give --onnx a folder path")
    checkpoint = args.onnx_checkpoint
    if checkpoint is not None and not checkpoint.is_file():
        raise EmvosInputError(f"{checkpoint}: no such file; give --checkpoint an emvos checkpoint or leave it out "
                              "for the shipped model")
    try:
        from emvos.onnx.export import export_onnx
    except ImportError as exc:
        raise EmvosInputError(f"--onnx needs the onnx package ({exc}); pip install 'emvos[onnx]'") from None
    from emvos.onnx.files import GRAPHS

    out = export_onnx(args.onnx, checkpoint)
    sizes = ", ".join(f"{name} {(out / name).stat().st_size / 1024:.0f} KiB" for name in GRAPHS)
    print(f"wrote {out}: {sizes}")
    return 0
