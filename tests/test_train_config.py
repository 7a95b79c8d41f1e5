"""Training configs: strict keys, typed overrides, presets, round trips, and ``emvos train`` input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emvos.cli import main
from emvos.errors import EmvosInputError
from emvos.inference.settings import SHIPPED_MODEL, SHIPPED_MODELS
from emvos.train import DataConfig, Trainer, build_dataset, config_from_dict, load_config, preset_names, save_config
from emvos.train.datasets import MixedClips
from emvos.train.trainer import init_weights, stage_dataset

MINIMAL = """
stages:
  - name: only
    data: {kind: synthetic}
    iterations: 3
    batch_size: 2
    clip_len: 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    stage = config.stages[0]
    assert (stage.iterations, stage.batch_size, stage.clip_len, stage.crop, stage.lr) == (3, 2, 3, 384, 1e-4)
    assert config.swap_attach_p == 0.2 and config.amp == "none" and config.model.encoder == "densenet121"
    assert config.optim.betas == (0.9, 0.999) and config.optim.weight_decay == 0.0


@pytest.mark.parametrize(("text", "named"), [
    (MINIMAL + "typo: 1\n", "unknown key typo"),
    (MINIMAL.replace("clip_len: 3", "clip_len: 3\n    lrr: 0.1"), "unknown key stages.0.lrr"),
    (MINIMAL.replace("{kind: synthetic}", "{kind: synthetic, rooot: x}"), "unknown key stages.0.data.rooot"),
    (MINIMAL + "model: {encoder: densenet121, depth: 3}\n", "unknown key model.depth"),
    (MINIMAL.replace("    iterations: 3\n", ""), "missing key stages.0.iterations"),
])
def test_unknown_and_missing_keys_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(EmvosInputError, match=named.replace(".", r"\.")) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("override", "named"), [
    ("stages.0.iterations=many", "stages.0.iterations: expected int"),
    ("amp=fp8", "amp: expected one of none, bf16, fp16"),
    ("swap_attach_p=2", "swap_attach_p: must lie in"),
    ("stages.0.ema=1", "stages.0.ema: must be 0 .off. or a decay in"),
    ("val.every=10", "val.root"),
    ("stages.3.lr=1", "stages has 1 entries"),
    ("stages.video.lr=1", "no entry named 'video'"),
    ("model.branches=[em,sm]", "branches must be"),
    ("data", "expected key.sub=value"),
])
def test_bad_values_and_overrides_are_one_line_errors(tmp_path: Path, override: str, named: str) -> None:
    with pytest.raises(EmvosInputError, match=named) as info:
        load_config(write(tmp_path, MINIMAL), [override])
    assert "\n" not in str(info.value)


def test_an_unreadable_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(EmvosInputError, match="latin1.yaml: cannot read the config .not UTF-8 text.") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_overrides_are_coerced_to_the_field_types() -> None:
    config = load_config("lite-cpu", [
        "stages.0.iterations=12", "stages.video.lr=5e-5", "stages.video.crop=256", "val.sequences=[bear,boat]",
        "amp=bf16", "channels_last=yes", "model.decoder_widths=null", "model.branches=[sm]",
        "stages.video.data.options.year=2017", "optim.betas=[0.8,0.9]", "out=runs/x", "seed=7",
    ])
    assert config.stages[0].iterations == 12
    assert config.stages[1].lr == 5e-5 and isinstance(config.stages[1].lr, float)
    assert config.stages[1].crop == 256
    assert config.val.sequences == ["bear", "boat"]
    assert config.amp == "bf16" and config.channels_last is True
    assert config.model.decoder_widths is None and config.model.branches == ("sm",)
    assert config.stages[1].data.options == {"year": 2017, "split": "train"}
    assert config.optim.betas == (0.8, 0.9)
    assert (config.out, config.seed) == ("runs/x", 7)


def test_every_preset_loads_and_validates() -> None:
    assert {"paper-davis17", "paper-ytvos18", "lite-cpu"} <= set(preset_names())
    for name in preset_names():
        load_config(name).validate()


def test_paper_presets_follow_the_official_recipe() -> None:
    davis = load_config("paper-davis17")
    assert davis.model.encoder == "densenet121" and davis.model.branches == ("sm", "em")
    assert [(s.data.kind, s.iterations, s.batch_size, s.clip_len, s.crop, s.lr) for s in davis.stages] == [
        ("coco", 64_000, 16, 5, 384, 1e-4), ("davis", 64_000, 8, 10, 384, 1e-4)]
    assert davis.swap_attach_p == 0.2 and davis.val.every == 3_200
    assert not set(davis.val.sequences) & set(davis.stages[1].data.options.get("sequences", []))
    ytvos = load_config("paper-ytvos18")
    assert [(s.data.kind, s.iterations, s.batch_size, s.clip_len) for s in ytvos.stages] == [
        ("coco", 64_000, 16, 5), ("ytvos", 128_000, 8, 10)]
    lite = load_config("lite-cpu")
    assert lite.model.encoder == "efficientnet_lite0" and lite.stages[-1].clip_len == 10 and lite.val.sequences


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = load_config("paper-davis17", ["model.decoder_widths=[64,64,32]", "val.max_frames=20"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert config_from_dict(config.to_dict()) == config


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(EmvosInputError, match="lite-cpu"):
        load_config("no-such-preset")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["train", *argv])
    return code, capsys.readouterr().err


def test_cli_exits_2_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "--config", str(write(tmp_path, MINIMAL + "typo: 1\n")))
    assert code == 2
    assert err.startswith("emvos: error: config: unknown key typo") and err.count("\n") == 1


def test_cli_exits_2_on_a_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "--config", "lite-cpu", f"stages.static.data.root={tmp_path / 'nope'}",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and "data root not found" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_cli_needs_a_config_or_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys)[0] == 2
    code, err = run_cli(capsys, "--config", str(write(tmp_path, MINIMAL)), "--out", str(tmp_path), "--resume")
    assert code == 2 and "no checkpoint to resume from" in err


def test_dataset_options_are_checked_against_the_dataset(davis2016_root: Path) -> None:
    with pytest.raises(EmvosInputError, match="yeer") as info:
        build_dataset(DataConfig("davis", str(davis2016_root), {"yeer": 2016}), 3, 64, 0)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_validation_sequences_are_left_out_of_training_data_from_their_folder(
        tmp_path: Path, davis2016_root: Path) -> None:
    root = str(davis2016_root)
    config = config_from_dict({
        "model": {"encoder": "tiny-test", "key_channels": 8, "decoder_widths": [8, 8, 8]},
        "stages": [
            {"name": "static", "data": {"kind": "static", "root": root, "options": {"exclude": ["boat"]}},
             "iterations": 1, "batch_size": 1, "clip_len": 3, "crop": 32},
            {"name": "video", "data": {"kind": "davis", "root": root, "options": {"year": 2016, "split": "train"}},
             "iterations": 1, "batch_size": 1, "clip_len": 3, "crop": 32},
        ],
        "val": {"root": root, "sequences": ["bear", "bus"], "every": 1},
        "out": str(tmp_path),
    })
    trainer = Trainer(config, progress=False)
    static, video = trainer.stage_dataset(0), trainer.stage_dataset(1)
    static_sequences = {Path(item.image).parent.name for item in static.images.items}
    video_sequences = {v.name for v in video.videos}
    assert len(video_sequences) == 28 and not {"bear", "bus"} & video_sequences
    assert static_sequences == video_sequences - {"boat"}


def test_a_mix_draws_its_parts_by_weight_and_leaves_out_held_out_sequences(davis2016_root: Path) -> None:
    data = DataConfig(kind="mix", options={"parts": [
        {"kind": "synthetic", "weight": 3.0},
        {"kind": "composite", "root": str(davis2016_root), "options": {"year": 2016}, "weight": 1.0}]})
    mix = build_dataset(data, clip_len=3, size=32, seed=5, exclude=["bear"])
    assert isinstance(mix, MixedClips) and "bear" not in [v.name for v in mix.parts[1].clips.videos]
    drawn = [int(np.random.default_rng([5, k]).choice(2, p=mix.p)) for k in range(400)]
    assert 0.68 < drawn.count(0) / 400 < 0.82
    k = drawn.index(1)
    assert torch.equal(mix[k]["masks"], mix.parts[1][k]["masks"])
    assert torch.equal(mix[drawn.index(0)]["frames"], mix.parts[0][drawn.index(0)]["frames"])
    config = config_from_dict({"stages": [{"name": "s", "data": {"kind": "mix", "options": data.options},
                                           "iterations": 1, "batch_size": 1, "clip_len": 3}],
                               "val": {"root": str(davis2016_root), "sequences": ["bear"], "every": 1}})
    assert "bear" not in [v.name for v in stage_dataset(config, 0).parts[1].clips.videos]


@pytest.mark.parametrize("options", [{}, {"parts": []}, {"parts": [{"root": "x"}]}, {"parts": [{"kind": "mix"}]},
                                     {"parts": [{"kind": "synthetic", "colour": 1}]},
                                     {"parts": [{"kind": "synthetic", "weight": 0}]}])
def test_bad_mixes_are_one_line_errors(options: dict[str, object]) -> None:
    with pytest.raises(EmvosInputError, match="stage data"):
        build_dataset(DataConfig(kind="mix", options=options), clip_len=3, size=32, seed=0)


def test_init_names_a_checkpoint_or_a_shipped_model(tmp_path: Path) -> None:
    assert init_weights("") is None
    assert init_weights("shipped") == SHIPPED_MODEL
    assert init_weights("emvos-base") == SHIPPED_MODELS["emvos-base"]
    with pytest.raises(EmvosInputError, match="emvos-lite, emvos-base"):
        init_weights(str(tmp_path / "missing.pt"))


def test_the_configs_beside_the_benchmarks_load() -> None:
    """Configs of runs the model card reports but the package does not ship (e.g. a tried fine-tuning)."""
    configs = sorted((Path(__file__).parent.parent / "benchmarks" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        config = load_config(path)
        weights = init_weights(config.init)
        assert weights is None or weights.is_file(), path
