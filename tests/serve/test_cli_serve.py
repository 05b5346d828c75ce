"""``pixelwise serve`` on the command line: what it binds, what it says, what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

uvicorn = pytest.importorskip("uvicorn")

from pixelwise.cli import main  # noqa: E402
from pixelwise.engine.checkpoint import save_checkpoint  # noqa: E402
from pixelwise.models import create_model  # noqa: E402


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, in_channels=1, depth=2, base_width=4)
    return save_checkpoint(
        tmp_path / "tiny.pt",
        model=model,
        class_names=("bg", "fg"),
        ignore_index=255,
        normalisation=None,
        config={},
        epoch=1,
        metrics={},
    )


@pytest.fixture
def served(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    threads = torch.get_num_threads()
    yield calls
    torch.set_num_threads(threads)


def test_binds_localhost_by_default_and_says_so(checkpoint, served, capsys):
    assert main(["serve", str(checkpoint), "--port", "8123"]) == 0
    (app, options) = served[0]
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    out = capsys.readouterr().out
    assert f"serving {checkpoint} on http://127.0.0.1:8123/ (localhost only;" in out
    assert "--host 0.0.0.0 serves the network" in out
    assert callable(app)


def test_another_host_is_said_to_be_reachable(checkpoint, served, capsys):
    argv = ["serve", str(checkpoint), "--host", "0.0.0.0", "--workers", "2", "--max-upload-mb", "5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(reachable from the network; 2 worker(s)" in out and "uploads up to 5 MB" in out
    assert served[0][1]["host"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--port", "0"], "--port must be in 1..65535"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
        (["--workers", "0"], "workers must be a positive integer"),
        (["--queue", "-1"], "queue must be an integer >= 0"),
    ],
)
def test_bad_options_are_one_line_errors(checkpoint, served, capsys, extra, words):
    assert main(["serve", str(checkpoint), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and not served


def test_a_missing_checkpoint_is_one_line(tmp_path, served, capsys):
    assert main(["serve", str(tmp_path / "nowhere.pt")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.pt" in err and err.count("\n") == 1 and not served
