"""Atomic writes: whole files or nothing, ordinary permissions, failures leave the old file."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from pixelwise._files import atomic_write, save_png_atomic, write_json_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def broken(stream):
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_files_get_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a" / "b.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_and_png_round_trip(tmp_path):
    write_json_atomic(tmp_path / "r.json", {"a": [1, 2]})
    assert (tmp_path / "r.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    array = np.arange(35, dtype=np.uint8).reshape(5, 7)
    save_png_atomic(tmp_path / "m.png", array)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), array)
