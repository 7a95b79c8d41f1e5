"""Files written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from emvos.errors import EmvosInputError
from emvos.io.files import atomic_path, write_text_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_text_is_written_whole_with_its_line_endings_into_new_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.csv"
    write_text_atomically(target, "x,y\r\n1,2\r\n")
    assert target.read_bytes() == b"x,y\r\n1,2\r\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.csv"]


def test_an_unwritable_target_is_a_one_line_input_error(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(EmvosInputError, match="folder: cannot write") as info:
        write_text_atomically(tmp_path / "folder", "text")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
