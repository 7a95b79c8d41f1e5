"""``emvos segment`` end to end, and every bad input it must refuse cleanly (exit 2, one line)."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from emvos.cli import main
from emvos.commands import SUBCOMMANDS
from emvos.inference import settings as inference_settings
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

H, W = 48, 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None))
    return path


def _frames_folder(root: Path, n: int = 5) -> Path:
    folder = root / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / f"f{i}.jpg")
    return folder


def _mask(path: Path, boxes: dict[int, tuple[int, int, int, int]], mode: str = "P") -> Path:
    m = np.zeros((H, W), np.uint8)
    for oid, (y0, y1, x0, x1) in boxes.items():
        m[y0:y1, x0:x1] = oid
    img = Image.fromarray(m, mode="L")
    if mode == "P":
        img.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [7] * (768 - 9))
    img.save(path)
    return path


def _segment(*args: object) -> int:
    return main(["segment", *map(str, args), "--quiet", "--threads", "1"])


def test_schoolgirls_seven_objects(davis2017_sample_root: Path, tmp_path: Path, checkpoint: Path) -> None:
    frames = tmp_path / "schoolgirls"
    frames.mkdir()
    src = davis2017_sample_root / "JPEGImages" / "480p" / "schoolgirls"
    for f in sorted(src.glob("*.jpg"))[:4]:
        shutil.copy(f, frames / f.name)
    mask_path = davis2017_sample_root / "Annotations" / "480p" / "schoolgirls" / "00000.png"
    out = tmp_path / "out"
    assert _segment(frames, "--mask", mask_path, "--out", out, "--checkpoint", checkpoint,
                    "--resolution", 0, "--overlay", tmp_path / "overlay.mp4") == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == [f"{i:05d}.png" for i in range(4)]
    given = Image.open(mask_path)
    first = Image.open(written[0])
    assert first.mode == "P" and first.getpalette() == given.getpalette()
    assert np.array_equal(np.asarray(first), np.asarray(given))
    assert set(np.unique(np.asarray(Image.open(written[-1])))) <= set(range(8))
    with av.open(str(tmp_path / "overlay.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 4
    assert not list(tmp_path.rglob("*.tmp*"))


@pytest.mark.parametrize("lookahead", [1, 4])
def test_generated_mp4_with_an_object_appearing_later(tmp_path: Path, checkpoint: Path, lookahead: int) -> None:
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        rng = np.random.default_rng(1)
        for _ in range(6):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    masks = tmp_path / "masks"
    masks.mkdir()
    _mask(masks / "00000.png", {2: (5, 20, 5, 30)})
    _mask(masks / "00003.png", {9: (30, 45, 40, 60)})
    out = tmp_path / "out"
    assert _segment(video, "--mask", masks, "--out", out, "--checkpoint", checkpoint, "--lookahead", lookahead) == 0
    labels = [np.asarray(Image.open(out / f"{i:05d}.png")) for i in range(6)]
    assert labels[0].shape == (H, W)
    assert 9 not in labels[2] and (labels[3][30:45, 40:60] == 9).all()


def test_greyscale_masks_give_greyscale_outputs(tmp_path: Path, checkpoint: Path) -> None:
    frames = _frames_folder(tmp_path, 3)
    mask = _mask(tmp_path / "m.png", {255: (5, 30, 5, 40)}, mode="L")
    out = tmp_path / "out"
    assert _segment(frames, "--mask", mask, "--out", out, "--checkpoint", checkpoint) == 0
    first = Image.open(out / "f0.png")
    assert first.mode == "L" and set(np.unique(np.asarray(first))) == {0, 255}


def _bad_input_cases(tmp: Path, checkpoint: Path) -> dict[str, tuple[list[object], str]]:
    frames = _frames_folder(tmp)
    good = _mask(tmp / "good.png", {1: (5, 20, 5, 30)})
    empty_dir = tmp / "empty"
    empty_dir.mkdir()
    corrupt = tmp / "corrupt"
    shutil.copytree(frames, corrupt)
    (corrupt / "f3.jpg").write_bytes(b"not a jpeg")
    small = tmp / "small.png"
    Image.fromarray(np.ones((H // 2, W), np.uint8), mode="L").save(small)
    no_object = _mask(tmp / "no_object.png", {})
    rgb = tmp / "rgb.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    deep = tmp / "deep.png"
    Image.fromarray(np.ones((H, W), np.uint16) * 300).save(deep)
    foreign = tmp / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    ck = ["--checkpoint", checkpoint]
    return {
        "missing input": ([tmp / "nope", "--mask", good, "--out", tmp / "o1", *ck], "nope"),
        "empty input": ([empty_dir, "--mask", good, "--out", tmp / "o2", *ck], "empty"),
        "corrupt frame": ([corrupt, "--mask", good, "--out", tmp / "o3", *ck], "f3.jpg"),
        "size mismatch": ([frames, "--mask", small, "--out", tmp / "o4", *ck], "small.png"),
        "no object": ([frames, "--mask", no_object, "--out", tmp / "o5", *ck], "no_object.png"),
        "rgb mask": ([frames, "--mask", rgb, "--out", tmp / "o6", *ck], "rgb.png"),
        "16-bit mask": ([frames, "--mask", deep, "--out", tmp / "o7", *ck], "deep.png"),
        "unknown checkpoint": ([frames, "--mask", good, "--out", tmp / "o8", "--checkpoint", foreign], "foreign.pt"),
        "missing checkpoint": ([frames, "--mask", good, "--out", tmp / "o9", "--checkpoint", tmp / "x.pt"],
                               "x.pt: checkpoint not found; pass an existing checkpoint file or a shipped model "
                               "(emvos-lite, emvos-base)"),
        "output is a file": ([frames, "--mask", good, "--out", a_file, *ck], "a_file"),
        "wrong matching": ([frames, "--mask", good, "--out", tmp / "o10", *ck, "--matching", "em"], "--matching"),
        "no lookahead": ([frames, "--mask", good, "--out", tmp / "o11", *ck, "--lookahead", 0], "--lookahead"),
        "graphs on cpu": ([frames, "--mask", good, "--out", tmp / "o12", *ck, "--cuda-graphs", "--device", "cpu"],
                          "--cuda-graphs"),
        "k without bm": ([frames, "--mask", good, "--out", tmp / "o11", *ck, "--k1", "4"], "--matching"),
        "zoom too small": ([frames, "--mask", good, "--out", tmp / "o13", *ck, "--zoom", "16"],
                           "--zoom must be 0 (off) or a window side of at least 64 pixels, got 16"),
        "negative reach": ([frames, "--mask", good, "--out", tmp / "o14", *ck, "--reach", "-1"],
                           "--reach must be 0 (look everywhere) or a positive share of an object's size, got -1.0"),
        "infinite reach": ([frames, "--mask", good, "--out", tmp / "o15", *ck, "--reach", "inf"],
                           "--reach must be 0 (look everywhere) or a positive share of an object's size, got inf"),
    }


CASES = ["missing input", "empty input", "corrupt frame", "size mismatch", "no object", "rgb mask", "16-bit mask",
         "unknown checkpoint", "missing checkpoint", "output is a file", "wrong matching", "k without bm",
         "no lookahead", "graphs on cpu", "zoom too small", "negative reach",
         "infinite reach"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, checkpoint: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    args, needle = _bad_input_cases(tmp_path, checkpoint)[case]
    assert _segment(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emvos: error: ") and needle in err[0], err
    assert "Traceback" not in err[0]
    if case != "corrupt frame":  # refused before any work: nothing was written
        assert not [p for p in tmp_path.rglob("o*") if p.is_dir() and any(p.iterdir())]
    if case == "missing checkpoint":  # checked with the inputs, before the output folder is made
        assert not (tmp_path / "o9").exists()
    assert not list(tmp_path.rglob("*.tmp*"))


def test_no_checkpoint_and_no_shipped_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An install without weight files: the default and a shipped model by name are refused in one line."""
    monkeypatch.setattr(inference_settings, "SHIPPED_MODEL", tmp_path / "absent.pt")
    monkeypatch.setitem(inference_settings.SHIPPED_MODELS, "emvos-base", tmp_path / "absent-base.pt")
    frames = _frames_folder(tmp_path, 2)
    mask = _mask(tmp_path / "m.png", {1: (0, 9, 0, 9)})
    assert _segment(frames, "--mask", mask, "--out", tmp_path / "o") == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert _segment(frames, "--mask", mask, "--out", tmp_path / "o", "--checkpoint", "emvos-base") == 2
    assert "ships no emvos-base model" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("emvos ")


#: ``--help`` of every subcommand, and of the subcommands' own subcommands.
HELP_ARGVS = [[name, "--help"] for name in SUBCOMMANDS] + [
    ["synth", "distractors", "--help"], ["visualize", "matching", "--help"], ["visualize", "toy", "--help"],
    ["study", "matching", "--help"]]


@pytest.mark.parametrize("argv", [*HELP_ARGVS, ["segment", "missing.mp4", "--mask", "m.png", "--out", "out"]],
                         ids=[*("-".join(argv[:-1]) + "-help" for argv in HELP_ARGVS), "segment-bad-input"])
def test_help_and_input_errors_come_before_pytorch_loads(argv: list[str], tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from emvos.cli import main\n"
            f"try:\n    status = main({argv!r})\nexcept SystemExit as e:\n    status = e.code\n"
            "print(status, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == ("2 False" if "missing.mp4" in argv else "0 False")
    if "missing.mp4" in argv:
        assert done.stderr.strip() == ("emvos: error: missing.mp4: no such file or folder; "
                                       "pass a folder of frames or a video file")


def test_the_python_api_imports_the_predictor_on_first_use() -> None:
    import emvos.inference
    from emvos.inference import FramePrediction, VideoPredictor, VideoState
    from emvos.inference.predictor import VideoPredictor as Predictor

    module = vars(emvos.inference.predictor)
    assert VideoPredictor is Predictor and (FramePrediction, VideoState) == (module["FramePrediction"],
                                                                            module["VideoState"])
    with pytest.raises(AttributeError, match="no attribute 'Predictor'"):
        emvos.inference.Predictor  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("argv", [["--help"], ["segmnet"]], ids=["help", "mistyped"])
def test_the_command_list_imports_no_subcommand(argv: list[str]) -> None:
    import subprocess
    import sys

    code = (f"import sys; from emvos.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch' in sys.modules, any(m.startswith('emvos.inference') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *_, status, imported = done.stdout.strip().splitlines()
    assert imported == "False False"
    assert status == ("exit 0" if argv == ["--help"] else "exit 2")
    assert "segment" in done.stdout + done.stderr


def test_the_command_list_says_what_each_subcommand_says() -> None:
    from emvos.cli import SUBCOMMANDS, build_parser

    def summaries(command: str | None) -> dict[str, str]:
        actions = build_parser(command)._subparsers._group_actions[0]._choices_actions
        return {a.dest: a.help for a in actions}

    assert summaries(None) == summaries("*") == {name: summary for name, (_, summary) in SUBCOMMANDS.items()}
