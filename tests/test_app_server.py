"""``emvos app`` on the server side, through Flask's test client: API, path safety, jobs, workspace, export."""

from __future__ import annotations

import io
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask", reason="emvos app needs Flask: pip install 'emvos[app]'")
# ruff: noqa: E402 - the imports below need Flask

from flask.testing import FlaskClient

from _app_support import (
    FRAMES,
    H,
    W,
    box_mask,
    make_session,
    open_video,
    tiny_loader,
    wait_job,
    write_checkpoint,
    write_video,
)
from emvos.app.server import create_app
from emvos.app.session import EXPORT_FORMATS, AppSession, propagation_plan
from emvos.errors import EmvosInputError
from emvos.inference.predictor import FramePrediction, VideoPredictor, VideoState
from emvos.io import DAVIS_PALETTE
from emvos.io.formats import SOFT_FORMATS, read_npz_frame, read_results


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    write_video(folder / "clip.mp4")
    return folder


def _client(session: AppSession) -> FlaskClient:
    return create_app(session).test_client()


@pytest.fixture
def session(root: Path, tmp_path: Path, checkpoint: Path) -> AppSession:
    return make_session(root, tmp_path / "ws", tiny_loader(checkpoint))


@pytest.fixture
def client(session: AppSession) -> FlaskClient:
    return _client(session)


@pytest.fixture
def opened(client: FlaskClient) -> FlaskClient:
    open_video(client, "clip.mp4")
    return client


def _put(client: FlaskClient, index: int, labels: np.ndarray) -> Any:
    return client.put(f"/api/frames/{index}/annotation", data=labels.tobytes(),
                      content_type="application/octet-stream")


def _get_labels(client: FlaskClient, index: int, what: str) -> np.ndarray:
    response = client.get(f"/api/frames/{index}/{what}")
    assert response.status_code == 200, (index, what)
    return np.frombuffer(response.data, np.uint8).reshape(H, W)


class RecordingPredictor:
    """Stands in for VideoPredictor (its propagation loop, with recorded steps); optionally blocks until released."""

    lookahead = 1
    cuda_graphs = False
    propagate = VideoPredictor.propagate

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.steps: list[tuple[int, list[int]]] = []
        self.gate = gate
        self.entered = threading.Event()

    def init_state(self, probabilities: bool = False) -> VideoState:
        return VideoState()

    def step_many(self, state: VideoState, images: list[np.ndarray], masks: list[np.ndarray | None]) -> Any:
        return [self.step(state, image, mask) for image, mask in zip(images, masks, strict=True)]

    def step(self, state: VideoState, image: np.ndarray, mask: np.ndarray | None = None) -> FramePrediction:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        ids = [] if mask is None else sorted(int(v) for v in np.unique(mask) if v)
        self.steps.append((len(self.steps), ids))
        labels = np.full(image.shape[:2], 7, np.uint8)
        return FramePrediction(len(self.steps) - 1, labels, tuple(ids))


# -- the page and the state ----------------------------------------------------------------------

def test_page_and_assets_are_served_from_the_package(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b"<canvas id=\"view\">" in page.data
    for asset in ("app.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert b"http" not in page.data.replace(b"http://", b"")  # no CDN: nothing loaded from elsewhere
    assert b"//cdn" not in page.data and b"https://" not in page.data


def test_open_a_video_decodes_every_frame(opened: FlaskClient, session: AppSession) -> None:
    state = opened.get("/api/state").get_json()
    video = state["video"]
    assert (video["frames"], video["height"], video["width"]) == (FRAMES, H, W)
    assert video["name"] == "clip" and video["frame_names"] == [f"{i:05d}" for i in range(FRAMES)]
    assert state["annotated"] == [] and state["results"] == [] and state["job"]["state"] == "done"
    frame = opened.get("/api/frames/3.jpg")
    assert frame.status_code == 200 and frame.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(frame.data)).size == (W, H)
    assert opened.get(f"/api/frames/{FRAMES}.jpg").status_code == 404
    assert opened.get("/api/frames/-1.jpg").status_code == 404


def test_open_a_frame_folder_and_list_files(client: FlaskClient, root: Path) -> None:
    folder = root / "shots" / "walk"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(folder / f"img{i}.jpg")
    listing = client.get("/api/files?path=shots").get_json()
    assert listing["entries"] == [{"name": "walk", "kind": "folder", "path": "shots/walk"}]
    top = client.get("/api/files").get_json()
    assert {"name": "clip.mp4", "kind": "video", "path": "clip.mp4"} in top["entries"]
    assert client.get("/api/files?path=shots/walk").get_json()["frames"] == 3
    state = open_video(client, "shots/walk")
    assert state["video"]["name"] == "walk" and state["video"]["frame_names"] == ["img0", "img1", "img2"]


def test_bad_inputs_are_400_with_a_message(client: FlaskClient, root: Path) -> None:
    (root / "notes.txt").write_text("x")
    response = client.post("/api/open", json={"path": "notes.txt"})
    assert response.status_code == 400 and "notes.txt" in response.get_json()["error"]
    assert client.post("/api/open", json={"path": "missing.mp4"}).status_code == 400
    assert client.post("/api/open", data="clip.mp4").status_code == 400  # not JSON
    response = client.put("/api/frames/0/annotation", data=b"\0")
    assert response.status_code == 400 and "open a video" in response.get_json()["error"]
    assert client.post("/api/propagate", json={"start": 0}).status_code == 400


# -- path safety ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../outside.mp4", "../../etc", "/etc", "shots/../../outside.mp4",
                                  "link_out/outside.mp4", "link_out", "clip.mp4/../../outside.mp4"])
def test_paths_outside_the_root_are_refused(client: FlaskClient, root: Path, path: str) -> None:
    write_video(root.parent / "outside.mp4", frames=2)
    (root / "shots").mkdir()
    (root / "link_out").symlink_to(root.parent, target_is_directory=True)  # a link that leads out
    response = client.post("/api/open", json={"path": path})
    assert response.status_code == 403 and "outside the working folder" in response.get_json()["error"]
    assert client.get("/api/files", query_string={"path": path}).status_code == 403
    assert client.get("/api/state").get_json()["video"] is None


def test_odd_paths_are_taken_literally_inside_the_root(client: FlaskClient, root: Path) -> None:
    for path in ("%2e%2e/outside.mp4", "..%2foutside.mp4", "clip.mp4\x00"):
        response = client.post("/api/open", json={"path": path})
        assert response.status_code in (400, 403) and "error" in response.get_json(), path
    assert client.get("/api/files?path=%2e%2e").status_code == 403  # decoded by the URL: ".."
    assert client.get("/api/state").get_json()["video"] is None


def test_the_workspace_inside_the_root_is_neither_listed_nor_opened(root: Path, checkpoint: Path) -> None:
    session = make_session(root, root / "emvos-workspace", tiny_loader(checkpoint))
    client = _client(session)
    open_video(client, "clip.mp4")
    assert [e["name"] for e in client.get("/api/files").get_json()["entries"]] == ["clip.mp4"]
    for path in ("emvos-workspace/frames", "emvos-workspace"):
        response = client.post("/api/open", json={"path": path, "replace": True})
        assert response.status_code == 403 and "workspace" in response.get_json()["error"]
    assert len(list(session.workspace.frames_dir.glob("*.jpg"))) == FRAMES


def test_downloads_stay_in_the_exports_folder(opened: FlaskClient, session: AppSession) -> None:
    (session.workspace.path / "secret.txt").write_text("s")
    for url in ("/api/exports/../workspace.json", "/api/exports/..%2fworkspace.json", "/api/exports/../secret.txt",
                "/api/exports/%2e%2e/secret.txt", "/api/exports//etc/passwd"):
        response = opened.get(url, follow_redirects=True)
        assert response.status_code == 404, url


def test_other_hosts_and_cross_site_writes_are_refused(opened: FlaskClient) -> None:
    assert opened.get("/api/state", headers={"Host": "evil.example:7860"}).status_code == 403
    assert opened.get("/api/state", headers={"Host": "127.0.0.1:7860"}).status_code == 200
    labels = box_mask({1: (0, 5, 0, 5)})
    response = opened.put("/api/frames/0/annotation", data=labels.tobytes(),
                          headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    response = opened.put("/api/frames/0/annotation", data=labels.tobytes(), headers={"Origin": "http://localhost"})
    assert response.status_code == 200


# -- annotations ----------------------------------------------------------------------------------

def test_annotation_round_trip_and_storage(opened: FlaskClient, session: AppSession) -> None:
    labels = box_mask({1: (5, 20, 5, 30), 4: (30, 40, 40, 60)})
    assert opened.get("/api/frames/2/annotation").status_code == 404
    assert _put(opened, 2, labels).get_json() == {"annotated": True}
    assert np.array_equal(_get_labels(opened, 2, "annotation"), labels)
    stored = Image.open(session.workspace.annotations_dir / "00002.png")
    assert stored.mode == "P" and stored.getpalette() == DAVIS_PALETTE
    assert np.array_equal(np.asarray(stored), labels)
    state = opened.get("/api/state").get_json()
    assert state["annotated"] == [2] and state["objects"] == [1, 4]

    assert _put(opened, 2, labels[:-1]).status_code == 400  # wrong number of bytes
    assert _put(opened, FRAMES, labels).status_code == 404
    assert _put(opened, 2, np.zeros_like(labels)).get_json() == {"annotated": False}  # empty: no annotation
    assert opened.get("/api/state").get_json()["annotated"] == []
    _put(opened, 3, labels)
    assert opened.delete("/api/frames/3/annotation").status_code == 200
    assert opened.get("/api/frames/3/annotation").status_code == 404
    assert not list(session.workspace.path.rglob("*.tmp"))


def test_import_a_mask_png(opened: FlaskClient, tmp_path: Path) -> None:
    labels = box_mask({3: (10, 30, 10, 30)})
    image = Image.fromarray(labels, mode="L")
    image.putpalette([0, 0, 0, 10, 200, 10] * 128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = opened.post("/api/frames/1/import", data={"mask": (io.BytesIO(buffer.getvalue()), "m.png")})
    assert response.status_code == 200 and response.get_json() == {"objects": [3]}
    assert np.array_equal(_get_labels(opened, 1, "annotation"), labels)

    rgb = io.BytesIO()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb, format="PNG")
    response = opened.post("/api/frames/1/import", data={"mask": (io.BytesIO(rgb.getvalue()), "colour.png")})
    assert response.status_code == 400 and "colour.png" in response.get_json()["error"]
    small = io.BytesIO()
    Image.fromarray(labels[10:20], mode="L").save(small, format="PNG")
    response = opened.post("/api/frames/1/import", data={"mask": (io.BytesIO(small.getvalue()), "small.png")})
    assert response.status_code == 400 and "64x48" in response.get_json()["error"]


def test_a_box_or_clicks_give_an_objects_mask(opened: FlaskClient) -> None:
    response = opened.post("/api/frames/1/prompt", json={"box": [8, 6, 40, 30], "clicks": []})
    assert response.status_code == 200
    mask = np.frombuffer(response.data, np.uint8).reshape(H, W)
    assert mask.any() and not mask[:6].any() and not mask[:, 40:].any()  # nothing outside the box
    response = opened.post("/api/frames/1/prompt", json={"box": [8, 6, 40, 30], "clicks": [[20, 15, False]]})
    assert response.status_code == 200 and not np.frombuffer(response.data, np.uint8).reshape(H, W)[15, 20]
    for bad in ({"box": None, "clicks": []}, {"box": [1, 1, 2], "clicks": []}, {"clicks": [[W + 5, 1, True]]}):
        response = opened.post("/api/frames/1/prompt", json=bad)
        assert response.status_code == 400 and "prompt" in response.get_json()["error"]


# -- propagation ----------------------------------------------------------------------------------

def test_propagation_plan() -> None:
    assert propagation_plan(6, [0], 0, "forward") == ([], [0, 1, 2, 3, 4, 5])
    assert propagation_plan(6, [0, 3], 4, "forward") == ([0], [3, 4, 5])  # nearest annotated frame before
    assert propagation_plan(6, [0, 3], 3, "forward") == ([0], [3, 4, 5])
    assert propagation_plan(6, [0, 3], 1, "forward") == ([], [0, 1, 2, 3, 4, 5])
    assert propagation_plan(6, [1, 4], 2, "backward") == ([], [4, 3, 2, 1, 0])
    assert propagation_plan(6, [1, 4, 5], 1, "backward") == ([5, 4], [1, 0])
    with pytest.raises(EmvosInputError, match="no annotated frame at or before frame 2"):
        propagation_plan(6, [3], 2, "forward")
    with pytest.raises(EmvosInputError, match="at or after frame 4"):
        propagation_plan(6, [3], 4, "backward")


def test_propagate_forward_with_the_model(opened: FlaskClient, session: AppSession) -> None:
    given = box_mask({2: (12, 32, 8, 28)})
    _put(opened, 0, given)
    response = opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    assert response.status_code == 202 and response.get_json()["kind"] == "propagate"
    job = wait_job(opened)
    assert job["state"] == "done" and (job["done"], job["total"]) == (FRAMES, FRAMES), job
    state = opened.get("/api/state").get_json()
    assert state["results"] == list(range(FRAMES)) and state["model"]["error"] is None
    assert np.array_equal(_get_labels(opened, 0, "result"), given)
    for index in range(1, FRAMES):
        assert set(np.unique(_get_labels(opened, index, "result"))) <= {0, 2}


def test_propagate_backward_runs_the_reversed_video(opened: FlaskClient, session: AppSession) -> None:
    _put(opened, 4, box_mask({1: (12, 32, 24, 44)}))
    assert opened.post("/api/propagate", json={"start": 5, "direction": "backward"}).status_code == 400
    assert opened.post("/api/propagate", json={"start": 4, "direction": "backward"}).status_code == 202
    assert wait_job(opened)["state"] == "done"
    assert opened.get("/api/state").get_json()["results"] == [0, 1, 2, 3, 4]


def test_correction_replays_the_earlier_annotations(opened: FlaskClient, session: AppSession) -> None:
    predictor = RecordingPredictor()
    session._load_predictor = lambda: predictor
    _put(opened, 0, box_mask({1: (0, 9, 0, 9), 2: (20, 30, 20, 30)}))
    _put(opened, 3, box_mask({1: (0, 9, 5, 14)}))
    session.workspace.write_result(1, box_mask({1: (0, 5, 0, 5)}))  # an earlier result, before the anchor
    assert opened.post("/api/propagate", json={"start": 4, "direction": "forward"}).status_code == 202
    job = wait_job(opened)
    assert job["state"] == "done" and "from frame 3" in job["message"]
    # Frame 0 is replayed (both objects' references), then frames 3 (corrected), 4 and 5 are segmented.
    assert predictor.steps == [(0, [1, 2]), (1, [1]), (2, []), (3, [])]
    assert session.workspace.results() == [1, 3, 4, 5]
    assert (_get_labels(opened, 1, "result")[:5, :5] == 1).all()  # kept
    assert (_get_labels(opened, 4, "result") == 7).all()


def test_a_job_reports_progress_and_cancels(opened: FlaskClient, session: AppSession) -> None:
    gate = threading.Event()
    predictor = RecordingPredictor(gate)
    session._load_predictor = lambda: predictor
    _put(opened, 0, box_mask({1: (0, 9, 0, 9)}))
    assert opened.post("/api/propagate", json={"start": 0, "direction": "forward"}).status_code == 202
    assert predictor.entered.wait(30)
    running = opened.get("/api/job").get_json()
    assert running["state"] == "running" and running["total"] == FRAMES and running["done"] == 0
    busy = opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    assert busy.status_code == 409 and "running" in busy.get_json()["error"]
    assert opened.post("/api/export").status_code == 409
    assert opened.post("/api/open", json={"path": "clip.mp4", "replace": True}).status_code == 409
    assert opened.put("/api/frames/2/annotation", data=box_mask({1: (1, 2, 1, 2)}).tobytes()).status_code == 200

    assert opened.post("/api/job/cancel").get_json() == {"cancelled": True}
    gate.set()
    job = wait_job(opened)
    assert job["state"] == "cancelled" and job["done"] == 1, job
    assert session.workspace.results() == [0]  # the finished frame is kept
    assert opened.post("/api/job/cancel").get_json() == {"cancelled": False}


def test_a_missing_model_fails_the_job_but_not_the_app(opened: FlaskClient, session: AppSession) -> None:
    def no_model() -> None:
        raise EmvosInputError("this emvos install ships no trained model yet; pass --checkpoint FILE")

    session._load_predictor = no_model
    _put(opened, 0, box_mask({1: (0, 9, 0, 9)}))
    opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    job = wait_job(opened)
    assert job["state"] == "failed" and "--checkpoint" in job["error"]
    state = opened.get("/api/state").get_json()
    assert "--checkpoint" in state["model"]["error"] and state["annotated"] == [0]
    assert _put(opened, 1, box_mask({1: (0, 9, 0, 9)})).status_code == 200  # annotation still works


def test_an_unexpected_error_fails_the_job_with_its_message(opened: FlaskClient, session: AppSession) -> None:
    class Broken(RecordingPredictor):
        def step(self, *args: Any) -> Any:
            raise RuntimeError("boom")

    session._load_predictor = Broken
    _put(opened, 0, box_mask({1: (0, 9, 0, 9)}))
    opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    job = wait_job(opened)
    assert job["state"] == "failed" and "RuntimeError: boom" in job["error"]


# -- workspaces -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_reopening_a_workspace_continues_the_work(opened: FlaskClient, session: AppSession, root: Path,
                                                  checkpoint: Path) -> None:
    given = box_mask({5: (12, 32, 8, 28)})
    _put(opened, 0, given)
    opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    assert wait_job(opened)["state"] == "done"
    before = opened.get("/api/state").get_json()
    (session.workspace.results_dir / ".00003.png.abc.tmp").write_bytes(b"half")  # a write cut short by a kill
    (session.workspace.scratch_dir() / "upload.mp4").write_bytes(b"part")  # an upload cut short

    reopened = _client(make_session(root, session.workspace.path, tiny_loader(checkpoint)))
    after = reopened.get("/api/state").get_json()
    assert after["video"] == before["video"]
    assert (after["annotated"], after["results"], after["objects"]) == ([0], list(range(FRAMES)), [5])
    assert np.array_equal(_get_labels(reopened, 0, "annotation"), given)
    assert not list(session.workspace.path.rglob("*.tmp")) and not list(session.workspace.path.glob(".scratch-*"))


def test_opening_another_video_needs_confirmation(opened: FlaskClient, root: Path, session: AppSession) -> None:
    write_video(root / "other.mp4", frames=3)
    _put(opened, 0, box_mask({1: (0, 9, 0, 9)}))
    response = opened.post("/api/open", json={"path": "other.mp4"})
    assert response.status_code == 409 and response.get_json()["needs_replace"] is True
    assert opened.get("/api/state").get_json()["annotated"] == [0]
    assert opened.post("/api/open", json={"path": "other.mp4", "replace": True}).status_code == 202
    assert wait_job(opened)["state"] == "done"
    state = opened.get("/api/state").get_json()
    assert state["video"]["name"] == "other" and state["video"]["frames"] == 3 and state["annotated"] == []


def test_upload_a_video_and_frames(client: FlaskClient, root: Path, session: AppSession) -> None:
    data = (root / "clip.mp4").read_bytes()
    response = client.post("/api/upload", data={"files": (io.BytesIO(data), "my clip.mp4"), "name": "my clip"})
    assert response.status_code == 202, response.get_json()
    assert wait_job(client)["state"] == "done"
    state = client.get("/api/state").get_json()
    assert state["video"]["name"] == "my_clip" and state["video"]["source"] == "upload:my clip"
    assert state["video"]["frames"] == FRAMES

    frames = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.fromarray(np.full((H, W, 3), 100 * i, np.uint8)).save(buffer, format="PNG")
        frames.append((io.BytesIO(buffer.getvalue()), f"../f{i}.png"))
    response = client.post("/api/upload", data={"files": frames, "name": "frames", "replace": "true"})
    assert response.status_code == 202
    assert wait_job(client)["state"] == "done"
    assert client.get("/api/state").get_json()["video"]["frame_names"] == ["f0", "f1"]
    assert not [p for p in session.workspace.path.iterdir() if p.name.startswith(".")]
    assert not (root.parent / "f0.png").exists()


# -- export ---------------------------------------------------------------------------------------

def test_export_writes_davis_pngs_an_overlay_and_a_zip(opened: FlaskClient, session: AppSession) -> None:
    given = box_mask({1: (12, 32, 8, 28), 3: (36, 46, 40, 60)})
    _put(opened, 0, given)
    opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    assert wait_job(opened)["state"] == "done"
    session.workspace.delete_annotation(0)
    (session.workspace.results_dir / "00005.png").unlink()  # a frame without a result exports empty
    assert opened.post("/api/export").status_code == 202
    job = wait_job(opened)
    assert job["state"] == "done" and job["done"] == FRAMES

    exports = session.workspace.exports_dir
    assert opened.get("/api/state").get_json()["exports"] == ["clip.mp4", "clip.zip"]
    pngs = sorted((exports / "Annotations" / "clip").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(FRAMES)]
    for index, png in enumerate(pngs):
        image = Image.open(png)
        assert image.mode == "P" and image.size == (W, H) and image.getpalette() == DAVIS_PALETTE
        values = set(np.unique(np.asarray(image)).tolist())
        assert values <= {0, 1, 3} and (index == FRAMES - 1) == (values == {0})
    assert np.array_equal(np.asarray(Image.open(pngs[0])), given)
    with av.open(str(exports / "clip.mp4")) as movie:
        assert sum(1 for _ in movie.decode(video=0)) == FRAMES

    download = opened.get("/api/exports/clip.zip")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        names = archive.namelist()
        assert names[:FRAMES + 1] == [f"Annotations/clip/{i:05d}.png" for i in range(FRAMES)] + ["clip.mp4"]
        assert {name.split("/")[0] for name in names[FRAMES + 1:]} == {"binary", "coco", "yolo"}
        assert "coco/annotations.json" in names and "yolo/00000.txt" in names and "binary/3/00000.png" in names
        first = Image.open(io.BytesIO(archive.read(names[0])))
        assert first.mode == "P" and np.array_equal(np.asarray(first), given)
    palette = {p.stem: np.asarray(Image.open(p)) for p in pngs}
    for format in ("binary", "coco"):  # the other formats hold the same masks
        back = read_results(format, exports / format)
        assert all(np.array_equal(back[name], labels) for name, labels in palette.items() if labels.any())
    assert not [p for p in exports.rglob("*") if p.name.startswith(".")]


def _stored_results(session: AppSession) -> dict[int, np.ndarray]:
    """Results of frames 0..4 with their probabilities (two boxes, each object sure inside its box to a
    different degree), written as a propagation does; frame 5 holds an annotation only."""
    stored = {}
    for index in range(FRAMES - 1):
        labels = box_mask({1: (4, 20, 2 + 4 * index, 22 + 4 * index), 4: (30, 44, 40, 60)})
        probabilities = np.stack([np.where(labels == 1, 200 + index, 10), np.where(labels == 4, 250, 3)])
        stored[index] = probabilities.astype(np.uint8)
        session.workspace.write_result(index, labels, (1, 4), stored[index])
    session.workspace.write_annotation(FRAMES - 1, box_mask({4: (30, 44, 40, 60)}))
    return stored


@pytest.mark.parametrize("format", EXPORT_FORMATS)
def test_export_writes_each_format_of_segment(opened: FlaskClient, session: AppSession, format: str) -> None:
    stored = _stored_results(session)
    assert opened.get("/api/state").get_json()["export_formats"]["offered"] == list(EXPORT_FORMATS)
    assert opened.post("/api/export", json={"formats": [format]}).status_code == 202
    assert wait_job(opened)["state"] == "done"
    exports = session.workspace.exports_dir
    with zipfile.ZipFile(exports / "clip.zip") as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"Annotations", "clip.mp4", format}
    palette = {p.stem: np.asarray(Image.open(p)) for p in (exports / "Annotations" / "clip").glob("*.png")}
    back = read_results(format, exports / format, size=(H, W))
    assert sorted(back) == sorted(palette)
    for name, labels in palette.items():
        np.testing.assert_array_equal(back[name], labels)
    if format in SOFT_FORMATS:  # the network's probabilities of each result, 0 or 255 for the annotation
        for index, probabilities in stored.items():
            if format == "npz":
                _, object_ids, planes = read_npz_frame(exports / "npz" / f"{index:05d}.npz")
            else:
                object_ids = (1, 4)
                planes = np.stack([np.asarray(Image.open(exports / "soft" / str(i) / f"{index:05d}.png"))
                                   for i in object_ids])
            assert object_ids == (1, 4)
            np.testing.assert_array_equal(planes, probabilities)
        last = np.asarray(Image.open(exports / "soft" / "4" / f"{FRAMES - 1:05d}.png")) if format == "soft" \
            else read_npz_frame(exports / "npz" / f"{FRAMES - 1:05d}.npz")[2][0]
        np.testing.assert_array_equal(last, np.where(palette[f"{FRAMES - 1:05d}"] == 4, 255, 0))


def test_export_refuses_unknown_formats_and_soft_ones_without_probabilities(opened: FlaskClient,
                                                                           session: AppSession) -> None:
    response = opened.post("/api/export", json={"formats": ["binary", "tiff"]})
    assert response.status_code == 400 and "'tiff'" in response.get_json()["error"]
    assert opened.post("/api/export", json={"formats": "binary"}).status_code == 400
    _stored_results(session)
    session.workspace.write_result(2, box_mask({1: (0, 9, 0, 9)}))  # stored without probabilities
    for format in SOFT_FORMATS:
        response = opened.post("/api/export", json={"formats": ["binary", format]})
        assert response.status_code == 400 and "frame 2" in response.get_json()["error"]
    assert not session.workspace.exports_dir.exists()
    assert opened.post("/api/export", json={"formats": ["binary", "coco"]}).status_code == 202
    assert wait_job(opened)["state"] == "done"


def test_review_lists_the_frames_to_check(opened: FlaskClient, session: AppSession) -> None:
    assert opened.get("/api/review").get_json() == {"needs_review": []}
    sure = np.full((1, H, W), 240, np.uint8)
    areas = {0: 20, 1: 20, 2: 0, 3: 20, 4: 40}  # box sides: lost at 2, four times the area at 4
    for index, side in areas.items():
        labels = box_mask({1: (0, side, 0, side)} if side else {})
        session.workspace.write_result(index, labels, (1,), sure if index != 3 else sure // 4)  # unsure at 3
    flagged = opened.get("/api/review").get_json()["needs_review"]
    assert [(f["index"], f["name"], f["object"], f["reason"]) for f in flagged] == [
        (2, "00002", 1, "lost"), (3, "00003", 1, "low confidence"), (4, "00004", 1, "area change")]
    (session.workspace.results_dir / "00003.png").unlink()  # a gap: frames 2 and 4 are not compared
    assert [f["index"] for f in opened.get("/api/review").get_json()["needs_review"]] == [2]


def test_propagation_keeps_the_probabilities_for_review(opened: FlaskClient, session: AppSession) -> None:
    _put(opened, 0, box_mask({2: (12, 32, 8, 28)}))
    opened.post("/api/propagate", json={"start": 0, "direction": "forward"})
    assert wait_job(opened)["state"] == "done"
    assert session.workspace.results_without_probabilities() == []
    frames = session.workspace.review().frames
    assert [f["index"] for f in frames] == list(range(FRAMES))
    assert all(0 <= f["objects"]["2"]["confidence"] <= 1 for f in frames)
    assert opened.get("/api/review").get_json()["needs_review"] == session.workspace.review().needs_review


def test_export_before_any_video_is_refused(client: FlaskClient) -> None:
    response = client.post("/api/export")
    assert response.status_code == 400 and "open a video" in response.get_json()["error"]


def test_workspace_files_are_written_atomically(opened: FlaskClient, session: AppSession,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _put(opened, 0, box_mask({1: (0, 9, 0, 9)}))
    before = (session.workspace.annotations_dir / "00000.png").read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        session.workspace.write_annotation(0, box_mask({2: (0, 20, 0, 20)}))
    assert (session.workspace.annotations_dir / "00000.png").read_bytes() == before
    assert not list(session.workspace.annotations_dir.glob(".*"))
