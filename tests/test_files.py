"""Atomic writes: whole files or nothing, ordinary permissions, failures leave the old file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pixelwise._files import (
    atomic_write,
    remove_stale_temporaries,
    save_png_atomic,
    write_json_atomic,
    write_text_atomic,
)


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


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".last.pt.{int(dead.stdout)}.a1b2c3d4.tmp"
    live = tmp_path / f".best.pt.{os.getpid()}.e5f6g7h8.tmp"
    legacy_old = tmp_path / ".last.safetensors.x9y8z7w6.tmp"
    legacy_new = tmp_path / ".best.safetensors.q1w2e3r4.tmp"
    kept = tmp_path / "last.pt"
    for path in (stale, live, legacy_old, legacy_new, kept):
        path.write_bytes(b"x")
    hour_ago = time.time() - 7200
    os.utime(legacy_old, (hour_ago, hour_ago))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, legacy_old])
    assert {p.name for p in tmp_path.iterdir()} == {live.name, legacy_new.name, kept.name}


def test_a_temporary_file_names_its_writer(tmp_path):
    seen = []
    atomic_write(tmp_path / "a.bin", lambda stream: seen.extend(p.name for p in tmp_path.iterdir()))
    assert seen[0].startswith(f".a.bin.{os.getpid()}.") and seen[0].endswith(".tmp")
