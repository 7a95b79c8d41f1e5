"""The trainer on tiny synthetic data: learning, exact resume, interruption, checkpoints, validation."""

from __future__ import annotations

import csv
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

from emvos.cli import main
from emvos.errors import EmvosInputError
from emvos.inference.predictor import adapt_settings
from emvos.model.checkpoint import load_model
from emvos.train import (
    DataConfig,
    IterationSampler,
    SyntheticClips,
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    config_from_dict,
    register_dataset,
)

#: Sample index at which the ``signal-test`` dataset sends SIGINT to its process (-1: never).
SIGNAL_AT = {"k": -1}


class _SignalAt(SyntheticClips):
    def __getitem__(self, k: int) -> dict[str, Tensor]:
        if k == SIGNAL_AT["k"]:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(k)


class _TwoObjects(SyntheticClips):
    """Synthetic clips whose mask is split into two objects (ids 1 and 2) down its middle column."""

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        sample = super().__getitem__(k)
        masks = sample["masks"]
        half = masks.shape[-1] // 2
        masks[..., half:] *= 2
        return sample


class _EmptyFirstMask(SyntheticClips):
    def __getitem__(self, k: int) -> dict[str, Tensor]:
        sample = super().__getitem__(k)
        sample["masks"][0] = 0
        return sample


@register_dataset("signal-test", reads_files=False)
def _signal_dataset(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    return _SignalAt(clip_len, size, seed)


@register_dataset("two-objects-test", reads_files=False)
def _two_objects_dataset(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    return _TwoObjects(clip_len, size, seed)


@register_dataset("empty-first-test", reads_files=False)
def _empty_dataset(data: DataConfig, clip_len: int, size: int, seed: int, exclude: Sequence[str]) -> Dataset:
    return _EmptyFirstMask(clip_len, size, seed)


def tiny_config(out: Path, kind: str = "synthetic", **top: Any) -> TrainConfig:
    """Two stages of tiny clips on the tiny random encoder (the second with longer clips)."""
    data: dict[str, Any] = {
        "model": {"encoder": "tiny-test", "key_channels": 8, "decoder_widths": [8, 8, 8]},
        "stages": [
            {"name": "static", "data": {"kind": kind}, "iterations": 5, "batch_size": 2, "clip_len": 3,
             "crop": 32, "lr": 3e-3},
            {"name": "video", "data": {"kind": kind}, "iterations": 4, "batch_size": 2, "clip_len": 4,
             "crop": 32, "lr": 1e-3},
        ],
        "swap_attach_p": 0.5, "out": str(out), "workers": 0, "log_every": 1, "tensorboard": False,
    }
    data.update(top)
    return config_from_dict(data)


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, stages=[{"name": "s", "data": {"kind": "synthetic"}, "iterations": 30,
                                            "batch_size": 2, "clip_len": 3, "crop": 32, "lr": 1e-2}],
                         swap_attach_p=0.0)
    result = Trainer(config, progress=False).fit()
    losses = list(result.losses.values())
    assert result.finished and len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_clips_of_several_objects_train_them_together(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "two-objects-test", stages=[
        {"name": "s", "data": {"kind": "two-objects-test"}, "iterations": 3, "batch_size": 2, "clip_len": 3,
         "crop": 32, "lr": 1e-2}])
    trainer = Trainer(config, progress=False)
    batch = torch.utils.data.default_collate([trainer.stage_dataset(0)[k] for k in range(2)])
    assert int(batch["masks"].amax()) == 2
    loss, iou, usable = trainer._train_step(batch)
    assert usable == 2 and loss > 0 and 0 <= iou <= 2
    # The loss is the aggregated distribution's cross-entropy: the same clip with both objects as one
    # (a single-object clip) is another problem with another loss.
    merged = dict(batch, masks=batch["masks"].clamp(max=1))
    assert Trainer(tiny_config(tmp_path / "b", swap_attach_p=0.0), progress=False)._train_step(merged)[0] != loss
    result = trainer.fit()
    assert result.finished and all(v == v for v in result.losses.values())


@pytest.mark.slow
def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path: Path) -> None:
    full = Trainer(tiny_config(tmp_path / "full"), progress=False).fit()
    part = tmp_path / "part"
    # Stop inside the first stage, then at the stage boundary, then finish; loader workers differ.
    first = Trainer(tiny_config(part), progress=False).fit(until=3)
    second = Trainer(tiny_config(part, workers=1), resume=part / "last.pt", progress=False).fit(until=5)
    third = Trainer(tiny_config(part), resume=part / "last.pt", progress=False).fit()
    assert (first.step, second.step, third.step) == (3, 5, 9) and third.finished
    assert {**first.losses, **second.losses, **third.losses} == full.losses  # bit for bit
    resumed, uninterrupted = (load_model(out / "last.pt").state_dict() for out in (part, tmp_path / "full"))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    loss_rows = [(r["step"], r["loss"]) for r in csv_rows(part) if r["loss"]]
    assert [s for s, _ in loss_rows] == [str(i) for i in range(1, 10)]
    assert loss_rows == [(r["step"], r["loss"]) for r in csv_rows(tmp_path / "full") if r["loss"]]


def test_a_new_run_can_start_from_given_weights(tmp_path: Path) -> None:
    Trainer(tiny_config(tmp_path / "first"), progress=False).fit(until=2)
    given = load_model(tmp_path / "first" / "last.pt").state_dict()
    fresh = Trainer(tiny_config(tmp_path / "fresh"), progress=False).model.state_dict()
    started = Trainer(tiny_config(tmp_path / "second", init=str(tmp_path / "first" / "last.pt")), progress=False)
    state = started.model.state_dict()
    assert all(torch.equal(state[k], given[k]) for k in given)
    assert not all(torch.equal(state[k], fresh[k]) for k in fresh if not k.startswith("encoder."))
    assert started.fit(until=1).step == 1  # and it trains on from there
    with pytest.raises(EmvosInputError, match="differs from the config's model"):
        Trainer(tiny_config(tmp_path / "third", init=str(tmp_path / "first" / "last.pt"),
                            model={"encoder": "tiny-test", "key_channels": 4, "decoder_widths": [8, 8, 8]}),
                progress=False)
    with pytest.raises(EmvosInputError, match="no such weight file"):
        Trainer(tiny_config(tmp_path / "fourth", init=str(tmp_path / "missing.pt")), progress=False)
    model = {"encoder": "tiny-test", "key_channels": 8, "decoder_widths": [8, 8, 8], "key_scales": [8, 16]}
    wider = Trainer(tiny_config(tmp_path / "fifth", init=str(tmp_path / "first" / "last.pt"), model=model),
                    progress=False)  # keys that read one more scale: the new inputs' weights start at zero
    state = wider.model.state_dict()
    assert wider.model.config.key_scales == (8, 16)
    assert torch.equal(state["keys.em.weight"][:, 16:], given["keys.em.weight"])
    assert not state["keys.em.weight"][:, :16].any()
    assert all(torch.equal(state[k], given[k]) for k in given if not k.startswith("keys."))
    assert wider.fit(until=1).step == 1


def test_checkpoints_are_self_describing_and_load_with_weights_only(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    Trainer(config, progress=False).fit(until=2)
    data = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert data["format"] == "emvos" and data["config"] == config.model.to_dict()
    assert (data["stage"], data["stage_name"], data["iteration"], data["step"]) == (0, "static", 2, 2)
    assert data["train_config"] == config.to_dict()
    assert set(data["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert isinstance(data["rng"]["numpy"]["keys"], list)
    assert data["optimizer"]["state"] and data["metrics"] == {"best_jf": None, "best_step": None, "val": {}}
    assert (tmp_path / "config.yaml").is_file()
    assert load_model(tmp_path / "last.pt").config == config.model


def test_export_keeps_the_model_in_half_precision_with_its_provenance(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", adapt={"lr": "2e-4", "steps": 7})  # YAML 1.1 reads 2e-4 as text
    assert config.adapt == {"lr": 2e-4, "steps": 7}
    Trainer(config, progress=False).fit(until=2)
    assert main(["export", str(tmp_path / "run" / "last.pt"), str(tmp_path / "model.pt")]) == 0
    data = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert "optimizer" not in data and "rng" not in data
    # The recommended adaptation travels from the config to the training checkpoint and the exported file.
    for path in (tmp_path / "run" / "last.pt", tmp_path / "model.pt"):
        settings = adapt_settings(path)
        assert settings is not None and (settings.lr, settings.steps, settings.crop) == (2e-4, 7, 256), path
    assert data["trained"]["train_config"] == config.to_dict() and data["trained"]["step"] == 2
    # The trained parts in half precision; the frozen encoder kept exactly, in float32.
    assert all(v.dtype == (torch.float32 if k.startswith("encoder.") else torch.float16)
               for k, v in data["model"].items() if v.is_floating_point())
    trained, exported = load_model(tmp_path / "run" / "last.pt"), load_model(tmp_path / "model.pt")
    for k, v in trained.state_dict().items():
        assert torch.equal(exported.state_dict()[k], v if k.startswith("encoder.") else v.half().float()), k
    # An exported model is not a training checkpoint: exporting it again is refused in one line.
    assert main(["export", str(tmp_path / "model.pt"), str(tmp_path / "again.pt")]) == 2
    assert not (tmp_path / "again.pt").exists()


@pytest.mark.slow
def test_sigint_saves_last_and_resume_continues(tmp_path: Path) -> None:
    full = Trainer(tiny_config(tmp_path / "full", kind="signal-test"), progress=False).fit()
    out = tmp_path / "run"
    SIGNAL_AT["k"] = 6  # read at iteration 3 (0-based) of the first stage
    try:
        with pytest.raises(TrainingInterrupted) as info:
            Trainer(tiny_config(out, kind="signal-test"), progress=False).fit()
    finally:
        SIGNAL_AT["k"] = -1
    assert info.value.signum == signal.SIGINT and info.value.step == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    saved = torch.load(out / "last.pt", weights_only=True)
    assert (saved["stage"], saved["iteration"]) == (0, 4)
    rest = Trainer(tiny_config(out, kind="signal-test"), resume=out / "last.pt", progress=False).fit()
    assert rest.finished and rest.losses == {k: v for k, v in full.losses.items() if k > 4}


def test_a_finished_run_folder_needs_resume(tmp_path: Path) -> None:
    Trainer(tiny_config(tmp_path), progress=False).fit(until=1)
    with pytest.raises(EmvosInputError, match="already holds a run"):
        Trainer(tiny_config(tmp_path), progress=False)


def test_batches_without_a_first_frame_object_are_skipped(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path, kind="empty-first-test"), progress=False)
    before = [p.detach().clone() for p in trainer.params]
    result = trainer.fit(until=2)
    assert result.step == 2 and result.losses == {}
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    assert [r["skipped"] for r in csv_rows(tmp_path)] == ["1", "1"]


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path: Path) -> None:
    result = Trainer(tiny_config(tmp_path, amp="bf16", channels_last=True, tensorboard=True),
                     progress=False).fit(until=2)
    assert len(result.losses) == 2 and all(0 < v < 10 for v in result.losses.values())
    assert any((tmp_path / "tb").iterdir())


@pytest.mark.slow
def test_validation_keeps_the_best_checkpoint(tmp_path: Path, davis2016_root: Path) -> None:
    config = tiny_config(tmp_path, val={"root": str(davis2016_root), "sequences": ["bear", "boat"], "every": 3,
                                        "resolution": 64, "max_frames": 4})
    config.stages[0].select_best = False
    result = Trainer(config, progress=False).fit()
    val_rows = [r for r in csv_rows(tmp_path) if r["val_jf"]]
    assert [r["step"] for r in val_rows] == ["3", "6", "9"]
    video_scores = {int(r["step"]): float(r["val_jf"]) for r in val_rows if r["stage"] == "video"}
    assert result.best_jf == max(video_scores.values())
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["metrics"]["best_jf"] == result.best_jf and best["stage_name"] == "video"
    assert 0.0 <= result.best_jf <= 1.0


def test_sampler_gives_each_process_a_disjoint_slice_of_each_global_batch() -> None:
    assert list(IterationSampler(4, 2, 4)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    shards = [list(IterationSampler(4, 2, 4, rank=r, world_size=2)) for r in range(2)]
    assert shards == [[[8, 9], [12, 13]], [[10, 11], [14, 15]]]
    with pytest.raises(EmvosInputError, match="does not split"):
        IterationSampler(3, 0, 1, world_size=2)


@pytest.mark.slow
def test_weight_average_is_what_a_stage_validates_and_saves_and_resumes_exactly(tmp_path: Path) -> None:
    def config(out: Path) -> TrainConfig:
        c = tiny_config(out)
        c.stages[1].ema = 0.5
        return c

    full = Trainer(config(tmp_path / "full"), progress=False)
    full_losses = full.fit().losses
    assert full.average is not None and full.average.updates == 4
    data = torch.load(tmp_path / "full" / "last.pt", map_location="cpu", weights_only=True)
    assert data["ema_updates"] == 4
    for name, trained in data["training_weights"].items():
        assert torch.equal(trained, full.trainable[name].detach())  # training goes on from these
        assert torch.equal(data["model"][name], full.average.shadow[name])  # the model is the average
    assert any(not torch.equal(data["model"][k], v) for k, v in data["training_weights"].items())

    part = tmp_path / "part"
    Trainer(config(part), progress=False).fit(until=7)  # two averaged steps, then resume
    resumed = Trainer(config(part), resume=part / "last.pt", progress=False)
    assert resumed.average is not None and resumed.average.updates == 2
    rest = resumed.fit()
    assert rest.losses == {k: v for k, v in full_losses.items() if k > 7}  # bit for bit
    again = torch.load(part / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(again["model"][k], v) for k, v in data["model"].items())
    assert all(torch.equal(again["training_weights"][k], v) for k, v in data["training_weights"].items())


def test_weight_average_ramps_up_its_decay() -> None:
    from emvos.train.trainer import WeightAverage

    p = {"w": torch.zeros(3)}
    average = WeightAverage(p, decay=0.99)
    assert average.decay_at(1) == 2 / 11 and average.decay_at(888) < 0.99 and average.decay_at(891) == 0.99
    p["w"] += 1.0
    average.update(p)  # decay min(0.99, 2 / 11)
    assert torch.allclose(average.shadow["w"], torch.full((3,), 9 / 11))
    for _ in range(2000):
        average.update(p)
    assert torch.allclose(average.shadow["w"], torch.ones(3))


@pytest.mark.slow
def test_resuming_a_stage_with_another_averaging_setting_is_refused(tmp_path: Path) -> None:
    averaged = tiny_config(tmp_path)
    averaged.stages[0].ema = 0.9
    Trainer(averaged, progress=False).fit(until=2)
    with pytest.raises(EmvosInputError, match="saved with a weight average in stage 'static', whose ema"):
        Trainer(tiny_config(tmp_path), resume=tmp_path / "last.pt", progress=False)
