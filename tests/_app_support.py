"""Helpers shared by the ``emvos app`` tests: a tiny video, a tiny checkpoint, sessions and masks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from flask.testing import FlaskClient

from emvos.app.session import AppSession
from emvos.app.workspace import Workspace
from emvos.inference.predictor import VideoPredictor
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

H, W, FRAMES = 48, 64, 6


def write_video(path: Path, frames: int = FRAMES) -> Path:
    """An mp4 of a bright square moving right over a dark gradient, ``frames`` frames of 64x48."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for index in range(frames):
            image = np.zeros((H, W, 3), np.uint8)
            image[..., 2] = np.linspace(30, 90, W, dtype=np.uint8)
            image[12:32, 8 + 4 * index:28 + 4 * index] = (230, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_checkpoint(path: Path) -> Path:
    """A checkpoint of an untrained network with the tiny test encoder."""
    torch.manual_seed(0)
    save_checkpoint(path, EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None))
    return path


def tiny_loader(checkpoint: Path) -> Any:
    """A ``load_predictor`` for :class:`AppSession` that loads ``checkpoint`` on the CPU at full size,
    without zoomed windows (every object of these small frames would get one; the tests of the app
    rely on the frame's pass of the random network, which marks something on every frame)."""
    return lambda: VideoPredictor.from_checkpoint(checkpoint, device="cpu", resolution=0, zoom=None)


def make_session(root: Path, workspace: Path, load_predictor: Any) -> AppSession:
    """A session over ``workspace`` that may open files under ``root``."""
    return AppSession(Workspace(workspace), root, load_predictor, model_name="tiny")


def box_mask(boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """``(H, W) uint8`` ids with each id's box ``(y0, y1, x0, x1)`` filled."""
    labels = np.zeros((H, W), np.uint8)
    for object_id, (y0, y1, x0, x1) in boxes.items():
        labels[y0:y1, x0:x1] = object_id
    return labels


def wait_job(client: FlaskClient, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``/api/job`` until the job is no longer running; returns its last status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get("/api/job").get_json()
        if job is None or job["state"] != "running":
            return job
        time.sleep(0.02)
    raise AssertionError(f"the job did not finish in {timeout} s: {job}")


def open_video(client: FlaskClient, path: str) -> dict[str, Any]:
    """Open ``path`` (relative to the root) through the API and wait for the decoding."""
    response = client.post("/api/open", json={"path": path})
    assert response.status_code == 202, response.get_json()
    job = wait_job(client)
    assert job["state"] == "done", job
    return client.get("/api/state").get_json()
