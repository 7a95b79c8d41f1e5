"""Typed configuration of the matching study: test sets, seeds, the bijective grid and the training recipe.

A study config is YAML (see ``emvos/study/configs/matching.yaml``) read with the same strict rules
as training configs: every key must be a field of the dataclasses below, values are converted to
the field's type, and ``key.sub=value`` overrides address any field, the training recipe included::

    seeds=[0,1,2,3]                      # a fourth seed
    train.stages.real.iterations=600     # the training recipe, as in `emvos train`
    real.frames=30 distractors.test.videos=12

In the training recipe (``train``, a :class:`emvos.train.TrainConfig`), ``${out}`` in a stage's
``data.root`` stands for the study's output folder, where the distractor training set is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from emvos.errors import EmvosInputError
from emvos.model.config import BRANCH_SETS
from emvos.train.config import TrainConfig, apply_overrides, build_dataclass, read_config_file

if TYPE_CHECKING:
    from emvos.data.synthetic import DistractorSettings

#: Placeholder for the study's output folder in the training recipe's data roots.
OUT_PLACEHOLDER = "${out}"
#: The network variants a study can train (``model.branches`` of each).
Variant = Literal["sm", "em", "sm+em"]


@dataclass
class RealSet:
    """Real sequences held out from every training stage and segmented at the end.

    Attributes:
        root: DAVIS-layout folder (``JPEGImages/480p``, ``Annotations/480p``).
        held_out: the sequences; they are left out of every training dataset read from ``root``
            and never used during training (no validation on them either).
        year: how they are scored: 2016 (binarised, one object) or 2017 (object ids).
        frames: frames kept per sequence (0: all), after ``frame_step``.
        frame_step: keep every this many frames from the first.
        resolution: shorter side the frames are segmented at (0 keeps their size).
    """

    root: str
    held_out: list[str]
    year: int = 2016
    frames: int = 0
    frame_step: int = 1
    resolution: int = 480


@dataclass
class DistractorSplit:
    """One set of distractor videos (:func:`emvos.data.synthetic.write_distractor_benchmark`)."""

    videos: int
    frames: int
    seed: int


@dataclass
class DistractorSets:
    """The distractor benchmark's training and test sets, written to disk once.

    Attributes:
        train: videos of the training set (``${out}/data/distractors-train``).
        test: videos of the test set (``${out}/data/distractors-test``); another seed than ``train``.
        size: frame size, ``WIDTHxHEIGHT``.
        difficulty: 0..1, every knob at once (:meth:`DistractorSettings.from_difficulty`).
        knobs: settings to use instead of the difficulty's (``similarity``, ``distractors``, ...).
        texture_source: folder of photos to cut textures from ("" for procedural textures). A DAVIS
            root's held-out sequences are left out, so no held-out frame is seen in training.
        resolution: shorter side the test videos are segmented at (0 keeps their size).
    """

    train: DistractorSplit
    test: DistractorSplit
    size: str = "854x480"
    difficulty: float = 0.5
    knobs: dict[str, Any] = field(default_factory=dict)
    texture_source: str = ""
    resolution: int = 480

    def settings(self) -> DistractorSettings:
        """The generator's knobs."""
        from emvos.data.synthetic import DistractorSettings  # imports PyTorch: not needed to read a config

        try:
            return DistractorSettings.from_difficulty(self.difficulty, **self.knobs)
        except ValueError as exc:
            raise EmvosInputError(f"study config: distractors: {exc}") from None

    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        from emvos.data.synthetic import parse_size

        return parse_size(self.size, "size")


@dataclass
class BijectiveGrid:
    """The ``(K1, K2)`` pairs SM networks are evaluated with, bijective matching replacing SM at test time.

    Attributes:
        kernel: kernel standard deviations in stride-16 cells (against the first, the previous frame).
        topk: query pixels each reference pixel keeps.
    """

    kernel: list[tuple[float, float]] = field(default_factory=list)
    topk: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class StudyConfig:
    """Everything the matching study needs; the budget is in ``train`` and the test sets.

    Attributes:
        seeds: training seeds; every variant is trained once per seed (same data for the same seed).
        variants: networks to train: ``sm``, ``em``, ``sm+em`` (``model.branches`` of each).
        real: held-out real sequences.
        distractors: the distractor benchmark.
        bijective: the K1/K2 grid of SM -> BM.
        train: the training recipe of every run (seed, branches, output folder and held-out
            sequences are set per run).
        threads: CPU threads for PyTorch while segmenting the test sets (0: PyTorch's default).
    """

    seeds: list[int]
    variants: list[Variant]
    real: RealSet
    distractors: DistractorSets
    train: TrainConfig
    bijective: BijectiveGrid = field(default_factory=BijectiveGrid)
    threads: int = 0

    def validate(self) -> None:
        """Check the values (not the data on disk); raise :class:`EmvosInputError` on the first problem."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise EmvosInputError(f"study config: {message}")

        need(bool(self.seeds), "seeds: give at least one seed (three or more for a standard deviation)")
        need(len(set(self.seeds)) == len(self.seeds) and min(self.seeds) >= 0,
             f"seeds: must be distinct and non-negative, got {self.seeds}")
        need(bool(self.variants) and len(set(self.variants)) == len(self.variants),
             f"variants: give distinct variants among {', '.join(BRANCH_SETS)}, got {self.variants}")
        real = self.real
        need(bool(real.root) and bool(real.held_out), "real: give root and the held_out sequences")
        need(real.year in (2016, 2017), f"real.year: 2016 or 2017, got {real.year}")
        need(real.frames == 0 or real.frames >= 3,
             f"real.frames: 0 (all) or at least 3 (first and last frames are not scored), got {real.frames}")
        need(real.frame_step >= 1, f"real.frame_step: must be at least 1, got {real.frame_step}")
        dist = self.distractors
        for name, split in (("train", dist.train), ("test", dist.test)):
            need(split.videos >= 1 and split.frames >= 3 and split.seed >= 0,
                 f"distractors.{name}: needs videos >= 1, frames >= 3 and a non-negative seed, got {asdict(split)}")
        need(dist.train.seed != dist.test.seed, "distractors: the train and test sets need different seeds")
        dist.settings()
        dist.frame_size()
        for name in ("kernel", "topk"):
            pairs = getattr(self.bijective, name)
            need(all(k1 > 0 and k2 > 0 for k1, k2 in pairs), f"bijective.{name}: K1 and K2 must be positive")
            need(len(set(pairs)) == len(pairs), f"bijective.{name}: a (K1, K2) pair is listed twice")
        need(min(real.resolution, dist.resolution, self.threads) >= 0,
             "real.resolution, distractors.resolution and threads must not be negative")
        need(bool(self.train.stages), "train.stages: give the training recipe's stages")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able form (lists for tuples)."""
        data = asdict(self)
        data["train"] = self.train.to_dict()
        data["bijective"] = {k: [list(p) for p in v] for k, v in data["bijective"].items()}
        return data


def study_preset_names() -> list[str]:
    """Names of the study configs shipped in ``emvos/study/configs``."""
    folder = resources.files("emvos.study") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_study_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """The study config of a YAML file or a shipped preset (``matching``), with ``key.sub=value`` overrides.

    Raises:
        EmvosInputError: no such file or preset, an unknown or missing key, a wrong value.
    """
    path = Path(source)
    if not path.is_file():
        name = str(source).removesuffix(".yaml")
        preset = resources.files("emvos.study") / "configs" / f"{name}.yaml"
        if "/" in name or not preset.is_file():
            raise EmvosInputError(f"{source}: no such study config file or preset; presets: "
                                  f"{', '.join(study_preset_names())}")
        path = Path(str(preset))
    data = apply_overrides(read_config_file(path), overrides)
    config = build_dataclass(StudyConfig, data, "")  # the training configs' strict, typed reader
    config.validate()
    return config
