"""The atomic writers every module uses: nothing at the target until complete, nothing left behind
on an error, plain-file permissions, and a directory replaced whole."""

from __future__ import annotations

import os

import pytest

from emo_rt.io.files import atomic_directory, atomic_path, remove_partials, write_json_atomic


def test_a_file_appears_only_when_complete_and_gets_plain_permissions(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        assert not target.exists() and tmp.name.startswith(".out.") and ".part" in tmp.name
    assert target.read_text() == "{}"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0o600


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_error_leaves_the_old_file_and_no_partial(tmp_path, error):
    target = write_json_atomic(tmp_path / "a.json", {"old": 1})
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error()
    assert target.read_text().strip() == '{\n "old": 1\n}' and os.listdir(tmp_path) == ["a.json"]


def test_a_directory_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as partial:
            (partial / "new.txt").write_text("new")
            raise RuntimeError("killed")
    assert os.listdir(target) == ["old.txt"] and sorted(os.listdir(tmp_path)) == ["model"]
    with atomic_directory(target) as partial:
        (partial / "new.txt").write_text("new")
    assert os.listdir(target) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["model"]


def test_remove_partials_deletes_only_what_a_killed_writer_left(tmp_path):
    (tmp_path / ".clip.x1y2.part.mp4").write_bytes(b"half")
    (tmp_path / "clip.mp4").write_bytes(b"done")
    assert remove_partials(tmp_path) == 1 and os.listdir(tmp_path) == ["clip.mp4"]
