"""``emvos app``: serve the annotation page on localhost."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from emvos.app.session import AppSession, video_name
from emvos.app.workspace import Workspace
from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.inference.cli import add_inference_options, build_predictor

#: Where the work is kept when ``--workspace`` is not given.
DEFAULT_WORKSPACE = Path("emvos-workspace")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos app``."""
    parser = subparsers.add_parser(
        "app", help=command_summary("app"),
        description="Serve a local web page to draw the masks of objects on any frame, propagate them through "
                    "the video with the model, correct frames and propagate again, and export the masks. The "
                    "work is kept in --workspace: run the command again with the same workspace to continue.")
    parser.add_argument("input", type=Path, nargs="?", default=None,
                        help="a video file or a folder of frames to open (default: continue the workspace's "
                             "video, or open one from the page)")
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                        help=f"folder for the frames, annotations, results and exports (default: {DEFAULT_WORKSPACE})")
    parser.add_argument("--root", type=Path, default=None,
                        help="the folder whose videos the page may open; nothing outside it is served "
                             "(default: the current folder)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only; the app has no login)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on; 0 picks a free one (default 7860)")
    add_inference_options(parser, lookahead=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options, open the workspace (and the video), then serve until Ctrl-C."""
    try:
        from emvos.app.server import serve
    except ModuleNotFoundError as error:
        if error.name not in ("flask", "werkzeug"):
            raise
        raise EmvosInputError("emvos app needs Flask; install it with: pip install 'emvos[app]'") from error
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise EmvosInputError(f"{args.checkpoint}: no such checkpoint file; pass an emvos checkpoint or the "
                              "official EMVOS weights")
    root = (args.root or Path.cwd()).resolve()
    if not root.is_dir():
        raise EmvosInputError(f"{args.root}: --root must be a folder")
    workspace = Workspace(args.workspace)
    video = workspace.video
    source = None if args.input is None else args.input.resolve()
    if source is not None and video is not None and video.source != str(source):
        raise EmvosInputError(f"{workspace.path} holds the work on {video.source}; pass another --workspace for "
                              f"{args.input}, or leave the video out to continue")
    session = AppSession(workspace, root, lambda: build_predictor(args),
                         model_name=str(args.checkpoint) if args.checkpoint else "the shipped model")
    if source is not None and video is None:
        session.open_video(source, name=video_name(source), source=str(source))  # decodes in the background
    try:
        server = serve(session, args.host, args.port)
    except OSError as error:
        session.jobs.cancel()
        session.jobs.wait(timeout=60)
        raise EmvosInputError(f"cannot listen on {args.host}:{args.port} ({error.strerror or error}); "
                              "pass another --port (0 picks a free one)") from error
    try:
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"emvos app: open http://{host}:{server.server_address[1]}/ in a browser "
              f"(workspace {workspace.path}; Ctrl-C stops)", flush=True)
        if not ipaddress.ip_address(str(server.server_address[0])).is_loopback:
            print("emvos app: warning: listening beyond this computer; anyone who can reach it can read the videos "
                  f"under {root}", flush=True)
        server.serve_forever()
    finally:
        session.jobs.cancel()
        session.jobs.wait(timeout=60)
        server.server_close()
    print("emvos app: stopped; the finished frames are in the workspace", flush=True)
    return 0
