"""Atomic file writes: every file pixelwise writes goes through a temporary file in the same
folder and is moved into place with ``os.replace``, so a reader (or a run killed mid-write)
never sees half a file and an existing file is only ever replaced whole."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, then move it to ``path``.

    The parent folder is created when missing. On any failure the temporary file is removed
    and ``path`` is left as it was.
    """
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(writes: Sequence[tuple[str | Path, Callable[[BinaryIO], None]]]) -> list[Path]:
    """:func:`atomic_write` for files that belong together (a checkpoint and its
    ``.safetensors``): every file is written to its temporary first and only then are they
    all moved into place, so a process killed while writing leaves all the old files, and
    the new ones differ from each other only for the instant between the moves.
    """
    temps: list[tuple[str, Path]] = []
    path = Path()
    try:
        for path, write in writes:
            path = Path(path)
            fd, temp = _temporary(path)
            temps.append((temp, path))
            with os.fdopen(fd, "wb") as stream:
                write(stream)
            # mkstemp makes the file private (0600); give it the permissions open() would have.
            os.chmod(temp, 0o666 & ~_umask())
        for temp, path in temps:
            os.replace(temp, path)
    except OSError as err:
        for temp, _ in temps:
            Path(temp).unlink(missing_ok=True)
        if isinstance(err, UnwritableOutput):
            raise
        raise _unwritable(path, err) from err
    except BaseException:
        for temp, _ in temps:
            Path(temp).unlink(missing_ok=True)
        raise
    return [path for _, path in temps]


class UnwritableOutput(OSError, ValueError):
    """An output that cannot be written (no such folder, a read-only place, a full disk): an
    OSError, and a ValueError so that the command line says it in one line."""


def _unwritable(path: Path, err: OSError) -> UnwritableOutput:
    from pixelwise._checks import message  # _checks loads torch; this module does not

    reason = err.strerror or type(err).__name__
    name = str(err.filename or "")
    where = f" at {name}" if name and Path(name) != path and not name.endswith(TEMP_SUFFIX) else ""
    return UnwritableOutput(
        message(
            f"output {path}",
            "be writable",
            f"{reason}{where}",
            "choose a folder you can write to, with space free",
        )
    )


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (its folder created when missing)."""
    if path.is_dir():
        raise _unwritable(path, IsADirectoryError(21, "it is a folder"))
    folder = next(p for p in path.parents if p.exists() or p == p.parent)
    if folder.exists() and not folder.is_dir():
        raise _unwritable(path, NotADirectoryError(20, f"{folder} is a file, not a folder"))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's process id in the name: a killed process's file can be told apart.
    return tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path, *, older_than: float = 3600.0) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` when its
    process was killed mid-write; returns them.

    A temporary file names its writer's process id: it is stale when that process is gone.
    One without a process id (written by an earlier version) is stale when it has not changed
    for ``older_than`` seconds.
    """
    removed = []
    for temp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        parts = temp.name.split(".")
        pid = parts[-3] if len(parts) >= 5 else ""
        if pid.isdigit():
            stale = not _alive(int(pid))
        else:
            stale = time.time() - temp.stat().st_mtime > older_than
        if stale and temp.is_file():
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_png_atomic(path: str | Path, array: np.ndarray) -> Path:
    """Save a uint8/uint16 (H, W) or uint8 (H, W, 3|4) array as a PNG, atomically."""
    from PIL import Image

    return atomic_write(path, lambda stream: Image.fromarray(array).save(stream, format="PNG"))


def check_output(
    path: str | Path,
    inputs: Iterable[str | Path],
    *,
    overwrite: bool = False,
    kind: str = "input",
    fix: str = "choose another output path",
    elsewhere: str = "choose another output folder",
) -> Path:
    """Refuse an output path that is one of a command's inputs (with ``overwrite`` or not), or
    that exists already without ``overwrite``; returns ``path``. No command writes over what
    it reads.

    Args:
        kind: What the inputs are, for the message (``"input image"``, ``"input checkpoint"``).
        fix: How to avoid the input, for the message; ``elsewhere`` how to avoid an
            existing file.

    Raises:
        ValueError: ``path`` names an input file (also through a link).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from pixelwise._checks import message  # _checks loads torch; this module does not

    path = Path(path)
    for item in map(Path, inputs):
        same = item.exists() and path.exists() and os.path.samefile(item, path)
        if same or path.resolve() == item.resolve():
            raise ValueError(
                message(
                    f"output {path}",
                    f"not overwrite an {kind}",
                    "an input file of that name",
                    fix,
                )
            )
    if path.is_dir():
        raise ValueError(
            message(
                f"output {path}",
                "be a file",
                "a folder",
                "name a file (in that folder or elsewhere)",
            )
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            message(
                f"output {path}",
                "not exist already",
                "an existing file",
                f"pass --overwrite to replace it, or {elsewhere}",
            )
        )
    return path
