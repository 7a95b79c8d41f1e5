"""``emvos train``: train a network from a YAML config or a preset; the logic lives in :mod:`emvos.train`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.train.config import TrainConfig, load_config, preset_names


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos train``."""
    parser = subparsers.add_parser(
        "train", help=command_summary("train"),
        description="Train an EMVOS network through the stages of a config. Checkpoints (last.pt, best.pt), "
                    "config.yaml, metrics.csv and TensorBoard logs go to the output folder. Ctrl-C or SIGTERM "
                    "saves last.pt; --resume continues exactly where the run stopped. For several processes "
                    "(GPUs), start with: torchrun --nproc_per_node N -m emvos train ...")
    parser.add_argument("--config", metavar="FILE_OR_PRESET",
                        help=f"YAML config file or preset name ({', '.join(preset_names())})")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override config values, e.g. stages.0.iterations=100 val.every=0 amp=bf16")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                        help="continue exactly from a checkpoint (default: OUT/last.pt); without --config the "
                             "checkpoint's config is used")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (same as out=DIR)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--build-cache", action="store_true",
                        help="only encode the feature caches the config's davis-cached stages read (training "
                             "builds them when missing too), then exit")
    parser.set_defaults(func=run)


def _resolve(args: argparse.Namespace) -> tuple[TrainConfig, Path | None]:
    """The effective config and the checkpoint to resume from, if any."""
    overrides = list(args.overrides)
    resume = args.resume
    if resume and "=" in resume and not Path(resume).exists():  # --resume KEY=VALUE: an override, not a path
        overrides.insert(0, resume)
        resume = ""
    if args.out is not None:
        overrides.append(f"out={args.out}")
    if args.config is None:
        if not resume:
            raise EmvosInputError("give --config FILE_OR_PRESET, or --resume PATH to continue a run")
        from emvos.train.trainer import read_training_checkpoint  # PyTorch: imported once the command runs

        config = load_config(None, overrides, base=read_training_checkpoint(resume)["train_config"])
    else:
        config = load_config(args.config, overrides)
    if resume is None:
        return config, None
    path = Path(resume) if resume else Path(config.out) / "last.pt"
    if not path.is_file():
        raise EmvosInputError(f"{path}: no checkpoint to resume from; give --resume PATH or start a new run")
    return config, path


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, and report; a stop signal exits with 128 + its number."""
    config, resume = _resolve(args)
    from emvos.train.trainer import TrainingInterrupted, build_feature_caches, train  # PyTorch, after the checks

    if args.build_cache:
        stages = build_feature_caches(config)
        print(f"feature caches of {stages} stage(s) are built" if stages else
              "no stage of this config reads cached features (data.kind davis-cached)")
        return 0
    reports = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 speaks for all
    try:
        result = train(config, resume=resume, progress=not args.quiet)
    except TrainingInterrupted as stopped:
        if reports:
            print(f"emvos: stopped by {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    if reports:
        best = f"; best validation J&F {result.best_jf:.4f}" if result.best_jf is not None else ""
        print(f"trained {result.step} iterations{best}; checkpoints in {config.out}")
    return 0
