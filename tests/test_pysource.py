"""Pure source helpers: module names, test paths, import split, quick scan, parsing."""

from __future__ import annotations

import ast
from pathlib import PurePosixPath as P
from typing import Any

import pytest

from kloros_stream.analysis.pysource import (
    SourceError,
    first_doc_line,
    is_test_path,
    module_name,
    parse_module,
    quick_scan,
    split_imports,
    top_level,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/src/pkg/mod.py", "pkg.mod"),
        ("/src/pkg/sub/__init__.py", "pkg.sub"),
        ("/src/top.py", "top"),
        ("/src/__init__.py", "src"),
    ],
)
def test_module_name_is_dotted_relative_to_root(path: str, expected: str) -> None:
    assert module_name(P(path), P("/src")) == expected


@pytest.mark.parametrize(
    ("rel", "is_test"),
    [
        ("test_x.py", True),
        ("pkg/x_test.py", True),
        ("conftest.py", True),
        ("tests/helpers.py", True),
        ("pkg/test/util.py", True),
        ("pkg/testing.py", False),
        ("pkg/contest.py", False),
        ("pkg/mod.py", False),
    ],
)
def test_is_test_path(rel: str, is_test: bool) -> None:
    assert is_test_path(P(rel)) is is_test


def test_split_imports_required_optional_and_skipped() -> None:
    tree = ast.parse(
        """
from __future__ import annotations
import os, json as j
import a.b.c
from x.y import z
from . import sibling
from .rel import thing
from typing import TYPE_CHECKING
try:
    import fast_json
except ImportError:
    import slow_json
try:
    import maybe
except (OSError, ModuleNotFoundError):
    pass
try:
    import strict
except KeyError:
    pass
if TYPE_CHECKING:
    import typing_only
if sys.platform == "win32":
    import winreg
with contextlib.suppress(ImportError):
    import quiet
def f():
    import inside_function
import os
"""
    )
    split = split_imports(tree)
    assert split.required == ("os", "json", "a.b.c", "x.y", "typing", "strict")
    assert split.optional == ("fast_json", "slow_json", "maybe", "winreg", "quiet")


def test_name_imported_both_ways_is_required() -> None:
    tree = ast.parse("try:\n    import yaml\nexcept ImportError:\n    pass\nimport yaml\n")
    split = split_imports(tree)
    assert split.required == ("yaml",)
    assert split.optional == ()


def test_top_level() -> None:
    assert top_level("a.b.c") == "a"
    assert top_level("a") == "a"


def test_quick_scan_public_api_docstring_and_imports() -> None:
    tree = ast.parse(
        '''"""

Speech pipeline: wake word and VAD.

More text.
"""
import numpy
try:
    import torch
except ImportError:
    torch = None

class Pipeline: ...
class _Private: ...
def run(): ...
async def serve(): ...
def _helper(): ...
'''
    )
    summary = quick_scan(tree)
    assert summary.classes == ("Pipeline",)
    assert summary.functions == ("run", "serve")
    assert summary.docstring == "Speech pipeline: wake word and VAD."
    assert summary.imports == ("numpy", "torch")
    assert summary.as_facts()["classes"] == ["Pipeline"]


def test_quick_scan_is_bounded() -> None:
    tree = ast.parse("\n".join(f"def f{i}(): pass" for i in range(80)))
    summary = quick_scan(tree, limit=10)
    assert len(summary.functions) == 10
    assert summary.truncated


def test_first_doc_line_absent() -> None:
    assert first_doc_line(ast.parse("x = 1\n")) == ""


def test_parse_module_errors_carry_message_and_line() -> None:
    with pytest.raises(SourceError) as info:
        parse_module(b"x = 1\ndef broken(:\n    pass\n", "broken.py")
    assert info.value.line == 2
    assert info.value.message


@pytest.mark.parametrize("source", [b"x = 1\x00\n", b"\xff\xfe not utf8 \xff\n"])
def test_parse_module_rejects_null_bytes_and_bad_encoding(source: bytes) -> None:
    with pytest.raises(SourceError):
        parse_module(source)


def test_parse_module_honours_coding_cookie() -> None:
    tree = parse_module("# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1"))
    assert isinstance(tree, ast.Module)


def test_a_parser_system_error_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault 6: CPython 3.11's rare ``SystemError`` from concurrent ``ast.parse`` is the
    interpreter's, not the file's: retried, the file parses."""

    from kloros_stream.analysis import pysource

    real = ast.parse
    failures = iter([True, True, False])

    def flaky(source: Any, filename: str = "<unknown>") -> ast.Module:
        if next(failures):
            raise SystemError("AST constructor recursion depth mismatch (before=1, after=2)")
        return real(source, filename=filename)

    monkeypatch.setattr(pysource.ast, "parse", flaky)
    assert isinstance(pysource.parse_module(b"x = 1\n"), ast.Module)
    monkeypatch.setattr(pysource.ast, "parse", lambda *a, **k: (_ for _ in ()).throw(
        SystemError("persistent")))
    with pytest.raises(SystemError):
        pysource.parse_module(b"x = 1\n")


def test_parses_never_overlap_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from kloros_stream.analysis import pysource

    real = ast.parse
    inside = 0
    most = 0
    guard = threading.Lock()

    def counting(source: Any, filename: str = "<unknown>") -> ast.Module:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.002)  # gives another thread every chance to enter
        try:
            return real(source, filename=filename)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(pysource.ast, "parse", counting)
    threads = [threading.Thread(target=lambda: [pysource.parse_module(b"a = 1\n")
                                                 for _ in range(10)]) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1
