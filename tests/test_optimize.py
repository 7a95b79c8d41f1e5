"""The network prepared for inference computes what the reference network computes, and leaves it as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from emvos.inference.optimize import fold_batchnorms, prepare_for_inference, producer_consumer_pairs
from emvos.inference.predictor import VideoPredictor, load_network
from emvos.io.masks import read_label_png
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

FRAMES = 6
CPU = torch.device("cpu")


def _sequence(root: Path, sequence: str, frames: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``frames`` ``(H, W, 3) uint8`` frames of a DAVIS sequence and its first ``(H, W)`` mask."""
    images = sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:frames]
    first = read_label_png(root / "Annotations" / "480p" / sequence / f"{images[0].stem}.png",
                           opaque_alpha=True).labels
    return [np.asarray(Image.open(path).convert("RGB")) for path in images], first


def test_prepared_network_gives_the_reference_masks_on_a_real_sequence(davis2016_root: Path) -> None:
    """The shipped model on the first frames of a DAVIS-2016 sequence, fp32: the same masks, and
    probabilities (the network's own, each frame decoded from its previous soft mask) equal up to
    float rounding."""
    frames, first = _sequence(davis2016_root, "bear", FRAMES)
    network = load_network(None)
    labels, probabilities = {}, {}
    for optimize in (False, True):
        predictor = VideoPredictor(network, device="cpu", resolution=240, optimize=optimize, adapt=None)
        predictions = list(predictor.propagate(predictor.init_state(probabilities=True), frames, {0: first}))
        labels[optimize] = np.stack([p.labels for p in predictions])
        probabilities[optimize] = np.stack([p.probabilities for p in predictions]).astype(int)
    assert 0.01 < (labels[False][1:] > 0).mean() < 0.5  # the object is tracked, not lost or everywhere
    np.testing.assert_array_equal(labels[True], labels[False])
    assert np.abs(probabilities[True] - probabilities[False]).max() <= 1  # of 255
    # The logits themselves, through the network's own unrolling (frame 0 given, the rest predicted).
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255)[None]
    clip = F.interpolate(clip[0], size=(224, 400), mode="bilinear", align_corners=False)[None]
    mask = F.interpolate(torch.from_numpy(first > 0).float()[None, None], size=(224, 400), mode="nearest")[0]
    prepared = prepare_for_inference(network, CPU)
    with torch.no_grad():
        want, got = network(clip, mask).softmax(2), prepared(clip, mask).softmax(2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_optimised_and_reference_networks_agree_on_a_real_sequence(davis2017_sample_root: Path) -> None:
    """The shipped model on the first frames of schoolgirls (7 objects), fp32. Float rounding may move a
    pixel where objects tie."""
    frames, first = _sequence(davis2017_sample_root, "schoolgirls", FRAMES)
    network = load_network(None)
    labels = {}
    for optimize in (False, True):
        predictor = VideoPredictor(network, device="cpu", resolution=240, optimize=optimize)
        labels[optimize] = np.stack([p.labels for p in predictor.propagate(predictor.init_state(), frames, {0: first})])
    assert len(np.unique(labels[False][-1])) > 3  # several objects tracked
    assert (labels[False] == labels[True]).mean() > 0.999
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    assert prepare_for_inference(network, CPU, optimize=False) is network
    assert prepare_for_inference(network, CPU) is not network
    after = network.state_dict()  # the reference network is left as it was
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_lite0"])
def test_prepared_encoders_give_the_same_features(name: str) -> None:
    """Every BatchNorm after a convolution is folded, and the features stay the same up to float rounding."""
    torch.manual_seed(2)
    network = EMVOS(ModelConfig(encoder=name, key_channels=8, decoder_widths=(8, 8, 8)),
                    encoder_weights="imagenet" if name == "efficientnet_lite0" else None).eval()
    if name == "densenet121":  # random BatchNorm statistics, so that folding them is not the identity
        for m in network.encoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in network.encoder.modules())
    after_conv = len(producer_consumer_pairs(network, nn.Conv2d, nn.BatchNorm2d))
    prepared = prepare_for_inference(network, CPU)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in prepared.encoder.modules())
    # EfficientNet: every BatchNorm follows a convolution. DenseNet: those that open a layer or a
    # transition normalise a concatenation of features, and stay.
    assert left == norms - after_conv and (left == 0) == (name == "efficientnet_lite0")
    assert fold_batchnorms(prepared) == 0  # preparing again changes nothing
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for want, got in zip(network.encoder(x), prepared.encoder(x.contiguous(memory_format=torch.channels_last)),
                             strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


class _Shared(nn.Module):
    """A convolution whose output feeds a BatchNorm and, beside it, a ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + self.act(y)


def test_a_convolution_feeding_two_modules_is_left_alone() -> None:
    network = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None).eval()
    network.encoder.s8.append(_Shared(network.encoder.feature_info.channels[1]))
    pairs = producer_consumer_pairs(network, nn.Conv2d, (nn.BatchNorm2d, nn.ReLU))
    assert ("encoder.s4.0", "encoder.s4.1") in pairs  # conv -> BatchNorm
    assert not any(p.startswith("encoder.s8.2.") for p, _ in pairs)
