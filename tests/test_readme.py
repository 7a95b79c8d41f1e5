"""The README's Python example runs as written and writes palette PNGs."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from emvos.inference.settings import SHIPPED_MODEL
from emvos.io import DAVIS_PALETTE

README = Path(__file__).resolve().parent.parent / "README.md"
H, W, N = 48, 64, 4


def _python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(block for block in blocks if "VideoPredictor" in block)


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="this install ships no trained model")
def test_the_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    with av.open("video.mp4", "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for _ in range(N):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    labels = np.zeros((H, W), np.uint8)
    labels[10:30, 10:40] = 1
    mask = Image.fromarray(labels, mode="L")
    mask.putpalette(DAVIS_PALETTE)
    mask.save("first_frame.png")

    exec(compile(_python_example(), str(README), "exec"), {})

    written = sorted(Path("out").glob("*.png"))
    assert [p.stem for p in written] == [f"{i:05d}" for i in range(N)]
    for path in written:
        with Image.open(path) as image:
            assert image.mode == "P"
    assert (np.array(Image.open(written[0])) == labels).all()
