"""The README's Python example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_train_from_python_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = python_blocks("Train from Python")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    result, mask = namespace["result"], namespace["mask"]
    assert result.best_path.is_file() and result.best_path.parent.parent == Path("runs")
    assert tuple(mask.shape) == (32, 32)
    assert "best.pt" in capsys.readouterr().out
