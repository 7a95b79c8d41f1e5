"""The network prepared for inference gives the reference network's masks on a real sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from emvos.inference.optimize import prepare_for_inference
from emvos.inference.predictor import VideoPredictor, load_network
from emvos.io.masks import read_label_png

FRAMES = 6


def test_optimised_and_reference_networks_agree_on_a_real_sequence(davis2017_sample_root: Path) -> None:
    """The shipped model on the first frames of schoolgirls (7 objects), fp32: folded, fused, Winograd and
    channels-last against the network as trained. Float rounding may move a pixel where objects tie."""
    sequence = "schoolgirls"
    images = sorted((davis2017_sample_root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:FRAMES]
    frames = [np.asarray(Image.open(path).convert("RGB")) for path in images]
    first = read_label_png(davis2017_sample_root / "Annotations" / "480p" / sequence / f"{images[0].stem}.png").labels
    network = load_network(None)
    labels = {}
    for optimize in (False, True):
        predictor = VideoPredictor(network, device="cpu", resolution=240, optimize=optimize)
        labels[optimize] = np.stack([p.labels for p in predictor.propagate(predictor.init_state(), frames, {0: first})])
    assert len(np.unique(labels[False][-1])) > 3  # several objects tracked
    assert (labels[False] == labels[True]).mean() > 0.999
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    device = VideoPredictor(network, device="cpu").device
    assert prepare_for_inference(network, device, optimize=False) is network
    assert prepare_for_inference(network, device) is not network
    after = network.state_dict()  # the reference network is left as it was
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)
