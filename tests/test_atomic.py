"""Atomic writes: a file is written whole or not at all, a failure is one line naming the file, and a path that could
not be written is refused before any work."""

from __future__ import annotations

import os

import pytest

from personamine.atomic import atomic_write_bytes, check_writable, ensure_dir
from personamine.errors import PersonamineError


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_a_write_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old contents, longer than the new ones")
    data = bytes(range(256)) * 1000
    atomic_write_bytes(target, data)
    assert target.read_bytes() == data
    atomic_write_bytes(target, b"")
    assert target.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "missing-dir" / "out.bin"
    with pytest.raises(PersonamineError) as info:
        atomic_write_bytes(target, b"data")
    assert str(info.value) == f"cannot write {str(target)!r}: No such file or directory"
    assert not (tmp_path / "missing-dir").exists()
    # Over an existing directory: the old entry stays as it was, and no temp file is left beside it.
    blocker = tmp_path / "taken"
    blocker.mkdir()
    (blocker / "inside").write_text("kept")
    with pytest.raises(PersonamineError, match=r"^cannot write '.*taken': Is a directory$"):
        atomic_write_bytes(blocker, b"data")
    assert (blocker / "inside").read_text() == "kept" and leftovers(tmp_path) == []


def test_ensure_dir_creates_parents_or_names_the_file_in_the_way(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    ensure_dir(deep, "work directory")
    assert deep.is_dir()
    ensure_dir(deep, "work directory")  # exists: fine
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PersonamineError) as info:
        ensure_dir(tmp_path / "plain" / "sub" / "dir", "output directory")
    assert str(info.value) == (f"cannot create the output directory {str(tmp_path / 'plain' / 'sub' / 'dir')!r}: "
                               f"{str(tmp_path / 'plain')!r} is a file, not a directory")


def test_check_writable_refuses_each_wrong_kind_of_path_before_any_work(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.h5").write_text("x")
    with pytest.raises(PersonamineError) as info:
        check_writable(tmp_path / "dir", "output")
    assert str(info.value) == f"output {str(tmp_path / 'dir')!r} is a directory: give a file path"
    with pytest.raises(PersonamineError) as info:
        check_writable(tmp_path / "file.h5", "output dir", directory=True)
    assert str(info.value) == f"output dir {str(tmp_path / 'file.h5')!r} is a file: give a directory path"
    under = tmp_path / "file.h5" / "deeper" / "out.h5"
    with pytest.raises(PersonamineError) as info:
        check_writable(under, "output")
    assert str(info.value) == (f"cannot create the output directory {str(under.parent)!r}: "
                               f"{str(tmp_path / 'file.h5')!r} is a file, not a directory")
    assert "\n" not in str(info.value)


def test_check_writable_accepts_new_paths_and_leaves_no_probe(tmp_path):
    before = sorted(os.listdir(tmp_path))
    assert check_writable(tmp_path / "new" / "nested" / "out.h5", "output") == tmp_path / "new" / "nested" / "out.h5"
    assert check_writable(tmp_path / "run", "output dir", directory=True) == tmp_path / "run"
    assert check_writable(tmp_path, "output dir", directory=True) == tmp_path  # an existing directory
    # Nothing was created: neither the missing directories nor the probe file.
    assert sorted(os.listdir(tmp_path)) == before
    home = check_writable("~/personamine-out/x.h5", "output")
    assert str(home) == os.path.expanduser("~/personamine-out/x.h5")  # "~" is the user's home
