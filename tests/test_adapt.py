"""Test-time adaptation: the pseudo-video variants, the fine-tuning, and the predictor's use of it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from emvos.inference.adapt import (
    AdaptSettings,
    _absent_window,
    _affine_thetas,
    _draw_clip,
    _object_centres,
    adapt_network,
    make_variants,
)
from emvos.inference.optimize import prepare_for_inference
from emvos.inference.predictor import VideoPredictor
from emvos.model.config import ModelConfig
from emvos.model.encoders.base import Features
from emvos.model.network import EMVOS

H, W = 48, 80
STILL = dict(degrees=0.0, scale=(1.0, 1.0), shear=0.0, translate=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture(scope="module")
def network() -> EMVOS:
    torch.manual_seed(0)
    return EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None).eval()


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy frame with two flat-coloured objects, and its ``(H, W)`` ids."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, (H, W, 3), dtype=np.uint8)
    labels = np.zeros((H, W), np.uint8)
    labels[8:28, 10:34] = 1
    labels[26:44, 50:74] = 4
    image[labels == 1] = (230, 40, 40)
    image[labels == 4] = (40, 220, 90)
    return image, labels


def _tensors(image: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255, torch.from_numpy(labels).long()


@pytest.mark.parametrize("field, value", [("steps", -1), ("lr", 0.0), ("variants", 0), ("clip_len", 1),
                                          ("batch_size", 0), ("crop", 8), ("absent_p", 1.5),
                                          ("joint_lr", 0.0)])
def test_settings_name_the_bad_parameter(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        AdaptSettings(**{field: value})


def test_variants_without_augmentation_are_the_frame_itself() -> None:
    image, labels = _tensors(*_scene())
    images, ids = make_variants(image, labels, AdaptSettings(variants=3, **STILL), torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, H, W) and ids.shape == (4, H, W) and ids.dtype == torch.int64
    assert torch.allclose(images, image.expand(4, -1, -1, -1), atol=1e-5)
    assert torch.equal(ids, labels.expand(4, -1, -1))


def test_variant_warps_keep_image_and_mask_aligned_and_shapes_round() -> None:
    image, labels = _tensors(*_scene())
    settings = AdaptSettings(variants=6, brightness=0.0, contrast=0.0)
    images, ids = make_variants(image, labels, settings, torch.Generator().manual_seed(3))
    assert not torch.equal(ids[1:], labels.expand(6, -1, -1))  # the variants do move
    for variant, warped in zip(images[1:], ids[1:], strict=True):
        red = (variant[0] > 0.7) & (variant[1] < 0.3)  # object 1's colour
        inside = red[warped == 1].float().mean()
        assert inside > 0.9, "the warped mask must cover the warped object"
    # A rotation is an angle in pixels, also on a non-square frame: a disk stays a disk.
    theta = _affine_thetas(1, AdaptSettings(degrees=45.0, scale=(1.0, 1.0), shear=0.0, translate=0.0), 60, 120,
                           torch.Generator().manual_seed(0))
    yy, xx = torch.meshgrid(torch.arange(60.0), torch.arange(120.0), indexing="ij")
    disk = (((yy - 29.5) ** 2 + (xx - 59.5) ** 2) < 20 ** 2).float()
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 60, 120], align_corners=False)
    rotated = torch.nn.functional.grid_sample(disk[None, None], grid, mode="nearest", align_corners=False)[0, 0]
    rows, cols = torch.nonzero(rotated, as_tuple=True)
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 2


@pytest.mark.parametrize("objects", [(1,), (1, 4)], ids=["one object", "two objects, joint"])
def test_adaptation_tunes_a_copy_and_lowers_the_loss(network: EMVOS, objects: tuple[int, ...]) -> None:
    image, labels = _tensors(*_scene())
    labels = torch.where(torch.isin(labels, torch.tensor(objects)), labels, 0)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    settings = AdaptSettings(steps=30, lr=1e-3, variants=4)
    adapted, report = adapt_network(network, image, labels, settings)
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items()), "the reference must not change"
    assert report.steps == 30 and report.last_loss < report.first_loss
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and not any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("keys.") for k in changed)
    assert not any(p.requires_grad for p in adapted.parameters()) and not adapted.training
    again, _ = adapt_network(network, image, labels, settings)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in adapted.state_dict().items()), "deterministic"


def test_a_prepared_encoder_gives_the_same_adaptation(network: EMVOS) -> None:
    image, labels = _tensors(*_scene())
    settings = AdaptSettings(steps=5, lr=1e-3, variants=3)
    prepared = prepare_for_inference(network, torch.device("cpu"))
    calls = []

    def encode(images: torch.Tensor) -> Features:
        features = prepared.encoder(images.contiguous(memory_format=torch.channels_last))
        for level, expected in zip(features, network.encoder(images), strict=True):
            torch.testing.assert_close(level, expected, rtol=1e-4, atol=1e-5)  # the same features, up to rounding
        calls.append(len(images))
        return features

    reference, _ = adapt_network(network, image, labels, settings)
    faster, _ = adapt_network(network, image, labels, settings, encoder=encode)
    assert sum(calls) == 4  # the frame and its 3 variants, encoded once each
    for key, value in reference.state_dict().items():  # Adam's steps are at most lr each: rounding stays small
        torch.testing.assert_close(faster.state_dict()[key], value, rtol=0, atol=settings.steps * settings.lr)


def test_adaptation_needs_an_object_and_a_stride_multiple(network: EMVOS) -> None:
    image, labels = _tensors(*_scene())
    with pytest.raises(ValueError, match="no object"):
        adapt_network(network, image, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="multiple"):
        adapt_network(network, image[:, :40, :70], labels[:40, :70])


def test_predictor_adapts_at_each_videos_first_mask(network: EMVOS) -> None:
    image, labels = _scene()
    frames = [np.roll(image, 2 * t, axis=1) for t in range(4)]
    plain = VideoPredictor(network, device="cpu", resolution=0)
    adapting = VideoPredictor(network, device="cpu", resolution=0, adapt=AdaptSettings(steps=5, variants=2))
    assert plain.adapt is None and VideoPredictor(network, device="cpu", adapt=AdaptSettings(steps=0)).adapt is None

    state = adapting.init_state(frames)
    adapting.add_mask(state, 1, labels)
    outs = list(adapting.propagate(state))
    assert not outs[0].labels.any(), "frames before the first mask need no work"
    assert np.array_equal(outs[1].labels, labels)
    assert [a.steps for a in state.adaptations] == [5]
    assert state.network is not None and state.network is not adapting.model
    # Each video adapts on its own; the predictor's network is left as it was.
    other = adapting.init_state(frames)
    adapting.add_mask(other, 0, labels)
    list(adapting.propagate(other))
    assert other.network is not state.network
    assert all(torch.equal(a, b) for a, b in zip(adapting.model.state_dict().values(),
                                                 plain.model.state_dict().values(), strict=True))
    # The adapted network is the one that segments: its logits differ from the plain network's.
    reference = plain.init_state(frames)
    plain.add_mask(reference, 1, labels)
    list(plain.propagate(reference))
    assert not torch.equal(state.prev.mask, reference.prev.mask)


def test_a_later_mask_adapts_the_decoder_again_and_keeps_the_keys(network: EMVOS) -> None:
    image, labels = _scene()
    frames = [np.roll(image, 2 * t, axis=1) for t in range(5)]
    later = np.zeros_like(labels)
    later[2:10, 60:76] = 9  # a new object, given at frame 3
    settings = AdaptSettings(steps=4, variants=2)
    for lookahead in (1, 4):  # chunks holding masks are taken a frame at a time
        predictor = VideoPredictor(network, device="cpu", resolution=0, adapt=settings, lookahead=lookahead)
        state = predictor.init_state(frames)
        outs = list(predictor.propagate(state, masks={0: labels, 3: later}))
        assert [o.index for o in outs] == list(range(5)) and outs[4].object_ids == (1, 4, 9)
        assert len(state.adaptations) == 2
        first_keys = {k: v for k, v in state.tuned.state_dict().items() if k.startswith("keys.")}
        once = VideoPredictor(network, device="cpu", resolution=0, lookahead=lookahead,
                              adapt=AdaptSettings(steps=4, variants=2, again=False))
        single = once.init_state(frames)
        list(once.propagate(single, masks={0: labels, 3: later}))
        assert len(single.adaptations) == 1
        assert all(torch.equal(v, single.tuned.state_dict()[k]) for k, v in first_keys.items()), "keys kept"
        assert any(not torch.equal(v, single.tuned.state_dict()[k])
                   for k, v in state.tuned.state_dict().items() if k.startswith("decoder.")), "decoder tuned again"


def test_segment_rejects_a_negative_adapt(tmp_path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    image, labels = _scene()
    Image.fromarray(image).save(frames / "00000.png")
    Image.fromarray(labels).save(tmp_path / "mask.png")
    done = subprocess.run([sys.executable, "-m", "emvos", "segment", str(frames), "--mask", str(tmp_path / "mask.png"),
                           "--out", str(tmp_path / "out"), "--adapt", "-1"], capture_output=True, text=True)
    assert done.returncode == 2 and "--adapt" in done.stderr


def test_joint_clips_track_a_bounded_number_of_objects(network: EMVOS) -> None:
    image, _ = _tensors(*_scene())
    labels = (torch.arange(H * W) % 30 + 1).view(H, W)  # 30 interleaved objects, all in every window
    few, report = adapt_network(network, image, labels, AdaptSettings(steps=3, variants=2, joint_objects=4))
    assert report.steps == 3 and np.isfinite(report.last_loss)
    with pytest.raises(ValueError, match="joint_objects"):
        AdaptSettings(joint_objects=0)


def test_an_absent_window_shows_none_of_the_object() -> None:
    mask = torch.zeros(64, 96, dtype=torch.bool)
    mask[20:30, 8:20] = True
    generator = torch.Generator().manual_seed(0)
    windows = {_absent_window(mask, 32, 48, 16, generator) for _ in range(20)}
    assert None not in windows and len(windows) > 1  # several windows qualify, drawn at random
    for top, left, height, width in windows:  # type: ignore[misc]
        assert (height, width) == (32, 48) and top % 16 == 0 and left % 16 == 0
        assert top + height <= 64 and left + width <= 96 and not mask[top:top + height, left:left + width].any()
    mask[:, 40:56] = True  # a band that every 48-wide window crosses
    assert _absent_window(mask, 32, 48, 16, generator) is None


def test_absent_clips_leave_the_object_in_their_middle_frames_and_come_back() -> None:
    image, labels = _tensors(*_scene())
    _, ids = make_variants(image, labels, AdaptSettings(variants=3, **STILL), torch.Generator().manual_seed(0))
    centres = _object_centres(ids, [1, 4])
    settings = AdaptSettings(clip_len=4, crop=32, absent_p=1.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        order, oid, windows = _draw_clip(centres, ids, settings, 16, generator)
        shows = [bool((ids[v, t:t + h, x:x + w] == oid).any())
                 for v, (t, x, h, w) in zip(order.tolist(), windows, strict=True)]
        assert shows[0] and windows[-1] == windows[0]
        assert not any(shows[1:-1]), "the middle frames must not show the tracked object"
    plain = _draw_clip(centres, ids, AdaptSettings(clip_len=4, crop=32), 16, torch.Generator().manual_seed(0))
    assert len(set(plain[2])) == 1  # without absent_p every frame is cut from one window


def test_absent_clips_change_one_object_adaptation_only(network: EMVOS) -> None:
    image, labels = _tensors(*_scene())
    settings = AdaptSettings(steps=20, lr=1e-3, variants=3, crop=32)
    absent = dataclasses.replace(settings, absent_p=0.5)
    one = torch.where(labels == 1, labels, 0)
    plain, _ = adapt_network(network, image, one, settings)
    away, report = adapt_network(network, image, one, absent)
    assert report.steps == 20 and report.last_loss < report.first_loss
    assert any(not torch.equal(v, away.state_dict()[k]) for k, v in plain.state_dict().items())
    both, _ = adapt_network(network, image, labels, settings)  # two objects: joint clips, which never leave
    both_absent, _ = adapt_network(network, image, labels, absent)
    assert all(torch.equal(v, both_absent.state_dict()[k]) for k, v in both.state_dict().items())


def test_joint_lr_steps_only_frames_with_several_objects(network: EMVOS) -> None:
    """``joint_lr`` replaces ``lr`` where objects are adapted jointly; one object, or ``joint`` off, keeps ``lr``."""
    image, labels = _tensors(*_scene())
    settings = AdaptSettings(steps=3, lr=1e-3, variants=2, crop=32)
    faster = dataclasses.replace(settings, joint_lr=1e-2)

    def same(a: EMVOS, b: EMVOS) -> bool:
        return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

    one = torch.where(labels == 1, labels, 0)
    assert same(adapt_network(network, image, one, settings)[0], adapt_network(network, image, one, faster)[0])
    apart = dataclasses.replace(settings, joint=False)
    assert same(adapt_network(network, image, labels, apart)[0],
                adapt_network(network, image, labels, dataclasses.replace(faster, joint=False))[0])
    plain = adapt_network(network, image, labels, settings)[0]
    assert same(plain, adapt_network(network, image, labels, dataclasses.replace(settings, joint_lr=1e-3))[0])
    assert not same(plain, adapt_network(network, image, labels, faster)[0])
