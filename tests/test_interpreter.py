"""The watched interpreter asked as a real subprocess: its search path and its syntax."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kloros_stream.sources.interpreter import (
    InterpreterError,
    SyntaxConfirmer,
    check_syntax,
    probe,
)
from tests.support.pythons import other_python


def test_probe_reads_the_interpreters_own_path_and_stdlib() -> None:
    info = probe(sys.executable)
    assert info.version == tuple(sys.version_info[:3])
    assert "json" in info.stdlib_names and "asyncio" in info.stdlib_names
    assert any(p.endswith("site-packages") for p in info.path)


def test_a_missing_or_broken_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InterpreterError, match="no such interpreter"):
        probe(str(tmp_path / "nope"))
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\necho not json\n")
    script.chmod(0o755)
    with pytest.raises(InterpreterError, match="unreadable answer"):
        probe(str(script))


def test_check_syntax_parses_without_running(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text("raise SystemExit('never run')\n")
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n    pass\n")
    assert check_syntax(sys.executable, good).ok is True
    verdict = check_syntax(sys.executable, bad)
    assert verdict.ok is False and verdict.line == 1


def test_the_services_own_interpreter_confirms_without_asking(tmp_path: Path) -> None:
    confirmer = SyntaxConfirmer("")
    assert confirmer.is_error(str(tmp_path / "whatever.py"))


def test_new_syntax_is_valid_for_a_newer_watched_interpreter(tmp_path: Path) -> None:
    newer = other_python((3, 12))
    if newer is None or sys.version_info >= (3, 12):
        pytest.skip("needs a Python >= 3.12 besides an older service interpreter")
    path = tmp_path / "generic.py"
    path.write_text("type Pair[T] = tuple[T, T]\n")
    confirmer = SyntaxConfirmer(newer)
    assert not confirmer.is_error(str(path))
    assert confirmer.details(lambda p: Path(p).name)["valid_for_watched_python_files"] == [
        "generic.py"
    ]
    path.write_text("type Pair[T] = = tuple[T, T]\n")
    assert confirmer.is_error(str(path)) and not confirmer.valid_there
