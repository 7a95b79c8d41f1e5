"""The app's HTTP server: a Flask application over an :class:`~emvos.app.session.AppSession`.

Endpoints (JSON unless said otherwise; errors are ``{"error": "..."}``):

==========================================  =====================================================
``GET  /``                                  the page (``static/index.html``); assets under ``/static``
``GET  /api/state``                         video, annotated frames, results, objects, job, exports
``GET  /api/files?path=DIR``                folders and videos in ``DIR`` (inside the root)
``POST /api/open``                          ``{"path", "replace"}``: decode a video or frame folder
``POST /api/upload``                        multipart ``files`` (a video, or frames) + ``name``, ``replace``
``GET  /api/frames/<i>.jpg``                frame ``i``
``GET|PUT|DELETE /api/frames/<i>/annotation``  the user's mask of frame ``i``: raw ``H*W`` bytes of ids
``GET  /api/frames/<i>/result``             the propagated mask of frame ``i``: raw ``H*W`` bytes
``POST /api/frames/<i>/import``             multipart ``mask``: a PNG that becomes frame ``i``'s annotation
``POST /api/frames/<i>/prompt``             ``{"box": [x0, y0, x1, y1] | null, "clicks": [[x, y, positive], ...]}``:
                                            the object they point at, raw ``H*W`` bytes (1 = object)
``POST /api/propagate``                     ``{"start", "direction": "forward"|"backward"}``
``GET  /api/job``, ``POST /api/job/cancel``   the job's progress; stop it after the current frame
``GET  /api/review``                        ``{"needs_review": [...]}``: the propagated frames to check (object
                                            lost, sudden area change, low confidence), as in ``review.json``
``POST /api/export``                        ``{"formats": [...]}`` (optional): write PNGs, overlay mp4, the
                                            masks in those formats and a zip (a job)
``GET  /api/exports/<name>``                download an export
==========================================  =====================================================

Status codes: 400 bad input, 403 a path outside the root or a cross-site request, 404 no such
frame or mask, 409 a job is running or the workspace holds another video (send ``replace``).
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
from flask import Flask, Response, abort, jsonify, request, send_file, send_from_directory
from werkzeug.datastructures import FileStorage
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.utils import secure_filename

from emvos.app.jobs import JobBusy
from emvos.app.session import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS, AppSession, PathRefused, WorkspaceOccupied
from emvos.errors import EmvosInputError
from emvos.io import VIDEO_EXTENSIONS, read_mask
from emvos.prompts import Click, prompt_mask

STATIC = Path(__file__).resolve().parent / "static"
#: Host names the server answers to when bound to a loopback address (blocks DNS rebinding).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _error(message: str, status: int, **extra: Any) -> Response:
    response = jsonify(error=message, **extra)
    response.status_code = status
    return response


def _host_name(netloc: str) -> str:
    return (urlsplit(f"//{netloc}").hostname or "").lower()


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise EmvosInputError("send a JSON object with Content-Type: application/json")
    return body


def create_app(session: AppSession, *, loopback_only: bool = True) -> Flask:
    """The Flask application serving the page and the API for ``session``.

    Args:
        session: The workspace, root folder, model and job the app works on.
        loopback_only: Answer only requests addressed to ``localhost`` / ``127.0.0.1`` / ``::1``
            (set when the server binds to a loopback address).
    """
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    workspace = session.workspace

    @app.before_request
    def same_origin_only() -> Response | None:
        """Refuse other host names (DNS rebinding) and writes from other sites' pages (CSRF)."""
        if loopback_only and _host_name(request.host) not in LOOPBACK_NAMES:
            return _error(f"this server only answers requests to localhost, not {request.host}", 403)
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != request.host:
            return _error("cross-site requests are refused", 403)
        return None

    @app.errorhandler(EmvosInputError)
    def bad_input(error: EmvosInputError) -> Response:
        return _error(str(error), 400)

    @app.errorhandler(PathRefused)
    def refused(error: PathRefused) -> Response:
        return _error(str(error), 403)

    @app.errorhandler(JobBusy)
    def busy(error: JobBusy) -> Response:
        return _error(str(error), 409)

    @app.errorhandler(WorkspaceOccupied)
    def occupied(error: WorkspaceOccupied) -> Response:
        return _error(str(error), 409, needs_replace=True)

    @app.errorhandler(IndexError)
    def no_frame(error: IndexError) -> Response:
        return _error(str(error), 404)

    @app.get("/")
    def page() -> Response:
        return app.send_static_file("index.html")

    @app.get("/api/state")
    def state() -> Response:
        return jsonify(session.state())

    @app.get("/api/files")
    def files() -> Response:
        return jsonify(session.list_folder(request.args.get("path", "")))

    @app.post("/api/open")
    def open_path() -> tuple[Response, int]:
        body = _json_body()
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise EmvosInputError("give the path of a video file or a folder of frames")
        return jsonify(session.open_path(path, replace=bool(body.get("replace"))).to_json()), 202

    @app.post("/api/upload")
    def upload() -> tuple[Response, int]:
        uploads = request.files.getlist("files")
        if not uploads:
            raise EmvosInputError("choose a video file or the frames of a video to upload")
        if session.jobs.busy:
            raise JobBusy("a job is running; wait for it or cancel it")
        folder = workspace.scratch_dir()
        try:
            path = _save_uploads(uploads, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        name = request.form.get("name") or (path.stem if path.is_file() else "frames")
        status = session.open_video(path, name=name, source=f"upload:{name}", replace=request.form.get("replace")
                                    == "true", cleanup=folder)
        return jsonify(status.to_json()), 202

    @app.get("/api/frames/<int:index>.jpg")
    def frame(index: int) -> Response:
        workspace.check_index(index)
        return send_file(workspace.frame_path(index), mimetype="image/jpeg", max_age=3600)

    @app.route("/api/frames/<int:index>/annotation", methods=["GET", "PUT", "DELETE"])
    def annotation(index: int) -> Response:
        workspace.check_index(index)
        if request.method == "PUT":
            video = workspace.require_video()
            data = request.get_data()
            if len(data) != video.height * video.width:
                raise EmvosInputError(f"a mask is {video.height * video.width} bytes (one object id per pixel, "
                                      f"{video.width}x{video.height}), got {len(data)}")
            labels = np.frombuffer(data, np.uint8).reshape(video.size)
            return jsonify(annotated=workspace.write_annotation(index, labels))
        if request.method == "DELETE":
            workspace.delete_annotation(index)
            return jsonify(annotated=False)
        return _labels_response(workspace.read_annotation(index))

    @app.get("/api/frames/<int:index>/result")
    def result(index: int) -> Response:
        workspace.check_index(index)
        return _labels_response(workspace.read_result(index))

    @app.post("/api/frames/<int:index>/import")
    def import_mask(index: int) -> Response:
        workspace.check_index(index)
        upload = request.files.get("mask")
        if upload is None:
            raise EmvosInputError("choose a mask PNG to import")
        shown = upload.filename or "mask.png"
        folder = workspace.scratch_dir()
        path = folder / "mask.png"
        try:
            upload.save(path)
            mask = read_mask(path)
        except EmvosInputError as error:
            raise EmvosInputError(str(error).replace(str(path), shown)) from error
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return jsonify(objects=session.import_mask(index, mask.labels))

    @app.post("/api/frames/<int:index>/prompt")
    def prompt(index: int) -> Response:
        workspace.check_index(index)
        body = _json_body()
        box, clicks = body.get("box"), body.get("clicks") or []
        try:
            points = [Click(float(x), float(y), bool(positive)) for x, y, positive in clicks]
            corners = None if box is None else [float(value) for value in box]
            mask = prompt_mask(workspace.read_frame(index), corners, points)
        except (TypeError, ValueError) as error:
            raise EmvosInputError(f"prompt: {error}") from error
        return _labels_response(mask.astype(np.uint8))

    @app.post("/api/propagate")
    def propagate() -> tuple[Response, int]:
        body = _json_body()
        start, direction = body.get("start"), body.get("direction", "forward")
        if not isinstance(start, int) or direction not in ("forward", "backward"):
            raise EmvosInputError('give {"start": frame index, "direction": "forward" or "backward"}')
        return jsonify(session.propagate(start, direction).to_json()), 202

    @app.get("/api/job")
    def job() -> Response:
        status = session.jobs.status()
        return jsonify(None if status is None else status.to_json())

    @app.post("/api/job/cancel")
    def cancel() -> Response:
        return jsonify(cancelled=session.jobs.cancel())

    @app.get("/api/review")
    def review() -> Response:
        return jsonify(needs_review=session.review())

    @app.post("/api/export")
    def export() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        formats = body.get("formats", DEFAULT_EXPORT_FORMATS) if isinstance(body, dict) else None
        if not isinstance(formats, list | tuple) or not all(isinstance(f, str) for f in formats):
            raise EmvosInputError(f'give {{"formats": [...]}}, a list of {", ".join(EXPORT_FORMATS)}')
        return jsonify(session.export(formats).to_json()), 202

    @app.get("/api/exports/<path:name>")
    def download(name: str) -> Response:
        return send_from_directory(workspace.exports_dir, name, as_attachment=True)

    return app


def _labels_response(labels: np.ndarray | None) -> Response:
    if labels is None:
        abort(404)
    return Response(labels.tobytes(), mimetype="application/octet-stream", headers={"Cache-Control": "no-store"})


def _save_uploads(uploads: list[FileStorage], folder: Path) -> Path:
    """Save uploaded files into ``folder``; returns the video file, or ``folder`` for frames."""
    names = [secure_filename(Path(upload.filename or "").name) for upload in uploads]
    if not all(names) or len(set(names)) != len(names):
        raise EmvosInputError("the uploaded files need distinct, non-empty names")
    for upload, name in zip(uploads, names, strict=True):
        upload.save(folder / name)
    if len(names) == 1 and Path(names[0]).suffix.lower() in VIDEO_EXTENSIONS:
        return folder / names[0]
    return folder


def serve(session: AppSession, host: str, port: int) -> BaseWSGIServer:
    """A threaded HTTP server for the app, bound to ``host:port`` (port 0 picks a free one); not started.

    Call ``serve_forever()`` on it; ``server_address[1]`` is the port it got.

    Raises:
        OSError: the address cannot be bound (the port is taken, the host is not this computer's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Bind here, so a taken port raises OSError (werkzeug would print and exit instead).
    with socket.create_server((host, port), family=family) as listening:
        loopback = ipaddress.ip_address(listening.getsockname()[0]).is_loopback
        app = create_app(session, loopback_only=loopback)
        return cast(BaseWSGIServer, make_server(host, port, app, threaded=True, fd=listening.fileno()))
