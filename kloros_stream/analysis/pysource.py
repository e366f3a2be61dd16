"""Pure helpers over Python source files, shared by the source-tree monitors.

No I/O and no imports of the analysed code: callers read the bytes, these functions parse
and summarise them. ``parse_module`` is the single place that turns bytes into an AST;
it raises :class:`SourceError` (with message and line) for anything that does not parse.
"""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

MAX_SCAN_ITEMS = 50
"""Bound on each list of a quick scan (classes, functions, imports)."""

_OPTIONAL_IMPORT_ERRORS = frozenset(
    {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
)


class SourceError(Exception):
    """The source does not parse (syntax error, bad encoding, null bytes, too deep)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


_PARSE_LOCK = threading.Lock()
"""CPython 3.11's parser is not safe to run in two threads at once (a rare
``SystemError: AST constructor recursion depth mismatch``): parses are serialised."""
PARSE_ATTEMPTS = 3


def parse_module(source: bytes | str, filename: str = "<source>") -> ast.Module:
    """Parse ``source`` (bytes honour a PEP 263 coding cookie) or raise SourceError.

    Never two parses at once in this process; a ``SystemError`` from the parser (an
    interpreter fault, not the file's) is retried, and raised if it persists."""
    for attempt in range(1, PARSE_ATTEMPTS + 1):
        try:
            with _PARSE_LOCK:
                return ast.parse(source, filename=filename)
        except SystemError:
            if attempt == PARSE_ATTEMPTS:
                raise
        except SyntaxError as err:
            raise SourceError(err.msg or "invalid syntax", err.lineno) from None
        except (ValueError, RecursionError, MemoryError) as err:
            raise SourceError(str(err) or type(err).__name__) from None
    raise AssertionError("unreachable")


def module_name(path: PurePath, root: PurePath) -> str:
    """Dotted module name of ``path`` relative to ``root`` (``pkg/__init__.py`` -> ``pkg``).

    A root's own ``__init__.py`` is named after the root directory.
    """
    rel = path.relative_to(root)
    parts = list(rel.parts)
    if parts and parts[-1].endswith(".py"):
        parts[-1] = parts[-1][:-3]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts else root.name


def is_test_path(rel: PurePath) -> bool:
    """A test file, not a module: ``test_*.py``, ``*_test.py``, ``conftest.py``, or anything
    under a ``tests`` / ``test`` directory (``rel`` is relative to its root)."""
    name = rel.name
    if name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py"):
        return True
    return any(part in ("tests", "test") for part in rel.parts[:-1])


def top_level(module: str) -> str:
    """``a.b.c`` -> ``a``."""
    return module.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class ImportSplit:
    """Top-level absolute imports: ``required`` at import time, ``optional`` guarded."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


def split_imports(tree: ast.Module) -> ImportSplit:
    """Module-level absolute imports, split into required and optional.

    Optional: inside a ``try`` whose handlers catch ImportError / ModuleNotFoundError (or
    broader: bare, Exception), in such a handler's fallback body, under
    ``contextlib.suppress(ImportError)``, or under a module-level ``if`` (platform or
    version switches). ``if TYPE_CHECKING:`` bodies are not runtime
    imports and are skipped; so are relative and ``__future__`` imports. A name imported
    both ways counts as required.
    """
    required: dict[str, None] = {}
    optional: dict[str, None] = {}
    _collect_imports(tree.body, False, required, optional)
    return ImportSplit(
        required=tuple(required),
        optional=tuple(name for name in optional if name not in required),
    )


def _collect_imports(
    body: list[ast.stmt],
    guarded: bool,
    required: dict[str, None],
    optional: dict[str, None],
) -> None:
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            target = optional if guarded else required
            for name in _imported_modules(stmt):
                target[name] = None
        elif isinstance(stmt, ast.Try | ast.TryStar):
            inner = guarded or _catches_import_error(stmt.handlers)
            _collect_imports(stmt.body, inner, required, optional)
            for handler in stmt.handlers:
                _collect_imports(handler.body, True, required, optional)
            _collect_imports(stmt.orelse, inner, required, optional)
            _collect_imports(stmt.finalbody, guarded, required, optional)
        elif isinstance(stmt, ast.If):
            if _is_type_checking(stmt.test):
                _collect_imports(stmt.orelse, True, required, optional)
                continue
            _collect_imports(stmt.body, True, required, optional)
            _collect_imports(stmt.orelse, True, required, optional)
        elif isinstance(stmt, ast.With):
            inner = guarded or any(_suppresses_import_error(i.context_expr) for i in stmt.items)
            _collect_imports(stmt.body, inner, required, optional)


def _imported_modules(stmt: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names if alias.name != "__future__"]
    if stmt.level or not stmt.module or stmt.module == "__future__":
        return []
    return [stmt.module]


def _catches_import_error(handlers: list[ast.ExceptHandler]) -> bool:
    for handler in handlers:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(_last_name(t) in _OPTIONAL_IMPORT_ERRORS for t in types):
            return True
    return False


def _suppresses_import_error(expr: ast.expr) -> bool:
    """``contextlib.suppress(ImportError, ...)`` and the like."""
    if not (isinstance(expr, ast.Call) and _last_name(expr.func) == "suppress"):
        return False
    return any(_last_name(arg) in _OPTIONAL_IMPORT_ERRORS for arg in expr.args)


def _is_type_checking(test: ast.expr) -> bool:
    return _last_name(test) == "TYPE_CHECKING"


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


@dataclass(frozen=True, slots=True)
class ModuleSummary:
    """What a module offers at a glance, for a ``new_module`` gap's facts."""

    classes: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    docstring: str = ""
    imports: tuple[str, ...] = ()
    truncated: bool = False

    def as_facts(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "functions": list(self.functions),
            "docstring": self.docstring,
            "imports": list(self.imports),
        }


def quick_scan(tree: ast.Module, limit: int = MAX_SCAN_ITEMS) -> ModuleSummary:
    """Public top-level classes and functions, the docstring's first line, and the
    absolute imports (required first, then optional), each list bounded by ``limit``."""
    classes: list[str] = []
    functions: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and not stmt.name.startswith("_"):
            classes.append(stmt.name)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and not stmt.name.startswith(
            "_"
        ):
            functions.append(stmt.name)
    split = split_imports(tree)
    imports = list(split.required) + list(split.optional)
    truncated = max(len(classes), len(functions), len(imports)) > limit
    return ModuleSummary(
        classes=tuple(classes[:limit]),
        functions=tuple(functions[:limit]),
        docstring=first_doc_line(tree),
        imports=tuple(imports[:limit]),
        truncated=truncated,
    )


def first_doc_line(tree: ast.Module) -> str:
    """First non-empty line of the module docstring ('' if none)."""
    doc = ast.get_docstring(tree, clean=True) or ""
    for line in doc.splitlines():
        if line.strip():
            return line.strip()
    return ""
