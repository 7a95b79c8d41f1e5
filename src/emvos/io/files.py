"""Files that are written whole or not at all.

A reader (another process, a later run, a user's Ctrl-C) never sees a half-written file: the data go
to a hidden temporary file in the same folder, which then replaces the target in one rename.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from emvos.errors import EmvosInputError


def temporary_path(target: Path) -> Path:
    """The hidden name ``target`` is written under before it is renamed: ``.<name>.<pid>-<thread>.tmp``."""
    return target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to ``path``; whatever the block writes there replaces ``path`` when it succeeds.

    The folder is created if needed. If the block raises, the temporary file is removed and ``path``
    is left as it was. The temporary name is unique to the process and thread.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary stream on :func:`atomic_path`'s temporary file: ``path`` appears, whole, when the block succeeds."""
    with atomic_path(path) as temporary, temporary.open("wb") as stream:
        yield stream


def cannot_write(path: str | os.PathLike[str], error: OSError) -> EmvosInputError:
    """The one-line error for an output file that could not be written."""
    return EmvosInputError(f"{path}: cannot write ({error.strerror or error}); check free disk space "
                           "and write permission")


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`), as UTF-8 with its line endings kept.

    Raises:
        EmvosInputError: the file cannot be written (a read-only folder, a full disk ...).
    """
    try:
        with atomic_path(path) as temporary:
            temporary.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise EmvosInputError(f"{path}: cannot write ({exc.strerror or exc}); make its folder writable "
                              "or choose another output") from None
