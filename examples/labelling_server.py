"""A minimal tracking service for a labelling tool, on onnxruntime: numpy, Pillow and onnxruntime only.

A labelling tool (a Label Studio ML backend, a CVAT function, your own) sends the frames of a video as
the annotator moves through it, with a mask wherever the annotator drew one, and gets each frame's
mask back. The service keeps one :class:`~emvos.onnx.OnnxPredictor` (the model) and one small state
per video session; PyTorch is never imported.

Protocol (JSON over HTTP; images are base64-encoded PNG or JPEG files)::

    POST /sessions                      {}                                   -> {"session": "<id>"}
    POST /sessions/<id>/frames          {"image": "...", "mask": "..."?}     -> {"index": 0, "mask": "...",
                                                                                 "object_ids": [1, 2]}
    DELETE /sessions/<id>                                                    -> {}

``mask`` (optional) is an indexed PNG of object ids (0 = background) given at that frame; the
returned ``mask`` is the frame's indexed PNG of object ids.

Run::

    emvos export --onnx emvos-onnx            # once, where PyTorch is installed
    python examples/labelling_server.py emvos-onnx --port 8090
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from emvos.onnx.predictor import OnnxPredictor, OnnxState


def decode_image(text: str) -> Image.Image:
    """A base64-encoded image file."""
    return Image.open(io.BytesIO(base64.b64decode(text)))


def encode_png(labels: np.ndarray) -> str:
    """``(H, W) uint8`` object ids as a base64-encoded PNG."""
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class TrackingService:
    """One predictor and the state of each open session; sessions may run concurrently."""

    def __init__(self, predictor: OnnxPredictor) -> None:
        self.predictor = predictor
        self.sessions: dict[str, tuple[OnnxState, threading.Lock]] = {}

    def open(self) -> dict[str, Any]:
        session = uuid.uuid4().hex
        self.sessions[session] = (self.predictor.init_state(), threading.Lock())
        return {"session": session}

    def frame(self, session: str, body: dict[str, Any]) -> dict[str, Any]:
        state, lock = self.sessions[session]
        image = np.asarray(decode_image(body["image"]).convert("RGB"))
        mask = np.asarray(decode_image(body["mask"])) if body.get("mask") else None
        with lock:  # a session's frames go in order
            prediction = self.predictor.step(state, image, mask)
        return {"index": prediction.index, "mask": encode_png(prediction.labels),
                "object_ids": list(prediction.object_ids)}

    def close(self, session: str) -> dict[str, Any]:
        self.sessions.pop(session, None)
        return {}


def make_server(service: TrackingService, host: str = "127.0.0.1", port: int = 8090) -> ThreadingHTTPServer:
    """An HTTP server for ``service`` (``port`` 0: any free port)."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            parts = self.path.strip("/").split("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if method == "POST" and parts == ["sessions"]:
                    return self._reply(200, service.open())
                if method == "POST" and len(parts) == 3 and parts[0] == "sessions" and parts[2] == "frames":
                    return self._reply(200, service.frame(parts[1], body))
                if method == "DELETE" and len(parts) == 2 and parts[0] == "sessions":
                    return self._reply(200, service.close(parts[1]))
                return self._reply(404, {"error": f"no route {method} {self.path}"})
            except KeyError as exc:
                return self._reply(404, {"error": f"unknown session or missing field {exc}"})
            except (ValueError, OSError) as exc:  # a bad image, a frame of another size, bad JSON
                return self._reply(400, {"error": str(exc)})

        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            self._route("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", help="a folder written by emvos export --onnx")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--resolution", type=int, default=480)
    args = parser.parse_args()
    server = make_server(TrackingService(OnnxPredictor.from_onnx(args.onnx, resolution=args.resolution)),
                         port=args.port)
    print(f"tracking service on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    server.serve_forever()


if __name__ == "__main__":
    main()
