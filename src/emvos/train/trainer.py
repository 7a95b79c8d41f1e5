"""The training loop (paper §3.7): clip unroll, cross-entropy on every predicted frame, stages, resume.

Each iteration reads one global batch of clips (sample indices ``t * batch_size + j``, see
:class:`emvos.train.datasets.IterationSampler`), applies swap-and-attach with probability
``swap_attach_p`` (one coin per batch, drawn from a generator seeded by seed, stage and iteration),
unrolls the clips through the network (frame 0 given, frames ``1..L-1`` predicted from the first and
the previous frame, the previous mask being the network's own soft prediction), and takes one Adam
step on the mean cross-entropy over all predicted frames. Clips whose first-frame mask is empty (an
object fully covered by swap-and-attach, say) are left out of the loss; a batch with no usable clip
is skipped without an optimizer step. Stages whose dataset serves cached encoder features (kind
``davis-cached``) unroll those features instead of frames, without swap-and-attach; their caches are
built when the trainer starts, before the encoder is compiled. The encoder stays frozen and the whole network stays in
evaluation mode (frozen BatchNorm). A stage with ``ema`` keeps a moving average of the trainable
weights (:class:`WeightAverage`), which is what it validates and saves as the model.

With ``N`` processes (``torchrun``), each takes a contiguous ``1/N`` of every global batch,
swap-and-attach pairs clips across processes exactly as in one process, and each process scales its
loss so that DDP's gradient average is the gradient of the global mean: ``N`` processes compute the
same losses as one, up to floating-point summation order.

Resuming is exact: everything an iteration depends on is either a function of (seed, stage,
iteration) — the data and the augmentation coin — or saved in ``last.pt`` — weights, Adam's state,
the weight average, the loss scaler, and the RNG states of Python, NumPy and PyTorch. A run
interrupted and resumed therefore computes the same losses, bit for bit on the same machine and
thread count, as one that never stopped (on GPUs, up to the non-determinism of some CUDA kernels).
"""

from __future__ import annotations

import dataclasses
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate

from emvos.data import swap_and_attach
from emvos.data.features import NamedEncoder
from emvos.errors import EmvosInputError
from emvos.inference.aggregate import EPS, unroll_aggregated
from emvos.inference.predictor import resolve_device
from emvos.inference.settings import checkpoint_file
from emvos.model.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from emvos.model.encoders import build_encoder
from emvos.model.encoders.base import Features
from emvos.model.network import EMVOS
from emvos.train.config import StageConfig, TrainConfig, save_config
from emvos.train.datasets import IterationSampler, build_dataset, check_data_root, data_roots, uses_encoder
from emvos.train.distributed import DistContext, distributed
from emvos.train.monitor import Monitor
from emvos.train.validation import HeldOutValidator

#: Keys of the per-iteration augmentation seeds (with the run's seed, the stage and the iteration).
_SWAP_KEY = 1
#: Repeats of a stop signal within this many seconds are taken as one (torchrun forwards the terminal's).
_REPEAT_WINDOW_S = 2.0
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT or SIGTERM, after saving ``last.pt``.

    Attributes:
        signum: the signal.
        step: iterations completed (the checkpoint's).
        checkpoint: the saved ``last.pt``.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}; saved {checkpoint}; "
                         f"continue with: emvos train --resume {checkpoint}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        step: iterations completed, over all stages.
        finished: whether every stage is done.
        best_jf: best validation J&F so far (``None`` before any eligible validation).
        losses: training loss of each iteration this call ran, by step (1-based); skipped batches
            have none.
    """

    step: int
    finished: bool
    best_jf: float | None
    losses: dict[int, float]


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that is a function of the non-negative integers ``keys``."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def capture_rng() -> dict[str, Any]:
    """The RNG states of Python, NumPy and PyTorch (CPU and CUDA), as plain types and tensors.

    NumPy's state is kept as lists and ints so that ``torch.load(weights_only=True)`` reads it.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {
        "python": [version, list(internal), python_gauss],
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, python_gauss = state["python"]
    random.setstate((version, tuple(internal), python_gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :class:`Trainer` (weights, optimizer, progress, RNG, config).

    Raises:
        EmvosInputError: unreadable, or not a training checkpoint (e.g. a shipped model).
    """
    data = read_checkpoint(path)
    needed = ("optimizer", "stage", "stage_name", "iteration", "rng", "metrics", "train_config")
    if data.get("format") != FORMAT or any(key not in data for key in needed):
        raise EmvosInputError(f"{path}: not an emvos training checkpoint (no optimizer state or progress); "
                              "resume from a last.pt written by emvos train")
    return data


def init_weights(init: str) -> Path | None:
    """The weight file :attr:`TrainConfig.init` names (``shipped``: the package's model), or ``None`` when empty.

    Raises:
        EmvosInputError: the file does not exist.
    """
    if not init:
        return None
    path = checkpoint_file(None if init == "shipped" else init)
    if not path.is_file():
        raise EmvosInputError(f"{init}: no such weight file to start from; set init to a checkpoint, "
                              "'shipped' (the package's default model), a shipped model's name "
                              "(emvos-lite, emvos-base) or '' (a fresh network)")
    return path


def stage_dataset(config: TrainConfig, index: int, encoder: NamedEncoder | None = None) -> Dataset:
    """The training dataset of stage ``index`` of ``config``.

    The held-out validation sequences are left out of datasets read from the validation folder.
    ``encoder`` (the network's frozen encoder) is passed to kinds that read its cached features.
    """
    stage, val = config.stages[index], config.val
    same_folder = bool(val.root) and any(root and Path(val.root).resolve() == Path(root).resolve()
                                         for root in data_roots(stage.data))
    return build_dataset(stage.data, stage.clip_len, stage.crop, derive_seed(config.seed, index),
                         exclude=val.sequences if same_folder else (),
                         encoder=encoder if uses_encoder(stage.data.kind) else None)


def build_feature_caches(config: TrainConfig) -> int:
    """Encode the feature caches that the config's stages read (kind ``davis-cached``), without training.

    Uses the config's encoder with its ImageNet weights (those a new run starts from and keeps,
    frozen) on the config's device, built after seeding PyTorch's generator with the config's seed
    as a run does (so an encoder without stored weights gets a run's random weights); caches
    already built are reused.

    Returns:
        The number of stages whose cache is now complete.

    Raises:
        EmvosInputError: invalid config or data.
    """
    config.validate()
    stages = [i for i, stage in enumerate(config.stages) if uses_encoder(stage.data.kind)]
    if not stages:
        return 0
    for index in stages:
        check_data_root(config.stages[index].data)
    torch.manual_seed(config.seed)
    module = build_encoder(config.model.encoder).to(resolve_device(config.device))
    encoder = NamedEncoder(config.model.encoder, module)
    for index in stages:
        stage_dataset(config, index, encoder)
    return len(stages)


def _worker_init(worker_id: int) -> None:
    """Loader workers leave interrupts to the training process, which stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _StopSignals:
    """Turns SIGINT and SIGTERM into a request to stop after the current iteration.

    A further SIGINT (more than :data:`_REPEAT_WINDOW_S` later) aborts at once with
    :class:`KeyboardInterrupt`.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if not self.signum:
            self.signum, self._when = signum, time.monotonic()
            print(f"\nemvos: {signal.Signals(signum).name}: stopping after this iteration and saving last.pt "
                  "(press Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)
        elif signum == signal.SIGINT and time.monotonic() - self._when > _REPEAT_WINDOW_S:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class WeightAverage:
    """An exponential moving average of named parameters (a stage's ``ema``).

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``: the average follows the
    weights closely at first, so that it is not anchored to the weights it started from.

    Args:
        params: the parameters, by name; the average starts from their values.
        decay: the decay once ramped up, in (0, 1).
        updates: updates already made (when resuming).
    """

    def __init__(self, params: dict[str, Tensor], decay: float, updates: int = 0) -> None:
        self.decay, self.updates = decay, updates
        self.shadow = {name: p.detach().clone() for name, p in params.items()}

    def decay_at(self, update: int) -> float:
        """The decay that update number ``update`` (1-based) applies."""
        return min(self.decay, (1 + update) / (10 + update))

    @torch.no_grad()
    def update(self, params: dict[str, Tensor]) -> None:
        """Move the average towards the parameters' current values."""
        self.updates += 1
        decay = self.decay_at(self.updates)
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach(), 1 - decay)


def _clip_input(batch: dict[str, Any], device: torch.device) -> Tensor | Features:
    """A batch's frames ``(B, L, 3, S, S)``, or its cached features (levels ``(B, L, C, S/s, S/s)``), on ``device``."""
    if "features" in batch:
        return Features(*(level.to(device, non_blocking=True) for level in batch["features"]))
    return batch["frames"].to(device, non_blocking=True)


def _clip_scores(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-clip cross-entropy and foreground IoU.

    Args:
        logits: ``(B, L - 1, 2, H, W)`` predicted frames.
        target: ``(B, L - 1, H, W)`` int64 masks in {0, 1}.

    Returns:
        ``(B,)`` mean cross-entropy over the clip's pixels, and ``(B,)`` mean over its frames of the
        IoU of the arg-max foreground with the ground truth (1 where both are empty).
    """
    b = logits.shape[0]
    loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(0, 1), reduction="none")
    with torch.no_grad():
        pred = logits.argmax(dim=2).bool()
        gt = target.bool()
        inter = (pred & gt).flatten(2).sum(-1).float()
        union = (pred | gt).flatten(2).sum(-1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return loss.view(b, -1).mean(1), iou.mean(1)


class Trainer:
    """Trains an :class:`EMVOS` network through the stages of a :class:`TrainConfig`.

    Args:
        config: the run's configuration (validated here).
        resume: a ``last.pt`` (or any checkpoint this trainer wrote) to continue exactly from.
        dist: this process's place among data-parallel processes (see :func:`train`).
        progress: show a progress bar (rank 0).

    Raises:
        EmvosInputError: invalid config, missing data, an output folder that already holds a run
            (without ``resume``), or a checkpoint that does not fit the config.
    """

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, dist: DistContext | None = None,
                 progress: bool = True) -> None:
        config.validate()
        self.config = config
        self.dist = dist or DistContext()
        self.progress = progress
        self.out = Path(config.out)
        for stage in config.stages:
            check_data_root(stage.data)
            if stage.batch_size % self.dist.world_size:
                raise EmvosInputError(f"stage {stage.name}: batch_size {stage.batch_size} does not split over "
                                      f"{self.dist.world_size} processes; use a multiple of the process count")
        self.validator = (HeldOutValidator(config.val.root, config.val.sequences, config.val.resolution,
                                           config.val.max_frames) if config.val.every else None)
        if resume is None and (self.out / "last.pt").exists():
            raise EmvosInputError(f"{self.out}: already holds a run (last.pt); continue it with --resume "
                                  "or choose another --out")
        if resume is None and not config.init:
            from emvos.model.encoders.efficientnet import VARIANTS, require_package_weights

            if config.model.encoder in VARIANTS:  # a fresh run starts from the ImageNet weights: fail before any work
                require_package_weights(VARIANTS[config.model.encoder])
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = self._device()
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)

        checkpoint = read_training_checkpoint(resume) if resume is not None else None
        source = resume if resume is not None else init_weights(config.init)
        self.model: EMVOS = (load_model(source) if source is not None else EMVOS(config.model)).to(self.device).eval()
        if resume is None and source is not None and self.model.config == dataclasses.replace(
                config.model, key_scales=self.model.config.key_scales) and \
                set(self.model.config.key_scales) < set(config.model.key_scales):
            self.model = self.model.with_key_scales(config.model.key_scales).eval()  # keys read more scales
        if source is not None and self.model.config != config.model:
            raise EmvosInputError(f"{source}: the checkpoint's model {self.model.config.to_dict()} differs from the "
                                  f"config's model {config.model.to_dict()}")
        for stage in config.stages:
            if stage.crop % self.model.stride:
                raise EmvosInputError(f"stage {stage.name}: crop {stage.crop} is not a multiple of the "
                                      f"{config.model.encoder} encoder's stride {self.model.stride}")
        self._datasets: dict[int, Dataset] = {}
        self._build_feature_caches()
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if config.compile:
            self.model.encoder.compile()  # in place: parameter names and checkpoints stay the same
        self.trainable = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        self.params = list(self.trainable.values())
        self.network: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            self.network = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        self.stage = 0
        self.iteration = 0
        self.optimizer = self._new_optimizer(config.stages[0])
        self.average: WeightAverage | None = None
        self.best_jf: float | None = None
        self.best_step: int | None = None
        self.last_val: dict[str, float] = {}
        self._resumed_from = resume
        if checkpoint is not None:
            self._restore(checkpoint, Path(resume))
        elif config.em_logit_std > 0 and not config.init:
            self._calibrate_equalized_keys()
        if self.average is None:
            self._start_average()

    # -- set-up ------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        wanted = self.config.device
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise EmvosInputError(f"device {wanted}: CUDA is not available on this machine; use device=cpu")
        if self.dist.world_size > 1:
            return self.dist.device
        return resolve_device(wanted)

    def _new_optimizer(self, stage: StageConfig) -> torch.optim.Adam:
        o = self.config.optim
        return torch.optim.Adam(self.params, lr=stage.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)

    def _restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        stages = self.config.stages
        index, iteration = int(checkpoint["stage"]), int(checkpoint["iteration"])
        if index >= len(stages) or stages[index].name != checkpoint["stage_name"]:
            raise EmvosInputError(f"{path}: saved in stage {index} ({checkpoint['stage_name']!r}), which the "
                                  f"config does not have at that position; resume with the run's config")
        if iteration > stages[index].iterations:
            raise EmvosInputError(f"{path}: saved at iteration {iteration} of stage {stages[index].name!r}, "
                                  f"beyond its {stages[index].iterations} iterations in the config")
        self.stage, self.iteration = index, iteration
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = stages[index].lr
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        metrics = checkpoint["metrics"]
        self.best_jf, self.best_step = metrics.get("best_jf"), metrics.get("best_step")
        self.last_val = dict(metrics.get("val") or {})
        restore_rng(checkpoint["rng"])
        averaged = "training_weights" in checkpoint  # then the model's weights are the average
        if averaged != (stages[index].ema > 0) and iteration < stages[index].iterations:
            raise EmvosInputError(f"{path}: saved {'with' if averaged else 'without'} a weight average in stage "
                                  f"{stages[index].name!r}, whose ema in the config is {stages[index].ema}; "
                                  "resume with the run's config")
        if averaged:  # training goes on from the optimizer's own weights
            if stages[index].ema > 0:
                self.average = WeightAverage(self.trainable, stages[index].ema, int(checkpoint["ema_updates"]))
            with torch.no_grad():
                for name, value in checkpoint["training_weights"].items():
                    self.trainable[name].copy_(value)

    def _start_average(self) -> None:
        """Start averaging the weights if the current stage asks for it (and stop otherwise)."""
        stage = self.config.stages[self.stage]
        self.average = WeightAverage(self.trainable, stage.ema) if stage.ema > 0 else None

    @contextmanager
    def _averaged_weights(self) -> Iterator[dict[str, Tensor] | None]:
        """Within the block the model holds the averaged weights (when the stage averages).

        Yields:
            The optimizer's own trainable weights, restored after the block; ``None`` when the
            stage does not average.
        """
        if self.average is None:
            yield None
            return
        live = {name: p.detach().clone() for name, p in self.trainable.items()}
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(self.average.shadow[name])
        try:
            yield live
        finally:
            with torch.no_grad():
                for name, p in self.trainable.items():
                    p.copy_(live[name])

    def _build_feature_caches(self) -> None:
        """Build, before the encoder is compiled, the datasets of stages that read cached encoder features.

        Their caches are encoded now when missing (rank 0 encodes; the other processes wait, then open).
        """
        for index, stage in enumerate(self.config.stages):
            if uses_encoder(stage.data.kind):
                if self.dist.is_main:
                    self.stage_dataset(index)
                self.dist.barrier()
                self.stage_dataset(index)

    def _calibrate_equalized_keys(self) -> None:
        """Scale the new network's equalized keys on the first clips of stage 0 (frames 0 and 1)."""
        dataset = self.stage_dataset(0)
        batch = default_collate([dataset[k] for k in range(self.config.stages[0].batch_size)])
        clips = _clip_input(batch, self.device)
        if isinstance(clips, Tensor):
            refs, queries = clips[:, 0], clips[:, 1]
        else:
            refs, queries = (Features(*(level[:, t].float() for level in clips)) for t in (0, 1))
        factor = self.model.calibrate_equalized_keys(refs, queries, self.config.em_logit_std)
        if self.dist.is_main:
            print(f"equalized keys rescaled by {factor:.4g} (logit std {self.config.em_logit_std})", file=sys.stderr)

    @property
    def step(self) -> int:
        """Iterations completed over all stages."""
        return self.config.stage_start(self.stage) + self.iteration

    def stage_dataset(self, index: int) -> Dataset:
        """The training dataset of stage ``index``, built once.

        The held-out validation sequences are left out of datasets read from the validation folder.
        """
        if index not in self._datasets:
            encoder = NamedEncoder(self.config.model.encoder, self.model.encoder)
            self._datasets[index] = stage_dataset(self.config, index, encoder)
        return self._datasets[index]

    def _loader(self, stop: int) -> DataLoader:
        stage, workers = self.config.stages[self.stage], self.config.workers
        sampler = IterationSampler(stage.batch_size, self.iteration, stop, self.dist.rank, self.dist.world_size)
        return DataLoader(self.stage_dataset(self.stage), batch_sampler=sampler, num_workers=workers,
                          pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init if workers else None,
                          generator=torch.Generator().manual_seed(self.config.seed))

    # -- training ----------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> TrainResult:
        """Train until every stage is done, or until ``until`` iterations in all, then save ``last.pt``.

        Raises:
            TrainingInterrupted: on SIGINT/SIGTERM, after saving ``last.pt``.
        """
        cfg = self.config
        total = cfg.total_iterations
        target = total if until is None else min(until, total)
        if self.dist.is_main:
            save_config(cfg, self.out / "config.yaml")
        monitor = Monitor(self.out, self.step, total, self.dist.is_main, self.progress, cfg.tensorboard)
        losses: dict[int, float] = {}
        try:
            with _StopSignals() as stop:
                monitor.message(self._summary())
                while self.step < target:
                    stage = cfg.stages[self.stage]
                    if self.iteration == stage.iterations:
                        self.stage, self.iteration = self.stage + 1, 0
                        self.optimizer = self._new_optimizer(cfg.stages[self.stage])
                        self._start_average()
                        continue
                    for batch in self._loader(min(stage.iterations, self.iteration + target - self.step)):
                        loss_sum, iou_sum, valid = self._train_step(batch)
                        loss_sum, iou_sum, stopping = self.dist.sum([loss_sum, iou_sum, float(stop.signum)])
                        self.iteration += 1
                        if valid:
                            losses[self.step] = loss_sum / valid
                        monitor.iteration(loss_sum / valid if valid else None, iou_sum / valid if valid else None)
                        self._after_step(stage, monitor, stopping=bool(stopping), target=target)
                        if stopping:
                            raise TrainingInterrupted(stop.signum or signal.SIGTERM, self.step, self.out / "last.pt")
        finally:
            monitor.close()
        return TrainResult(self.step, self.step == total, self.best_jf, losses)

    def _summary(self) -> str:
        cfg = self.config
        where = f"{self.device}" + (f" x {self.dist.world_size} processes" if self.dist.world_size > 1 else "")
        text = (f"emvos train: {cfg.total_iterations} iterations in {len(cfg.stages)} stage(s) "
                f"({', '.join(s.name for s in cfg.stages)}), {sum(p.numel() for p in self.params):,} trainable "
                f"parameters, {cfg.model.encoder} encoder, on {where}; writing to {self.out}")
        if self._resumed_from is not None:
            text += (f"\nresuming {self._resumed_from} at step {self.step} (stage "
                     f"{cfg.stages[self.stage].name}, iteration {self.iteration})")
        return text

    def _train_step(self, batch: dict[str, Tensor]) -> tuple[float, float, float]:
        """One optimizer step on this process's share of a batch.

        Args:
            batch: ``frames (b, L, 3, S, S)`` (or ``features``: cached encoder features of the frames,
                which skip swap-and-attach) and ``masks (b, L, S, S)`` of this process.

        Returns:
            This process's sums of per-clip loss and IoU over usable clips, and the number of usable
            clips (non-empty first-frame mask) over all processes; 0 means the batch was skipped.
        """
        cfg = self.config
        frames = _clip_input(batch, self.device)
        masks = batch["masks"].to(self.device, non_blocking=True)
        joint = bool(masks.amax() > 1)  # object ids (``joint`` datasets): tracked together
        if cfg.swap_attach_p > 0 and isinstance(frames, Tensor) and not joint:
            coin = torch.Generator().manual_seed(derive_seed(cfg.seed, self.stage, self.iteration, _SWAP_KEY))
            if torch.rand((), generator=coin).item() < cfg.swap_attach_p:
                frames, masks = self._swap_and_attach(frames, masks, coin)
        usable = masks[:, 0].flatten(1).any(dim=1).float()
        valid = self.dist.sum([usable.sum().item()])[0]
        if valid == 0:
            return 0.0, 0.0, 0.0
        if cfg.channels_last and isinstance(frames, Tensor):  # each clip[:, t]: a channels-last (B, 3, S, S) view
            frames = frames.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        with torch.autocast(self.device.type, dtype=_AMP_DTYPES.get(cfg.amp), enabled=cfg.amp != "none"):
            if joint:
                clip_loss, clip_iou = self._joint_scores(frames, masks)
            else:
                clip_loss, clip_iou = _clip_scores(self.network(frames, masks[:, 0]), masks[:, 1:])
        # Gradients are averaged over processes, so each scales its sum by world_size / valid.
        loss = (clip_loss * usable).sum() * (self.dist.world_size / valid)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.average is not None:
            self.average.update(self.trainable)
        return (clip_loss.detach() * usable).sum().item(), (clip_iou * usable).sum().item(), valid

    def _joint_scores(self, frames: Tensor | Features, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Per-clip loss and IoU of clips whose objects are tracked together, as inference tracks them.

        Each clip is unrolled with every object of its first frame (:func:`unroll_aggregated`); the
        loss is the cross-entropy of the aggregated distribution over background and objects, the
        IoU the mean over objects and predicted frames of each object's arg-max IoU.

        Args:
            frames: ``(B, L, 3, S, S)`` clips, or their cached features.
            masks: ``(B, L, S, S)`` object ids, ``1..O`` for the objects of frame 0 (0 elsewhere).

        Returns:
            ``(B,)`` losses and ``(B,)`` IoUs (clips without an object: 0 and 1).
        """
        if self.dist.world_size > 1:
            raise EmvosInputError("clips with several objects tracked together (joint datasets) train in one "
                                  "process: start emvos train without torchrun, or set the datasets' joint: false")
        losses, ious = [], []
        for b in range(masks.shape[0]):
            count = int(masks[b, 0].amax())
            if count == 0:
                losses.append(masks.new_zeros((), dtype=torch.float32))
                ious.append(masks.new_ones((), dtype=torch.float32))
                continue
            ids = torch.arange(1, count + 1, device=masks.device).view(-1, 1, 1)
            first = (masks[b, 0][None] == ids).float()  # (O, S, S)
            if isinstance(frames, Tensor):
                embeddings = (self.model.embed(frames[b:b + 1, t]) for t in range(frames.shape[1]))
            else:
                embeddings = (self.model.embed_features(Features(*(level[b:b + 1, t].float() for level in frames)))
                              for t in range(frames.s16.shape[1]))
            probs = unroll_aggregated(self.model, embeddings, first)  # (L - 1, O + 1, S, S)
            target = masks[b, 1:]
            losses.append(F.nll_loss(probs.clamp_min(EPS).log(), target))
            with torch.no_grad():
                pred = probs.argmax(dim=1)  # (L - 1, S, S)
                p, g = pred[:, None] == ids[None], target[:, None] == ids[None]  # (L - 1, O, S, S)
                inter, union = (p & g).flatten(2).sum(-1).float(), (p | g).flatten(2).sum(-1).float()
                ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean())
        return torch.stack(losses), torch.stack(ious)

    def _swap_and_attach(self, frames: Tensor, masks: Tensor, coin: torch.Generator) -> tuple[Tensor, Tensor]:
        """:func:`emvos.data.swap_and_attach` over the global batch, whatever the number of processes.

        Clip ``j`` of the global batch receives the object of clip ``j - 1``; a process's first clip
        receives it from the previous process's last clip.

        Args:
            frames: ``(b, L, 3, S, S)`` this process's clips.
            masks: ``(b, L, S, S)`` their masks.
            coin: the batch's generator.
        """
        if self.dist.world_size == 1:
            return swap_and_attach(frames, masks, coin)
        source = (self.dist.rank - 1) % self.dist.world_size
        prev_frames = self.dist.all_gather(frames[-1:])[source]
        prev_masks = self.dist.all_gather(masks[-1:])[source]
        frames, masks = swap_and_attach(torch.cat([prev_frames, frames]), torch.cat([prev_masks, masks]), coin)
        return frames[1:], masks[1:]

    def _after_step(self, stage: StageConfig, monitor: Monitor, stopping: bool, target: int) -> None:
        """Log, validate and save as the schedule says after iteration :attr:`step`."""
        cfg, step = self.config, self.step
        final = step == cfg.total_iterations
        if step % cfg.log_every == 0 or final or stopping or step == target:
            monitor.train_row(step, stage.name, stage.lr)
        validate = cfg.val.every > 0 and (step % cfg.val.every == 0 or final)
        if validate:
            self._validate(stage, monitor)
        snapshot = cfg.snapshot_every > 0 and step % cfg.snapshot_every == 0
        if snapshot:
            self._save(f"step-{step:07d}.pt")
        save = validate or final or stopping or step == target or (cfg.save_every > 0 and step % cfg.save_every == 0)
        if save:
            self._save("last.pt")
        if validate or snapshot or save:
            self.dist.barrier()  # the others wait while rank 0 validates and writes

    def _validate(self, stage: StageConfig, monitor: Monitor) -> None:
        if not self.dist.is_main or self.validator is None:
            return
        start = time.perf_counter()
        with self._averaged_weights():
            result = self.validator(self.model, self.device)
        monitor.validation(self.step, stage.name, result, time.perf_counter() - start)
        self.last_val = {"step": self.step, "jf": result.jf, "j": result.j, "f": result.f}
        if stage.select_best and (self.best_jf is None or result.jf > self.best_jf):
            self.best_jf, self.best_step = result.jf, self.step
            self._save("best.pt")

    def _save(self, name: str) -> None:
        """Write a checkpoint that :func:`load_model` reads and ``--resume`` continues from (rank 0).

        While a stage averages the weights, the checkpoint's model holds the average and
        ``training_weights`` the optimizer's own trainable weights.
        """
        if not self.dist.is_main:
            return
        with self._averaged_weights() as live:
            averaging = {} if live is None else {"training_weights": {k: v.cpu() for k, v in live.items()},
                                                 "ema_updates": self.average.updates}
            save_checkpoint(
                self.out / name, self.model,
                optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                stage=self.stage, stage_name=self.config.stages[self.stage].name,
                iteration=self.iteration, step=self.step,
                rng=capture_rng(),
                metrics={"best_jf": self.best_jf, "best_step": self.best_step, "val": self.last_val},
                train_config=self.config.to_dict(),
                adapt=dict(self.config.adapt),
                **averaging,
            )


def train(config: TrainConfig, resume: str | Path | None = None, progress: bool = True,
          until: int | None = None) -> TrainResult:
    """Train as ``config`` says, in this process or as one of the processes ``torchrun`` started.

    Args:
        config: the run's configuration.
        resume: checkpoint to continue from exactly.
        progress: show a progress bar.
        until: stop (saving ``last.pt``) after this many iterations in all.

    Raises:
        EmvosInputError: bad config or data.
        TrainingInterrupted: on SIGINT/SIGTERM, after saving ``last.pt``.
    """
    with distributed(config.device) as dist:
        return Trainer(config, resume=resume, dist=dist, progress=progress).fit(until)
