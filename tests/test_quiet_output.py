"""Output that scripts read: not wrapped at 80 columns when stdout is not a terminal."""

from __future__ import annotations

import pytest

from distillctl.cli._common import console


def test_lines_are_not_wrapped_off_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    line = "wrote runs/x/student.safetensors (7.75 MB); i2t R@1 student 0.020 vs teacher 0.920 (2%) " * 2
    console().print(line.strip(), highlight=False)
    out = capsys.readouterr().out
    assert out == line.strip() + "\n"


def test_tables_still_fit_the_width(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.table import Table

    monkeypatch.delenv("COLUMNS", raising=False)
    t = Table()
    t.add_column("a")
    t.add_row("word " * 40)
    console().print(t)
    assert max(len(x) for x in capsys.readouterr().out.splitlines()) <= 80
