"""Loading the official EMVOS checkpoints (plain state dicts with ``vos.*`` keys).

The official code is not needed: ``data/official_emvos_keys.txt`` lists the keys and shapes of the
official ``EMVOS().state_dict()``. The tests fill those shapes with random tensors, save them as a
plain state dict, load it with :func:`load_model`, and check where every tensor lands.
(That the converted network then computes what the official one computes is checked against the
official code itself by ``benchmarks/official_agreement.py``.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from emvos.errors import EmvosInputError
from emvos.model.checkpoint import OFFICIAL_CONFIG, load_model
from emvos.model.encoders.base import IMAGENET_MEAN, IMAGENET_STD

KEYS_FILE = Path(__file__).resolve().parent / "data" / "official_emvos_keys.txt"

#: Official decoder module (level i = 1, 2, 3, coarse to fine) -> emvos module (level i - 1).
DECODER_MODULES = {
    "conv{i}.conv": "levels.{j}.reduce",
    "blend{i}.conv": "levels.{j}.blend",
    "deconv{i}.deconv": "levels.{j}.up",
    "cbam{i}.conv1.conv": "levels.{j}.cbam.conv",
    "cbam{i}.conv2.0.conv": "levels.{j}.cbam.channel_mlp.0",
    "cbam{i}.conv2.1.conv": "levels.{j}.cbam.channel_mlp.2",
    "cbam{i}.conv3.0.conv": "levels.{j}.cbam.spatial.0",
    "cbam{i}.conv3.1.conv": "levels.{j}.cbam.spatial.2",
}
#: Official buffers emvos does not load (its encoders hold the same normalisation constants).
NOT_LOADED = {"vos.encoder.mean", "vos.encoder.std"}


def expected_name(official: str) -> str:
    """The emvos parameter an official key must land in, written out independently of the loader."""
    key = official.removeprefix("vos.")
    if key.startswith("encoder."):
        return key
    if key.startswith("matcher."):
        return key.replace("matcher.conv1.conv.", "keys.sm.").replace("matcher.conv2.conv.", "keys.em.")
    module, _, param = key.removeprefix("decoder.").rpartition(".")
    for i in (1, 2, 3):
        for theirs, ours in DECODER_MODULES.items():
            if module == theirs.format(i=i):
                return f"decoder.{ours.format(j=i - 1)}.{param}"
    raise AssertionError(f"no expectation for {official}")


def read_official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split()
            shapes[key] = tuple(int(d) for d in shape.strip("()").split(",") if d)
    return shapes


def random_official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the official shapes; every value differs from every other tensor's."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for n, (key, shape) in enumerate(read_official_shapes().items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + n, dtype=torch.int64)
        else:
            state[key] = torch.randn(shape, generator=gen)
    state["vos.encoder.mean"] = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    state["vos.encoder.std"] = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return state


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return random_official_state()


@pytest.fixture(scope="module")
def official_file(official_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("official") / "coco_davis_best.pth"
    torch.save(official_state, path)
    return path


@pytest.fixture(scope="module")
def loaded(official_file: Path) -> dict[str, torch.Tensor]:
    model = load_model(official_file)
    assert model.config == OFFICIAL_CONFIG
    return model.state_dict()


def test_fixture_describes_the_official_architecture() -> None:
    shapes = read_official_shapes()
    assert len(shapes) == 576
    assert shapes["vos.encoder.denseblock3.denselayer24.conv2.weight"] == (32, 128, 3, 3)
    assert shapes["vos.matcher.conv1.conv.weight"] == (512, 1024, 1, 1)
    assert shapes["vos.decoder.blend1.conv.weight"] == (256, 266, 3, 3)
    assert shapes["vos.decoder.deconv3.deconv.weight"] == (256, 2, 6, 6)
    assert shapes["vos.encoder.norm0.num_batches_tracked"] == ()


@pytest.mark.parametrize(("official", "ours"), [
    ("vos.encoder.conv0.weight", "encoder.conv0.weight"),
    ("vos.encoder.norm0.running_var", "encoder.norm0.running_var"),
    ("vos.encoder.denseblock3.denselayer24.conv2.weight", "encoder.denseblock3.denselayer24.conv2.weight"),
    ("vos.encoder.transition2.norm.num_batches_tracked", "encoder.transition2.norm.num_batches_tracked"),
    ("vos.matcher.conv1.conv.weight", "keys.sm.weight"),
    ("vos.matcher.conv2.conv.bias", "keys.em.bias"),
    ("vos.decoder.conv1.conv.weight", "decoder.levels.0.reduce.weight"),
    ("vos.decoder.conv3.conv.weight", "decoder.levels.2.reduce.weight"),
    ("vos.decoder.blend2.conv.bias", "decoder.levels.1.blend.bias"),
    ("vos.decoder.cbam1.conv1.conv.weight", "decoder.levels.0.cbam.conv.weight"),
    ("vos.decoder.cbam2.conv2.0.conv.weight", "decoder.levels.1.cbam.channel_mlp.0.weight"),
    ("vos.decoder.cbam2.conv2.1.conv.weight", "decoder.levels.1.cbam.channel_mlp.2.weight"),
    ("vos.decoder.cbam3.conv3.0.conv.bias", "decoder.levels.2.cbam.spatial.0.bias"),
    ("vos.decoder.cbam3.conv3.1.conv.weight", "decoder.levels.2.cbam.spatial.2.weight"),
    ("vos.decoder.deconv3.deconv.weight", "decoder.levels.2.up.weight"),
])
def test_known_pairs(official_state: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor],
                     official: str, ours: str) -> None:
    assert torch.equal(loaded[ours], official_state[official])
    assert loaded[ours].dtype == official_state[official].dtype


def test_every_tensor_lands_in_its_parameter(official_state: dict[str, torch.Tensor],
                                             loaded: dict[str, torch.Tensor]) -> None:
    expected = {expected_name(k): k for k in official_state if k not in NOT_LOADED}
    assert sorted(expected) == sorted(loaded), "emvos's parameters and the official tensors differ"
    wrong = [f"{theirs} -> {ours}" for ours, theirs in expected.items()
             if not torch.equal(loaded[ours], official_state[theirs])]
    assert not wrong, f"{len(wrong)} tensors landed elsewhere, e.g. {wrong[:3]}"


def test_normalisation_constants_match_the_official_buffers(official_file: Path) -> None:
    encoder = load_model(official_file).encoder
    assert torch.equal(encoder.mean, torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    assert torch.equal(encoder.std, torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))


def test_missing_key_is_named(official_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {k: v for k, v in official_state.items() if k != "vos.decoder.blend2.conv.weight"}
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(EmvosInputError, match=r"missing keys: .*decoder\.levels\.1\.blend\.weight"):
        load_model(tmp_path / "missing.pth")


@pytest.mark.parametrize("extra", ["vos.decoder.conv4.conv.weight",
                                   "vos.encoder.denseblock4.denselayer1.conv1.weight"])
def test_unexpected_key_is_named(official_state: dict[str, torch.Tensor], tmp_path: Path, extra: str) -> None:
    torch.save({**official_state, extra: torch.zeros(3)}, tmp_path / "unexpected.pth")
    with pytest.raises(EmvosInputError, match=re.escape(extra.removeprefix("vos."))):
        load_model(tmp_path / "unexpected.pth")


def test_wrong_shape_is_named(official_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    wrong = {**official_state, "vos.matcher.conv2.conv.weight": torch.zeros(256, 1024, 1, 1)}
    torch.save(wrong, tmp_path / "s.pth")
    with pytest.raises(EmvosInputError, match=r"keys\.em\.weight has shape \(256, 1024, 1, 1\)"):
        load_model(tmp_path / "s.pth")


@pytest.mark.parametrize("content", ["text", "tensor", "foreign dict"])
def test_not_a_checkpoint(tmp_path: Path, content: str) -> None:
    path = tmp_path / "file.pth"
    if content == "text":
        path.write_text("this is not a checkpoint\n")
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"state_dict": {"vos.encoder.conv0.weight": torch.zeros(1)}}, path)
    with pytest.raises(EmvosInputError, match=re.escape(str(path))):
        load_model(path)
