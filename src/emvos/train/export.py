"""``emvos export``: turn a training checkpoint into a small model file for inference and shipping.

A training checkpoint (``best.pt``/``last.pt`` of ``emvos train``) carries the optimizer state, RNG
states and progress besides the weights. The exported file keeps what inference needs (model config
and weights; the encoder left out when its weights come with a Python package), optionally in
float16, plus the provenance: the training config, the step and the validation metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.model.checkpoint import load_model, save_checkpoint
from emvos.train.trainer import read_training_checkpoint


def export_model(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """Write the inference model of a training checkpoint to ``out`` (atomically).

    Args:
        checkpoint: a checkpoint written by ``emvos train``.
        out: destination file (``.pt``).
        half: store the weights as float16 (they load back as float32).

    Returns:
        The written path.
    """
    out = Path(out)
    if out.is_dir():
        raise EmvosInputError(f"{out}: is a folder; give the model file to write, e.g. {out / 'model.pt'}")
    data = read_training_checkpoint(checkpoint)
    model = load_model(checkpoint)
    trained = {"train_config": data["train_config"], "step": data.get("step"), "stage": data["stage_name"],
               "metrics": data["metrics"]}
    save_checkpoint(out, model, half=half, trained=trained)
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos export``."""
    parser = subparsers.add_parser(
        "export", help=command_summary("export"),
        description="Keep only what inference needs from a checkpoint of emvos train (model config and weights, "
                    "plus the training config and validation metrics for provenance); the result loads with "
                    "--checkpoint everywhere.")
    parser.add_argument("checkpoint", help="a best.pt or last.pt written by emvos train")
    parser.add_argument("out", help="model file to write")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16, half the size)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print the size of the written file."""
    out = export_model(args.checkpoint, args.out, half=not args.fp32)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
