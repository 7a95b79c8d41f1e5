"""Typed training configuration: dataclasses, YAML presets with strict keys, ``key.sub=value`` overrides.

A configuration is a :class:`TrainConfig`. It is written as YAML whose keys are the dataclass
fields (nested for the nested dataclasses, a list for the stages); a key the dataclasses do not have
is an error that names it. Command-line overrides address any field with a dotted path and are
coerced to the field's type::

    stages.0.iterations=2000        # a stage by index ...
    stages.video.lr=5e-5            # ... or by name
    val.sequences=[bear,boat]       # lists and mappings in YAML flow syntax
    model.decoder_widths=null

Presets ship in ``emvos/configs/*.yaml`` and are named without the extension (``lite-cpu``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from emvos.errors import EmvosInputError
from emvos.io.files import write_text_atomically
from emvos.model.config import ModelConfig

AmpMode = Literal["none", "bf16", "fp16"]


@dataclass
class DataConfig:
    """Where a stage's training clips come from.

    Attributes:
        kind: a registered dataset kind (:func:`emvos.train.datasets.dataset_kinds`): ``static``
            (pseudo-videos from still images), ``coco``, ``davis``, ``ytvos``, ``synthetic`` or ``distractors``.
        root: the dataset's folder; relative paths are relative to the working directory.
        options: keyword arguments of the dataset's constructor beyond root, clip length, crop
            size and seed; checked against the constructor when training starts.
    """

    kind: str
    root: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageConfig:
    """One training stage: a dataset and how long and how to train on it.

    Each stage starts a fresh Adam optimizer (as the official trainer does between pre-training
    and main training).

    Attributes:
        name: unique name (used in logs, and to address the stage in overrides).
        data: the training clips.
        iterations: optimizer steps of this stage.
        batch_size: clips per step, over all processes together.
        clip_len: frames per clip (the first is given, the others are predicted).
        crop: side of the square training crops, a multiple of the encoder's stride.
        lr: Adam's learning rate (constant).
        select_best: whether a validation score of this stage may become ``best.pt``.
        ema: when positive, the decay of an exponential moving average of the trainable weights,
            started from the weights the stage begins with and ramped up as ``(1 + n) / (10 + n)``
            over the first ``n`` updates (:class:`emvos.train.trainer.WeightAverage`; 0: none).
            Validation, ``best.pt`` and the checkpoints' model weights are then the average;
            training goes on from the optimizer's own weights, which the checkpoints keep beside it.
    """

    name: str
    data: DataConfig
    iterations: int
    batch_size: int
    clip_len: int
    crop: int = 384
    lr: float = 1e-4
    select_best: bool = True
    ema: float = 0.0


@dataclass
class OptimConfig:
    """Adam's settings other than the learning rate (which each stage sets)."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class ValConfig:
    """Validation on held-out sequences of a DAVIS-layout folder (never a benchmark's test split).

    The sequences are left out of every training dataset read from the same folder.

    Attributes:
        root: folder with ``JPEGImages/480p/<seq>`` and ``Annotations/480p/<seq>``.
        sequences: the held-out sequences.
        every: validate every this many iterations (and at the end); 0 disables validation.
        resolution: shorter side the frames are segmented at (0 keeps their size).
        max_frames: segment only the first this many frames of each sequence (0: all).
    """

    root: str = ""
    sequences: list[str] = field(default_factory=list)
    every: int = 0
    resolution: int = 480
    max_frames: int = 0


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.yaml`` beside its checkpoints.

    Attributes:
        model: the network's architecture.
        stages: the training stages, run in order.
        optim: Adam's settings.
        val: validation on held-out sequences.
        init: weights a new run starts from instead of a fresh initialisation: a checkpoint or exported
            weight file (its model must be ``model``), or ``shipped`` for the model inside the package;
            empty: a fresh network. ``em_logit_std`` does not rescale initialised weights.
        swap_attach_p: probability that a batch gets swap-and-attach augmentation.
        em_logit_std: when positive, a new run rescales the equalized branch's key projection so its
            logits have this standard deviation on the first training clips
            (:meth:`EMVOS.calibrate_equalized_keys`); 0 keeps the Kaiming initialisation of the
            official code.
        out: output folder (checkpoints, ``config.yaml``, ``metrics.csv``, ``tb/``).
        seed: seeds the network's initialisation, the datasets and the augmentation coins.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        workers: data-loading processes per training process (0 loads in the main process).
        threads: CPU threads for PyTorch (0: PyTorch's default).
        amp: autocast precision of the forward pass: ``none``, ``bf16`` or ``fp16`` (with loss scaling).
        channels_last: run convolutions in channels-last memory format.
        compile: compile the frozen encoder with ``torch.compile`` (a minute or two of compilation per
            crop size, then a faster forward pass; the weights and checkpoints are unchanged).
        log_every: iterations per logged row (loss and IoU are averaged over them).
        save_every: iterations between saves of ``last.pt`` (0: only at validations and the end).
        snapshot_every: iterations between kept snapshots ``step-NNNNNNN.pt`` (0: none).
        tensorboard: write TensorBoard scalars to ``out/tb`` (needs ``emvos[train]``).
        adapt: test-time adaptation settings recommended for the trained network, beside
            :class:`~emvos.inference.adapt.AdaptSettings`' defaults (e.g. ``{lr: 2.0e-4}``); written
            into its checkpoints and exported model files, where inference takes them up.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    stages: list[StageConfig] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    init: str = ""
    swap_attach_p: float = 0.2
    em_logit_std: float = 0.0
    out: str = "runs/emvos"
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    threads: int = 0
    amp: AmpMode = "none"
    channels_last: bool = False
    compile: bool = False
    log_every: int = 20
    save_every: int = 500
    snapshot_every: int = 0
    tensorboard: bool = True
    adapt: dict[str, Any] = field(default_factory=dict)

    @property
    def total_iterations(self) -> int:
        """Iterations of all stages together."""
        return sum(s.iterations for s in self.stages)

    def stage_start(self, index: int) -> int:
        """Global iteration at which stage ``index`` starts."""
        return sum(s.iterations for s in self.stages[:index])

    def validate(self) -> None:
        """Check the values (not the data on disk); raise :class:`EmvosInputError` on the first problem.

        ``adapt``'s values, untyped in the file, are brought to the types of their settings.
        """
        from emvos.inference.adapt import AdaptSettings
        from emvos.train.datasets import dataset_kinds  # the registry; it imports this module for types only

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise EmvosInputError(f"config: {message}")

        need(bool(self.stages), "stages: at least one training stage is needed")
        names = [s.name for s in self.stages]
        for i, stage in enumerate(self.stages):
            where = f"stages.{i}"
            need(bool(stage.name) and not stage.name.isdigit(), f"{where}.name: give the stage a name that is "
                                                                f"not a number, got {stage.name!r}")
            need(names.count(stage.name) == 1, f"{where}.name: stage name {stage.name!r} is used twice")
            need(stage.data.kind in dataset_kinds(), f"{where}.data.kind: unknown dataset kind "
                                                     f"{stage.data.kind!r}; choose one of {', '.join(dataset_kinds())}")
            need(stage.iterations >= 1, f"{where}.iterations: must be at least 1, got {stage.iterations}")
            need(stage.batch_size >= 1, f"{where}.batch_size: must be at least 1, got {stage.batch_size}")
            need(stage.clip_len >= 2, f"{where}.clip_len: a clip needs at least 2 frames, got {stage.clip_len}")
            need(stage.crop >= 16, f"{where}.crop: must be at least 16, got {stage.crop}")
            need(stage.lr > 0, f"{where}.lr: must be positive, got {stage.lr}")
            need(0.0 <= stage.ema < 1.0, f"{where}.ema: must be 0 (off) or a decay in (0, 1), got {stage.ema}")
        need(0.0 <= self.swap_attach_p <= 1.0, f"swap_attach_p: must lie in [0, 1], got {self.swap_attach_p}")
        need(self.em_logit_std >= 0, f"em_logit_std: must be 0 (off) or positive, got {self.em_logit_std}")
        need(self.em_logit_std == 0 or "em" in self.model.branches,
             "em_logit_std: calibrates the equalized branch, which this model does not have")
        need(all(0.0 <= b < 1.0 for b in self.optim.betas), f"optim.betas: must lie in [0, 1), got {self.optim.betas}")
        need(self.optim.eps > 0 and self.optim.weight_decay >= 0,
             "optim: eps must be positive and weight_decay non-negative")
        if self.val.every > 0:
            need(bool(self.val.root), "val.root: validation is on (val.every > 0) but has no DAVIS-layout folder; "
                                      "set val.root or val.every=0")
            need(bool(self.val.sequences), "val.sequences: validation is on (val.every > 0) but holds out no "
                                           "sequence; list some or set val.every=0")
        need(self.val.every >= 0, f"val.every: must be 0 (off) or positive, got {self.val.every}")
        need(self.val.resolution >= 0, f"val.resolution: must be 0 (keep) or positive, got {self.val.resolution}")
        need(self.val.max_frames == 0 or self.val.max_frames >= 3,
             f"val.max_frames: must be 0 (all) or at least 3 (first and last frames are not scored), "
             f"got {self.val.max_frames}")
        for key in ("workers", "threads", "save_every", "snapshot_every"):
            need(getattr(self, key) >= 0, f"{key}: must not be negative, got {getattr(self, key)}")
        need(self.log_every >= 1, f"log_every: must be at least 1, got {self.log_every}")
        need(self.seed >= 0, f"seed: must not be negative, got {self.seed}")
        need(bool(self.out), "out: give an output folder")
        settings = build_dataclass(AdaptSettings, self.adapt, "adapt")  # typed and checked as its fields
        self.adapt = {key: _plain(getattr(settings, key)) for key in self.adapt}
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith(("cuda", "mps")),
             f"device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able form (lists for tuples), the inverse of :func:`config_from_dict`."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# -- conversion of plain data to the dataclasses -------------------------------------------------------


@dataclass(frozen=True)
class _Text:
    """An override's value as typed on the command line, parsed according to the field it sets."""

    text: str


_NONE_WORDS = {"null", "none", "~"}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise EmvosInputError("training configs are YAML files and need PyYAML; "
                              "install the training extras: pip install 'emvos[train]'") from None
    return yaml


def _describe(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` (YAML data, or an override's :class:`_Text`) as the type ``hint``; errors name ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(value, _Text):
        if hint is str:
            return value.text
        if origin in (typing.Union, types.UnionType) and type(None) in args and value.text.lower() in _NONE_WORDS:
            return None
        value = _yaml().safe_load(value.text) if value.text.strip() else ""
    wrong = EmvosInputError(f"config: {where}: expected {_describe(hint)}, got {value!r}")
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise wrong
        return build_dataclass(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arm, where)
            except EmvosInputError:
                continue
        raise wrong
    if origin is Literal:
        if value not in args:
            raise wrong
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise wrong
        return [_convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise wrong
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value))
        if len(value) != len(args):
            raise EmvosInputError(f"config: {where}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_convert(v, a, f"{where}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise wrong
        return {k: _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    return _convert_scalar(value, hint, wrong)


def _convert_scalar(value: Any, hint: Any, wrong: EmvosInputError) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).lower() in _TRUE_WORDS | _FALSE_WORDS:
            return str(value).lower() in _TRUE_WORDS
        raise wrong
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise wrong from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise wrong from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise wrong
    if hint is str:
        if isinstance(value, str):
            return value
        raise wrong
    raise TypeError(f"config field type {hint!r} is not supported")


def build_dataclass(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """An instance of dataclass ``cls`` from ``data``, strict about keys and types (the config files' reader)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in known:
            raise EmvosInputError(f"config: unknown key {prefix}{key!s} (known keys here: {', '.join(known)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise EmvosInputError(f"config: missing key {prefix}{f.name}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # ModelConfig checks its own values
        raise EmvosInputError(f"config: {where or cls.__name__}: {exc}") from exc


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from plain data (a parsed YAML file).

    Raises:
        EmvosInputError: an unknown or missing key, a value of the wrong type, or an invalid value.
    """
    config = build_dataclass(TrainConfig, data, "")
    config.validate()
    return config


# -- files, presets and overrides ----------------------------------------------------------------------


def preset_names() -> list[str]:
    """Names of the presets shipped in ``emvos/configs``."""
    folder = resources.files("emvos") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_config_file(source: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file, or of a preset given by name.

    Raises:
        EmvosInputError: neither a file nor a preset, unreadable, or not a YAML mapping.
    """
    path = Path(source)
    if path.is_file():
        try:
            text, label = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise EmvosInputError(f"{path}: cannot read the config ({reason}); pass a readable YAML file") from None
    else:
        name = str(source).removesuffix(".yaml")
        preset = resources.files("emvos") / "configs" / f"{name}.yaml"
        if "/" in name or not preset.is_file():
            raise EmvosInputError(f"{source}: no such config file or preset; presets: {', '.join(preset_names())}")
        text, label = preset.read_text(encoding="utf-8"), f"preset {name}"
    yaml = _yaml()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise EmvosInputError(f"{label}: not valid YAML{at}; fix the file") from None
    if not isinstance(data, dict):
        raise EmvosInputError(f"{label}: a config file must be a YAML mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``key.sub=value`` overrides in raw config data (in place; also returned).

    Path parts address mapping keys, list indices, or stages by name. Values stay text until
    :func:`config_from_dict` converts them to the type of the field they set.

    Raises:
        EmvosInputError: an override that is not ``key=value`` or addresses no list element.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise EmvosInputError(f"override {override!r}: expected key.sub=value, e.g. stages.0.iterations=100")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, ".".join(parts[:depth]), override)
                if last:
                    node[index] = _Text(text)
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = _Text(text)
                else:
                    if not isinstance(node.get(part), dict | list):
                        node[part] = {}
                    node = node[part]
            else:
                raise EmvosInputError(f"override {override!r}: {'.'.join(parts[:depth])} is a single value")
    return data


def _list_index(items: list[Any], part: str, where: str, override: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise EmvosInputError(f"override {override!r}: {where} has {len(items)} entries (0..{len(items) - 1})")
        return int(part)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    raise EmvosInputError(f"override {override!r}: {where} has no entry named {part!r}")


def load_config(source: str | Path | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> TrainConfig:
    """The configuration of a file or preset (or of ``base`` data), with overrides applied.

    Args:
        source: a YAML file or a preset name; ``None`` uses ``base``.
        overrides: ``key.sub=value`` strings.
        base: raw config data (e.g. the one stored in a checkpoint) when no ``source`` is given.

    Raises:
        EmvosInputError: any problem with the file, the keys, the overrides or the values.
    """
    if source is not None:
        data = read_config_file(source)
    elif base is not None:
        data = _plain(dict(base))
    else:
        raise EmvosInputError("no training config; give --config FILE or a preset name")
    return config_from_dict(apply_overrides(data, overrides))


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the effective configuration as YAML (the format :func:`load_config` reads)."""
    write_text_atomically(path, _yaml().safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None))
