"""The ``emvos`` subcommands: which module registers each, and its one-line help.

Both the dispatcher (:mod:`emvos.cli`) and the subcommands' modules read this table, so neither
imports the other.
"""

from __future__ import annotations

#: Each subcommand: the module that registers it, and its one-line help (:func:`command_summary`),
#: in the order ``emvos --help`` lists them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("emvos.inference.cli", "segment objects through a video, given their masks"),
    "batch": ("emvos.batch.cli", "segment many videos (a CSV manifest or a folder), locally or on Ray workers"),
    "eval": ("emvos.eval.cli", "score result masks on DAVIS (J&F, as the official toolkit)"),
    "benchmark": ("emvos.eval.benchmark", "segment a DAVIS split, score it and measure speed and memory"),
    "speed": ("emvos.eval.speed_cli",
              "time emvos against the hardware's peak and the official code; memory over video length"),
    "ytvos": ("emvos.eval.ytvos", "segment a YouTube-VOS 2018/2019 split and write the submission zip"),
    "train": ("emvos.train.cli", "train a network (the paper's recipe, or a preset / YAML config)"),
    "export": ("emvos.train.export",
               "write a training checkpoint's model as a small inference file, or a model as ONNX graphs"),
    "synth": ("emvos.data.cli", "generate synthetic benchmarks (DAVIS layout)"),
    "visualize": ("emvos.visualize.cli", "figures of the matching study (score maps, toy)"),
    "study": ("emvos.study.cli", "reproduce the paper's studies with our own runs (matching: Table 5)"),
    "app": ("emvos.app.cli", "annotate, propagate and correct masks in the browser"),
}


def command_summary(name: str) -> str:
    """The one-line help of subcommand ``name``, which its module passes to ``add_parser``."""
    return SUBCOMMANDS[name][1]
