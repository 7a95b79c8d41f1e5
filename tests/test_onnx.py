"""The ONNX export and its onnxruntime driver: the same masks as the PyTorch predictor, without PyTorch."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'emvos[onnx]')")
pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'emvos[onnx]')")

from emvos.cli import main  # noqa: E402
from emvos.inference.predictor import VideoPredictor, load_network  # noqa: E402
from emvos.model.checkpoint import save_checkpoint  # noqa: E402
from emvos.model.config import ModelConfig  # noqa: E402
from emvos.model.network import EMVOS  # noqa: E402
from emvos.onnx import files as onnx_files  # noqa: E402
from emvos.onnx.export import export_onnx  # noqa: E402
from emvos.onnx.files import MANIFEST, read_onnx_folder  # noqa: E402
from emvos.onnx.predictor import OnnxPredictor  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
H, W = 40, 72
#: Share of pixels on which the two backends must agree (the issue's bar, on real sequences).
AGREEMENT = 0.999
#: The same for the random tiny network on 40x72 frames: even with its last layer scaled up, a few
#: pixels have objects within 1e-6 of each other, which float rounding decides; its references
#: (the state each next frame starts from) are checked to 1e-4 instead.
TINY_AGREEMENT = 0.99
#: Factor on the tiny network's last layer (see :func:`tiny`).
LOGIT_SCALE = 1000.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random tiny network's checkpoint and its ONNX export.

    The last layer is scaled up: a random network's objects are otherwise all near 50 %, and labels
    would be decided by float rounding.
    """
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = root / "tiny.pt"
    network = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    with torch.no_grad():
        network.decoder.levels[-1].up.weight.mul_(LOGIT_SCALE)
    save_checkpoint(checkpoint, network)
    return checkpoint, export_onnx(root / "tiny-onnx", checkpoint)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return [np.roll(base, 2 * i, axis=1) for i in range(n)]  # a moving texture: tracking has something to follow


def _mask(boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    for oid, (y0, y1, x0, x1) in boxes.items():
        m[y0:y1, x0:x1] = oid
    return m


def _both(checkpoint: Path | None, onnx_dir: Path, frames: list[np.ndarray], masks: dict[int, np.ndarray],
          resolution: int) -> list[tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]]:
    """Each frame's labels and object ids from the PyTorch and the onnxruntime backends."""
    torch_predictor = VideoPredictor(load_network(checkpoint), device="cpu", resolution=resolution)
    onnx_predictor = OnnxPredictor.from_onnx(onnx_dir, resolution=resolution, threads=1)
    a, b = torch_predictor.init_state(), onnx_predictor.init_state()
    out = []
    for i, frame in enumerate(frames):
        pa, pb = torch_predictor.step(a, frame, masks.get(i)), onnx_predictor.step(b, frame, masks.get(i))
        out.append((pa.labels, pb.labels, pa.object_ids, pb.object_ids))
        if a.prev is not None:  # the state the next frame starts from
            np.testing.assert_allclose(b.prev_mask, a.prev.mask.numpy(), atol=1e-4)
    return out


@pytest.mark.parametrize("resolution", [0, 24, 56])  # kept, shrunk, enlarged
def test_onnxruntime_follows_the_pytorch_predictor(tiny: tuple[Path, Path], resolution: int) -> None:
    """Objects given at frame 1, a new one at 3, one re-given at 5: the same labels on every frame."""
    masks = {1: _mask({3: (4, 20, 4, 30), 9: (22, 38, 40, 70)}), 3: _mask({5: (0, 10, 50, 72)}),
             5: _mask({3: (10, 30, 10, 40)})}
    results = _both(*tiny, _frames(8), masks, resolution)
    for i, (expected, got, expected_ids, got_ids) in enumerate(results):
        assert got.dtype == np.uint8 and got.shape == (H, W)
        assert got_ids == expected_ids, i
        assert (got == expected).mean() >= TINY_AGREEMENT, i
    assert not results[0][1].any()  # before the first mask: background
    assert np.array_equal(results[5][1][masks[5] != 0], masks[5][masks[5] != 0])  # given objects as given


def test_keys_from_several_scales_export_too(tmp_path: Path) -> None:
    """A network whose keys read the stride-4 and stride-8 features too (``key_scales``) exports
    and runs under onnxruntime with the PyTorch predictor's labels."""
    torch.manual_seed(0)
    network = EMVOS(ModelConfig(encoder="tiny-test", key_scales=(4, 8, 16)), encoder_weights=None)
    with torch.no_grad():
        network.decoder.levels[-1].up.weight.mul_(LOGIT_SCALE)
    save_checkpoint(tmp_path / "scales.pt", network)
    onnx_dir = export_onnx(tmp_path / "scales-onnx", tmp_path / "scales.pt")
    masks = {0: _mask({1: (4, 20, 4, 30), 2: (22, 38, 40, 70)})}
    for i, (expected, got, expected_ids, got_ids) in enumerate(_both(tmp_path / "scales.pt", onnx_dir, _frames(4),
                                                                     masks, 0)):
        assert got_ids == expected_ids == (1, 2) and (got == expected).mean() >= TINY_AGREEMENT, i


def test_both_backends_run_the_same_loop(tiny: tuple[Path, Path]) -> None:
    """``propagate`` backward and over chosen indices: the PyTorch backend's frames, objects and labels."""
    frames, masks = _frames(5), {4: _mask({2: (4, 20, 4, 30)}), 1: _mask({6: (22, 38, 40, 70)})}
    torch_predictor = VideoPredictor(load_network(tiny[0]), device="cpu", resolution=0)
    onnx_predictor = OnnxPredictor.from_onnx(tiny[1], resolution=0, threads=1)
    timed: list[int] = []
    for order in ({"direction": "backward"}, {"indices": [4, 0, 1, 2]}):
        timed.clear()
        expected = list(torch_predictor.propagate(torch_predictor.init_state(), frames, masks, **order))
        got = list(onnx_predictor.propagate(onnx_predictor.init_state(), frames, masks,
                                            on_frame=lambda p, _: timed.append(p.index), **order))
        assert [p.index for p in got] == [p.index for p in expected] == timed
        for a, b in zip(expected, got, strict=True):
            assert a.object_ids == b.object_ids and (a.labels == b.labels).mean() >= TINY_AGREEMENT
    with pytest.raises(ValueError, match="probabilities"):
        onnx_predictor.init_state(probabilities=True)


def test_driver_checks_its_inputs(tiny: tuple[Path, Path]) -> None:
    predictor = OnnxPredictor.from_onnx(tiny[1], resolution=0, threads=1)
    state = predictor.init_state()
    predictor.step(state, _frames(1)[0], _mask({1: (0, 10, 0, 10)}))
    with pytest.raises(ValueError, match="differ from the video's size"):
        predictor.step(state, np.zeros((H + 16, W, 3), np.uint8))
    with pytest.raises(ValueError, match="frame_index"):
        predictor.add_mask(state, 0, _mask({2: (0, 5, 0, 5)}))
    with pytest.raises(ValueError, match="resolution"):
        OnnxPredictor.from_onnx(tiny[1], resolution=-1)


def test_a_folder_without_manifest_is_refused(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "encoder.onnx").write_bytes((tiny[1] / "encoder.onnx").read_bytes())
    with pytest.raises(Exception, match=MANIFEST):
        read_onnx_folder(tmp_path)


def test_segment_with_onnxruntime_does_not_import_torch(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(_frames(4)):
        Image.fromarray(frame).save(frames / f"{i:05d}.png")
    Image.fromarray(_mask({1: (4, 20, 4, 30), 2: (22, 38, 40, 70)})).save(tmp_path / "00000.png")
    out = tmp_path / "out"
    args = ["segment", str(frames), "--mask", str(tmp_path / "00000.png"), "--out", str(out), "--backend",
            "onnxruntime", "--onnx", str(tiny[1]), "--resolution", "0", "--quiet", "--threads", "1"]
    code = ("import sys; from emvos.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(4)]


@pytest.mark.parametrize("extra", [["--backend", "onnxruntime", "--device", "cuda"],
                                   ["--backend", "onnxruntime", "--precision", "bf16"],
                                   ["--backend", "onnxruntime", "--compile"],
                                   ["--backend", "onnxruntime", "--zoom", "256"],
                                   ["--backend", "onnxruntime", "--reach", "0.5"],
                                   ["--backend", "onnxruntime", "--checkpoint", "x.pt"],
                                   ["--backend", "pytorch"]])
def test_segment_refuses_options_of_the_other_backend(tiny: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(_frames(1)[0]).save(frames / "00000.png")
    Image.fromarray(_mask({1: (4, 20, 4, 30)})).save(tmp_path / "m.png")
    out = tmp_path / "out"
    rc = main(["segment", str(frames), "--mask", str(tmp_path / "m.png"), "--out", str(out), "--onnx",
               str(tiny[1]), "--quiet", *extra])
    assert rc == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("argv", [["export"], ["export", "--onnx", "{tmp}/o", "a.pt"],
                                  ["export", "a.pt", "b.pt", "--checkpoint", "c.pt"],
                                  ["export", "--onnx", "{tmp}/o", "--checkpoint", "{tmp}/absent.pt"]])
def test_export_refuses_mixed_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert capsys.readouterr().err.startswith("emvos: error:")
    assert not (tmp_path / "o").exists()


def test_export_command_writes_a_complete_folder(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    assert main(["export", "--onnx", str(tmp_path / "o"), "--checkpoint", str(tiny[0])]) == 0
    model = read_onnx_folder(tmp_path / "o")
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert model.branches == ("sm", "em") and manifest["source_sha256"] == onnx_files.file_sha256(tiny[0])
    assert not list((tmp_path / "o").glob("*.traced.onnx"))


@pytest.mark.slow
def test_the_shipped_model_is_exported_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(onnx_files.CACHE_ENV, str(tmp_path))
    first = onnx_files.cached_onnx_folder()  # exported in a child process
    assert first.folder.parent == tmp_path / "onnx"
    monkeypatch.setattr(onnx_files.subprocess, "run", lambda *a, **k: pytest.fail("exported again"))
    assert onnx_files.cached_onnx_folder() == first


# -- the shipped model on real sequences ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tmp_path_factory.mktemp("shipped") / "onnx")


def _sequence(root: Path, name: str, frames: int) -> tuple[list[np.ndarray], np.ndarray]:
    images = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))[:frames]
    mask = np.array(Image.open(sorted((root / "Annotations" / "480p" / name).glob("*.png"))[0]))
    return [np.array(Image.open(p).convert("RGB")) for p in images], mask


def _agreement(shipped_onnx: Path, frames: list[np.ndarray], mask: np.ndarray, resolution: int) -> float:
    results = _both(None, shipped_onnx, frames, {0: mask}, resolution)
    assert all(ids_a == ids_b for _, _, ids_a, ids_b in results)
    return float(np.mean([(a == b).mean() for a, b, _, _ in results]))


@pytest.mark.slow
def test_shipped_model_agrees_on_a_davis2016_sequence(davis2016_root: Path, shipped_onnx: Path) -> None:
    frames, mask = _sequence(davis2016_root, "bmx-bumps", 30)
    assert _agreement(shipped_onnx, frames, mask, resolution=240) >= AGREEMENT


@pytest.mark.slow
def test_shipped_model_agrees_on_schoolgirls_seven_objects(davis2017_sample_root: Path, shipped_onnx: Path) -> None:
    frames, mask = _sequence(davis2017_sample_root, "schoolgirls", 30)
    assert len(np.unique(mask)) == 8
    assert _agreement(shipped_onnx, frames, mask, resolution=240) >= AGREEMENT


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(onnx_files.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert onnx_files.cache_root() == tmp_path / "emvos"
    monkeypatch.setenv(onnx_files.CACHE_ENV, os.fspath(tmp_path / "c"))
    assert onnx_files.cache_root() == tmp_path / "c"


def test_the_labelling_tool_example_tracks_over_http(tiny: tuple[Path, Path]) -> None:
    """The example service answers a plain HTTP client with the driver's own masks."""
    import importlib.util
    import threading
    import urllib.error
    import urllib.request

    spec = importlib.util.spec_from_file_location("labelling_server", REPO_ROOT / "examples" / "labelling_server.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    predictor = OnnxPredictor.from_onnx(tiny[1], resolution=0, threads=1)
    server = example.make_server(example.TrackingService(predictor), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        request = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def png(array: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    try:
        frames, mask = _frames(3), _mask({1: (4, 20, 4, 30), 2: (22, 38, 40, 70)})
        session = post("/sessions", {})["session"]
        replies = [post(f"/sessions/{session}/frames", {"image": png(f), **({"mask": png(mask)} if i == 0 else {})})
                   for i, f in enumerate(frames)]
        state = predictor.init_state()
        for i, (frame, reply) in enumerate(zip(frames, replies, strict=True)):
            expected = predictor.step(state, frame, mask if i == 0 else None)
            got = np.array(Image.open(io.BytesIO(base64.b64decode(reply["mask"]))))
            assert reply["index"] == i and reply["object_ids"] == [1, 2]
            assert np.array_equal(got, expected.labels)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            post("/sessions/unknown/frames", {"image": png(frames[0])})
    finally:
        server.shutdown()
        server.server_close()


def test_propagate_is_the_shared_loop(tiny: tuple[Path, Path]) -> None:
    """Masks by frame index and the backward order, as VideoPredictor.propagate takes them."""
    predictor = OnnxPredictor.from_onnx(tiny[1], resolution=0, threads=1)
    frames, masks = _frames(5), {1: _mask({2: (4, 20, 4, 30)}), 3: _mask({4: (22, 38, 40, 70)})}
    seen: list[int] = []
    forward = list(predictor.propagate(predictor.init_state(), frames, masks,
                                       on_frame=lambda p, seconds: seen.append(p.index)))
    state = predictor.init_state()
    stepped = [predictor.step(state, f, masks.get(i)) for i, f in enumerate(frames)]
    assert [p.index for p in forward] == seen == list(range(5))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(forward, stepped, strict=True))
    backward = list(predictor.propagate(predictor.init_state(), frames, {4: masks[1]}, direction="backward"))
    assert [p.index for p in backward] == [4, 3, 2, 1, 0] and backward[0].object_ids == (2,)
