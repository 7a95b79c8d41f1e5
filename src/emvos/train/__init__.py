"""Training (paper §3.7): typed configs and presets, the stage-wise trainer, validation, ``emvos train``.

Example::

    from emvos.train import load_config, train

    config = load_config("lite-cpu", ["stages.0.iterations=100"])
    result = train(config)                 # or: torchrun --nproc_per_node N -m emvos train --config ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvos.lazy import lazy_exports

if TYPE_CHECKING:
    from emvos.train.config import (
        DataConfig,
        OptimConfig,
        StageConfig,
        TrainConfig,
        ValConfig,
        apply_overrides,
        config_from_dict,
        load_config,
        preset_names,
        read_config_file,
        save_config,
    )
    from emvos.train.datasets import (
        IterationSampler,
        SyntheticClips,
        build_dataset,
        check_data_root,
        dataset_kinds,
        register_dataset,
    )
    from emvos.train.trainer import (
        Trainer,
        TrainingInterrupted,
        TrainResult,
        read_training_checkpoint,
        train,
    )
    from emvos.train.validation import HeldOutValidator, ValidationResult

__all__ = [
    "DataConfig",
    "HeldOutValidator",
    "IterationSampler",
    "OptimConfig",
    "StageConfig",
    "SyntheticClips",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "ValConfig",
    "ValidationResult",
    "apply_overrides",
    "build_dataset",
    "check_data_root",
    "config_from_dict",
    "dataset_kinds",
    "load_config",
    "preset_names",
    "read_config_file",
    "read_training_checkpoint",
    "register_dataset",
    "save_config",
    "train",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "emvos.train.config": ("DataConfig", "OptimConfig", "StageConfig", "TrainConfig", "ValConfig", "apply_overrides",
                           "config_from_dict", "load_config", "preset_names", "read_config_file", "save_config"),
    "emvos.train.datasets": ("IterationSampler", "SyntheticClips", "build_dataset", "check_data_root",
                             "dataset_kinds", "register_dataset"),
    "emvos.train.trainer": ("Trainer", "TrainingInterrupted", "TrainResult", "read_training_checkpoint", "train"),
    "emvos.train.validation": ("HeldOutValidator", "ValidationResult"),
})
