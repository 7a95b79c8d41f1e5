"""The feature cache and the ``davis-cached`` training kind, on a tiny DAVIS folder and the tiny random encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.data.base import read_labels, read_rgb
from emvos.data.cached import CachedDavisClips
from emvos.data.features import FeatureCache, NamedEncoder, scaled_frame, scaled_labels, scaled_size
from emvos.errors import EmvosInputError
from emvos.model.checkpoint import load_model
from emvos.model.encoders import build_encoder
from emvos.train import Trainer, config_from_dict

HEIGHT, WIDTH = 64, 96
SCALES = (64, 48)


def make_davis(root: Path, sequences: dict[str, int]) -> Path:
    """DAVIS-2016 layout: random frames with a moving 0/255 rectangle mask."""
    rng = np.random.default_rng(0)
    for name, frames in sequences.items():
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for t in range(frames):
            pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            mask[10 + 2 * t:34 + 2 * t, 20 + 4 * t:48 + 4 * t] = 255
            pixels[mask > 0] = (200, 30, 30)
            Image.fromarray(pixels).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg")
            Image.fromarray(mask, mode="L").save(root / "Annotations" / "480p" / name / f"{t:05d}.png")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "train.txt").write_text("\n".join(sequences) + "\n")
    return root


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return make_davis(tmp_path / "davis", {"alpha": 4, "beta": 3, "gamma": 3})


def tiny_encoder(seed: int = 0) -> NamedEncoder:
    torch.manual_seed(seed)
    return NamedEncoder("tiny-test", build_encoder("tiny-test"))


def dataset(davis: Path, cache: Path, encoder: NamedEncoder, **options: Any) -> CachedDavisClips:
    return CachedDavisClips(davis, encoder=encoder, scales=SCALES, cache_dir=cache, year=2016,
                            clip_length=3, crop_size=32, seed=5, **options)


def test_the_cache_is_built_once_reused_and_keyed_by_the_encoder_weights(davis: Path, tmp_path: Path) -> None:
    encoder = tiny_encoder()
    videos = dataset(davis, tmp_path / "cache", encoder).videos
    frames = sum(len(v.images) for v in videos)
    lines: list[str] = []
    again = FeatureCache(tmp_path / "cache", davis, encoder, SCALES)
    assert again.build(videos, lines.append) == 0 and not lines  # built by the dataset, reused
    before = dataset(davis, tmp_path / "cache", encoder)[0]

    with torch.no_grad():
        encoder.module.s16[0].bias.add_(1.0)  # other weights: another key, encoded afresh
    changed = FeatureCache(tmp_path / "cache", davis, encoder, SCALES)
    assert changed.key_dir != again.key_dir and again.key_dir.is_dir()
    assert changed.build(videos, lines.append) == frames * len(SCALES)
    assert len(lines) == len(videos) * len(SCALES) and "encoded alpha at 64" in lines[0]
    after = dataset(davis, tmp_path / "cache", encoder)[0]
    assert torch.equal(before["masks"], after["masks"])
    assert not torch.equal(before["features"].s16, after["features"].s16)

    (davis / "JPEGImages" / "480p" / "beta" / "00002.jpg").unlink()  # a sequence's frames changed
    (davis / "Annotations" / "480p" / "beta" / "00002.png").unlink()
    videos = dataset(davis, tmp_path / "other", encoder).videos
    assert changed.build(videos, lines.append) == (len(videos[1].images)) * len(SCALES)


def test_a_cached_sample_is_the_whole_frame_features_cut_at_its_window(davis: Path, tmp_path: Path) -> None:
    encoder = tiny_encoder()
    data = dataset(davis, tmp_path / "cache", encoder)
    seen = set()
    for k in range(12):
        sample = data[k]
        index, scale, mirrored, top, left = sample["window"].tolist()
        seen.add((scale, mirrored))
        assert top % 16 == 0 and left % 16 == 0
        assert sample["masks"].shape == (3, 32, 32) and sample["masks"][0].any()
        video = data.videos[index]
        for t, frame in enumerate(sample["frames"].tolist()):
            labels = read_labels(video.masks[frame])
            size = scaled_size(*labels.shape, SCALES[scale])
            with torch.no_grad():
                expected = encoder.module(scaled_frame(read_rgb(video.images[frame]), size, bool(mirrored))[None])
            for got, level, stride in zip(sample["features"], expected, (4, 8, 16), strict=True):
                window = level[0, :, top // stride:(top + 32) // stride, left // stride:(left + 32) // stride]
                assert got[t].dtype == torch.float16
                torch.testing.assert_close(got[t].float(), window, rtol=2e-3, atol=2e-3)
            mask = scaled_labels(labels, size)[:, ::-1] if mirrored else scaled_labels(labels, size)
            assert np.array_equal(sample["masks"][t].numpy(), mask[top:top + 32, left:left + 32] != 0)
    assert seen == {(s, m) for s in range(len(SCALES)) for m in (0, 1)}
    again = dataset(davis, tmp_path / "cache", encoder)
    assert all(torch.equal(again[k]["features"].s4, data[k]["features"].s4) for k in range(4))


def test_mirrored_features_are_those_of_the_mirrored_frame(davis: Path, tmp_path: Path) -> None:
    encoder = tiny_encoder()
    data = dataset(davis, tmp_path / "cache", encoder)
    cached = data.cache.open(data.videos[0], SCALES[0])
    plain, mirrored = (torch.from_numpy(np.array(cached.features.s16[i, 0])).float() for i in (0, 1))
    image = read_rgb(data.videos[0].images[0])
    with torch.no_grad():
        expected = encoder.module(scaled_frame(image, (HEIGHT, WIDTH), True)[None]).s16[0]
    torch.testing.assert_close(mirrored, expected, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(mirrored, plain.flip(-1), atol=1e-2)


def test_a_scale_smaller_than_the_crop_is_an_input_error(davis: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scales: 16"):
        CachedDavisClips(davis, encoder=tiny_encoder(), scales=(16,), cache_dir=tmp_path, year=2016, crop_size=32)


def cached_config(out: Path, davis: Path, cache: Path, **top: Any) -> Any:
    stage = {"data": {"kind": "davis-cached", "root": str(davis),
                      "options": {"year": 2016, "scales": list(SCALES), "cache_dir": str(cache)}},
             "batch_size": 2, "clip_len": 3, "crop": 32}
    data: dict[str, Any] = {
        "model": {"encoder": "tiny-test", "key_channels": 8, "decoder_widths": [8, 8, 8]},
        "stages": [{**stage, "name": "a", "iterations": 3, "lr": 3e-3},
                   {**stage, "name": "b", "iterations": 3, "lr": 1e-3}],
        "em_logit_std": 4.0, "swap_attach_p": 0.5, "out": str(out), "workers": 0, "log_every": 1,
        "tensorboard": False,
    }
    data.update(top)
    return config_from_dict(data)


def test_training_on_cached_features_runs_and_resumes_exactly(davis: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    full = Trainer(cached_config(tmp_path / "full", davis, cache), progress=False).fit()
    assert full.finished and len(full.losses) == 6
    part = tmp_path / "part"
    first = Trainer(cached_config(part, davis, cache), progress=False).fit(until=2)
    second = Trainer(cached_config(part, davis, cache, workers=1), resume=part / "last.pt", progress=False).fit()
    assert {**first.losses, **second.losses} == full.losses  # bit for bit
    resumed, uninterrupted = (load_model(out / "last.pt").state_dict() for out in (part, tmp_path / "full"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_bad_cached_stage_is_a_one_line_input_error(davis: Path, tmp_path: Path) -> None:
    config = cached_config(tmp_path / "run", davis, tmp_path / "cache")
    config.stages[0].data.options["scales"] = [16]
    with pytest.raises(EmvosInputError, match="davis-cached.*scales: 16"):
        Trainer(config, progress=False)


def test_an_interrupted_build_leaves_nothing_that_is_read_or_kept(davis: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = tiny_encoder()
    videos = dataset(davis, tmp_path / "cache", encoder, sequences=["alpha"]).videos
    cache = FeatureCache(tmp_path / "other", davis, encoder, SCALES)
    calls = {"n": 0}
    original = encoder.module.forward

    def fail_late(images: torch.Tensor) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(images)

    monkeypatch.setattr(encoder.module, "forward", fail_late)
    with pytest.raises(KeyboardInterrupt):
        cache.build(videos)
    folder = cache.folder / str(SCALES[0])
    assert not cache.is_current(videos[0], SCALES[0]) and list(folder.iterdir()) == []
    (folder / "alpha.partial-999999999").mkdir()  # a crashed process's leftovers
    monkeypatch.setattr(encoder.module, "forward", original)
    assert cache.build(videos) == len(videos[0].images) * len(SCALES)
    assert [p.name for p in folder.iterdir()] == ["alpha"]


def test_an_unreadable_frame_is_left_out_of_the_clips(davis: Path, tmp_path: Path) -> None:
    (davis / "Annotations" / "480p" / "alpha" / "00001.png").write_bytes(b"not a png")
    data = dataset(davis, tmp_path / "cache", tiny_encoder(), sequences=["alpha"])
    assert data.cache.open(data.videos[0], SCALES[0]).unreadable == {1}
    clips = [data[k]["frames"].tolist() for k in range(10)]
    assert all(1 not in frames for frames in clips) and data.skipped["unreadable"] > 0


def test_build_cache_command_builds_what_training_then_reuses(davis: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from emvos.cli import main
    from emvos.train import save_config

    config = cached_config(tmp_path / "run", davis, tmp_path / "cache")
    save_config(config, tmp_path / "config.yaml")
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--build-cache"]) == 0
    assert "encoded gamma at 48" in capsys.readouterr().err and not (tmp_path / "run").exists()
    Trainer(config, progress=False)
    assert "encoded" not in capsys.readouterr().err  # the run found the cache complete
