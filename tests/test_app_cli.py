"""The ``emvos app`` command: serving, stopping on Ctrl-C, and refusing bad options with one line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="emvos app needs Flask: pip install 'emvos[app]'")
# ruff: noqa: E402 - the imports below need Flask

from _app_support import FRAMES, write_checkpoint, write_video
from emvos.app.workspace import Workspace
from emvos.cli import build_parser, main
from emvos.io import open_frames


def _app(*args: object) -> int:
    return main(["app", *map(str, args)])


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emvos: error: "), lines
    return lines[0]


def test_defaults_bind_to_localhost() -> None:
    args = build_parser("app").parse_args(["app"])
    assert (args.host, args.port, args.workspace, args.checkpoint) == ("127.0.0.1", 7860, Path("emvos-workspace"), None)


@pytest.mark.slow
def test_the_command_serves_the_video_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4")
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    command = [sys.executable, "-m", "emvos", "app", "clip.mp4", "--workspace", "ws", "--port", "0",
               "--checkpoint", str(checkpoint), "--threads", "1"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("emvos app: open http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split()[3]
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{url}api/state", timeout=10) as response:
                state = json.load(response)
            if state["video"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert state["video"]["frames"] == FRAMES and state["root"] == str(tmp_path.resolve())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped" in out
    assert Workspace(tmp_path / "ws").video.source == str((tmp_path / "clip.mp4").resolve())


def test_a_workspace_of_another_video_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.import_frames(open_frames(write_video(tmp_path / "a.mp4", frames=2)), "a", str(tmp_path / "a.mp4"))
    assert _app(write_video(tmp_path / "b.mp4", frames=2), "--workspace", tmp_path / "ws") == 2
    line = _error_line(capsys)
    assert "a.mp4" in line and "--workspace" in line


def test_without_flask_the_message_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.delitem(sys.modules, "emvos.app.server", raising=False)
    assert _app("--workspace", tmp_path / "ws") == 2
    assert "pip install 'emvos[app]'" in _error_line(capsys)


def test_bad_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _app("--workspace", tmp_path / "ws", "--checkpoint", tmp_path / "missing.pt") == 2
    assert "missing.pt" in _error_line(capsys)
    (tmp_path / "file").write_text("x")
    assert _app("--workspace", tmp_path / "file") == 2
    assert "file" in _error_line(capsys)
    assert _app(tmp_path / "nothing.mp4", "--workspace", tmp_path / "ws2", "--port", 0) == 2
    assert "nothing.mp4" in _error_line(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert _app("--workspace", tmp_path / "ws3", "--port", taken.getsockname()[1]) == 2
    assert "--port" in _error_line(capsys)
