"""Timings of a split segmented in shards (``--shard I/N`` or ``torchrun``), merged by ``--merge``.

Shard ``I`` of ``N`` writes ``OUT/timings/shard-I-of-N.json``: ``{"info": {...}, "timings": [...]}``
(settings and peak memory of its process, one record per sequence or video). A run that is not
split writes ``shard-0-of-1.json`` the same way.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from emvos.errors import EmvosInputError
from emvos.io.files import write_text_atomically

_NAME = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` as ``(I, N)``, for argparse (an ``ArgumentTypeError`` unless ``0 <= I < N``)."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n, e.g. 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return index, count


def shard_path(out: Path, shard: int, shards: int) -> Path:
    """Where shard ``shard`` of ``shards`` writes its timings."""
    return out / "timings" / f"shard-{shard}-of-{shards}.json"


def clear_shard(out: Path, shard: int, shards: int) -> None:
    """Remove what an earlier run of this shard left, so that waiting for it waits for this run."""
    shard_path(out, shard, shards).unlink(missing_ok=True)


def write_shard(out: Path, shard: int, shards: int, info: dict[str, Any], timings: list[dict[str, Any]]) -> Path:
    """Write a shard's settings and timings (atomically: a waiting rank 0 never reads half a file)."""
    path = shard_path(out, shard, shards)
    write_text_atomically(path, json.dumps({"info": info, "timings": timings}, indent=1))
    return path


def wait_for_shards(out: Path, shards: int, poll_seconds: float = 2.0) -> None:
    """Rank 0 of a ``torchrun`` launch waits until every rank has written its timings.

    ``torchrun`` stops every rank when one fails, so a crashed rank does not leave rank 0 waiting.
    """
    while not all(shard_path(out, i, shards).is_file() for i in range(shards)):
        time.sleep(poll_seconds)


def read_shards(out: Path, shards: int | None = None) -> list[dict[str, Any]]:
    """The timings documents of a run split ``shards`` ways (``None``: however many ways the files say).

    Raises:
        EmvosInputError: no timings, timings of runs split different ways, or an unreadable file.
    """
    folder = out / "timings"
    found = {}
    for path in sorted(folder.glob("shard-*-of-*.json")) if folder.is_dir() else []:
        match = _NAME.match(path.name)
        if match is not None and (shards is None or int(match.group(2)) == shards):
            found[path] = int(match.group(2))
    if not found:
        raise EmvosInputError(f"{folder}: no shard timings found; run the shards first")
    if len(set(found.values())) > 1:
        ways = " and ".join(str(n) for n in sorted(set(found.values())))
        raise EmvosInputError(f"{folder}: holds timings of runs split {ways} ways; delete the stale "
                              "shard-*-of-*.json files and run the shards again")
    documents = []
    for path in found:
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise EmvosInputError(f"{path}: unreadable shard timings; run that shard again") from None
    return documents
